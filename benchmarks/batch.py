"""Measure `uploader batch` against `uploader emulator` on loopback and print its figures.

    python benchmarks/batch.py           # 16 x 64 MiB, 16 and 256 videos, --bwlimit 32M
    python benchmarks/batch.py --smoke   # the same steps on tiny files, seconds

(g) wall time of `uploader batch --files 4 --concurrency 16` over 16 videos of 64 MiB, against
curl putting the same 512 pre-split parts 16 at a time; (h) peak RSS of the batch process
for 16 and for 256 videos; (i) the rate `--bwlimit 32M` lets through. Helpers (the emulator
subprocess, peak memory) are run.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import MIB, Table, _default_workdir, emulator, measure, video

from uploader import MetaStudioClient, Settings


def manifest(folder: Path, videos: list[Path], parts: int, tag: str) -> Path:
    path = folder / f"{tag}.csv"
    path.write_text("path,name,parts\n" + "".join(f"{v},{tag}-{n},{parts}\n"
                                                  for n, v in enumerate(videos)))
    return path


def copies(folder: Path, count: int, size: int, tag: str) -> list[Path]:
    """`count` videos of `size` bytes with different content (the last bytes differ)."""
    source = video(folder, size)
    made = []
    for n in range(count):
        target = folder / f"{tag}-{n}.mp4"
        shutil.copyfile(source, target)
        with target.open("r+b") as handle:
            handle.seek(size - 8)
            handle.write(n.to_bytes(8, "big"))
        made.append(target)
    return made


def batch(env: dict[str, str], rows: Path, folder: Path, *args: str, log: Path | None = None,
          rules: bool = False) -> tuple[float, int, dict[str, Any]]:
    """Wall seconds, peak RSS and the summary of one `uploader batch` run (with `log`, its
    debug log goes there; with `rules`, the content rules on)."""
    debug = ["--debug"] if log is not None else []
    command = [sys.executable, "-m", "uploader", *debug, "batch", str(rows), "--json",
               "--quiet", "--state-dir", str(folder / "state"), *args]
    # The transfer's figures: the content rules are a cost per video (decoding, faces), shown
    # on their own row; curl has none.
    run = measure(command, env | ({} if rules else {"UPLOADER_CONTENT_CHECKS": "0"}), log=log)
    return run.wall, run.max_rss, run.result


def curl_parts(env: dict[str, str], videos: list[Path], folder: Path, parts: int,
               parallel: int) -> float:
    """Wall seconds for curl to PUT every video's pre-split parts, `parallel` at a time."""
    async def links() -> list[list[str]]:
        async with MetaStudioClient(Settings.from_env(env)) as client:
            return [(await client.create_job(f"curl-{n}", video_multipart_count=parts)
                     ).training_video_upload_url for n in range(len(videos))]

    pieces = folder / "pieces"
    pieces.mkdir(exist_ok=True)
    lines = []
    for clip, urls in zip(videos, asyncio.run(links()), strict=True):
        size = clip.stat().st_size
        part = -(-size // parts)
        with clip.open("rb") as source:
            for number, url in enumerate(urls):
                piece = pieces / f"{clip.stem}-{number:04d}"
                piece.write_bytes(source.read(part))
                lines.append(f"-T {piece} {url}\n")
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-L", "1", "curl", "-sS", "-f", "-o",
                    "/dev/null", "-H", "Content-Type: application/octet-stream"],
                   input="".join(lines), text=True, check=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(pieces)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--workdir", type=Path, default=_default_workdir())
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="uploader-batch-", dir=options.workdir))
    size = 4 * MIB if options.smoke else 64 * MIB
    table = Table()
    try:
        with emulator(folder) as env:
            count = 8 if options.smoke else 16  # the smoke run only proves the step works
            videos = copies(folder, count, size, "g")
            curl = curl_parts(env, videos, folder, 32, parallel=16)
            wall, peak, summary = batch(env, manifest(folder, videos, 32, "g"), folder,
                                        "--files", "4", "--concurrency", "16")
            assert summary["ok"] == count, summary
            table.add(f"(g) {count} x {size / MIB:.0f} MiB: curl, {32 * count} parts x16",
                      f"{curl:.2f} s")
            table.add("(g) uploader batch --files 4 --concurrency 16 (process wall)",
                      f"{wall:.2f} s ({wall / curl:.2f} x curl)", "<= 1.15 x curl")
            table.add(f"(h) batch peak RSS, {count} videos", f"{peak / MIB:.1f} MiB",
                      "<= 150 MiB")
            wall_rules, peak_rules, again = batch(env, manifest(folder, videos, 32, "g2"), folder,
                                              "--files", "4", "--concurrency", "16",
                                              rules=True)
            table.add("(g) the same videos again, the content rules on: wall / peak RSS",
                      f"{wall_rules:.2f} s / {peak_rules / MIB:.1f} MiB "
                      f"({int(again['bytes_uploaded']) / MIB:.0f} MiB sent)")
            for path in videos:
                path.unlink()
        small = MIB if options.smoke else 4 * MIB
        most = 24 if options.smoke else 256
        with emulator(folder) as env:
            many = copies(folder, most, small, "h")
            for count in (16, most):
                _, peak, summary = batch(env, manifest(folder, many[:count], 1, f"h{count}"),
                                         folder, "--files", "4", "--concurrency", "16")
                assert summary["ok"] == count, summary
                table.add(f"(h) batch peak RSS, {count} videos of {small / MIB:.0f} MiB",
                          f"{peak / MIB:.1f} MiB", "<= 150 MiB, flat")
            for path in many:
                path.unlink()
        with emulator(folder) as env:
            capped = copies(folder, 4 if options.smoke else 8,
                            32 * MIB if not options.smoke else 2 * MIB, "i")
            log = folder / "debug.log"
            _, _, summary = batch(env, manifest(folder, capped, 4, "i"), folder,
                                  "--bwlimit", "32M", log=log)
            rate = summary["bytes_uploaded"] / MIB / summary["seconds"]
            calls = sum(" uploader.api: " in line for line in log.read_text().splitlines())
            table.add("(i) --bwlimit 32M: rate over the batch (its own clock)",
                      f"{rate:.1f} MiB/s ({rate / 32:.2f} of the cap)", "0.95-1.00")
            table.add("(i) API calls per video (create or look-up, links, list, confirm...)",
                      f"{calls / len(capped):.1f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
