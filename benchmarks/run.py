"""Measure uploader against `uploader emulator` on loopback and print a table of figures.

    python benchmarks/run.py            # the full run: up to 4 GiB files, several minutes
    python benchmarks/run.py --smoke    # the same steps on 16 MiB files, seconds (CI runs it)

Every figure comes from a real run of the `uploader` command in a subprocess against an
emulator in another subprocess; CPU and peak memory are the uploader process's own, read
from wait4(2). The baseline is curl, 8 at a time through xargs. See the README's
"Performance" section for what each row means and the figures of a reference run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import (  # noqa: E402
    GIB,
    MIB,
    Table,
    _default_workdir,
    certificates,
    cpu_seconds,
    curl_baseline,
    emulator,
    emulator_process,
    md5_seconds_per_gib,
    measure,
    newest_job,
    start_upload,
    stored_parts,
    upload,
    upload_command,
    video,
)

from uploader import check_video  # noqa: E402
from uploader.transfer.hashing import kernel_name  # noqa: E402
from uploader.transfer.plan import PartPlan, Piece, at_risk, plan_parts  # noqa: E402
from uploader.transfer.reading import pieces_md5  # noqa: E402

LINK = 8 * MIB


def bench_speed(table: Table, folder: Path, size: int, *, pinned: bool = True,
                tls: bool = False) -> None:
    """(a) uploader vs curl, (b) CPU per GiB: with all cores shared by client and emulator,
    then (on 2+ cores) with the emulator on core 0 and the client, curl or uploader, on
    core 1, as when the storage's CPU is not the client's. Over https with `tls` (the
    emulator with a certificate of the benchmark's own CA; the client and curl trusting
    it): the client encrypts every byte, as it does against the real service."""
    clip = video(folder, size)
    label = f"{size / MIB:.0f} MiB"
    scheme = "https" if tls else "http"
    placements: list[tuple[str, set[int] | None, set[int] | None]] = [("shared cores", None,
                                                                       None)]
    if pinned and (os.cpu_count() or 1) >= 2:
        placements.append(("emulator on its own core", {0}, {1}))
    _, lanes = md5_seconds_per_gib()
    for where, server_cpus, client_cpus in placements:
        with certificates(folder, tls) as (flags, trust, curl_options), \
                emulator_process(folder, *flags, cpus=server_cpus) as (env, server):
            env = env | trust
            before = cpu_seconds(server)
            curl, curl_cpu = curl_baseline(env, clip, folder, 32, cpus=client_cpus,
                                           options=curl_options)
            middle = cpu_seconds(server)
            # The transfer's cost: the content rules are a cost per video, not per GiB
            # (content_rules_cost below), and curl has none.
            run = upload(env, clip, folder, "--parts", "32", "--concurrency", "8",
                         "--no-content-checks", cpus=client_cpus)
            after = cpu_seconds(server)
            # What a process costs whatever its size (the interpreter, the imports, the API
            # calls): a 4 MiB upload's CPU. curl's eight processes start in milliseconds.
            start_up = upload(env, video(folder, 4 * MIB), folder, "--no-content-checks",
                              cpus=client_cpus).cpu
        where = f"{scheme}, {where}"
        curl_per_gib, own_per_gib = curl_cpu / (size / GIB), run.cpu / (size / GIB)
        table.add(f"(a) {where}: curl, 32 parts x8, {label}",
                  f"{curl:.2f} s ({size / MIB / curl:.0f} MiB/s)")
        table.add(f"(a) {where}: uploader, own clock / process wall",
                  f"{run.seconds:.2f} s / {run.wall:.2f} s")
        table.add(f"(a) {where}: uploader / curl (own clock; process wall)",
                  f"{run.seconds / curl:.2f}; {run.wall / curl:.2f}",
                  "<= 0.9 (own clock)" if tls else "<= 0.95 (own clock)")
        if before is not None and middle is not None and after is not None:
            # Where the emulator is the bound (a core of its own, decrypting over https),
            # no client can go faster than it reads: its CPU over each sender's time says so.
            table.add(f"(a) {where}: emulator's CPU per second of curl's / the uploader's "
                      "wall (1.00 on a core of its own: it is the bound)",
                      f"{(middle - before) / curl:.2f} / {(after - middle) / run.wall:.2f}")
        table.add(f"(b) {where}: uploader CPU (user+sys) per GiB, whole process",
                  f"{own_per_gib:.2f} s")
        table.add(f"(b) {where}: curl's CPU per GiB (it hashes nothing) + MD5 8 at once",
                  f"{curl_per_gib:.2f} + {lanes:.2f} = {curl_per_gib + lanes:.2f} s")
        table.add(f"(b) {where}: uploader CPU / (curl + MD5)",
                  f"{own_per_gib / (curl_per_gib + lanes):.2f}",
                  "(reported)" if tls else "<= 1.2")
        marginal = (run.cpu - start_up) / (size / GIB)
        table.add(f"(b) {where}: uploader's start-up (a 4 MiB upload's CPU); CPU per GiB "
                  "without it / (curl + MD5)",
                  f"{start_up:.2f} s; {marginal:.2f} s / {marginal / (curl_per_gib + lanes):.2f}")
    one, lanes = md5_seconds_per_gib()
    table.add(f"(b) for reference, MD5 alone per GiB: one stream (hashlib) / 8 at once "
              f"({kernel_name()})", f"{one:.2f} s / {lanes:.2f} s")


def content_rules_cost(table: Table, folder: Path) -> None:
    """What the content rules (PyAV, OpenCV: frames and sound decoded, faces found) add to
    one upload, whatever its size: the same 64 MiB upload with and without them, after a
    first run that stores the parts (both then send nothing: the difference is the rules)."""
    clip = video(folder, 64 * MIB)
    with emulator(folder) as env:
        upload(env, clip, folder, "--no-content-checks")
        without = upload(env, clip, folder, "--no-content-checks")
        with_rules = upload(env, clip, folder)
    table.add("(b) the content rules, once per video: CPU / wall / peak RSS added",
              f"{with_rules.cpu - without.cpu:.2f} s / {with_rules.wall - without.wall:.2f} s / "
              f"{(with_rules.max_rss - without.max_rss) / MIB:.0f} MiB")


def profile_tls(table: Table, folder: Path, size: int, top: int = 12) -> None:
    """Where an https upload's event-loop time goes: the uploader under cProfile (the
    main thread: the event loop, where asyncio's SSL protocol encrypts; the MD5 lanes and
    the reads run in worker threads), its functions by their own time."""
    import pstats

    clip = video(folder, size)
    stats = folder / "tls.prof"
    with certificates(folder, True) as (flags, trust, _), emulator(folder, *flags) as env:
        command = upload_command(clip, folder, "--parts", "32", "--concurrency", "8",
                                 "--no-content-checks")
        command[1:3] = ["-m", "cProfile", "-o", str(stats), "-m", "uploader"]
        run = measure(command, env | trust)
    profile = pstats.Stats(str(stats))
    total = profile.total_tt  # type: ignore[attr-defined]
    rows = sorted(profile.stats.items(),  # type: ignore[attr-defined]
                  key=lambda item: item[1][2], reverse=True)[:top]
    print(f"  https upload of {size / MIB:.0f} MiB under cProfile: {run.seconds:.2f} s own "
          f"clock, {total:.2f} s profiled in the main thread; by own time:")
    for (file, line, name), (_, calls, own, _cumulative, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"    {own:6.2f} s {own / total:6.1%} {calls:8d} calls  {name} ({where})")
    table.add(f"(a) https under cProfile, {size / MIB:.0f} MiB: main thread's time",
              f"{total:.2f} s")


def bench_memory(table: Table, folder: Path, sizes: list[int], part_sizes: list[int],
                 part_file: int) -> None:
    """(c) peak RSS against file size and part size; (b) again, from the largest file."""
    runs = {}
    for size in sizes:
        with emulator(folder) as env:
            runs[size] = upload(env, video(folder, size), folder)
        table.add(f"(c) peak RSS, {size / MIB:.0f} MiB file, default parts",
                  f"{runs[size].max_rss / MIB:.1f} MiB", "<= 90 MiB, flat")
        if size != part_file:
            discard(folder, size)
    for part_size in part_sizes:
        with emulator(folder) as env:
            run = upload(env, video(folder, part_file), folder, "--part-size", str(part_size))
        table.add(f"(c) peak RSS, {part_file / MIB:.0f} MiB file, "
                  f"{part_size / MIB:.0f} MiB parts", f"{run.max_rss / MIB:.1f} MiB",
                  "<= 90 MiB, flat")
    small, large = min(sizes), max(sizes)
    if large > small:
        marginal = (runs[large].cpu - runs[small].cpu) / ((large - small) / GIB)
        table.add(f"(b) uploader CPU per GiB, {large / GIB:.2f} GiB file (whole process / "
                  "marginal, without start-up)",
                  f"{runs[large].cpu / (large / GIB):.2f} s / {marginal:.2f} s", "<= 1.3 s")


def discard(folder: Path, size: int) -> None:
    (folder / f"video-{size}.mp4").unlink(missing_ok=True)


def bench_link(table: Table, folder: Path, size: int, link: int) -> None:
    """(d) throughput on a rate-limited link against the ideal."""
    clip = video(folder, size)
    with emulator(folder, "--link-rate", str(link)) as env:
        for concurrency in (1, 4, 8, 16):
            run = upload(env, clip, folder, "--parts", "16", "--concurrency", str(concurrency))
            ideal = min(concurrency, 16) * link
            achieved = size / run.seconds
            table.add(f"(d) {link / MIB:.0f} MiB/s link, K={concurrency}: throughput / ideal",
                      f"{achieved / ideal:.2f} ({achieved / MIB:.1f} MiB/s)", ">= 0.90")
        curl, _ = curl_baseline(env, clip, folder, 16, parallel=16)
        table.add("(d) for reference, curl on the same link, 16 at a time: throughput / ideal",
                  f"{size / curl / (16 * link):.2f} ({size / curl / MIB:.1f} MiB/s)")


def bench_resume(table: Table, folder: Path, size: int, rate: int) -> None:
    """(e) bytes a resume sends against the bytes that were missing after a kill at half of
    an upload at the default settings (parts and concurrency), on a link of `rate` bytes a
    second in all."""
    clip = video(folder, size)
    plan = plan_parts(size)
    with emulator(folder, "--total-rate", str(rate)) as env:
        with tempfile.TemporaryFile() as err:
            process = start_upload(env, clip, folder, err=err)
            job_id, held = None, {}
            deadline = time.monotonic() + 300
            while _held_bytes(plan, held) < size // 2 and time.monotonic() < deadline:
                time.sleep(0.05)
                job_id = job_id or newest_job(env)
                held = stored_parts(env, job_id) if job_id else {}
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
        assert job_id is not None
        held = stored_parts(env, job_id)
        missing = size - _held_bytes(plan, held)
        run = upload(env, clip, folder)
    sent = int(run.result["bytes_sent"])  # type: ignore[call-overload]
    table.add(f"(e) defaults, {size / MIB:.0f} MiB in {plan.count} parts at "
              f"{rate / MIB:.0f} MiB/s, resume after kill at {len(held)} parts: sent / missing",
              f"{sent / missing:.2f} ({sent / MIB:.1f} of {missing / MIB:.1f} MiB)",
              f"<= {1 + at_risk(size) / missing:.2f}")


def _held_bytes(plan: PartPlan, held: dict[int, str]) -> int:
    return sum(plan.sizes[number - 1] for number in held)


def bench_verify(table: Table, folder: Path, size: int) -> None:
    """A resume without its journal hashes every stored part from the file: one part after
    another with hashlib, against `pieces_md5` (8 at a time, hashed together)."""
    clip = video(folder, size)
    step = -(-size // 32)
    parts = [Piece("training_video", n + 1, clip, n * step, min(step, size - n * step),
                   "application/octet-stream", f"part {n + 1}") for n in range(32)]
    started = time.perf_counter()
    with clip.open("rb") as source:
        for part in parts:
            source.seek(part.offset)
            digest, left = hashlib.md5(), part.size
            while left:
                chunk = source.read(min(MIB, left))
                digest.update(chunk)
                left -= len(chunk)
    one = time.perf_counter() - started
    started = time.perf_counter()
    asyncio.run(pieces_md5(parts, chunk_size=MIB, concurrency=8))
    lanes = time.perf_counter() - started
    table.add(f"(e) for reference, checking 32 stored parts with no journal, {size // MIB} MiB: "
              "one at a time (hashlib) / 8 at once", f"{one:.2f} s / {lanes:.2f} s")


def bench_preflight(table: Table, folder: Path, size: int) -> None:
    """(f) preflight time of a large file."""
    clip = video(folder, size)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        assert check_video(clip).ok
        timings.append(time.perf_counter() - started)
    table.add(f"(f) preflight, {size / GIB:.2f} GiB file (first / median of 5)",
              f"{timings[0]:.3f} s / {sorted(timings)[2]:.3f} s", "< 0.2 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--workdir", type=Path, default=_default_workdir(),
                        help="where test files and the emulator's data go (default: /dev/shm "
                        "when it exists, so that the disk's speed is not what is measured)")
    parser.add_argument("--only", default="speed,tls,memory,link,resume,preflight",
                        help="comma-separated steps to run (default: all)")
    options = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed for the baseline: apt-get install curl")
    folder = Path(tempfile.mkdtemp(prefix="uploader-bench-", dir=options.workdir))
    # Bytecode cached, as an installed package has it: where PYTHONDONTWRITEBYTECODE is set
    # (this VM sets it), every uploader process would compile its modules again, ~0.1 s of
    # CPU that (b) would count. A first untimed run writes the cache.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    with emulator(folder) as env:
        upload(env, video(folder, 4 * MIB), folder)
    table = Table()
    print(f"uploader benchmark on {platform.node()}: {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, MD5 {kernel_name()}, "
          f"{'smoke' if options.smoke else 'full'} run, files in {folder}, load average "
          f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}", flush=True)
    small = options.smoke
    steps = {
        # The smoke run proves each step works: the pinned placement is the same code.
        "speed": lambda: (bench_speed(table, folder, 16 * MIB if small else GIB,
                                      pinned=not small), content_rules_cost(table, folder)),
        "tls": lambda: bench_speed(table, folder, 16 * MIB if small else GIB,
                                   pinned=not small, tls=True),
        "tls-profile": lambda: profile_tls(table, folder, 16 * MIB if small else GIB),
        "memory": lambda: bench_memory(
            table, folder, [16 * MIB] if small else [256 * MIB, GIB, 4 * GIB],
            [8 * MIB] if small else [8 * MIB, 32 * MIB, 128 * MIB, 512 * MIB],
            16 * MIB if small else GIB),
        "link": lambda: bench_link(table, folder, 16 * MIB if small else 128 * MIB,
                                   16 * MIB if small else LINK),
        "resume": lambda: (bench_resume(table, folder, 16 * MIB if small else 640 * MIB,
                                        16 * MIB if small else 8 * LINK),
                           bench_verify(table, folder, 16 * MIB if small else GIB)),
        "preflight": lambda: bench_preflight(table, folder, 16 * MIB if small else 4 * GIB),
    }
    try:
        for step in options.only.split(","):
            steps[step]()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
