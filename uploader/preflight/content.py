"""The review's content rules: what a few sampled frames and the sound say of a recording.

Huawei's review refuses a video without a face (the identity check, "人证不匹配"), one stored
sideways ("竖屏横拍的素材需要旋转"), and, when the job replaces the background, one not shot
on a green screen ("需要背景替换的分身数字人训练视频需要绿幕拍摄"): those are problems. Its
recording guide advises the rest: those are warnings. Each threshold is a constant with its
source; the face detector is OpenCV's Haar cascade, whose model ships inside its wheel
(nothing is downloaded). Needs the `review` extra (PyAV, numpy, OpenCV): `available()` says
how to install it where it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uploader.preflight.report import Problem, ReviewRules

if TYPE_CHECKING:
    from uploader.preflight.frames import Frame, Sound

__all__ = ["CONTENT_CHECKS_ENV", "INSTALL", "Findings", "analyse_id_card", "analyse_video",
           "available", "judge_frames", "judge_sound", "wanted"]

#: The setting that turns the content rules off (`0`), for pipelines that check elsewhere.
CONTENT_CHECKS_ENV = "UPLOADER_CONTENT_CHECKS"
INSTALL = "pip install 'uploader[review]'"

# Green screen: the frame's border (top, left and right bands; the speaker may reach the
# bottom) must be chroma-key green. OpenCV's hue runs 0-180: green is 60, and a key green
# lies within 35-85 with enough saturation and light to be keyed.
BORDER = 0.08  #: the bands' width, a share of the frame's side
GREEN_HUE = (35, 85)
GREEN_MIN_SATURATION = 80
GREEN_MIN_VALUE = 50
#: A share of the border this green or more is a green screen (props and hair cross it).
GREEN_SHARE = 0.6

# Faces: the recording guide asks for one speaker facing the camera, in the middle, the face
# at least 1/5 of the frame's width ("人脸宽度不小于画面宽度的1/5").
MIN_FACE_SHARE = 1 / 5
#: The face's centre further than this share of the width from the middle is off centre.
OFF_CENTRE = 0.2
#: Frames with a face: fewer than this share of the sampled frames is "no face" only at 0.
SEVERAL_SHARE = 0.5  #: several faces in this share of the frames with a face or more

# Light (the guide: "避免过曝或欠曝", neither over- nor under-exposed), on the frame's mean
# luma (0-255): below DARK the face's detail is lost in noise; above BRIGHT or with more than
# CLIPPED_SHARE of the pixels at full white, highlights are burnt.
DARK = 50
BRIGHT = 200
CLIPPED_SHARE = 0.25
#: Sharpness: the variance of the Laplacian (fine detail) of the face scaled to 128 pixels,
#: as a percentage of the face's own variance (contrast), so that a dark face is not taken
#: for a soft one. A face in focus measures 3-10; a blur of a pixel or two at that scale
#: (out of focus, or moving) brings it under this.
SHARP = 1.5

# Sound (dBFS, RMS over 0.1 s). Speech sits around -30 to -12; a quiet room around -60 to
# -45. Below SILENT is silence (ffmpeg's silencedetect defaults to a stricter -60 dB, which
# a real room's hum would fail).
SILENT = -40.0
#: The guide: a silent opening of 15-20 s with the mouth closed, and 3 s at the end.
SILENT_OPENING = 15.0
SILENT_ENDING = 3.0
#: More than this share of the samples near full scale (frames.FULL_SCALE): the recording
#: is clipped (distorted). Speech recorded with headroom has none there.
CLIPPING = 0.005

# The ID card's portrait side: a photo with glare ("反光") fails the identity check. Glare is
# near-white with little colour; more than this share of the card is a reflection.
GLARE_SHARE = 0.05


@dataclass(frozen=True)
class Findings:
    """What the content rules found in one file: problems and warnings."""

    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()


def wanted(setting: bool | None = None) -> bool:
    """Whether to run the content rules: `setting` if given, else UPLOADER_CONTENT_CHECKS
    (on unless `0`, `false`, `no` or `off`)."""
    if setting is not None:
        return setting
    text = os.environ.get(CONTENT_CHECKS_ENV, "").strip().lower()
    return text not in ("0", "false", "no", "off")


@cache
def available() -> str | None:
    """None where the content rules can run; else why not, with the command that fixes it."""
    try:
        import av  # noqa: F401
        import cv2
        import numpy  # noqa: F401
    except ImportError as exc:
        return (f"the content rules (face, green screen, sound) are skipped: {exc.name} is not "
                f"installed; `{INSTALL}` installs them")
    if not hasattr(cv2, "CascadeClassifier"):
        return ("the content rules are skipped: this OpenCV has no Haar cascades (OpenCV 5 "
                f"moved them out); `{INSTALL}` installs OpenCV 4")
    return None


def analyse_video(path: Path, rules: ReviewRules, rotation: int = 0) -> Findings:
    """The content rules on a video whose headers passed (`rotation`: its display tag)."""
    from uploader.preflight.frames import read_frames, read_sound

    picture = judge_frames(read_frames(path, rotation), rules)
    sound = read_sound(path) if not rules.human_only else None
    if sound is None:
        return picture
    heard = judge_sound(sound)
    return Findings((*picture.problems, *heard.problems), (*picture.warnings, *heard.warnings))


def judge_frames(frames: list[Frame], rules: ReviewRules) -> Findings:
    """The picture's rules on sampled frames (none sampled: nothing found)."""
    return _split(_picture(frames, rules) if frames else ())


