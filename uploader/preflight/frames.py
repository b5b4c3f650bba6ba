"""What the content rules look at: a few key frames of a video, small, and its sound's levels.

Decoded with PyAV (FFmpeg's decoders, in its wheel). Only key frames are decoded
(`skip_frame` NONKEY), one after each of a few evenly spaced seeks, and scaled down by
FFmpeg's scaler as they are converted: a 10-minute 4K video costs a handful of frames, not
15,000. The sound is decoded in windows: the opening, the ending, and a few spread between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

__all__ = ["FRAMES", "Frame", "Sound", "read_frames", "read_sound"]

#: Frames sampled along a video: enough that a face turned away or a passing shadow in one
#: does not decide, few enough that a 4K HEVC video is read in seconds.
FRAMES = 8
#: The sampled frames' longer side, in pixels: a face of 1/5 of the frame is 128 pixels wide
#: at this size, well above the face detector's 24-pixel window.
LONG_SIDE = 640
#: The sound's level is measured over blocks of this many seconds.
BLOCK = 0.1
#: The opening read in full (the guide asks for 15-20 s of silence) and the ending (3 s).
OPENING = 20.0
ENDING = 6.0
#: Windows of sound sampled between them, each this long.
WINDOWS, WINDOW = 6, 4.0
#: A sample at or above this (of full scale) counts as clipped: a lossy codec (AAC) rings
#: around a flattened peak, so the samples of a clipped wave scatter around 0.9-1.0 rather
#: than sit at 1.0; clean speech peaks well below it.
FULL_SCALE = 0.95


@dataclass(frozen=True)
class Frame:
    """One sampled frame, as displayed (the rotation tag applied): BGR pixels."""

    at: float  #: seconds into the video
    pixels: NDArray[np.uint8]


@dataclass(frozen=True)
class Sound:
    """The sound's level in BLOCK-second blocks (dBFS, RMS of the loudest channel) in each
    window read, and the share of samples at full scale."""

    duration: float
    opening: NDArray[np.float64]  #: the blocks of the first OPENING seconds
    ending: NDArray[np.float64]  #: the blocks of the last ENDING seconds
    middle: NDArray[np.float64]  #: the blocks of the windows between
    clipped: float  #: share of the samples read at FULL_SCALE or above


def read_frames(path: Path, rotation: int = 0, count: int = FRAMES) -> list[Frame]:
    """`count` key frames spread along the video, scaled to LONG_SIDE, turned by the
    display rotation `rotation` (degrees, as mediainfo reads the tag)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # Slice threads: frame threads would decode several key frames ahead of the one
        # asked for, each thrown away by the next seek (a third slower at 4K HEVC).
        stream.thread_type = "SLICE"
        stream.codec_context.skip_frame = "NONKEY"
        duration = _duration(container, stream)
        width, height = _scaled(stream.codec_context.width, stream.codec_context.height)
        frames: list[Frame] = []
        time_base = stream.time_base or Fraction(1, av.time_base)
        for index in range(count):
            target = duration * (index + 0.5) / count
            container.seek(int(target / time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                pixels = np.asarray(frame.to_ndarray(width=width, height=height,
                                                     format="bgr24"), np.uint8)
                at = float(frame.time) if frame.time is not None else target
                frames.append(Frame(at, _turned(pixels, rotation)))
                break
    return frames


def read_sound(path: Path) -> Sound | None:
    """The sound's levels, or None where the file has no sound track."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        duration = _duration(container, stream)
        ending_at = max(0.0, duration - ENDING)
        spread = [OPENING + (ending_at - OPENING) * (i + 0.5) / WINDOWS for i in range(WINDOWS)]
        opening, clipped_a, total_a = _levels(container, stream, 0.0, min(OPENING, duration))
        ending, clipped_b, total_b = _levels(container, stream, ending_at, duration)
        middle: list[NDArray[np.float64]] = []
        clipped, total = clipped_a + clipped_b, total_a + total_b
        for start in spread if ending_at > OPENING + WINDOW else []:
            levels, hits, count = _levels(container, stream, start, start + WINDOW)
            middle.append(levels)
            clipped, total = clipped + hits, total + count
    return Sound(duration, opening, ending,
                 np.concatenate(middle) if middle else np.empty(0), clipped / max(total, 1))


def _levels(container: Any, stream: Any, start: float, end: float
            ) -> tuple[NDArray[np.float64], int, int]:
    """Levels of [start, end) in blocks, and the full-scale and total sample counts."""
    container.seek(int(start / stream.time_base), stream=stream, backward=True)
    resampler = av.AudioResampler(format="fltp")
    rate = stream.codec_context.sample_rate or 48_000
    pieces: list[NDArray[np.float32]] = []
    for frame in container.decode(stream):
        at = float(frame.time) if frame.time is not None else start
        if at >= end:
            break
        for plain in resampler.resample(frame):
            samples = np.asarray(plain.to_ndarray(), np.float32)
            skip = max(0, round((start - at) * rate))
            keep = max(0, round((end - at) * rate))
            if skip < samples.shape[1]:
                pieces.append(samples[:, skip:keep])
    if not pieces:
        return np.empty(0), 0, 0
    samples = np.concatenate(pieces, axis=1)
    block = max(1, round(BLOCK * rate))
    usable = samples.shape[1] // block * block
    blocks = samples[:, :usable].reshape(samples.shape[0], -1, block).astype(np.float64)
    rms = np.sqrt(np.mean(blocks**2, axis=2)).max(axis=0)
    levels = 20 * np.log10(np.maximum(rms, 1e-10))
    clipped = int(np.count_nonzero(np.abs(samples) >= FULL_SCALE))
    return levels, clipped, int(samples.size)


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return 0.0


def _scaled(width: int, height: int) -> tuple[int, int]:
    """The frame's size with its longer side LONG_SIDE (even sides, for the scaler)."""
    scale = LONG_SIDE / max(width, height, 1)
    return max(2, math.floor(width * scale / 2) * 2), max(2, math.floor(height * scale / 2) * 2)


def _turned(pixels: NDArray[np.uint8], rotation: int) -> NDArray[np.uint8]:
    """The frame as displayed: mediainfo gives the tag's rotation clockwise (a phone's
    portrait video stored landscape reads 90), numpy's rot90 turns counter-clockwise."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, -turns)) if turns else pixels
