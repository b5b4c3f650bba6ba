"""Nothing grows forever (issue 21, item 11): a killed --emulator run's data are reclaimed
by the next run; `uploader state list|clean` show and remove the journals no run holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GOOD_VIDEO
from tests.uploads import FOREIGN, run_cli
from uploader._journal import Journal

SERVICE = ("https://metastudio.cn-north-4.example", "0a1b2c3d4e5f40718293a4b5c6d7e8f9")


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], Path]:
    server = subprocess.Popen([sys.executable, "-m", "uploader", "emulator", "--port", "0"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    return server, Path(line.split("(data in ", 1)[1].rstrip(")\n"))


@pytest.mark.slow
def test_a_killed_emulator_runs_data_are_reclaimed_by_the_next_run(tmp_path: Path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)} | {
        "TMPDIR": str(scratch), "XDG_STATE_HOME": str(tmp_path / "state")}
    killed, killed_folder = _serve(env)
    alive, alive_folder = _serve(env)
    foreign = scratch / "metastudio-emulator-not-ours"  # no .owner: not made by a run
    foreign.mkdir()
    (killed_folder / "copy-of-a-video").write_bytes(b"x" * 1024)
    killed.kill()  # SIGKILL: no chance to clean up
    killed.communicate(timeout=30)
    assert killed_folder.is_dir()

    run = subprocess.run([sys.executable, "-m", "uploader", "-v", "upload", str(GOOD_VIDEO),
                          "--name", "trial", "--emulator"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert not killed_folder.exists(), "the killed run's folder was left"
    assert f"removed {killed_folder}" in run.stderr
    assert alive_folder.is_dir(), "a live emulator's folder was taken"
    assert foreign.is_dir(), "a folder not made by an emulator run was taken"
    assert sorted(p.name for p in scratch.iterdir()) == sorted(
        [alive_folder.name, foreign.name]), "the run left its own folder"
    alive.send_signal(signal.SIGTERM)
    alive.communicate(timeout=30)
    assert not alive_folder.exists()


async def _journal(state: Path, video: Path, job_id: str, endpoint: str = SERVICE[0]
                   ) -> Journal:
    journal = Journal(state, service=(endpoint, SERVICE[1]), job_key=f"name:{job_id}",
                      video=video)
    await journal.__aenter__()
    await journal.start(job_id)
    await journal.lock_job(job_id)
    return journal


async def test_state_list_and_clean_leave_what_a_run_holds(tmp_path: Path):
    state = tmp_path / "state"
    video = tmp_path / "video.mp4"
    video.write_bytes(b"video")
    old = await _journal(state, video, "job-old", "https://gone.example")
    await old.__aexit__(None, None, None)  # left behind, as by a failed run
    recent = await _journal(state, video, "job-recent")
    await recent.__aexit__(None, None, None)
    held = await _journal(state, video, "job-running")  # a run in progress
    week_ago = time.time() - 7 * 86400
    os.utime(old.path, (week_ago, week_ago))
    (state / "notes.txt").write_text("mine")
    (state / ("f" * 24 + ".jsonl")).symlink_to(tmp_path / "elsewhere")
    try:
        listed = run_cli("state", "list", "--state-dir", str(state), "--json", env={})
        assert listed.returncode == 0, listed.stderr
        entries = json.loads(listed.stdout)["entries"]
        by_job = {e["job_id"]: e for e in entries if e["kind"] == "journal"}
        assert set(by_job) == {"job-old", "job-recent", "job-running"}
        assert by_job["job-old"]["endpoint"] == "https://gone.example"
        assert by_job["job-old"]["video"] == str(video.resolve())
        assert by_job["job-old"]["age_days"] >= 7 > by_job["job-recent"]["age_days"]
        assert [e["held"] for e in entries if e["kind"] == "lock"] == [True]
        assert by_job["job-running"]["held"] and not by_job["job-recent"]["held"]
        text = run_cli("state", "list", "--state-dir", str(state), env={}).stdout
        assert "in use" in text and "job job-old" in text and "https://gone.example" in text

        aged = run_cli("state", "clean", "--state-dir", str(state), "--older-than", "3",
                       "--json", env={})
        assert json.loads(aged.stdout)["removed"] == [str(old.path)]
        everything = run_cli("state", "clean", "--state-dir", str(state), env={})
        assert everything.returncode == 0
        assert f"removed {recent.path} (job job-recent)" in everything.stdout
        assert "1 file(s) removed" in everything.stdout
        assert held.path.exists() and (state / "notes.txt").exists()
        assert (state / ("f" * 24 + ".jsonl")).is_symlink()
    finally:
        await held.__aexit__(None, None, None)
    assert held.path.exists()  # kept by its run, for the next to resume
