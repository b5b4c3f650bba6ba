"""Calls, links, the engine, the emulator as a server, and what the output says (issue 12,
items 5, 7, 8, 11-14)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import GOOD_VIDEO, emulator_config
from tests.uploads import (
    FAST,
    REQUIRED_FLAGS,
    assembled,
    cli_env,
    emulator_process_env,
    start_cli,
    video_of,
    wait_for_parts,
)
from uploader import (
    Backoff,
    Limits,
    MalformedAnswerError,
    MetaStudioClient,
    RefusedError,
    Settings,
    TransferBudget,
    TransferConfig,
    UnreachableError,
    UploaderError,
    UsageError,
    upload_video,
)
from uploader.emulator import EmulatorThread, RunningEmulator, start_emulator

ROOT = Path(__file__).resolve().parent.parent
PART = 512 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- 5. unreachable links are refused links ------------------------------------------------

async def test_links_whose_host_refuses_connections_are_replaced(emulator, settings, tmp_path,
                                                                 caplog):
    caplog.set_level(logging.INFO)
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there

    def dead_links_once(request, answer):  # type: ignore[no-untyped-def]
        links = answer.get("training_video_upload_url") if isinstance(answer, dict) else None
        if request.method == "POST" and isinstance(links, list):
            answer["training_video_upload_url"] = [
                re.sub(r"//[^/]+/", f"//{dead}/", url, count=1) for url in links]
        return answer

    emulator.emulator.faults.rewrite = dead_links_once
    video = video_of(tmp_path, 4 * PART)
    result = await upload_video(video, name="moved", parts=4, settings=settings,
                                state_dir=tmp_path / "state", transfer=FAST)
    assert "URL refused" in caplog.text and "Connect" in caplog.text
    assert await assembled(settings, result.job_id) == video.read_bytes()


@pytest.mark.slow
def test_emulator_restarted_on_another_port_with_the_same_data(tmp_path: Path):
    video = video_of(tmp_path, 8 * PART)
    data = tmp_path / "emulator"
    with EmulatorThread(emulator_config(data, link_rate=1024 * 1024)) as first:
        env = cli_env(first.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--name", "moved", "--parts", "8", "--concurrency", "1",
                "--json")
        with start_cli(*args, env=env) as run:
            job_id = wait_for_parts(first, 2)
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=30)
    with EmulatorThread(emulator_config(data)) as second:
        env = cli_env(second.client_env(), tmp_path / "state")
        result = subprocess.run([sys.executable, "-m", "uploader", "upload", str(video),
                                 "--job-id", job_id, "--json"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        settings = Settings.from_env(second.client_env())
        assert asyncio.run(assembled(settings, job_id)) == video.read_bytes()


# ---- 7. bad values are usage errors --------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"name": "x", "parts": 0}, {"name": "x", "parts": -2}, {"name": "x", "parts": 2.5},
    {"name": "x", "parts": "3"}, {"name": "x", "parts": True},
    {"name": "x", "part_size": 0}, {"name": "x", "part_size": -1},
    {"name": "x", "part_size": 1.5}, {"name": "x", "concurrency": 0},
    {"name": "x", "concurrency": 65}, {"name": "x", "concurrency": "8"},
    {"name": ""}, {"name": " "}, {"name": "n" * 65}, {"name": 7}, {"job_id": ""},
    {"job_id": "a/b"}, {"job_id": None, "name": None}, {"name": "x", "wait_timeout": 0},
    {"name": "x", "state_dir": 3}, {"name": "x", "settings": "not settings"},
    {"name": "x", "transfer": {"concurrency": 2}}, {"name": "x", "cover": 5},
])
async def test_bad_values_are_usage_errors_before_any_call(emulator, settings, tmp_path,
                                                           options):
    options = {"settings": settings, "state_dir": tmp_path / "state", **options}
    with pytest.raises(UsageError) as caught:
        await upload_video(GOOD_VIDEO, **options)
    assert "--" not in str(caught.value)  # the library has no flags
    assert not emulator.emulator.store.jobs and not (tmp_path / "state").exists()


@pytest.mark.parametrize("make", [
    lambda: Limits(concurrency=0), lambda: TransferConfig(chunk_size=10),
    lambda: TransferConfig(stall_timeout=-1), lambda: Backoff(attempts=0),
    lambda: Settings(project_id="p", ak="a", sk="s", endpoint="https://host/v1/p"),
    lambda: Settings(project_id="p", ak="a", sk="s", endpoint=5),
])
def test_bad_configuration_objects_are_usage_errors(make):
    with pytest.raises(UsageError):
        make()


# ---- 8. API calls: one retry policy, three kinds of failure -------------------------------

async def test_429_is_retried_after_the_wait_the_service_asks_for(emulator, client):
    job_id = (await client.create_job("busy")).job_id
    emulator.emulator.faults.api_statuses = [429, 429]
    emulator.emulator.faults.api_retry_after = 0.3
    started = time.monotonic()
    assert (await client.show_job(job_id)).job_id == job_id
    assert time.monotonic() - started >= 0.6  # two waits of at least 0.3 s


async def test_create_is_retried_when_it_cannot_have_reached_the_service(tmp_path):
    port = _free_port()
    later: list[RunningEmulator] = []

    async def start_late(seconds: float) -> None:
        """The client waits to try again: the service comes up meanwhile (after a refusal)."""
        if not later:
            later.append(await start_emulator(emulator_config(tmp_path / "e"), port=port))

    env = {"METASTUDIO_ENDPOINT": f"http://127.0.0.1:{port}",
           "METASTUDIO_PROJECT_ID": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
           "CLOUD_SDK_AK": "EMULATORAKEXAMPLE0001",
           "CLOUD_SDK_SK": "emulator-sk-not-a-secret-0000000000000000"}
    try:
        async with MetaStudioClient(Settings.from_env(env), sleep=start_late,
                                    backoff=Backoff(attempts=20, base=0.2, cap=0.4)) as client:
            await client.create_job("patient")
        assert len(later[0].emulator.store.jobs) == 1
    finally:
        for running in later:
            await running.stop()


@pytest.mark.parametrize("status", [500, 503])
async def test_create_is_not_retried_when_it_may_have_reached_the_service(emulator, client,
                                                                          status):
    emulator.emulator.faults.api_statuses = [status, status]
    with pytest.raises(RefusedError) as caught:
        await client.create_job("once")
    assert caught.value.status == status
    assert emulator.emulator.faults.api_statuses == [status]  # one request, not two


async def test_the_three_kinds_of_api_failure(emulator, settings, client):
    emulator.emulator.faults.api_statuses = [403]
    with pytest.raises(RefusedError) as refused:
        await client.show_job("x")
    assert refused.value.status == 403 and refused.value.error_code == "MSS.00000001"
    emulator.emulator.faults.rewrite = lambda request, answer: b"<html>proxy page</html>"
    with pytest.raises(MalformedAnswerError):
        await client.list_jobs()
    dead = Settings(project_id=settings.project_id, ak=settings.ak, sk=settings.sk,
                    endpoint=f"http://127.0.0.1:{_free_port()}")
    async with MetaStudioClient(dead, backoff=Backoff(attempts=2, base=0.01)) as nowhere:
        with pytest.raises(UnreachableError) as unreachable:
            await nowhere.show_job("x")
    assert unreachable.value.may_have_arrived is False


# ---- 11. structured concurrency in the engine ----------------------------------------------

@pytest.mark.slow
def test_a_file_that_vanishes_mid_upload_is_a_clear_error_not_a_traceback(tmp_path: Path):
    video = video_of(tmp_path, 8 * PART)
    config = emulator_config(tmp_path / "emulator", link_rate=1024 * 1024)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--name", "vanishing", "--parts", "8",
                "--concurrency", "2")
        with start_cli(*args, env=env) as run:
            wait_for_parts(emulator, 1)
            video.unlink()
            emulator.emulator.faults.link_rate = None
            _, stderr = run.communicate(timeout=60)
    assert run.returncode == 5, stderr
    assert "cannot read" in stderr and "Traceback" not in stderr


# ---- 12. no private internals --------------------------------------------------------------

def test_the_package_uses_no_private_internals_of_its_libraries():
    source = "\n".join(p.read_text() for p in (ROOT / "uploader").rglob("*.py"))
    for private in ("._consumed", "get_write_buffer_size", "._iter", "._body"):
        assert private not in source, private
    # MD5 checks integrity, never security (SHA-256 signs requests: that is security).
    calls = [source[m.start():m.start() + 150] for m in re.finditer(r"hashlib\.md5\(", source)]
    assert calls and all("usedforsecurity=False" in call for call in calls), calls


# ---- 13. the emulator behaves like a server ------------------------------------------------

def _emulator(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "uploader", "emulator", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_emulator_stops_at_once_with_uploads_in_flight(tmp_path: Path, sig: int):
    server = _emulator("--port", "0", "--link-rate", "65536")
    assert server.stdout is not None
    url = server.stdout.readline().split()[4]
    env = emulator_process_env(url, tmp_path / "state")
    video = video_of(tmp_path, 8 * PART)
    with start_cli("upload", str(video), "--name", "cut", "--parts", "8", env=env) as run:
        time.sleep(1.0)  # parts in flight, crawling
        started = time.monotonic()
        server.send_signal(sig)
        server.wait(timeout=30)
        took = time.monotonic() - started
        run.kill()
        run.communicate()
    _, err = server.communicate()
    assert server.returncode == 0 and "Traceback" not in err, err
    assert took < 5, f"the emulator took {took:.1f} s to stop"


def test_the_emulator_removes_its_temporary_folder(tmp_path: Path):
    server = _emulator("--port", "0")
    assert server.stdout is not None
    line = server.stdout.readline()
    folder = Path(line.split("(data in ", 1)[1].rstrip(")\n"))
    assert folder.is_dir()
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=30)
    assert server.returncode == 0 and not folder.exists()


@pytest.mark.slow
def test_the_emulator_on_a_busy_port_or_an_unusable_folder_says_so_in_one_line(
        tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = _emulator("--port", str(port))
        _, err = server.communicate(timeout=30)
    assert server.returncode == 1 and err.count("\n") == 1 and f":{port}" in err, err
    (tmp_path / "file").write_text("")
    not_a_folder = tmp_path / "file" / "data"
    server = _emulator("--port", "0", "--data-dir", str(not_a_folder))
    _, err = server.communicate(timeout=30)
    assert server.returncode == 1 and err.count("\n") == 1 and str(not_a_folder) in err, err


# ---- 14. output tells the truth ------------------------------------------------------------

@pytest.mark.slow
def test_the_bar_names_the_file_says_it_waits_and_counts_in_mib(tmp_path: Path):
    video = video_of(tmp_path, 8 * PART, "named.mp4")
    config = emulator_config(tmp_path / "emulator", review_delay=3.0)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        screen, terminal = pty.openpty()  # a terminal of 24 x 120 characters
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        run = subprocess.Popen([sys.executable, "-m", "uploader", "upload", str(video),
                                "--name", "bar", *REQUIRED_FLAGS, "--submit", "--wait"],
                               env=env, stdout=subprocess.PIPE, stderr=terminal, text=True)
        os.close(terminal)
        shown = _read_all(screen)
        stdout, _ = run.communicate(timeout=60)
    assert run.returncode == 0
    assert "named.mp4" in shown and "waiting for the review" in shown
    assert "MiB" in shown and not re.search(r"\d(MB|kB|GB)\b", shown)
    seconds = float(re.search(r" in ([\d.]+) s ", stdout)[1])  # type: ignore[index]
    assert seconds < 3.0  # the transfer's time: the review's 3 s are not in it


@pytest.mark.slow
def test_no_log_line_or_error_lands_on_the_bars_line(tmp_path: Path):
    video = video_of(tmp_path, 8 * PART, "named.mp4")
    with EmulatorThread(emulator_config(tmp_path / "emulator", fail_rate=1.0)) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        screen, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        run = subprocess.Popen([sys.executable, "-m", "uploader", "upload", str(video),
                                "--name", "bar", "--parts", "8", "--retries", "2", "-v"],
                               env=env, stdout=subprocess.PIPE, stderr=terminal, text=True)
        os.close(terminal)
        shown = _read_all(screen)
        run.communicate(timeout=60)
    assert run.returncode == 5
    assert "named.mp4" in shown  # the bar was drawn
    for start in ("INFO uploader", "error: "):
        places = [m.start() for m in re.finditer(re.escape(start), shown)]
        assert places, (start, shown)
        # Each at the start of a line: after a newline, or after the bar was wiped ("\r").
        assert all(p == 0 or shown[p - 1] in "\r\n" for p in places), shown


def _read_all(fd: int) -> str:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def test_library_errors_are_all_uploader_errors():
    import uploader

    errors = [getattr(uploader, name) for name in uploader.__all__ if name.endswith("Error")]
    assert all(issubclass(error, UploaderError) for error in errors)


# ---- issue 13, in part: one budget for many uploads ----------------------------------------

@pytest.mark.slow
async def test_a_shared_budget_caps_pieces_in_flight_across_uploads(emulator, settings,
                                                                   tmp_path):
    emulator.emulator.faults.link_rate = 4 * 1024 * 1024  # slow enough to overlap
    budget = TransferBudget(concurrency=3)
    videos = [video_of(tmp_path, 8 * PART, f"v{n}.mp4") for n in range(3)]
    results = await asyncio.gather(*(
        upload_video(video, name=f"budget {n}", parts=8, limits=Limits(concurrency=8),
                     budget=budget,
                     settings=settings, state_dir=tmp_path / "state")
        for n, video in enumerate(videos)))
    assert emulator.emulator.faults.most_in_flight == 3  # 24 wanted at once
    for video, result in zip(videos, results, strict=True):
        assert await assembled(settings, result.job_id) == video.read_bytes()


@pytest.mark.slow
def test_bwlimit_caps_the_bytes_a_second(tmp_path: Path):
    video = video_of(tmp_path, 4 * PART)  # 2 MiB at 1 MiB/s: about 2 s (bursts of 0.1 s)
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "uploader", "upload", str(video),
                                 "--name", "capped", "--bwlimit", "1M", "--json"], env=env,
                                capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert took >= 1.7, f"2 MiB at 1 MiB/s took {took:.1f} s"
    bad = subprocess.run([sys.executable, "-m", "uploader", "upload", str(video), "--name",
                          "x", "--bwlimit", "1k"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "bandwidth limit" in bad.stderr
