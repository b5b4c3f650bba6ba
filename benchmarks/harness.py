"""What the benchmark scripts share: the emulator and the uploader as subprocesses, measured
(wall, CPU and peak memory of the uploader process), curl's baseline, test files, the table
of figures, and a CA of the benchmark's own for https. The figures themselves are the
scripts' (run.py, batch.py, tuning.py, ...).
"""

from __future__ import annotations

import asyncio
import compileall
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samples.make_samples import grow  # noqa: E402
from uploader import MetaStudioClient, Settings  # noqa: E402
from uploader.transfer.hashing import new_md5, update_lanes  # noqa: E402

MIB, GIB = 1024**2, 1024**3
SOURCE = ROOT / "samples" / "landscape_1080p.mp4"

# The uploader is measured as an install leaves it, its modules compiled to bytecode (pip
# compiles them; a checkout's first run writes them). Where PYTHONDONTWRITEBYTECODE is set
# (this project's VMs), every process would otherwise compile them again: 0.08 s of CPU each.
compileall.compile_dir(ROOT / "uploader", quiet=1)


@dataclass
class Run:
    """One uploader process: wall time, its own clock, CPU seconds, peak RSS, its JSON."""

    wall: float
    cpu: float
    max_rss: int
    result: dict[str, object]

    @property
    def seconds(self) -> float:
        return float(self.result["seconds"])  # type: ignore[arg-type]


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn confining a child to `cpus` (None: anywhere)."""
    return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)


@contextmanager
def emulator(folder: Path, *flags: str, cpus: set[int] | None = None
             ) -> Iterator[dict[str, str]]:
    """An `uploader emulator` subprocess; yields the environment that points at it."""
    with emulator_process(folder, *flags, cpus=cpus) as (env, _):
        yield env


def cpu_seconds(pid: int) -> float | None:
    """The CPU (user+sys) that process `pid` has spent so far; None where /proc does not
    tell (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def emulator_process(folder: Path, *flags: str, cpus: set[int] | None = None
                     ) -> Iterator[tuple[dict[str, str], int]]:
    """An `uploader emulator` subprocess; yields the environment that points at it and its
    process id."""
    data = Path(tempfile.mkdtemp(dir=folder, prefix="emulator-"))
    process = subprocess.Popen(
        [sys.executable, "-m", "uploader", "emulator", "--port", "0", "--data-dir", str(data),
         "--review-delay", "0", *flags], stdout=subprocess.PIPE, text=True,
        preexec_fn=pinned(cpus))
    try:
        assert process.stdout is not None
        process.stdout.readline()
        exports = process.stdout.readline().split()[1:]
        yield dict(item.split("=", 1) for item in exports), process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def upload_command(video: Path, folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "uploader", "upload", str(video), "--name", "bench",
            "--json", "--quiet", "--state-dir", str(folder / "state"), *args]


def start_upload(env: dict[str, str], video: Path, folder: Path, *args: str,
                 err: object, cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    return start(upload_command(video, folder, *args), env, err=err, cpus=cpus)


def start(command: list[str], env: dict[str, str], *, err: object,
          cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=os.environ | env, stdout=subprocess.PIPE,
                            stderr=err, preexec_fn=pinned(cpus))  # type: ignore[arg-type]


def upload(env: dict[str, str], video: Path, folder: Path, *args: str,
           cpus: set[int] | None = None) -> Run:
    """Run `uploader upload VIDEO --name bench --json --quiet ARGS` and measure it."""
    return measure(upload_command(video, folder, *args), env, cpus=cpus)


def measure(command: list[str], env: dict[str, str], *, cpus: set[int] | None = None,
            log: Path | None = None) -> Run:
    """Run `command` (one that prints a JSON object) and measure it; its stderr goes to
    `log` if given.

    Peak memory is the child's VmHWM, polled while it runs: wait4's ru_maxrss would not do,
    since Linux carries the parent's high-water mark across fork and exec.
    """
    with log.open("w+b") if log is not None else tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = start(command, env, err=err, cpus=cpus)
        peak = [0]
        watcher = threading.Thread(target=_watch_peak, args=(process.pid, peak), daemon=True)
        watcher.start()
        assert process.stdout is not None
        output = process.stdout.read()
        watcher.join()
        _, status, usage = os.wait4(process.pid, 0)  # reaps it: keeps its rusage
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stdout.close()
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command[1:5])} failed ({process.returncode}): "
                             f"{err.read()[-2000:]!r}")
    return Run(wall, usage.ru_utime + usage.ru_stime, peak[0], json.loads(output))


