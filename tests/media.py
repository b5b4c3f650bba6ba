"""Videos, images and sounds made at test time for the review's content rules.

A real face comes from scikit-image's public-domain `astronaut` (installed with the tests),
never from a committed photo. A scene is a picture (a numpy RGB array) held still for the
whole video: the rules sample a few frames, so motion adds nothing but encoding time. The
sound is a list of (seconds, kind) pieces: "silence", "speech" (a tone at speaking level)
or "clipped" (a tone driven past full scale).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]

GREEN = (40, 177, 64)  # a chroma-key green
ROOM = (128, 110, 92)  # a beige wall
RATE = 8_000


def face(height: int) -> Image:
    """The astronaut's face, `height` pixels tall (the face detector's box is about half
    of it)."""
    from skimage import data

    photo = data.astronaut()[20:220, 135:315]  # her face, centred
    return _resize(photo, height)


def scene(width: int, height: int, *, background: tuple[int, int, int] | Image = GREEN,
          faces: tuple[tuple[float, float, float], ...] = ((0.5, 0.5, 0.8),),
          brightness: float = 1.0, blur: int = 0) -> Image:
    """A frame: `background` (a colour or a picture) with a face at each (x, y, height), x
    and y the centre as fractions of the frame, height a fraction of the frame's height."""
    if isinstance(background, tuple):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = background
    else:
        frame = _resize(background, height)[:, :width].copy()
    for x, y, size in faces:
        head = face(max(8, int(height * size)))
        top = int(y * height - head.shape[0] / 2)
        left = int(x * width - head.shape[1] / 2)
        frame[max(top, 0):top + head.shape[0], max(left, 0):left + head.shape[1]] = \
            head[max(-top, 0):height - top, max(-left, 0):width - left]
    if blur:
        import cv2

        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    if brightness != 1.0:
        frame = np.clip(frame.astype(np.float32) * brightness, 0, 255).astype(np.uint8)
    return frame


def real_room(width: int, height: int) -> Image:
    """A real-scene background: a textured wall with a window, nothing green."""
    rng = np.random.default_rng(3)
    wall = np.empty((height, width, 3), np.uint8)
    wall[:] = ROOM
    wall = np.clip(wall + rng.integers(-20, 20, (height, width, 1)), 0, 255).astype(np.uint8)
    wall[height // 8:height // 2, width // 16:width // 4] = (200, 215, 235)
    return wall


def write_video(path: Path, picture: Image, seconds: float, *, fps: int | Fraction = 1,
                sound: list[tuple[float, str]] | None = None, codec: str = "libx264") -> Path:
    """An mp4 of `picture` held for `seconds`, with `sound` (None: no audio track); `fps`
    may be a fraction (a frame every 10 s: a 3-minute video in 18 frames)."""
    height, width = picture.shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "g": "250"}
        audio = None
        if sound is not None:
            audio = out.add_stream("aac", rate=RATE)
            audio.layout = "mono"
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        for index in range(round(seconds * fps)):
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None and sound is not None:
            _write_sound(out, audio, sound)
    return path


def samples(sound: list[tuple[float, str]]) -> NDArray[np.float32]:
    """The sound's samples at RATE, mono, float in [-1, 1]."""
    pieces = []
    for seconds, kind in sound:
        count = round(seconds * RATE)
        t = np.arange(count) / RATE
        if kind == "silence":
            pieces.append(np.zeros(count))
        elif kind == "speech":  # about -12 dBFS, wavering like a voice
            pieces.append(0.35 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(3 * t)))
        elif kind == "clipped":
            pieces.append(np.clip(3.0 * np.sin(2 * np.pi * 220 * t), -1, 1))
        else:
            raise ValueError(kind)
    return np.concatenate(pieces).astype(np.float32)


def _write_sound(out: av.container.OutputContainer, audio: av.audio.stream.AudioStream,
                 sound: list[tuple[float, str]]) -> None:
    wave = samples(sound)
    step = 1024
    for start in range(0, len(wave), step):
        chunk = wave[start:start + step]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = RATE
        frame.pts = start
        out.mux(audio.encode(frame))
    out.mux(audio.encode(None))


def write_image(path: Path, picture: Image) -> Path:
    from PIL import Image as PILImage

    PILImage.fromarray(picture).save(path, quality=90)
    return path


def _resize(picture: Image, height: int) -> Image:
    import cv2

    width = max(1, round(picture.shape[1] * height / picture.shape[0]))
    return np.asarray(cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA))