def judge_sound(sound: Sound) -> Findings:
    """The sound's rules on its measured levels."""
    return _split(_sound(sound))


def _split(found: Iterable[tuple[bool, Problem]]) -> Findings:
    listed = list(found)
    return Findings(tuple(p for refuses, p in listed if refuses),
                    tuple(p for refuses, p in listed if not refuses))


def analyse_id_card(path: Path) -> Findings:
    """The ID card's portrait side: a face in it, and no glare."""
    import cv2
    import numpy as np

    pixels = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        return Findings()
    pixels = _fit(pixels, 1024)
    warnings: list[Problem] = []
    if not _faces(pixels, min_share=1 / 20):
        warnings.append(Problem(
            "id_no_face", "no face found on the ID card's portrait side",
            measured="no face in the image", rule="the identity check compares the card's "
            "photo with the video's face (人证不匹配: refused when they cannot be matched)",
            todo="photograph the side with the photo, flat, in focus, filling the picture"))
    hsv = cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV)
    glare = float(np.mean((hsv[..., 2] >= 250) & (hsv[..., 1] <= 30)))
    if glare > GLARE_SHARE:
        warnings.append(Problem(
            "id_glare", f"{glare:.0%} of the ID card image is a white reflection",
            measured=f"{glare:.1%} of the pixels near white", rule="the identity check "
            "refuses a card photo with glare (反光)",
            todo="photograph the card again without a direct light on it"))
    return Findings((), tuple(warnings))


def _picture(frames: list[Frame], rules: ReviewRules) -> Iterable[tuple[bool, Problem]]:
    """The picture's findings: (refuses?, finding)."""
    import numpy as np

    width = frames[0].pixels.shape[1]
    faces = [_faces(f.pixels) for f in frames]
    seen = [f for f in faces if f]
    if rules.background_replacement:
        share = float(np.median([_green_share(f.pixels) for f in frames]))
        if share < GREEN_SHARE:
            yield True, Problem(
                "no_green_screen", f"the background is not a green screen ({share:.0%} of the "
                "frame's border is chroma-key green), and the job replaces the background",
                measured=f"{share:.0%} of the border green (a green screen: "
                f"{GREEN_SHARE:.0%} or more)", rule="a job with background replacement needs "
                "a video shot on a green screen (需要背景替换的分身数字人训练视频需要绿幕拍摄)",
                todo="for a real-scene video, turn the job's background replacement off (an "
                "update of the job may change it); else record again on a green screen")
    yield from _light(frames, faces)
    if not seen:
        yield _no_face(frames)
        return
    yield from _faces_advice(frames, faces, seen, width)


