"""Preflight: prove a video would pass MetaStudio's review before a byte is sent.

The rules (API.md §4): an mp4 container; displayed at exactly 1920x1080, 1080x1920,
3840x2160 or 2160x3840; lasting 180 to 600 seconds inclusive; and, unless the job trains the
figure only, a sound track (the voice is trained from the video's original sound). The
recording guide's advice on what the headers show is reported as warnings: 25 frames a
second or more, a constant frame rate, sound and picture of the same length, and for the
Flexus editions 1 to 5 minutes. pymediainfo reads only the headers, so a check takes
milliseconds whatever the file's size.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pymediainfo import MediaInfo

from uploader.preflight.report import Facts, Problem, Report, ReviewRules, refuse_as_a_file

__all__ = ["ALLOWED_RESOLUTIONS", "check_video", "check_video_async"]

ALLOWED_RESOLUTIONS = ((1920, 1080), (1080, 1920), (3840, 2160), (2160, 3840))
MIN_SECONDS = 180.0
MAX_SECONDS = 600.0
_ALLOWED_TEXT = "1920x1080, 1080x1920, 3840x2160 or 2160x3840"
#: The recording guide: "帧率25fps及以上" (25 frames a second or more), kept after editing.
MIN_FRAME_RATE = 25.0
#: Sound and picture "必须同步" (must be in sync): tracks whose lengths differ by more than
#: this cannot be (half a second: more than a dozen frames at 25 fps).
MAX_AV_GAP = 0.5
#: The Flexus editions' guide asks for 1 to 5 minutes (the API's 3 to 10 still rules).
FLEXUS_SECONDS = (60.0, 300.0)
_NO_VOICE = ("the voice is trained from the video's original sound (\"提交训练的视频需要保留录制"
             "时的原声\": the recording's own sound, kept)")


def check_video(path: str | os.PathLike[str], rules: ReviewRules | None = None) -> Report:
    """Check one file against the review's rules for a job of `rules` (the service's
    defaults if None); never raises for a bad file."""
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
    rules = rules or ReviewRules()
    report = _judge(target, size, info)
    if report.facts is None or not isinstance(report.facts, Facts) or report.facts.container \
            is None or any(p.code == "unparseable" for p in report.problems):
        return report.judged(rules)
    problems, warnings = _sound_and_advice(report.facts, info, rules)
    return Report(target, report.facts, (*report.problems, *problems), report.kind,
                  (*report.warnings, *warnings)).judged(rules)


def _parse(path: Path) -> Any:
    """MediaInfo's reading of the file. A name that is not UTF-8 (GBK, from a zip made on
    Windows) cannot be handed to libmediainfo as text: the file is handed over open."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        with path.open("rb") as handle:
            return MediaInfo.parse(handle)
    return MediaInfo.parse(path)


async def check_video_async(path: str | os.PathLike[str],
                            rules: ReviewRules | None = None) -> Report:
    """`check_video` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(check_video, path, rules)


def _sound_and_advice(facts: Facts, info: Any, rules: ReviewRules
                      ) -> tuple[list[Problem], list[Problem]]:
    """The sound track's problem (none for a job that trains the figure only), and the
    recording guide's advice the headers can check, as warnings."""
    video = next((t for t in info.tracks if t.track_type == "Video"), None)
    audio = next((t for t in info.tracks if t.track_type == "Audio"), None)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if audio is None and not rules.human_only:
        problems.append(Problem(
            "no_audio", "the video has no sound track: the review trains the voice from it",
            measured="no audio track", rule=_NO_VOICE,
            todo="upload the recording with its original sound, or train the figure only "
                 "(human_only, Flexus editions)"))
    if video is None:
        return problems, warnings
    fps = facts.frame_rate
    if fps is not None and fps < MIN_FRAME_RATE:
        warnings.append(Problem(
            "low_frame_rate", f"the video has {fps:g} frames a second; the guide asks for "
            f"{MIN_FRAME_RATE:g} or more", measured=f"{fps:g} fps",
            rule="recording guide: 25 fps or more (advice)", todo="record at 25 fps or more"))
    if str(getattr(video, "frame_rate_mode", "") or "").upper() == "VFR":
        warnings.append(Problem(
            "variable_frame_rate", "the frame rate varies along the video; the guide asks "
            "for a constant one, kept after editing", measured="variable frame rate",
            rule="recording guide: a constant frame rate, kept after editing (advice)",
            todo="export with a constant frame rate"))
    gap = _av_gap(video, audio)
    if gap is not None and gap > MAX_AV_GAP:
        warnings.append(Problem(
            "av_length_differs", f"the sound and the picture differ in length by {gap:.3f} s: "
            "they cannot be in sync throughout", measured=f"{gap:.3f} s apart",
            rule="音画必须同步: the sound in sync with the picture (advice)",
            todo="export the sound and the picture together, uncut"))
    seconds = facts.duration_seconds
    low, high = FLEXUS_SECONDS
    if rules.flexus and seconds is not None and not low <= seconds <= high:
        warnings.append(Problem(
            "flexus_duration", f"the video lasts {_clock(seconds)}; for the Flexus editions "
            "the guide asks for 1 to 5 minutes", measured=_clock(seconds),
            rule="Flexus recording guide: 1-5 minutes (advice; the API's 3-10 minutes rules)",
            todo="a video of 3 to 5 minutes meets both"))
    return problems, warnings


def _av_gap(video: Any, audio: Any) -> float | None:
    """Seconds between the picture's and the sound's lengths, where both are known."""
    if audio is None:
        return None
    picture, sound = _number(video.duration), _number(audio.duration)
    if picture is None or sound is None:
        return None
    return abs(picture - sound) / 1000


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
