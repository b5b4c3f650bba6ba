"""Helpers for the end-to-end upload tests."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from samples.make_samples import grow
from tests.conftest import GOOD_VIDEO, SAMPLES
from uploader import Backoff, MetaStudioClient, Progress, Settings, Step
from uploader._limits import Limits
from uploader.cli import main
from uploader.emulator import RunningEmulator
from uploader.transfer.engine import TransferConfig

#: The files the review requires besides the video: as `upload_video` keywords, as flags.
REQUIRED = {"id_card_front": SAMPLES / "id_card_front.jpg",
            "id_card_back": SAMPLES / "id_card_back.jpg",
            "grant_file": SAMPLES / "grant_letter.pdf"}
REQUIRED_FLAGS = [arg for name, path in REQUIRED.items()
                  for arg in ("--" + name.replace("_", "-"), str(path))]

#: Retries that wait milliseconds, so fault tests take seconds.
FAST = TransferConfig(backoff=Backoff(attempts=8, base=0.01, cap=0.05))
#: Four pieces at once, as the fault tests count them.
FOUR = Limits(concurrency=4)


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (checked every few milliseconds): what a test waits
    for, rather than a guess of how long it takes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.005)


def video_of(tmp_path: Path, size: int, name: str = "video.mp4") -> Path:
    """A valid 1080p video of exactly `size` bytes."""
    target = tmp_path / name
    grow(GOOD_VIDEO, target, size)
    return target


def sparse_video_of(tmp_path: Path, size: int, name: str = "video.mp4") -> Path:
    """A valid 1080p video of exactly `size` bytes, padded with a `free` box of zeros left
    as a hole in the file: a large video written in no time."""
    target = tmp_path / name
    grow(GOOD_VIDEO, target, GOOD_VIDEO.stat().st_size + 16)
    with target.open("r+b") as out:
        out.seek(-16, os.SEEK_END)
        out.write(struct.pack(">I4sQ", 1, b"free", size - GOOD_VIDEO.stat().st_size))
        out.truncate(size)
    return target


def emulator_process(data: Path, port: int, *flags: str) -> tuple[subprocess.Popen[str], str]:
    """`uploader emulator` in a process of its own, on `port` (0: a free one) with its data
    in `data`; the process and its URL once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "uploader", "emulator", "--port", str(port), "--data-dir",
         str(data), "--review-delay", "0", *flags], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().split()[4]
    process.stdout.readline()
    return process, url


def emulator_process_env(url: str, state_dir: Path) -> dict[str, str]:
    """The environment of a CLI run against an `uploader emulator` process at `url` (its
    default project and keys), with its state in `state_dir`."""
    return cli_env({"METASTUDIO_ENDPOINT": url,
                    "METASTUDIO_PROJECT_ID": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
                    "CLOUD_SDK_AK": "EMULATORAKEXAMPLE0001",
                    "CLOUD_SDK_SK": "emulator-sk-not-a-secret-0000000000000000"}, state_dir)


async def assembled(settings: Settings, job_id: str) -> bytes:
    """The video the service assembled for the job (assembly runs after confirm)."""
    async with MetaStudioClient(settings) as client:
        for _ in range(200):
            url = (await client.show_job(job_id)).training_video_download_url
            if url:
                return await asyncio.to_thread(_download, url)
            await asyncio.sleep(0.05)
    raise AssertionError("the job's video was never assembled")


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return bytes(response.read())


#: What a test's environment never inherits: settings, credentials, proxies.
FOREIGN = ("METASTUDIO_", "CLOUD_SDK_", "HUAWEICLOUD_SDK_", "HTTP_PROXY", "HTTPS_PROXY",
           "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def cli_env(emulator_env: dict[str, str], state_dir: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    return base | emulator_env | {"XDG_STATE_HOME": str(state_dir)}


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "uploader", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class Ran:
    """How a command ended, as `subprocess.run` tells it."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> Ran:
    """`uploader ARGS` in this process (click's CliRunner), with `env` as the whole
    environment: for commands that need no signal and no process of their own."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    result = CliRunner().invoke(main, list(args), env=cleared | env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the test says what it was
    return Ran(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, env: dict[str, str], timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
    """`python -m uploader ARGS` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "uploader", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def json_out(result: Ran | subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def stored_parts(emulator: RunningEmulator, job_id: str) -> int | None:
    """How many parts the job's open upload holds; None once it was confirmed."""
    upload = emulator.emulator.store.jobs[job_id]["uploads"].get("training_video")
    return len(emulator.emulator.store.parts(upload["upload_id"])) if upload else None


def wait_for_parts(emulator: RunningEmulator, count: int) -> str:
    """Wait until the emulator's only job holds `count` parts, then slow its link to a
    crawl, so that a signal sent next lands mid-upload however late this thread noticed;
    return the job id. (Set `emulator.emulator.faults.link_rate = None` to let uploads go on.)"""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job_id = next(iter(emulator.emulator.store.jobs), None)
        if job_id and (stored_parts(emulator, job_id) or 0) >= count:
            emulator.emulator.faults.link_rate = 1.0
            return job_id
        time.sleep(0.02)
    raise AssertionError(f"the server never held {count} parts")


def new_job(emulator: RunningEmulator, name: str = "existing") -> str:
    """Create a job on the emulator through the API client; return its id."""
    async def create() -> str:
        async with MetaStudioClient(Settings.from_env(emulator.client_env())) as client:
            return (await client.create_job(name)).job_id

    return asyncio.run(create())


class Recorder(Progress):
    """A Progress that keeps what it was told: `done` after each delta, `steps` reached;
    `watch(done, total)` and `at_step(step, job_id)`, if given, are called as it is told."""

    def __init__(self, watch: Callable[[int, int], None] | None = None,
                 at_step: Callable[[str, str], None] | None = None) -> None:
        self.total = 0
        self.done: list[int] = []
        self.steps: list[tuple[str, str]] = []
        self._watch, self._at_step = watch, at_step

    def on_total(self, total: int) -> None:
        self.total = total

    def on_bytes(self, delta: int) -> None:
        self.done.append((self.done[-1] if self.done else 0) + delta)
        if self._watch is not None:
            self._watch(self.done[-1], self.total)

    def on_step(self, step: Step, job_id: str) -> None:
        self.steps.append((str(step), job_id))
        if self._at_step is not None:
            self._at_step(str(step), job_id)