def _no_face(frames: list[Any]) -> tuple[bool, Problem]:
    """No upright face: `sideways` where one appears with the frames turned, else `no_face`."""
    import numpy as np

    for turns, way in ((1, "90° clockwise"), (3, "90° counter-clockwise")):
        turned = [np.ascontiguousarray(np.rot90(f.pixels, -turns)) for f in frames]
        hits = sum(1 for t in turned if _faces(t))
        if hits:
            return True, Problem(
                "sideways", f"the picture is stored sideways: faces appear only with it "
                f"turned {way} ({hits} of {len(frames)} frames)",
                measured=f"no upright face; {hits} of {len(frames)} frames with a face once "
                f"turned {way}", rule="a portrait recording stored sideways must be rotated "
                "(竖屏横拍的素材需要旋转)",
                todo=f"rotate the video {way} (re-encode it, or set its rotation tag) and "
                "upload it again: the rotated file is a new file")
    return True, Problem(
        "no_face", f"no face found in {len(frames)} frames sampled along the video",
        measured=f"no face in {len(frames)} frames ({_times(frames)})",
        rule="the identity check matches the video's face with the ID card (人证不匹配)",
        todo="record the speaker facing the camera, the face unobstructed and lit; if the "
        "face is there, ignoring no_face uploads anyway")


def _faces_advice(frames: list[Any], faces: list[list[tuple[int, int, int, int]]],
                  seen: list[list[tuple[int, int, int, int]]], width: int
                  ) -> Iterable[tuple[bool, Problem]]:
    import numpy as np

    several = sum(1 for f in seen if len(f) > 1)
    if several / len(seen) >= SEVERAL_SHARE:
        at = [fr.at for fr, f in zip(frames, faces, strict=True) if len(f) > 1]
        yield False, Problem(
            "several_faces", f"more than one face in {several} of {len(seen)} frames",
            measured=f"several faces at {_seconds(at)}", rule="recording guide: only the "
            "speaker in the video (advice)", todo="record the speaker alone in the picture")
    main = [max(f, key=lambda box: box[2] * box[3]) for f in seen]
    share = float(np.median([box[2] for box in main])) / width
    if share < MIN_FACE_SHARE:
        yield False, Problem(
            "face_small", f"the face is {share:.0%} of the frame's width; the guide asks for "
            f"at least {MIN_FACE_SHARE:.0%}", measured=f"face {share:.1%} of the width",
            rule="recording guide: the face at least 1/5 of the frame (advice)",
            todo="move the camera closer or zoom in")
    offset = float(np.median([abs(b[0] + b[2] / 2 - width / 2) for b in main])) / width
    if offset > OFF_CENTRE:
        yield False, Problem(
            "face_off_centre", f"the face is {offset:.0%} of the frame's width off centre",
            measured=f"face centre {offset:.1%} of the width from the middle",
            rule="recording guide: the speaker in the middle, facing the camera (advice)",
            todo="centre the speaker in the picture")


def _light(frames: list[Any], faces: list[list[tuple[int, int, int, int]]]
           ) -> Iterable[tuple[bool, Problem]]:
    import cv2
    import numpy as np

    grey = [cv2.cvtColor(f.pixels, cv2.COLOR_BGR2GRAY) for f in frames]
    luma = float(np.median([g.mean() for g in grey]))
    burnt = float(np.median([np.mean(g >= 250) for g in grey]))
    if luma < DARK:
        yield False, Problem(
            "too_dark", f"the picture is dark (mean level {luma:.0f} of 255)",
            measured=f"mean luma {luma:.0f}/255 (dark below {DARK})",
            rule="recording guide: neither over- nor under-exposed (advice)",
            todo="light the speaker's face evenly")
    elif luma > BRIGHT or burnt > CLIPPED_SHARE:
        yield False, Problem(
            "overexposed", f"the picture is overexposed (mean level {luma:.0f} of 255, "
            f"{burnt:.0%} burnt white)", measured=f"mean luma {luma:.0f}/255, {burnt:.1%} "
            "at full white", rule="recording guide: neither over- nor under-exposed (advice)",
            todo="lower the light or the exposure")
    sharpness = [_sharpness(g, max(f, key=lambda b: b[2] * b[3]))
                 for g, f in zip(grey, faces, strict=True) if f]
    value = float(np.median(sharpness)) if sharpness else SHARP
    if value < SHARP:
        yield False, Problem(
            "blurry", f"the face is blurred (sharpness {value:.1f}; in focus: {SHARP:g} or "
            "more)", measured=f"Laplacian variance {value:.2f} % of the face's",
            rule="recording guide: a clear, focused picture (advice)",
            todo="focus on the face; keep the camera still")


