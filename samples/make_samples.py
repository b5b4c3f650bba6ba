"""Regenerate the sample videos and documents, or grow a video to a given size.

    python samples/make_samples.py                 # rewrite every sample in samples/
    python samples/make_samples.py documents       # only the ID images and the letter
    python samples/make_samples.py grow SRC DST SIZE   # copy SRC to DST padded to SIZE bytes
    python samples/make_samples.py voice DIR       # 20 sentences (0.wav, 0.txt, ...) in DIR

Needs imageio-ffmpeg (its wheel carries an ffmpeg binary) and scikit-image (its public-domain
`astronaut` photo is the face), both in the dev extra. Each valid sample is a still picture
at 1 frame a second, a face on a green screen, with a sound track that keeps the recording
guide (16 s of silence, a 2-second burst of a tone every minute, 4 s of silence): the
review's content rules pass it, and it compresses to about 120 KB. The invalid ones are a
still colour. Growing appends a top-level mp4 `free` box of random bytes: players and
mediainfo skip it, so the grown file is still a valid video with the same duration and
resolution.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

_H264 = ["-c:v", "libx264", "-preset", "veryslow", "-tune", "stillimage", "-crf", "40"]
_HEVC = ["-c:v", "libx265", "-tag:v", "hvc1", "-crf", "38", "-x265-params", "log-level=error"]
_FASTSTART = ["-movflags", "+faststart"]

# name: (width, height, seconds, frames a second, codec and muxer options, a face on green?)
SAMPLES: dict[str, tuple[int, int, float, int, list[str], bool]] = {
    "landscape_1080p.mp4": (1920, 1080, 200, 1, _H264 + _FASTSTART, True),
    "portrait_1080p.mp4": (1080, 1920, 200, 1, _H264 + _FASTSTART, True),
    "landscape_4k.mp4": (3840, 2160, 200, 1, _H264 + _FASTSTART, True),
    "portrait_4k_hevc.mp4": (2160, 3840, 200, 1, _HEVC + _FASTSTART, True),
    "boundary_180s.mp4": (1920, 1080, 180, 1, _H264 + _FASTSTART, True),
    "boundary_600s.mp4": (1920, 1080, 600, 1, _H264 + _FASTSTART, True),
    "moov_at_end.mp4": (1920, 1080, 200, 1, _H264, True),
    "too_short.mp4": (1920, 1080, 179.5, 2, _H264 + _FASTSTART, False),
    "too_long.mp4": (1920, 1080, 600.5, 2, _H264 + _FASTSTART, False),
    "wrong_resolution.mp4": (1280, 720, 200, 1, _H264 + _FASTSTART, False),
}
GREEN = (40, 177, 64)
#: Speech-like: a 220 Hz tone at about -12 dBFS, wavering, for 2 s of every 60 from 16 s on,
#: until 4 s before the end (bursts, not a constant tone: the sound track stays small, and
#: the tests that pace links to a crawl stay quick).
_VOICE = ("if(between(t\\,16\\,{end})*lt(mod(t-16\\,60)\\,2)\\,"
          "0.35*sin(2*PI*220*t)*(0.6+0.4*sin(3*t))\\,0)")


def ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def encode(target: Path, width: int, height: int, seconds: float, fps: int,
           options: list[str], face: bool) -> None:
    """A still video of exactly `seconds` at `fps` frames a second with a sound track (the
    review trains the voice from the video's sound: API.md §4): a face on a green screen
    and a spoken middle, or (`face` False) a still colour and silence. AAC at 32 kHz: 1024
    samples a frame, so that 180, 200 and 600 s are whole frames and the sound lasts
    exactly as long as the picture."""
    if face:
        still = target.with_suffix(".png")
        still_picture(width, height).save(still)
        picture = ["-loop", "1", "-framerate", str(fps), "-i", str(still)]
        voice = _VOICE.format(end=f"{seconds - 4:g}")
        sound = ["-f", "lavfi", "-i", f"aevalsrc={voice}:s=32000:c=mono"]
    else:
        picture = ["-f", "lavfi", "-i", f"color=c=0x3060a0:s={width}x{height}:r={fps}"]
        sound = ["-f", "lavfi", "-i", "anullsrc=r=32000:cl=mono"]
    try:
        run([ffmpeg(), *picture, *sound, "-t", f"{seconds:g}",
             "-frames:v", str(round(seconds * fps)), "-g", "1000", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "8k", *options, str(target)])
    finally:
        if face:
            still.unlink()


def still_picture(width: int, height: int) -> Any:
    """A face (scikit-image's astronaut) centred on a chroma-key green, its box about 2/5
    of the frame's shorter side: the content rules' face, green screen and framing pass."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()[20:220, 135:315])
    tall = int(min(width, height) * 0.8)
    photo = photo.resize((round(photo.width * tall / photo.height), tall), Image.LANCZOS)
    frame = Image.new("RGB", (width, height), GREEN)
    frame.paste(photo, ((width - photo.width) // 2, (height - photo.height) // 2))
    return frame


def run(command: list[str]) -> None:
    subprocess.run([command[0], "-hide_banner", "-loglevel", "error", "-y", *command[1:]],
                   check=True)


def make_documents() -> None:
    """Stand-ins for the job's other files, each marked as a sample: both sides of an ID
    card (JPEG, the portrait side with a face from scikit-image) and a signed authorization
    letter (PDF), a few KB each."""
    from PIL import Image, ImageDraw

    def page(size: tuple[int, int], colour: str, lines: list[str]) -> Image.Image:
        image = Image.new("RGB", size, colour)
        draw = ImageDraw.Draw(image)
        for row, text in enumerate(lines):
            draw.text((24, 24 + 20 * row), text, fill="black")
        return image

    note = "SAMPLE - NOT A REAL DOCUMENT (uploader test data)"
    front = page((640, 400), "#e8eef6", ["ID CARD - portrait side", note])
    front.paste(_card_photo(), (430, 90))
    front.save(HERE / "id_card_front.jpg", quality=70)
    page((640, 400), "#f6eee8", ["ID CARD - national emblem side", note]).save(
        HERE / "id_card_back.jpg", quality=70)
    page((595, 842), "white", ["AUTHORIZATION LETTER", note, "", "Signed: Sample Person"]).save(
        HERE / "grant_letter.pdf")


def _card_photo() -> Any:
    """The card's photo: the astronaut's face (scikit-image), 170x190 pixels."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut()[0:240, 130:345]).resize((170, 190), Image.LANCZOS)


def make_all() -> None:
    make_documents()
    for name, (width, height, seconds, fps, options, face) in SAMPLES.items():
        encode(HERE / name, width, height, seconds, fps, options, face)
    # Stored landscape, displayed portrait: a 90-degree display matrix on a picture stored
    # turned the other way, so that it displays upright.
    stored = HERE / "stored_sideways.mp4"
    run([ffmpeg(), "-i", str(HERE / "portrait_1080p.mp4"), "-vf", "transpose=clock",
         *_H264, "-c:a", "copy", str(stored)])
    run([ffmpeg(), "-display_rotation", "90", "-i", str(stored), "-c", "copy",
         *_FASTSTART, str(HERE / "rotated_1080p.mp4")])
    stored.unlink()
    # A Matroska file whose name claims mp4.
    run([ffmpeg(), "-i", str(HERE / "landscape_1080p.mp4"), "-c", "copy", "-f", "matroska",
         str(HERE / "matroska_named.mp4")])
    # Three rules broken at once: Matroska, 1280x720, 100 s.
    run([ffmpeg(), "-i", str(HERE / "wrong_resolution.mp4"), "-t", "100", "-c", "copy",
         "-f", "matroska", str(HERE / "three_problems.mp4")])
    # A picture and no sound.
    run([ffmpeg(), "-i", str(HERE / "landscape_1080p.mp4"), "-an", "-c", "copy",
         str(HERE / "no_audio.mp4")])
    # Sound and no picture.
    run([ffmpeg(), "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "200",
         "-c:a", "aac", "-b:a", "8k", str(HERE / "audio_only.mp4")])


def make_voice(folder: Path, count: int = 20, seconds: float = 6.0) -> None:
    """Stand-in recordings for a basic voice job: `count` sentences of a tone,
    48 kHz mono 16-bit WAV (the guide's format), each with a Chinese text. Standard library
    only; the emulator cannot hear that the tone says nothing."""
    import math
    import wave

    folder.mkdir(parents=True, exist_ok=True)
    rate = 48_000
    cycle = b"".join(int(8000 * math.sin(2 * math.pi * t / 200)).to_bytes(2, "little", signed=True)
                     for t in range(200))  # 240 Hz at 48 kHz
    samples = round(seconds * rate)
    one = (cycle * (samples // 200 + 1))[:samples * 2]
    for index in range(count):
        with wave.open(str(folder / f"{index}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(one)
        (folder / f"{index}.txt").write_text(f"这是第{index + 1}句示例录音的文本", encoding="utf-8")


def grow(source: Path, target: Path, size: int) -> None:
    """Copy `source` to `target` and pad it with a `free` box up to `size` bytes."""
    base = source.stat().st_size
    padding = size - base
    if padding < 16:
        raise SystemExit(f"{size} bytes is not enough: {source} is {base} bytes already")
    with source.open("rb") as src, target.open("wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
        body = padding - 16  # 64-bit box header: size 1, type, then the real size
        out.write(struct.pack(">I4sQ", 1, b"free", padding))
        while body:
            step = min(body, 8 << 20)
            out.write(os.urandom(step))
            body -= step


if __name__ == "__main__":
    if sys.argv[1:2] == ["grow"] and len(sys.argv) == 5:
        grow(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["voice"] and len(sys.argv) == 3:
        make_voice(Path(sys.argv[2]))
    elif sys.argv[1:] == ["documents"]:
        make_documents()
    elif len(sys.argv) == 1:
        make_all()
    else:
        raise SystemExit(__doc__)
