"""Storage as OBS has it: both link forms with and without a security token, links that die
early, single files that move after their PUT, an encrypted bucket's ETags (and reading the
files back), request ids, and memory that stays bounded whatever a storage answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import GOOD_VIDEO, emulator_config
from tests.servers import LoopThread
from tests.uploads import (
    REQUIRED,
    REQUIRED_FLAGS,
    assembled,
    cli_env,
    run_cli,
    start_cli,
    video_of,
)
from uploader import Settings, upload_video
from uploader.emulator import EmulatorThread, RunningEmulator, start_emulator

MiB = 1024 * 1024
SECRETS = ("Signature=", "X-Amz-Signature", "x-obs-security-token=", "X-Amz-Security-Token")


def _upload(running: RunningEmulator, tmp_path: Path, *flags: str,
            name: str = "obs") -> tuple[int, dict[str, Any], str]:
    env = cli_env(running.client_env(), tmp_path / "state")
    result = run_cli("-vv", "upload", str(GOOD_VIDEO), "--name", name, *REQUIRED_FLAGS,
                     "--submit", "--json", *flags, env=env)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, report, result.stdout + result.stderr


def _no_secret(output: str, running: RunningEmulator) -> None:
    token = running.emulator.storage.signer.token
    assert not any(secret in output for secret in SECRETS), output
    assert token is None or token not in output


def _stored_once(running: RunningEmulator) -> dict[int, int]:
    """PUT attempts by part number (0: the single files), every one stored."""
    ledger = running.emulator.faults.ledger
    return {part: counts["stored"] for (_, part), counts in ledger.items()}


@pytest.mark.parametrize(("style", "token"), [("v2", True), ("v2-s3", False), ("v2-s3", True),
                                              ("v4", False), ("v4", True)])
def test_both_link_forms_with_and_without_a_token(tmp_path: Path, style: str, token: bool):
    config = emulator_config(tmp_path / "emulator", link_style=style,
                             link_security_token=token)
    with EmulatorThread(config) as running:
        code, report, output = _upload(running, tmp_path)
        assert code == 0, output
        job = running.emulator.store.jobs[report["job_id"]]
        assert job["state"] in ("AUTO_VERIFYING", "MANUAL_VERIFYING")
        _no_secret(output, running)
        assert asyncio.run(assembled(Settings.from_env(running.client_env()),
                                     report["job_id"])) == GOOD_VIDEO.read_bytes()


def test_a_v4_link_refuses_another_content_type_and_a_missing_token(tmp_path: Path):
    import urllib.error
    import urllib.request

    from tests.uploads import new_job

    config = emulator_config(tmp_path / "emulator", link_style="v4", link_security_token=True)
    with EmulatorThread(config) as running:
        job_id = new_job(running)
        answer = asyncio.run(_links(running, job_id))
        url = answer["cover_upload_url"]
        assert "X-Amz-Signature=" in url and "X-Amz-Security-Token=" in url
        for changed, headers in ((url, {"Content-Type": "image/jpeg"}),
                                 (url.split("&X-Amz-Security-Token")[0] + "&X-Amz-Signature="
                                  + url.split("X-Amz-Signature=")[1],
                                  {"Content-Type": "application/octet-stream"})):
            request = urllib.request.Request(changed, data=b"x", method="PUT", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            body = refused.value.read().decode()
            assert refused.value.code == 403 and "<RequestId>" in body and "<HostId>" in body
            # A V4 link is answered in S3's dialect (API.md §5).
            assert refused.value.headers["x-amz-request-id"] in body
            assert "x-obs-request-id" not in refused.value.headers


async def _links(running: RunningEmulator, job_id: str) -> dict[str, Any]:
    from uploader import MetaStudioClient
    async with MetaStudioClient(Settings.from_env(running.client_env())) as client:
        return (await client.update_job(job_id, video_multipart_count=1)).raw


@pytest.mark.slow
def test_links_that_die_early_are_replaced(tmp_path: Path):
    config = emulator_config(tmp_path / "emulator", link_early_expiry=1.0,
                             link_rate=1 * MiB)
    video = video_of(tmp_path, 6 * MiB)
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        result = run_cli("upload", str(video), "--name", "early", "--parts", "6",
                         "--concurrency", "2", "--json", env=env)
        assert result.returncode == 0, result.stderr
        refused = sum(c["refused"] for c in running.emulator.faults.ledger.values())
        assert refused >= 1  # some links died before their stated expiry, and were replaced
        job_id = json.loads(result.stdout)["job_id"]
        assert asyncio.run(assembled(Settings.from_env(running.client_env()),
                                     job_id)) == video.read_bytes()


def test_single_files_that_move_later_are_not_sent_twice(tmp_path: Path):
    config = emulator_config(tmp_path / "emulator", move_delay=2.0)
    with EmulatorThread(config) as running:
        code, report, output = _upload(running, tmp_path)
        assert code == 0, output
        assert _stored_once(running)[0] == 3  # the ID card images and the letter, once each
        assert report["state"] in ("AUTO_VERIFYING", "MANUAL_VERIFYING")


@pytest.mark.parametrize("style", ["v2", "v2-s3", "v4"])
def test_an_encrypted_buckets_etags_are_said_not_to_verify(tmp_path: Path, style: str):
    """Issue 31, item 2: on S3's dialect (x-amz-server-side-encryption) the ETags that are
    not MD5s were taken for wrong ones, and every part failed."""
    config = emulator_config(tmp_path / "emulator", etag_style="sse", link_style=style)
    with EmulatorThread(config) as running:
        code, report, output = _upload(running, tmp_path)
        assert code == 0, output
        assert [f["verified"] for f in report["files"]] == [False] * 4
        assert output.count("ETags are not MD5s") == 1  # said once
        proved_code, proved, proved_output = _upload(running, tmp_path, "--verify",
                                                     "download", name="proved")
        assert proved_code == 0, proved_output
        assert [f["verified"] for f in proved["files"]] == [True] * 4


async def test_on_an_encrypted_bucket_a_confirmed_video_is_not_sent_again(tmp_path):
    running = await start_emulator(emulator_config(tmp_path / "emulator", etag_style="sse"))
    try:
        settings = Settings.from_env(running.client_env())
        video = video_of(tmp_path, 2 * MiB)
        first = await upload_video(video, name="sealed", settings=settings,
                                   state_dir=tmp_path / "a")
        ledger = running.emulator.faults.ledger

        def video_puts() -> int:
            return sum(c["attempts"] for (job, part), c in ledger.items()
                       if job == first.job_id and part > 0)

        sent_first = video_puts()
        again = await upload_video(video, name="sealed", settings=settings, submit=True,
                                   state_dir=tmp_path / "b", **REQUIRED)
        assert again.job_id == first.job_id and again.submitted
        assert (again.parts_uploaded, again.files[0].outcome) == (0, "skipped")
        assert again.files[0].verified is False  # recognised, not proved by an MD5
        assert video_puts() == sent_first, "the video was sent again"
    finally:
        await running.stop()


@pytest.mark.slow
async def test_on_an_encrypted_bucket_the_slower_of_two_racing_machines_ends_as_done(
        tmp_path):
    running = await start_emulator(emulator_config(tmp_path / "emulator", etag_style="sse"))
    try:
        settings = Settings.from_env(running.client_env())
        video = video_of(tmp_path, MiB)
        running.emulator.faults.api_delays["list"] = 0.5
        results = await asyncio.gather(*(
            upload_video(video, name="raced", parts=4, settings=settings, submit=True,
                         state_dir=tmp_path / f"machine-{n}", **REQUIRED) for n in range(2)))
        [job_id] = {result.job_id for result in results}
        assert all(result.submitted for result in results)
        assert list(running.emulator.store.jobs) == [job_id]
    finally:
        await running.stop()


@pytest.mark.parametrize("style", ["v2", "v4"])
def test_a_parts_failure_quotes_the_request_id_of_either_dialect(tmp_path: Path, style: str):
    config = emulator_config(tmp_path / "emulator", link_style=style, fail_rate=1.0)
    with EmulatorThread(config) as running:
        code, _, output = _upload(running, tmp_path, "--retries", "0")
    assert code == 5, output
    assert re.search(r"storage request id [0-9A-F]{16}", output), output


def test_verify_download_sends_a_corrupted_letter_again(tmp_path: Path):
    config = emulator_config(tmp_path / "emulator", etag_style="sse")
    with EmulatorThread(config) as running:
        running.emulator.faults.corrupt["grant_file"] = 1  # stored with a byte flipped
        code, report, output = _upload(running, tmp_path, "--verify", "download")
        assert code == 0, output
        assert [f["verified"] for f in report["files"]] == [True] * 4
        letter = running.emulator.store.files(report["job_id"])["grant_file"].path
        assert letter.read_bytes() == REQUIRED["grant_file"].read_bytes()
        assert _stored_once(running)[0] == 3 + 1  # the letter, sent again
        assert "differs" in output


def test_verify_download_finds_a_corrupted_video_and_submits_nothing(tmp_path: Path):
    config = emulator_config(tmp_path / "emulator", etag_style="sse")
    with EmulatorThread(config) as running:
        running.emulator.faults.corrupt["training_video"] = 1
        code, _, output = _upload(running, tmp_path, "--verify", "download")
        assert code == 5, output
        assert "differs" in output and "--restart" in output
        [job] = running.emulator.store.jobs.values()
        assert job["state"] == "WAIT_FILE_UPLOAD"  # nothing was submitted


@pytest.mark.slow
def test_every_switch_at_once_with_kill_9_in_the_single_files(tmp_path: Path):
    """V4 links with a token, an encrypted bucket, files that move after 2 s, and the run
    killed -9 while the single files go up: the same command finishes the job, nothing that
    was stored is sent twice, no secret printed."""
    config = emulator_config(tmp_path / "emulator", link_style="v4", link_security_token=True,
                             etag_style="sse", move_delay=2.0, link_rate=32 * 1024)
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        args = ["-vv", "upload", str(GOOD_VIDEO), "--name", "switches", *REQUIRED_FLAGS,
                "--submit", "--json", "--concurrency", "1"]
        first = start_cli(*args, env=env)
        ledger = running.emulator.faults.ledger
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(
                c["stored"] for (_, part), c in ledger.items() if part == 0) < 1:
            time.sleep(0.02)
        # Killed once the client had the storage's answer for a file (a file whose answer
        # is lost on the way is the one case it cannot know of; a later one is under way).
        time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        out, err = first.communicate(timeout=30)
        running.emulator.faults.link_rate = None
        second = subprocess.run([sys.executable, "-m", "uploader", *args], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        stored = {part: c["stored"] for (_, part), c in ledger.items()}
        assert stored == {1: 1, 0: 3}  # the video's part and each single file, once
        # The file stored before the kill was not yet at its download link: waited for.
        assert "waiting for the service to move it" in second.stderr
        _no_secret(out + err + second.stdout + second.stderr, running)
        assert asyncio.run(assembled(Settings.from_env(running.client_env()),
                                     report["job_id"])) == GOOD_VIDEO.read_bytes()


# ---- memory, whatever a storage answers ------------------------------------------------


class _Hostile:
    """A storage that answers every PUT 500 with a body of `size` bytes, and every GET 200
    with the whole of a `size`-byte object (it ignores Range)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.answered: list[str] = []
        self._servers = LoopThread()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.answered.append(request.method)
        await request.read()
        response = web.StreamResponse(status=500 if request.method == "PUT" else 200,
                                      headers={"ETag": '"' + "0" * 32 + '"'})
        response.content_length = self.size
        await response.prepare(request)
        chunk = b"x" * MiB
        try:
            for _ in range(self.size // MiB):
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    def __enter__(self) -> str:
        self._servers.__enter__()
        return self._servers.serve(self._answer).removeprefix("http://")

    def __exit__(self, *exc_info: Any) -> None:
        self._servers.__exit__(*exc_info)


_MEASURE = """
import asyncio, sys
from uploader.transfer.engine import stored_object_etag, put_part, TransferConfig, PartFailure
from uploader.transfer.hashing import LaneHasher
from uploader.transfer.plan import Piece
from uploader._http import new_session
from uploader import Settings

async def main():
    settings = Settings(project_id="p", ak="a", sk="s", endpoint="http://127.0.0.1:1")
    async with new_session(settings) as session:
        piece = Piece("cover", 1, __import__("pathlib").Path(sys.argv[2]), 0, 1000,
                      "application/octet-stream", "the cover")
        try:
            await put_part(session, sys.argv[1] + "/part", piece, config=TransferConfig(),
                           hasher=LaneHasher(), on_bytes=lambda n: None)
        except PartFailure as failure:
            print("put:", failure)
        print("probe:", await stored_object_etag(session, sys.argv[1] + "/object"))
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print("peak:", int(line.split()[1]) // 1024, "MiB")

asyncio.run(main())
"""


@pytest.mark.slow
def test_memory_stays_bounded_whatever_the_storage_answers(tmp_path: Path):
    sample = tmp_path / "cover.bin"
    sample.write_bytes(b"c" * 1000)
    with _Hostile(512 * MiB) as host:
        run = subprocess.run([sys.executable, "-c", _MEASURE, f"http://{host}", str(sample)],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    assert lines["put"].startswith("HTTP 500") and lines["probe"] == '"' + "0" * 32 + '"'
    peak = int(lines["peak"].split()[0])
    print(f"\npeak RSS against a 512 MiB error body and a 512 MiB probe answer: {peak} MiB")
    assert peak < 150


def test_parts_smaller_than_the_storage_takes_say_which_plan_to_use(tmp_path: Path):
    """Issue 31, item 3: a storage of S3's minimum (5 MiB) refuses the confirm of 1 MiB
    parts; the run says to start over with larger parts, not to run itself again."""
    config = emulator_config(tmp_path / "emulator", min_part_size=5 * MiB)
    video = video_of(tmp_path, 6 * MiB)
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        refused = run_cli("upload", str(video), "--name", "s3", "--parts", "6", env=env)
        assert refused.returncode == 5, refused.stderr
        assert "EntityTooSmall" in refused.stderr and "--restart --part-size 5MiB" in refused.stderr
        assert "run the same command again to resume" not in refused.stderr
        again = run_cli("upload", str(video), "--name", "s3", "--restart", "--part-size", "5MiB",
                        "--json", env=env)
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert result["parts_total"] == 2
        assert asyncio.run(assembled(Settings.from_env(running.client_env()),
                                     result["job_id"])) == video.read_bytes()


async def test_a_refused_link_costs_a_round_trip_not_a_body(tmp_path: Path):
    """Issue 31, item 5: parts are PUT with `Expect: 100-continue`, and a spent link is
    refused before its body is sent."""
    import aiohttp

    from uploader import MetaStudioClient
    from uploader.transfer.engine import PartFailure, TransferConfig, put_part
    from uploader.transfer.hashing import LaneHasher
    from uploader.transfer.plan import Piece

    running = await start_emulator(emulator_config(tmp_path / "emulator"))
    try:
        async with MetaStudioClient(Settings.from_env(running.client_env())) as client:
            url = (await client.create_job("once")).training_video_upload_url[0]
        body = tmp_path / "part"
        body.write_bytes(os.urandom(2 * MiB))
        piece = Piece("training_video", 1, body, 0, 2 * MiB, "application/octet-stream",
                      "part 1")
        async with aiohttp.ClientSession() as session:
            await put_part(session, url, piece, config=TransferConfig(), hasher=LaneHasher(),
                           on_bytes=lambda n: None)
            with pytest.raises(PartFailure) as spent:
                await put_part(session, url, piece, config=TransferConfig(),
                               hasher=LaneHasher(), on_bytes=lambda n: None)
        faults = running.emulator.faults
        assert spent.value.url_refused and spent.value.status == 403
        assert faults.received_bytes == 2 * MiB  # the second body never left
        assert faults.totals()["refused_early"] == 1
    finally:
        await running.stop()


async def test_a_body_that_stops_coming_is_cut(tmp_path: Path, monkeypatch):
    """A client that stops sending mid-body (killed, its machine gone) is cut, as object
    storage cuts an idle upload; the body is not stored and the handler does not wait on."""
    from urllib.parse import urlsplit

    from uploader import MetaStudioClient
    from uploader.emulator import _storage

    monkeypatch.setattr(_storage, "_IDLE", 0.3)
    running = await start_emulator(emulator_config(tmp_path / "emulator"))
    try:
        async with MetaStudioClient(Settings.from_env(running.client_env())) as client:
            url = urlsplit((await client.create_job("idle")).training_video_upload_url[0])
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n"
                     .encode() + bytes(1024))  # a quarter of the body, then nothing
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.readline(), timeout=5)
        assert time.monotonic() - started < 3
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer
        faults = running.emulator.faults
        assert faults.in_flight == 0
        assert faults.totals()["cut"] == 1 and faults.totals()["stored"] == 0
    finally:
        await running.stop()
