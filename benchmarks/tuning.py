"""`--concurrency auto` against the best fixed value a sweep finds, on three links.

    python benchmarks/tuning.py            # about 10 minutes
    python benchmarks/tuning.py --smoke    # tiny sizes, seconds

The links, built by the emulator (in this process, so that it can count the connections):
slow connections (2 MiB/s each, no total cap: the more the better, up to 64), a narrow link
(16 MiB/s each, 32 MiB/s in all: two fill it) and plain loopback (the CPUs are the limit).
For each, a sweep of fixed values from 64 down (stopping once a value takes over twice the
best time seen), then three interleaved rounds of the best fixed value and of auto. Times
are the upload's own clock (`seconds` of `--json`: the transfer, not the process start),
under the default plan (its part size follows the file's size), with the content rules off
(`--content-rules` turns them on: a second of decoding beside the transfer, on the cores the
emulator and the climb share here); the most parts the emulator served at once shows auto
never goes past its bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import GIB, MIB, _default_workdir, measure, upload_command  # noqa: E402

from samples.make_samples import grow  # noqa: E402
from uploader import MetaStudioClient, Settings  # noqa: E402
from uploader.emulator import EmulatorConfig, EmulatorThread, RunningEmulator  # noqa: E402
from uploader.transfer.plan import plan_parts  # noqa: E402

SOURCE = ROOT / "samples" / "landscape_1080p.mp4"

#: name: (per-connection bytes a second, total bytes a second, file size)
SCENARIOS: dict[str, tuple[int | None, int | None, int]] = {
    "slow connections: 2 MiB/s each, no total cap": (2 * MIB, None, 1 * GIB),
    "narrow link: 16 MiB/s each, 32 MiB/s in all": (16 * MIB, 32 * MIB, 256 * MIB),
    "loopback, no cap": (None, None, 1 * GIB),
}
SWEEP = (64, 32, 16, 8, 4, 2, 1)


#: Flags every upload of the benchmark gets (main() may add the content rules' switch).
FLAGS: list[str] = ["--no-content-checks"]


def run_once(env: dict[str, str], video: Path, folder: Path, concurrency: str,
             emulator: RunningEmulator, part: int | None) -> tuple[float, int]:
    """One upload under a new name; its own seconds, and the most parts served at once.
    `part` None: the default plan."""
    faults = emulator.emulator.faults
    faults.most_in_flight = 0
    name = f"tuning-{concurrency}-{os.urandom(4).hex()}"
    plan = () if part is None else ("--part-size", str(part))
    command = upload_command(video, folder, *plan, *FLAGS, "--concurrency", concurrency,
                             "--restart")
    command[command.index("bench")] = name
    run = measure(command, env)
    _delete(env, str(run.result["job_id"]))  # its copy of the video: /dev/shm is memory
    return run.seconds, faults.most_in_flight


def _delete(env: dict[str, str], job_id: str) -> None:
    async def delete() -> None:
        async with MetaStudioClient(Settings.from_env(env)) as client:
            await client.delete_job(job_id)

    asyncio.run(delete())


def scenario(title: str, link: int | None, total: int | None, size: int, folder: Path,
             rounds: int, sweep: tuple[int, ...], part: int | None) -> None:
    video = folder / "video.mp4"
    grow(SOURCE, video, size)
    data = Path(tempfile.mkdtemp(dir=folder, prefix="emulator-"))
    config = EmulatorConfig(data_dir=data, review_delay=0.0, link_rate=link, total_rate=total)
    with EmulatorThread(config) as running:
        env = os.environ | running.client_env()
        parts = plan_parts(size, part_size=part)
        print(f"\n{title}: {size / MIB:.0f} MiB in {parts.count} parts of "
              f"{parts.sizes[0] / MIB:.1f} MiB", flush=True)
        swept: dict[int, float] = {}
        for value in sweep:
            seconds, _ = run_once(env, video, folder, str(value), running, part)
            swept[value] = seconds
            print(f"  fixed {value:>2}: {seconds:6.2f} s", flush=True)
            if seconds > 2 * min(swept.values()):
                break  # fewer would only be slower still
        best = min(swept, key=lambda value: swept[value])
        fixed, auto, widest = [], [], 0
        for _ in range(rounds):
            fixed.append(run_once(env, video, folder, str(best), running, part)[0])
            seconds, most = run_once(env, video, folder, "auto", running, part)
            auto.append(seconds)
            widest = max(widest, most)
        ratio = statistics.median(auto) / statistics.median(fixed)
        print(f"  best fixed ({best}): {_spread(fixed)}; auto: {_spread(auto)}; auto / best "
              f"(medians) = {ratio:.2f}; auto's most parts at once: {widest} (bound 64)",
              flush=True)
    video.unlink()


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"{ordered[0]:.2f}-{statistics.median(ordered):.2f}-{ordered[-1]:.2f} s "
            f"(min-median-max of {len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--workdir", type=Path, default=_default_workdir(),
                        help="where the test files and the emulator's data go")
    parser.add_argument("--only", default="", help="only the links whose title has this "
                        "word (slow, narrow, loopback)")
    parser.add_argument("--sizes", default="", help="file sizes in MiB to run each link at, "
                        "comma-separated (default: each link's own: 1024, 256, 1024)")
    parser.add_argument("--sweep", default=",".join(map(str, SWEEP)),
                        help="the fixed values to try, comma-separated (default: %(default)s)")
    parser.add_argument("--content-rules", action="store_true",
                        help="run the content rules beside each upload, as by default")
    args = parser.parse_args()
    if args.content_rules:
        FLAGS.clear()
    load = os.getloadavg()
    print(f"concurrency auto vs the best fixed value; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="uploader-tuning-") as work:
        for title, (link, total, size) in SCENARIOS.items():
            if args.only not in title:
                continue
            sizes = [4 * MIB] if args.smoke else (
                [int(mib) * MIB for mib in args.sizes.split(",")] if args.sizes else [size])
            for each in sizes:
                scenario(title, link, total, each, Path(work), 1 if args.smoke else 3,
                         (8,) if args.smoke else tuple(map(int, args.sweep.split(","))),
                         MIB if args.smoke else None)


if __name__ == "__main__":
    main()
