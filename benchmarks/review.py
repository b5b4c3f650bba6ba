"""The review's content rules: how long `uploader check` takes, and what they cost an upload.

    python benchmarks/review.py           # 10-minute videos, 1080p H.264 and 4K HEVC at
                                          # 100 Mb/s (7.5 GB on disk), several minutes
    python benchmarks/review.py --smoke   # 6-second videos, small: the steps only

(r1) `uploader check` of a 10-minute 1080p H.264 video at 25 fps (target: 4 s wall) and
(r2) of a 10-minute 4K HEVC video at 100 Mb/s (target: 12 s), min-median-max of 3, with the
process's peak RSS (target: 300 MiB). A real encode of 10 minutes would take an hour here:
each video is a few seconds of noisy, moving picture encoded once (GOP of 2 s, as cameras
do) and repeated by stream copy to length, which the decoder cannot tell from a real one.
(r3) `uploader upload --submit` of a video whose transfer outlasts the analysis (a link of
`--link-rate`), with the content rules against `--no-content-checks` (target: at most 1.1x):
the analysis runs beside the transfer.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import MIB, Table, _watch_peak, emulator, upload

from samples.make_samples import ffmpeg, still_picture

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def segment(path: Path, width: int, height: int, seconds: float, codec: str,
            bit_rate: int) -> Path:
    """A few seconds of a face on green with moving noise (so the encoder must spend its
    bits), 25 fps, a key frame every 2 s, AAC sound with a silent opening."""
    base = np.asarray(still_picture(width, height))
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = bit_rate
        video.options = ({"preset": "ultrafast", "x265-params": "log-level=error:keyint=50"}
                         if codec == "libx265" else {"preset": "ultrafast", "g": "50"})
        audio = out.add_stream("aac", rate=48_000)
        audio.layout = "mono"
        noise = rng.integers(-24, 24, (height, width, 1), dtype=np.int16)
        for index in range(round(seconds * 25)):
            shifted = np.roll(noise, index * 7, axis=1)
            picture = np.clip(base + shifted, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = np.arange(round(seconds * 48_000)) / 48_000
        wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[start:start + 1024].reshape(1, -1),
                                               format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48_000, start
            out.mux(audio.encode(chunk))
        out.mux(audio.encode(None))
    return path


def repeated(source: Path, target: Path, seconds: float) -> Path:
    """`source` played over and over to `seconds`, by ffmpeg's stream copy (imageio-ffmpeg,
    a dev dependency, carries the binary)."""
    with av.open(str(source)) as first:
        turns = round(seconds / (float(first.duration or 0) / av.time_base))
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-stream_loop",
                    str(turns - 1), "-i", str(source), "-c", "copy", str(target)], check=True)
    return target


def timed_check(path: Path, runs: int = 3) -> tuple[list[float], int]:
    """Wall seconds of `uploader check PATH` `runs` times, and the highest peak RSS."""
    walls, peak = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "uploader", "check", str(path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        high = [0]
        _watch_peak(process.pid, high)
        process.wait()
        walls.append(time.perf_counter() - started)
        peak = max(peak, high[0])
        if process.returncode not in (0, 3):
            raise SystemExit(f"check failed: {process.stderr.read() if process.stderr else ''}")
    return walls, peak


def spread(walls: list[float]) -> str:
    return f"{min(walls):.2f} / {statistics.median(walls):.2f} / {max(walls):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1-minute videos, for CI")
    parser.add_argument("--workdir", type=Path, default=None)
    given = parser.parse_args()
    seconds = 6.0 if given.smoke else 600.0
    # The smoke run only proves the steps work: small pictures, a short video.
    sizes = (((640, 360), 1_000_000), ((1280, 720), 4_000_000)) if given.smoke else \
        (((1920, 1080), 8_000_000), ((3840, 2160), 100_000_000))
    table = Table()
    with tempfile.TemporaryDirectory(dir=given.workdir) as work:
        folder = Path(work)
        for (label, codec, target), (size, rate) in zip(
                (("r1 check, 1080p H.264", "libx264", "4 s"),
                 ("r2 check, 4K HEVC 100 Mb/s", "libx265", "12 s")), sizes, strict=True):
            part = segment(folder / "segment.mp4", *size, 1.0 if given.smoke else 4.0,
                           codec, rate)
            video = repeated(part, folder / "long.mp4", seconds)
            walls, peak = timed_check(video, 1 if given.smoke else 3)
            gib = video.stat().st_size / 2**30
            table.add(f"{label}, {seconds / 60:g} min ({gib:.2f} GiB): min / median / max",
                      spread(walls), target)
            table.add(f"{label}: peak RSS", f"{peak / MIB:.0f} MiB", "300 MiB")
            video.unlink()
            part.unlink()
        bench_overlap(table, folder, smoke=given.smoke)
    table.print()


def bench_overlap(table: Table, folder: Path, *, smoke: bool) -> None:
    """(r3) An upload whose transfer outlasts the analysis, with and without the rules."""
    video = SAMPLES / ("landscape_1080p.mp4" if smoke else "landscape_4k.mp4")
    rate = str(256 * 1024 if smoke else 48 * 1024)  # bytes a second: 1 s / 11 s for the sample
    times = {}
    for label, flags in (("with", ()), ("without", ("--no-content-checks",))):
        walls = []
        for turn in range(1 if smoke else 3):
            with emulator(folder, "--link-rate", rate) as env:
                run = upload(env, video, folder / f"{label}{turn}", "--submit", *flags,
                             *_documents())
                walls.append(run.wall)
        times[label] = statistics.median(walls)
    table.add("r3 upload --submit, a slow link: with / without the content rules",
              f"{times['with']:.2f} / {times['without']:.2f} s = "
              f"{times['with'] / times['without']:.3f}x", "1.1x")


def _documents() -> tuple[str, ...]:
    return ("--id-card-front", str(SAMPLES / "id_card_front.jpg"),
            "--id-card-back", str(SAMPLES / "id_card_back.jpg"),
            "--grant-file", str(SAMPLES / "grant_letter.pdf"))


if __name__ == "__main__":
    main()