def _sound(sound: Sound) -> Iterable[tuple[bool, Problem]]:
    import numpy as np

    guide = "recording guide: 15-20 s of silence with the mouth closed at the start, 3 s at the end"
    loud_opening = np.flatnonzero(sound.opening >= SILENT)
    opening = (loud_opening[0] if loud_opening.size else sound.opening.size) * 0.1
    if opening < min(SILENT_OPENING, sound.duration):
        yield False, Problem(
            "no_silent_opening", f"the sound starts {opening:.1f} s in; the guide asks for "
            f"{SILENT_OPENING:g} s of silence first", measured=f"{opening:.1f} s of silence "
            f"at the start (silence: below {SILENT:g} dBFS)", rule=f"{guide} (advice)",
            todo="start with 15-20 s facing the camera, mouth closed, no sound")
    loud_ending = np.flatnonzero(sound.ending >= SILENT)
    ending = (sound.ending.size - 1 - loud_ending[-1]) * 0.1 if loud_ending.size else None
    if ending is not None and ending < SILENT_ENDING:
        yield False, Problem(
            "no_silent_ending", f"the sound lasts until {ending:.1f} s before the end; the "
            f"guide asks for {SILENT_ENDING:g} s of silence", measured=f"{ending:.1f} s of "
            "silence at the end", rule=f"{guide} (advice)",
            todo="end with 3 s of silence before stopping the recording")
    heard = np.concatenate([sound.middle, sound.opening, sound.ending])
    if heard.size and float(heard.max()) < SILENT:
        loudest = float(heard.max())
        level = "no sound at all" if loudest < -120 else f"loudest {loudest:.0f} dBFS"
        yield False, Problem(
            "audio_silent", f"the sound track is silent ({level} in the parts sampled)",
            measured=level,
            rule="the voice is trained from the video's original sound (提交训练的视频需要保留"
            "录制时的原声): a silent track trains nothing", todo="check the microphone; "
            "upload the recording with its sound")
    if sound.clipped > CLIPPING:
        yield False, Problem(
            "audio_clipping", f"{sound.clipped:.2%} of the sound's samples are at full scale: "
            "it is distorted", measured=f"{sound.clipped:.3%} of the samples clipped",
            rule="recording guide: clear sound, without distortion (advice)",
            todo="lower the microphone's gain and record again")


@cache
def _detector() -> Any:
    import cv2

    cascades = cv2.data.haarcascades  # type: ignore[attr-defined]
    return cv2.CascadeClassifier(cascades + "haarcascade_frontalface_alt.xml")


def _faces(pixels: Any, min_share: float = 1 / 25) -> list[tuple[int, int, int, int]]:
    """Faces found in a BGR frame, (x, y, width, height); the smallest searched for is
    `min_share` of the frame's longer side."""
    import cv2

    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    side = max(24, int(max(pixels.shape[:2]) * min_share))
    found = _detector().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                         minSize=(side, side))
    return [tuple(int(v) for v in box) for box in found]  # type: ignore[misc]


def _green_share(pixels: Any) -> float:
    import cv2
    import numpy as np

    height, width = pixels.shape[:2]
    band_h, band_w = max(1, int(height * BORDER)), max(1, int(width * BORDER))
    hsv = cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV)
    border = np.concatenate([hsv[:band_h].reshape(-1, 3), hsv[:, :band_w].reshape(-1, 3),
                             hsv[:, -band_w:].reshape(-1, 3)])
    hue, saturation, value = border[:, 0], border[:, 1], border[:, 2]
    green = ((hue >= GREEN_HUE[0]) & (hue <= GREEN_HUE[1]) & (saturation >= GREEN_MIN_SATURATION)
             & (value >= GREEN_MIN_VALUE))
    return float(np.mean(green))


def _sharpness(grey: Any, box: tuple[int, int, int, int]) -> float:
    import cv2

    x, y, w, h = box
    face = cv2.resize(grey[y:y + h, x:x + w], (128, 128), interpolation=cv2.INTER_AREA)
    contrast = float(face.astype("float64").var())
    return 100 * float(cv2.Laplacian(face, cv2.CV_64F).var()) / max(contrast, 1.0)


def _fit(pixels: Any, side: int) -> Any:
    import cv2

    scale = side / max(pixels.shape[:2])
    if scale >= 1:
        return pixels
    return cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _times(frames: list[Any]) -> str:
    return "at " + _seconds([f.at for f in frames])


def _seconds(at: list[float]) -> str:
    return ", ".join(f"{t:.0f} s" for t in at)

