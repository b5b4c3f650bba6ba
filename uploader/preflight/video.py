"""Preflight: prove a video would pass MetaStudio's review before a byte is sent.

The rules (API.md §4): an mp4 container; displayed at exactly 1920x1080, 1080x1920,
3840x2160 or 2160x3840; lasting 180 to 600 seconds inclusive. pymediainfo reads only the
headers, so a check takes milliseconds whatever the file's size.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pymediainfo import MediaInfo

from uploader.preflight.report import Facts, Problem, Report, refuse_as_a_file

__all__ = ["ALLOWED_RESOLUTIONS", "check_video", "check_video_async"]

ALLOWED_RESOLUTIONS = ((1920, 1080), (1080, 1920), (3840, 2160), (2160, 3840))
MIN_SECONDS = 180.0
MAX_SECONDS = 600.0
_ALLOWED_TEXT = "1920x1080, 1080x1920, 3840x2160 or 2160x3840"


def check_video(path: str | os.PathLike[str]) -> Report:
    """Check one file against the review's rules; never raises for a bad file."""
    target = Path(path)
    refusal = refuse_as_a_file(target)
    if refusal is not None:
        return Report(target, None, (refusal,))
    size = target.stat().st_size
    try:
        info = _parse(target)
    except Exception as exc:  # pymediainfo raises several types for files it cannot read
        return Report(target, Facts(size_bytes=size),
                      (Problem("unparseable", f"mediainfo cannot read the file: {exc}"),))
    return _judge(target, size, info)


def _parse(path: Path) -> Any:
    """MediaInfo's reading of the file. A name that is not UTF-8 (GBK, from a zip made on
    Windows) cannot be handed to libmediainfo as text: the file is handed over open."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        with path.open("rb") as handle:
            return MediaInfo.parse(handle)
    return MediaInfo.parse(path)


async def check_video_async(path: str | os.PathLike[str]) -> Report:
    """`check_video` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(check_video, path)


def _judge(path: Path, size: int, info: Any) -> Report:
    general = next((t for t in info.tracks if t.track_type == "General"), None)
    video = next((t for t in info.tracks if t.track_type == "Video"), None)
    container = getattr(general, "format", None)
    if str(getattr(general, "codec_id", "") or "").strip() == "qt":
        container = "QuickTime"  # mediainfo's format says MPEG-4 of a QuickTime movie too
    if general is None or container is None:
        return Report(path, Facts(size_bytes=size), (Problem(
            "unparseable", "mediainfo finds no media in the file (truncated, or not a video?)"),))
    if str(getattr(general, "istruncated", "")).lower() == "yes":
        return Report(path, Facts(size_bytes=size, container=container), (Problem(
            "unparseable", "the file is truncated: its end is missing (an interrupted copy or "
            "recording?); copy or export it again"),))
    duration_ms = _number(general.duration) or _number(getattr(video, "duration", None))
    facts = Facts(size_bytes=size, container=container,
                  duration_seconds=None if duration_ms is None else duration_ms / 1000)
    if video is not None:
        facts = _with_video(facts, video)
    return Report(path, facts, tuple(_problems(facts, general, video)))


def _with_video(facts: Facts, video: Any) -> Facts:
    width, height = _int(video.width), _int(video.height)
    rotation = int(_number(getattr(video, "rotation", None)) or 0) % 360
    if width and height and rotation in (90, 270):
        width, height = height, width
    orientation = None
    if width and height:
        orientation = "portrait" if height > width else "landscape"
    return Facts(
        size_bytes=facts.size_bytes, container=facts.container, width=width, height=height,
        rotation=rotation, orientation=orientation, duration_seconds=facts.duration_seconds,
        video_codec=video.format, frame_rate=_number(getattr(video, "frame_rate", None)),
    )


def _problems(facts: Facts, general: Any, video: Any) -> list[Problem]:
    found = []
    if facts.container != "MPEG-4":
        found.append(Problem("not_mp4", f"the container is {facts.container}, not mp4 "
                             "(whatever the file name says): re-encode or remux it to mp4"))
    if video is None:
        found.append(Problem("no_video_track", "the file has no video track"))
    elif (facts.width, facts.height) not in ALLOWED_RESOLUTIONS:
        rotated = f" (stored rotated {facts.rotation} degrees)" if facts.rotation else ""
        found.append(Problem("bad_resolution",
                             f"the video displays at {facts.width}x{facts.height}{rotated}; "
                             f"allowed: {_ALLOWED_TEXT}"))
    seconds = facts.duration_seconds
    if seconds is None:
        found.append(Problem("unparseable", "mediainfo finds no duration in the file"))
    elif seconds < MIN_SECONDS:
        found.append(Problem("too_short", f"the video lasts {_clock(seconds)}; "
                             "it must last at least 3 minutes (3:00.000)"))
    elif seconds > MAX_SECONDS:
        found.append(Problem("too_long", f"the video lasts {_clock(seconds)}; "
                             "it must last at most 10 minutes (10:00.000)"))
    return found


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:06.3f} ({seconds:.3f} s)"


def _number(value: Any) -> float | None:
    """A number from mediainfo, which gives ints, floats or strings like '200000.000000'."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().split(" ")[0].split("/")[0]
    try:
        return float(text)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