def _watch_peak(pid: int, peak: list[int]) -> None:
    """Keep the largest VmHWM of process `pid` in peak[0] until the process is gone."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        if "State:\tZ" in text:
            return
        time.sleep(0.01)


def fresh_urls(env: dict[str, str], parts: int) -> list[str]:
    """Upload URLs of a new job, for the curl baseline."""
    async def create() -> list[str]:
        async with MetaStudioClient(Settings.from_env(env)) as client:
            job = await client.create_job("curl-baseline", video_multipart_count=parts)
            return job.training_video_upload_url

    return asyncio.run(create())


def stored_parts(env: dict[str, str], job_id: str) -> dict[int, str]:
    async def ask() -> dict[int, str]:
        async with MetaStudioClient(Settings.from_env(env)) as client:
            result = await client.command(job_id, "GET_MULTIPART_UPLOADED")
            return {p.part_number: p.etag for p in result.multipart_data}

    return asyncio.run(ask())


def newest_job(env: dict[str, str]) -> str | None:
    async def ask() -> str | None:
        async with MetaStudioClient(Settings.from_env(env)) as client:
            jobs = (await client.list_jobs(limit=1)).jobs
            return jobs[0].job_id if jobs else None

    return asyncio.run(ask())


def curl_baseline(env: dict[str, str], video: Path, folder: Path, parts: int,
                  cpus: set[int] | None = None, parallel: int = 8,
                  options: list[str] | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all curl processes) to PUT the pre-split parts,
    `parallel` at a time (the split is not timed)."""
    size = video.stat().st_size
    part_size = -(-size // parts)
    pieces = folder / "pieces"
    pieces.mkdir(exist_ok=True)
    with video.open("rb") as source:
        for number in range(parts):
            (pieces / f"{number:04d}").write_bytes(source.read(part_size))
    lines = "".join(f"-T {pieces / f'{n:04d}'} {url}\n"
                    for n, url in enumerate(fresh_urls(env, parts)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-L", "1", "curl", "-sS", "-f", "-o", "/dev/null",
                    "-H", "Content-Type: application/octet-stream", *(options or [])],
                   input=lines, text=True, check=True, preexec_fn=pinned(cpus))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(pieces)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu


def video(folder: Path, size: int) -> Path:
    target = folder / f"video-{size}.mp4"
    if not target.exists():
        grow(SOURCE, target, size)
    return target


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, what: str, value: str, target: str = "") -> None:
        self.rows.append((what, value, target))
        print(f"  {what}: {value}" + (f"   (target {target})" if target else ""), flush=True)

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [*self.rows, ("what", "measured", "target")])
                  for i in range(3)]
        line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
        print()
        print(line.format("what", "measured", "target"))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print(line.format(*row))


@contextmanager
def certificates(folder: Path, tls: bool) -> Iterator[tuple[list[str], dict[str, str], list[str]]]:
    """For https (`tls`): the emulator's flags, the client's environment and curl's options
    for a certificate of a CA of the benchmark's own (trustme); for http, nothing."""
    if not tls:
        yield [], {}, []
        return
    import trustme

    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1", "localhost")
    where = Path(tempfile.mkdtemp(dir=folder, prefix="tls-"))
    ca, cert, key = where / "ca.pem", where / "cert.pem", where / "key.pem"
    authority.cert_pem.write_to_path(str(ca))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    try:
        yield (["--tls-cert", str(cert), "--tls-key", str(key)],
               {"METASTUDIO_CA_BUNDLE": str(ca)}, ["--cacert", str(ca)])
    finally:
        shutil.rmtree(where, ignore_errors=True)


def md5_seconds_per_gib() -> tuple[float, float]:
    """CPU seconds MD5 takes per GiB here, one stream with hashlib and eight streams at once
    with the kernel the uploader uses: part of (b) for any client that checks ETags."""
    block = os.urandom(MIB)
    digest = hashlib.md5()
    started = time.process_time()
    for _ in range(256):
        digest.update(block)
    one = (time.process_time() - started) * 4
    digests = [new_md5() for _ in range(8)]
    started = time.process_time()
    for _ in range(32):
        update_lanes(digests, [memoryview(block)] * 8)
    return one, (time.process_time() - started) * 4


def _default_workdir() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None
