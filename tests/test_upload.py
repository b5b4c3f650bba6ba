"""End-to-end uploads against the emulator on loopback; each checks the assembled video."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import time
from pathlib import Path

import pytest

from tests.conftest import GOOD_VIDEO, SAMPLES, emulator_config
from tests.uploads import (
    FAST,
    REQUIRED,
    REQUIRED_FLAGS,
    Recorder,
    assembled,
    cli_env,
    json_out,
    new_job,
    run_cli,
    start_cli,
    stored_parts,
    video_of,
    wait_for_parts,
)
from uploader import (
    FileChangedError,
    JobStateError,
    Limits,
    MetaStudioClient,
    PlanError,
    PreflightError,
    Remedy,
    Settings,
    UsageError,
    upload_video,
    upload_video_sync,
)
from uploader._journal import FileIdentity
from uploader.emulator import EmulatorThread, RunningEmulator, start_emulator
from uploader.workflow.job import content_tag

JSON_FIELDS = {"job_id", "parts_total", "parts_skipped", "parts_uploaded", "bytes_uploaded",
               "seconds", "state"}


# ---- the CLI, as a person runs it -------------------------------------------------------


def test_cli_create_path(emulator_thread: RunningEmulator, tmp_path: Path):
    video = video_of(tmp_path, 900_000)
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = json_out(run_cli("upload", str(video), "--name", "demo", "--parts", "3", "--json",
                              env=env))
    assert set(result) >= JSON_FIELDS
    counts = (result["parts_total"], result["parts_uploaded"], result["parts_skipped"])
    assert counts == (3, 3, 0)
    assert result["bytes_uploaded"] == 900_000
    assert result["state"] == "WAIT_FILE_UPLOAD" and result["submitted"] is False
    settings = Settings.from_env(emulator_thread.client_env())
    assert asyncio.run(assembled(settings, str(result["job_id"]))) == video.read_bytes()
    assert list((tmp_path / "state").rglob("*.jsonl")) == []  # journal removed on success


def test_cli_update_path_waits_for_review(emulator_thread: RunningEmulator, tmp_path: Path):
    settings = Settings.from_env(emulator_thread.client_env())
    job_id = new_job(emulator_thread)
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(SAMPLES / "portrait_1080p.mp4"), "--job-id", job_id,
                     *REQUIRED_FLAGS, "--submit", "--wait", env=env)
    assert result.returncode == 0, result.stderr
    assert f"job {job_id}: 1 of 1 parts sent" in result.stdout
    assert "state: MANUAL_VERIFYING" in result.stdout
    expected = (SAMPLES / "portrait_1080p.mp4").read_bytes()
    assert asyncio.run(assembled(settings, job_id)) == expected


def test_readme_first_command_with_embedded_emulator(tmp_path: Path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = cli_env({}, tmp_path / "state") | {"TMPDIR": str(scratch)}
    result = run_cli("upload", str(GOOD_VIDEO), "--name", "demo", *REQUIRED_FLAGS, "--submit",
                     "--emulator", env=env)
    assert result.returncode == 0, result.stderr
    assert "state: MANUAL_VERIFYING" in result.stdout
    assert list(scratch.iterdir()) == []  # the emulator's data went with it


@pytest.mark.parametrize(("args", "code", "text"), [
    ([], 2, "exactly one of --job-id or --name"),
    (["--job-id", "x", "--name", "y"], 2, "exactly one of --job-id or --name"),
    (["--name", "y", "--parts", "1001"], 2, "1001"),
    (["--name", "y", "--part-size", "lots"], 2, "not a size"),
    (["--name", "y", "--parts", "1000"], 2, "at most"),
])
def test_usage_errors_exit_2(emulator_thread, tmp_path, args, code, text):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(GOOD_VIDEO), *args, env=env)
    assert result.returncode == code, result.stderr
    assert text in result.stderr and "Traceback" not in result.stderr


def test_refused_video_exits_3_and_sends_nothing(emulator_thread, tmp_path):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(SAMPLES / "too_short.mp4"), "--name", "x", env=env)
    assert result.returncode == 3
    assert "too_short" in result.stderr and "nothing was sent" in result.stderr
    assert emulator_thread.emulator.store.jobs == {}


def test_job_that_cannot_take_a_video_exits_4_before_spending_urls(emulator_thread, tmp_path):
    job_id = new_job(emulator_thread, "busy")
    job = emulator_thread.emulator.store.jobs[job_id]
    job["state"] = "MANUAL_VERIFYING"
    expires_before = job["last_expires"]
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(GOOD_VIDEO), "--job-id", job_id, env=env)
    assert result.returncode == 4
    assert "MANUAL_VERIFYING" in result.stderr and "manual review" in result.stderr
    assert job["last_expires"] == expires_before  # no update was called


def test_wrong_credentials_exit_4_without_secrets(emulator_thread, tmp_path):
    env = cli_env(emulator_thread.client_env() | {"CLOUD_SDK_SK": "s3cr3t-wrong-key"},
                  tmp_path / "state")
    result = run_cli("--debug", "upload", str(GOOD_VIDEO), "--name", "x", env=env)
    assert result.returncode == 4 and "401" in result.stderr
    assert "s3cr3t-wrong-key" not in result.stdout + result.stderr


# ---- the library, as an ingest job calls it ---------------------------------------------


async def test_library_async_many_small_parts(settings: Settings, tmp_path: Path):
    video = video_of(tmp_path, 3_000_000)
    told = Recorder()
    result = await upload_video(video, name="lib", parts=20, settings=settings,
                                state_dir=tmp_path / "state", transfer=FAST, progress=told)
    assert (result.parts_total, result.parts_uploaded) == (20, 20)
    assert (told.done[-1], told.total) == (3_000_000, 3_000_000)
    assert await assembled(settings, result.job_id) == video.read_bytes()


async def test_library_last_part_smaller(settings: Settings, tmp_path: Path):
    video = video_of(tmp_path, 1_000_000)
    result = await upload_video(video, name="lib", part_size=300 * 1024, settings=settings,
                                state_dir=tmp_path / "state")
    assert result.parts_total == 4  # 3 x 300 KiB and 78,400 bytes
    assert await assembled(settings, result.job_id) == video.read_bytes()


def test_library_sync_one_part(emulator_thread: RunningEmulator, tmp_path: Path):
    settings = Settings.from_env(emulator_thread.client_env())
    result = upload_video_sync(GOOD_VIDEO, name="sync", settings=settings,
                               state_dir=tmp_path / "state")
    assert (result.parts_total, result.parts_uploaded) == (1, 1)
    assert asyncio.run(assembled(settings, result.job_id)) == GOOD_VIDEO.read_bytes()


@pytest.mark.slow
async def test_a_thousand_parts(settings: Settings, tmp_path: Path):
    video = video_of(tmp_path, 1000 * 100 * 1024 + 777)
    result = await upload_video(video, name="many", parts=1000, settings=settings,
                                state_dir=tmp_path / "state", transfer=FAST)
    assert (result.parts_total, result.parts_uploaded) == (1000, 1000)
    assert await assembled(settings, result.job_id) == video.read_bytes()


async def test_library_errors(settings: Settings, tmp_path: Path):
    with pytest.raises(UsageError):
        await upload_video(GOOD_VIDEO, settings=settings, state_dir=tmp_path)
    with pytest.raises(PreflightError) as refused:
        await upload_video(SAMPLES / "wrong_resolution.mp4", name="x", settings=settings,
                           state_dir=tmp_path)
    assert refused.value.report.problems[0].code == "bad_resolution"
    with pytest.raises(PlanError):
        await upload_video(GOOD_VIDEO, name="x", parts=4, settings=settings, state_dir=tmp_path)
    async with MetaStudioClient(settings) as client:
        job_id = (await client.create_job("done")).job_id
    await upload_video(GOOD_VIDEO, job_id=job_id, settings=settings, state_dir=tmp_path,
                       submit=True, **REQUIRED)
    with pytest.raises(JobStateError) as state_error:
        await upload_video(GOOD_VIDEO, job_id=job_id, settings=settings, state_dir=tmp_path)
    assert state_error.value.job_id == job_id
    assert state_error.value.state in ("AUTO_VERIFYING", "MANUAL_VERIFYING")


# ---- resume (more failure cases: tests/test_faults.py) ----------------------------------


async def test_a_job_created_by_a_run_that_died_is_not_created_twice(settings, tmp_path):
    video = video_of(tmp_path, 300_000)
    state = tmp_path / "state"
    # A run (here or on another machine) created its job, tagged with the video's content
    # and the name, and died before it could record the job id.
    tag = content_tag("orphan", FileIdentity.of(video))
    async with MetaStudioClient(settings) as client:
        orphan = (await client.create_job("orphan", video_multipart_count=1,
                                          tags=[tag])).job_id
        lookalike = (await client.create_job("orphan", tags=["uploader-other"])).job_id
        result = await upload_video(video, name="orphan", settings=settings, state_dir=state)
        assert result.job_id == orphan != lookalike
        assert (await client.list_jobs(name="orphan")).count == 2
        # Run again once it is done: the job is found again, nothing is sent or created.
        again = await upload_video(video, name="orphan", settings=settings, state_dir=state)
        assert again.job_id == orphan and again.bytes_uploaded == 0
        # Another name for the same video is another job; so is --restart.
        other = await upload_video(video, name="orphan 2", settings=settings, state_dir=state)
        fresh = await upload_video(video, name="orphan", settings=settings, state_dir=state,
                                   restart=True)
        assert len({orphan, other.job_id, fresh.job_id}) == 3
    assert await assembled(settings, orphan) == video.read_bytes()


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path: Path):
    video = video_of(tmp_path, 16 * 512 * 1024)
    config = emulator_config(tmp_path / "emulator", link_rate=2 * 1024 * 1024)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--name", "killed", "--parts", "16", "--concurrency", "2",
                "--json")
        with start_cli(*args, env=env) as first:
            job_id = wait_for_parts(emulator, 4)
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert first.returncode == -signal.SIGKILL
        had = stored_parts(emulator, job_id)
        assert 4 <= had < 16
        emulator.emulator.faults.link_rate = None
        result = json_out(run_cli(*args, env=env))
        assert result["job_id"] == job_id
        assert int(result["parts_skipped"]) >= had
        assert int(result["parts_skipped"]) + int(result["parts_uploaded"]) == 16
        settings = Settings.from_env(emulator.client_env())
        assert asyncio.run(assembled(settings, job_id)) == video.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_resumes(tmp_path: Path, sig: int, code: int):
    video = video_of(tmp_path, 8 * 512 * 1024)
    config = emulator_config(tmp_path / "emulator", link_rate=1024 * 1024)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--name", "interrupted", "--parts", "8", "--concurrency",
                "2")
        with start_cli(*args, env=env) as first:
            wait_for_parts(emulator, 2)
            first.send_signal(sig)
            _, stderr = first.communicate(timeout=30)
        assert first.returncode == code, stderr  # SIGTERM (timeout, systemd) as Ctrl-C
        assert "run the same command again to resume" in stderr
        assert "Traceback" not in stderr
        assert len(list((tmp_path / "state").rglob("*.jsonl"))) == 1
        emulator.emulator.faults.link_rate = None
        second = run_cli(*args, "--json", env=env)
        assert int(json_out(second)["parts_skipped"]) >= 2


async def _interrupted_upload(settings: Settings, video: Path, state: Path) -> str:
    """Start an upload in 4 parts and cancel it, as Ctrl-C does, once half is sent."""
    async with MetaStudioClient(settings) as client:
        job_id = (await client.create_job("changing")).job_id
    half_sent = asyncio.Event()

    def watch(done: int, total: int) -> None:
        if done >= total // 2:
            half_sent.set()

    task = asyncio.create_task(upload_video(
        video, job_id=job_id, parts=4, limits=Limits(concurrency=1), settings=settings,
        state_dir=state,
        progress=Recorder(watch)))
    await asyncio.wait_for(half_sent.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return job_id


async def test_changed_file_is_refused_then_restart_works(settings: Settings, tmp_path: Path):
    video = video_of(tmp_path, 1_200_000)
    state = tmp_path / "state"
    job_id = await _interrupted_upload(settings, video, state)
    data = bytearray(video.read_bytes())
    data[-5] ^= 0xFF  # change a byte inside the trailing free box: still a valid video
    video.write_bytes(bytes(data))
    with pytest.raises(FileChangedError, match="start the upload over") as changed:
        await upload_video(video, job_id=job_id, settings=settings, state_dir=state)
    assert changed.value.remedy is Remedy.RESTART and "--" not in str(changed.value)
    result = await upload_video(video, job_id=job_id, parts=4, settings=settings,
                                state_dir=state, restart=True)
    assert (result.parts_skipped, result.parts_uploaded) == (0, 4)
    assert await assembled(settings, job_id) == video.read_bytes()


async def test_resume_without_the_journal_checks_stored_parts_against_the_file(
        settings: Settings, tmp_path: Path):
    video = video_of(tmp_path, 1_200_000)
    job_id = await _interrupted_upload(settings, video, tmp_path / "state")
    result = await upload_video(video, job_id=job_id, parts=4, settings=settings,
                                state_dir=tmp_path / "another machine")
    assert result.parts_skipped >= 1  # hashed from the file, found to match
    assert result.parts_skipped + result.parts_uploaded == 4
    assert await assembled(settings, job_id) == video.read_bytes()


@pytest.mark.slow
def test_two_runs_on_one_job_the_second_is_refused(tmp_path: Path):
    video = video_of(tmp_path, 4 * 512 * 1024)
    config = emulator_config(tmp_path / "emulator", link_rate=64 * 1024)
    with EmulatorThread(config) as emulator:
        job_id = new_job(emulator, "shared")
        env = cli_env(emulator.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--job-id", job_id, "--parts", "4", "--quiet")
        with start_cli(*args, env=env) as first:
            deadline = time.monotonic() + 30
            while not list((tmp_path / "state").rglob("*.jsonl")):
                assert time.monotonic() < deadline, "the first run never started"
                time.sleep(0.05)
            second = run_cli(*args, env=env)
            assert second.returncode == 4
            assert "another run is uploading" in second.stderr
            emulator.emulator.faults.link_rate = None
            first.communicate(timeout=60)
        assert first.returncode == 0


def test_journal_is_private(tmp_path: Path):
    video = video_of(tmp_path, 4 * 512 * 1024)
    state = tmp_path / "state" / "uploader"
    asyncio.run(_journal_left_behind(tmp_path, video, state))
    journal = next(state.glob("*.jsonl"))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    header, file = (json.loads(line) for line in journal.read_text().splitlines()[:2])
    assert header["kind"] == "header" and header["version"] == 3
    assert file["kind"] == "file" and file["sizes"] == [524288] * 4


def test_named_state_dir_keeps_its_mode(tmp_path: Path):
    video = video_of(tmp_path, 4 * 512 * 1024)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    asyncio.run(_journal_left_behind(tmp_path, video, shared))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    files = [f for f in shared.rglob("*") if f.is_file()]
    assert files and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    assert stat.S_IMODE((shared / "pace").stat().st_mode) == 0o700  # the shared paces


async def _journal_left_behind(tmp_path: Path, video: Path, state: Path) -> None:
    running = await start_emulator(emulator_config(tmp_path / "emulator"))
    try:
        await _interrupted_upload(Settings.from_env(running.client_env()), video, state)
    finally:
        await running.stop()


async def test_state_unreadable_after_confirm_is_still_a_success(emulator, settings, tmp_path):
    def break_show_job(request, answer):  # type: ignore[no-untyped-def]
        if request.method == "GET" and "job_id" in request.match_info:
            return b"<html>gateway error</html>"
        return answer

    emulator.emulator.faults.rewrite = break_show_job
    video = video_of(tmp_path, 300_000)
    result = await upload_video(video, name="blind", settings=settings,
                                state_dir=tmp_path / "state")
    assert result.state == "UNKNOWN" and "confirmed" in result.state_meaning
    emulator.emulator.faults.rewrite = None
    assert await assembled(settings, result.job_id) == video.read_bytes()
