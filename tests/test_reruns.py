"""Re-runs and the state folder: what a re-run after any interruption does, and what the
journal and lock files survive (issue 12, items 1-4, 6 and 10)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import emulator_config
from tests.uploads import (
    REQUIRED,
    REQUIRED_FLAGS,
    Recorder,
    assembled,
    cli_env,
    json_out,
    run_cli,
    start_cli,
    stored_parts,
    video_of,
    wait_for_parts,
)
from uploader import (
    FileChangedError,
    JournalError,
    Limits,
    MalformedAnswerError,
    MetaStudioClient,
    RefusedError,
    Settings,
    upload_video,
)
from uploader._journal import Journal
from uploader.cli.common import exit_code
from uploader.emulator import EmulatorThread, RunningEmulator, start_emulator
from uploader.emulator._api import COMMAND

PART = 512 * 1024


def _journals(state: Path) -> list[Path]:
    return sorted(state.rglob("*.jsonl")) if state.exists() else []


async def _cut_short(settings: Settings, video: Path, state: Path, **options: object) -> str:
    """An upload of `video` in 8 parts (to a new job "cut" unless `options` give a job_id),
    cancelled (as Ctrl-C does) once three parts are stored; the job id."""
    seen: list[str] = []
    parts = asyncio.Event()
    done = 0

    def step(step: str, job_id: str) -> None:
        seen.append(job_id)

    def progress(sent: int, total: int) -> None:
        nonlocal done
        done = sent
        if sent >= 3 * PART + PART // 2:
            parts.set()

    options = options if "job_id" in options else {"name": "cut", **options}
    task = asyncio.create_task(upload_video(
        video, parts=8, limits=Limits(concurrency=1), settings=settings, state_dir=state,
        progress=Recorder(progress, step), **options))  # type: ignore[arg-type]
    await asyncio.wait_for(parts.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return seen[0]


# ---- 1. re-running never duplicates ------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_during_the_review_wait_then_the_same_command(tmp_path: Path):
    video = video_of(tmp_path, 4 * PART)
    config = emulator_config(tmp_path / "emulator", review_delay=60.0)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--name", "patient", *REQUIRED_FLAGS, "--submit")
        with start_cli(*args, "--wait", env=env) as first:
            job_id = _wait_for_state(emulator, "AUTO_VERIFYING")
            time.sleep(0.3)
            first.send_signal(signal.SIGINT)
            _, stderr = first.communicate(timeout=30)
        assert first.returncode == 130
        assert "confirmed, and the job is submitted" in stderr
        assert f"uploader status {job_id}" in stderr
        assert "resume" not in stderr
        again = json_out(run_cli(*args, "--json", env=env))
        assert again["job_id"] == job_id and again["bytes_uploaded"] == 0
        assert list(emulator.emulator.store.jobs) == [job_id]


def _wait_for_state(emulator: RunningEmulator, state: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for job_id, job in list(emulator.emulator.store.jobs.items()):
            if job["state"] == state:
                return job_id
        time.sleep(0.02)
    raise AssertionError(f"no job reached {state}")


async def test_a_confirm_whose_answer_was_malformed_is_not_sent_again(emulator, settings,
                                                                      tmp_path):
    video = video_of(tmp_path, 4 * PART)
    emulator.emulator.faults.rewrite = _on_command("CONFIRM_MULTIPART_UPLOADED")
    with pytest.raises(MalformedAnswerError):
        await upload_video(video, name="mangled", settings=settings, state_dir=tmp_path)
    emulator.emulator.faults.rewrite = None
    puts = emulator.emulator.faults.totals()["attempts"]
    result = await upload_video(video, name="mangled", settings=settings, state_dir=tmp_path)
    assert result.bytes_uploaded == 0 and emulator.emulator.faults.totals()["attempts"] == puts
    assert len(emulator.emulator.store.jobs) == 1
    assert await assembled(settings, result.job_id) == video.read_bytes()


def _on_command(command: str):  # type: ignore[no-untyped-def]
    """A rewrite that answers `command` (after carrying it out) with a non-JSON page."""
    def rewrite(request, answer):  # type: ignore[no-untyped-def]
        if request.path.endswith("/command") and request.get(COMMAND) == command:
            return b"<html>bad gateway page</html>"
        return answer
    return rewrite


async def test_cut_short_while_submitting_then_the_same_command(emulator, settings, tmp_path):
    video = video_of(tmp_path, 4 * PART)
    state = tmp_path / "state"
    options = {"name": "submitting", "submit": True, "settings": settings, "state_dir": state,
               **REQUIRED}
    task: asyncio.Task[object] | None = None

    def cut_at(step: str, job_id: str) -> None:
        if step == "confirmed" and task is not None:
            task.cancel()  # lands in the submit

    task = asyncio.create_task(upload_video(video, progress=Recorder(at_step=cut_at),
                                            **options))
    with pytest.raises(asyncio.CancelledError):
        await task
    [job_id] = emulator.emulator.store.jobs
    async with MetaStudioClient(settings) as client:  # the submit got through, in the end
        if (await client.show_job(job_id)).state == "WAIT_FILE_UPLOAD":
            assert (await client.command(job_id, "SUBMITVERIFYING")).succeeded
    again = await upload_video(video, **options)
    assert again.job_id == job_id and again.submitted and again.bytes_uploaded == 0
    assert list(emulator.emulator.store.jobs) == [job_id]


async def test_with_a_job_id_and_no_journal_a_confirmed_video_is_not_sent_again(
        settings, tmp_path):
    video = video_of(tmp_path, 4 * PART)
    first = await upload_video(video, name="once", parts=4, settings=settings,
                               state_dir=tmp_path / "a")
    again = await upload_video(video, job_id=first.job_id, parts=4, settings=settings,
                               state_dir=tmp_path / "b")
    assert again.bytes_uploaded == 0 and again.parts_skipped == 4


@pytest.mark.parametrize(("first", "then"), [
    ({"parts": 3}, {}), ({"part_size": 5 * 1024 * 1024}, {}), ({}, {"parts": 3}),
    ({"parts": 3}, {"parts": 2}),
])
async def test_a_video_confirmed_under_another_part_plan_is_not_sent_again(
        settings, tmp_path, first, then):
    video = video_of(tmp_path, 12 * 1024 * 1024)
    sent = await upload_video(video, name="plans", settings=settings,
                              state_dir=tmp_path / "a", **first)
    again = await upload_video(video, name="plans", settings=settings,
                               state_dir=tmp_path / "b", **then)
    assert again.job_id == sent.job_id
    assert again.bytes_uploaded == 0, "the whole video was sent again"


# ---- 2. a journal belongs to one service ---------------------------------------------------

async def test_a_journal_of_another_service_is_not_used(tmp_path):
    video = video_of(tmp_path, 8 * PART)
    state = tmp_path / "state"
    one = await start_emulator(emulator_config(tmp_path / "one"))
    two = await start_emulator(emulator_config(tmp_path / "two"))
    try:
        await _cut_short(Settings.from_env(one.client_env()), video, state)
        result = await upload_video(video, name="cut", settings=Settings.from_env(
            two.client_env()), state_dir=state)
        assert result.parts_skipped == 0 and list(two.emulator.store.jobs) == [result.job_id]
        assert len(_journals(state)) == 1  # the first service's, kept for it
    finally:
        await one.stop()
        await two.stop()


async def test_a_journal_whose_job_the_service_does_not_know_is_set_aside(tmp_path, caplog):
    video = video_of(tmp_path, 8 * PART)
    state = tmp_path / "state"
    first = await start_emulator(emulator_config(tmp_path / "first"))
    port = int(first.url.rsplit(":", 1)[1])
    job_id = await _cut_short(Settings.from_env(first.client_env()), video, state)
    await first.stop()
    # The same address, a service that never heard of the job (its data were lost).
    fresh = await start_emulator(emulator_config(tmp_path / "fresh"), port=port)
    try:
        settings = Settings.from_env(fresh.client_env())
        result = await upload_video(video, name="cut", settings=settings, state_dir=state)
        assert result.job_id != job_id and "set aside" in caplog.text
        assert await assembled(settings, result.job_id) == video.read_bytes()
    finally:
        await fresh.stop()


async def test_with_a_job_id_an_unknown_journal_job_exits_naming_it(tmp_path):
    video = video_of(tmp_path, 8 * PART)
    state = tmp_path / "state"
    first = await start_emulator(emulator_config(tmp_path / "first"))
    port = int(first.url.rsplit(":", 1)[1])
    settings = Settings.from_env(first.client_env())
    async with MetaStudioClient(settings) as client:
        job_id = (await client.create_job("known")).job_id
    await _cut_short(settings, video, state, job_id=job_id)
    await first.stop()
    fresh = await start_emulator(emulator_config(tmp_path / "fresh"), port=port)
    try:
        with pytest.raises(JournalError, match=job_id) as caught:
            await upload_video(video, job_id=job_id, settings=settings, state_dir=state)
        assert caught.value.job_id == job_id and exit_code(caught.value) == 4
    finally:
        await fresh.stop()


@pytest.mark.parametrize("damage", ["garbage in the middle", "another version"])
async def test_restart_and_resume_get_past_a_bad_journal(settings, tmp_path, damage):
    video = video_of(tmp_path, 8 * PART)
    state = tmp_path / "state"
    await _cut_short(settings, video, state)
    [journal] = _journals(state)
    lines = journal.read_bytes().splitlines(keepends=True)
    if damage == "another version":
        lines[0] = lines[0].replace(b'"version":3', b'"version":99')
    else:
        lines.insert(2, b"\x00\x00{not json at all\n")
    journal.write_bytes(b"".join(lines))
    result = await upload_video(video, name="cut", settings=settings, state_dir=state)
    assert await assembled(settings, result.job_id) == video.read_bytes()
    await _cut_short(settings, video, state, name="cut", restart=True)  # a second job
    journal.write_bytes(b"\xff" * 100 + b"\n" + b"{}" * 3)
    restarted = await upload_video(video, name="cut", settings=settings, state_dir=state,
                                   restart=True)
    assert restarted.bytes_uploaded == video.stat().st_size


# ---- 3. the journal survives the disk ------------------------------------------------------

async def test_a_record_cut_by_a_crash_is_ignored_and_later_records_stay_whole(
        settings, tmp_path):
    video = video_of(tmp_path, 8 * PART)
    state = tmp_path / "state"
    job_id = await _cut_short(settings, video, state)
    [journal] = _journals(state)
    with journal.open("ab") as handle:
        handle.write(b'{"kind":"part","file":"training_vi')  # the crash cut it here
    await _cut_short(settings, video, state)  # resumes, and is cut short again
    assert all(json.loads(line) for line in journal.read_text().splitlines())
    result = await upload_video(video, name="cut", settings=settings, state_dir=state)
    assert result.job_id == job_id and result.parts_skipped >= 3
    assert await assembled(settings, job_id) == video.read_bytes()




@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_the_job_id_and_the_next_run_resumes(tmp_path):
    video = video_of(tmp_path, 16 * PART)
    state = tmp_path / "state"
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        env = cli_env(emulator.client_env(), state)
        args = ("upload", str(video), "--name", "full", "--parts", "16", "--json")

        def small_disk() -> None:  # writes past 2 KB fail as on a full disk (EFBIG)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (2_000, 2_000))

        full = subprocess.run([sys.executable, "-m", "uploader", *args], env=env,
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=small_disk)
        assert full.returncode == 4 and "Traceback" not in full.stderr, full.stderr
        failure = json.loads(full.stdout)
        assert failure["error"] == "JournalError" and failure["job_id"] in full.stderr
        [journal] = _journals(state)
        assert all(json.loads(line) for line in journal.read_text().splitlines())
        result = json_out(run_cli(*args, env=env))
        assert result["job_id"] == failure["job_id"]
        settings = Settings.from_env(emulator.client_env())
        assert asyncio.run(assembled(settings, str(result["job_id"]))) == video.read_bytes()


async def test_no_lock_file_or_empty_journal_is_left_behind(emulator, settings,
                                                                  tmp_path):
    video = video_of(tmp_path, 4 * PART)
    state = tmp_path / "state"
    await upload_video(video, name="tidy", settings=settings, state_dir=state)
    job_id = next(iter(emulator.emulator.store.jobs))
    await upload_video(video, job_id=job_id, restart=True, settings=settings,
                       state_dir=state)
    emulator.emulator.faults.api_statuses = [400]  # refused: no job
    with pytest.raises(RefusedError):
        await upload_video(video, name="refused", settings=settings, state_dir=state)
    # What stays is the APIs' paces, shared with the other processes (a file an API).
    assert [p.name for p in state.iterdir()] == ["pace"]
    assert all(p.name.startswith("pace-") for p in (state / "pace").iterdir())


# ---- 4. state files cannot be subverted ----------------------------------------------------

def _journal_path(settings: Settings, state: Path, video: Path, key: str) -> Path:
    return Journal(state, service=(settings.endpoint, settings.project_id), job_key=key,
                   video=video).path


@pytest.mark.parametrize("plant", ["symlink", "someone else's file", "readable by others",
                                   "hard link"])
async def test_a_planted_state_file_is_refused_never_followed(emulator, settings, tmp_path,
                                                              plant):
    if plant in ("someone else's file", "readable by others") and not hasattr(os, "geteuid"):
        pytest.skip("no owners nor mode bits here (Windows, or the portable tier)")
    video = video_of(tmp_path, 4 * PART)
    state = tmp_path / "state"
    state.mkdir()
    path = _journal_path(settings, state, video, "name:planted")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    if plant == "symlink":
        path.symlink_to(victim)
    elif plant == "hard link":  # a file of the user's own, at the journal's path
        victim.chmod(0o600)
        os.link(victim, path)
    else:
        path.write_text("")
        path.chmod(0o644 if plant == "readable by others" else 0o600)
        if plant == "someone else's file":
            if os.geteuid() != 0:
                pytest.skip("only root can give a file to another user")
            os.chown(path, 65534, 65534)
    with pytest.raises(JournalError,
                       match=r"symbolic link|another user|read or written|hard link"):
        await upload_video(video, name="planted", settings=settings, state_dir=state)
    assert victim.read_text() == "precious" and not emulator.emulator.store.jobs


# ---- 6. resume trusts the file -------------------------------------------------------------

async def test_an_edit_that_keeps_size_and_time_is_caught_before_the_confirm(
        emulator, settings, tmp_path):
    video = video_of(tmp_path, 8 * PART)
    state = tmp_path / "state"
    job_id = await _cut_short(settings, video, state)
    assert (stored_parts(emulator, job_id) or 0) >= 3
    before = video.stat()
    with video.open("r+b") as handle:  # inside part 3, away from the ends the identity hashes
        handle.seek(2 * PART + 100)
        byte = handle.read(1)
        handle.seek(2 * PART + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(FileChangedError, match="part 3"):
        await upload_video(video, name="cut", settings=settings, state_dir=state)
    assert stored_parts(emulator, job_id) is not None  # nothing was confirmed


# ---- 10. two videos under one name at once -------------------------------------------------

@pytest.mark.slow
def test_two_videos_under_one_name_at_once(tmp_path: Path):
    one, two = (video_of(tmp_path, 8 * PART, name) for name in ("one.mp4", "two.mp4"))
    config = emulator_config(tmp_path / "emulator", link_rate=2 * 1024 * 1024)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        runs = [start_cli("upload", str(video), "--name", "twins", "--json", env=env)
                for video in (one, two)]
        results = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], results
        jobs = {json.loads(stdout)["job_id"] for stdout, _ in results}
        assert len(jobs) == 2 and {j["name"] for j in emulator.emulator.store.jobs.values()} \
            == {"twins"}


@pytest.mark.slow
def test_the_same_video_under_one_name_twice_at_once_is_refused(tmp_path: Path):
    video = video_of(tmp_path, 8 * PART)
    config = emulator_config(tmp_path / "emulator", link_rate=1024 * 1024)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        args = ("upload", str(video), "--name", "same", "--parts", "8", "--concurrency", "1")
        with start_cli(*args, env=env) as first:
            wait_for_parts(emulator, 1)
            second = run_cli(*args, env=env, timeout=60)
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=30)
        assert second.returncode == 4 and "another run is uploading" in second.stderr
        assert first.returncode == 130



@pytest.mark.slow
@pytest.mark.parametrize("runs", [2, 3])
async def test_machines_whose_lookups_race_end_with_one_job(emulator, settings, tmp_path,
                                                           runs: int):
    """Each lookup answered late (both see no job), so each run creates one: then each
    lists the tag again, all agree on the oldest, and the others delete theirs before
    sending a byte to it (issue 21, item 1)."""
    video = video_of(tmp_path, 4 * PART)
    emulator.emulator.faults.api_delays["list"] = 0.5
    results = await asyncio.gather(*(
        upload_video(video, name="raced", parts=4, settings=settings, submit=True,
                     state_dir=tmp_path / f"machine-{n}", **REQUIRED)
        for n in range(runs)))
    [job_id] = {result.job_id for result in results}
    assert list(emulator.emulator.store.jobs) == [job_id], "a second job was left"
    sent_to = {job for (job, _part), happened in emulator.emulator.faults.ledger.items()
               if happened["attempts"]}
    assert sent_to == {job_id}, "bytes went to a job that lost"
    assert all(result.submitted for result in results)
    assert await assembled(settings, job_id) == video.read_bytes()


def test_the_same_command_from_another_machine_finds_the_job(tmp_path: Path):
    video = video_of(tmp_path, 4 * PART)
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        args = ("upload", str(video), "--name", "shared", "--json")
        first = json_out(run_cli(*args, env=cli_env(emulator.client_env(), tmp_path / "a")))
        second = json_out(run_cli(*args, env=cli_env(emulator.client_env(), tmp_path / "b")))
        assert second["job_id"] == first["job_id"] and second["bytes_uploaded"] == 0
        assert list(emulator.emulator.store.jobs) == [first["job_id"]]
