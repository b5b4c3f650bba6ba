"""The emulator's stand-in for MetaStudio's automatic review of the training video."""

from __future__ import annotations

from pathlib import Path

from pymediainfo import MediaInfo

__all__ = ["review"]

ALLOWED = {(1920, 1080), (1080, 1920), (3840, 2160), (2160, 3840)}


def review(path: Path) -> tuple[str, str] | None:
    """None if the video passes; otherwise (error code, description)."""
    try:
        info = MediaInfo.parse(path)
    except Exception:  # any parse failure is a refusal, as the service would refuse it
        return "44005903", "the file could not be read as a video"
    general = next((t for t in info.tracks if t.track_type == "General"), None)
    video = next((t for t in info.tracks if t.track_type == "Video"), None)
    if general is None or video is None or general.format != "MPEG-4":
        return "44005903", "the file is not an mp4 video"
    width, height = int(video.width or 0), int(video.height or 0)
    if str(video.rotation or "0").split(".")[0] in ("90", "270", "-90"):
        width, height = height, width
    if (width, height) not in ALLOWED:
        return "44005901", f"resolution {width}x{height} is not accepted"
    seconds = float(general.duration or video.duration or 0) / 1000
    if not 180 <= seconds <= 600:
        return "44005902", f"duration {seconds:.1f} s is outside 3 to 10 minutes"
    return None
