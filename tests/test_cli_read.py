"""`uploader jobs`, `status` and `voices` against the emulator, through click's CliRunner (they
need no signal and no process of their own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner, Result

from uploader import MetaStudioClient, Settings
from uploader.cli import main
from uploader.emulator import RunningEmulator


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """`uploader ARGS` in this process, with only `env` as MetaStudio settings."""
    cleared: dict[str, str | None] = {k: None for k in os.environ
                                      if k.startswith(("METASTUDIO_", "CLOUD_SDK_"))}
    return CliRunner().invoke(main, list(args), env=cleared | (env or {}))


async def _make_jobs(emulator: RunningEmulator) -> str:
    async with MetaStudioClient(Settings.from_env(emulator.client_env())) as client:
        await client.create_job("first")
        return (await client.create_job("second")).job_id


def test_jobs_status_voices_as_json(emulator_thread: RunningEmulator):
    import asyncio

    job_id = asyncio.run(_make_jobs(emulator_thread))
    env = emulator_thread.client_env()

    listed = run_cli("jobs", "--json", "--state", "WAIT_FILE_UPLOAD", "--limit", "1", env=env)
    assert listed.exit_code == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["count"] == 2 and len(page["jobs"]) == 1

    shown = run_cli("status", job_id, "--json", env=env)
    assert shown.exit_code == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "WAIT_FILE_UPLOAD"
    assert "waiting for the job's files" in status["meaning"]
    assert status["latest_log"]["log_type"] == "USER_CREATE_JOD"

    voices = run_cli("voices", "--json", env=env)
    assert voices.exit_code == 0 and json.loads(voices.stdout)["count"] == 1


def test_jobs_table_is_readable(emulator_thread: RunningEmulator):
    import asyncio

    job_id = asyncio.run(_make_jobs(emulator_thread))
    result = run_cli("jobs", env=emulator_thread.client_env())
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split() == ["JOB", "ID", "STATE", "CREATED", "NAME"]
    assert job_id in result.stdout and "2 shown of 2" in result.stdout


@pytest.mark.parametrize(("env_change", "exit_code", "text"), [
    ({"CLOUD_SDK_SK": "wrong"}, 4, "HTTP 401"),
    ({"METASTUDIO_PROJECT_ID": ""}, 4, "METASTUDIO_PROJECT_ID"),
])
def test_read_errors_exit_4_without_traceback(emulator_thread, env_change, exit_code, text):
    result = run_cli("status", "0" * 32, env=emulator_thread.client_env() | env_change)
    assert result.exit_code == exit_code
    assert text in result.stderr and "Traceback" not in result.stderr


def test_unknown_job_exits_4(emulator_thread: RunningEmulator):
    result = run_cli("status", "f" * 32, env=emulator_thread.client_env())
    assert result.exit_code == 4 and "not found" in result.stderr


def test_emulator_command_prints_its_url_and_environment():
    with subprocess.Popen([sys.executable, "-m", "uploader", "emulator", "--port", "0"],
                          stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        second = process.stdout.readline()
        assert "serving on http://127.0.0.1:" in first
        assert "METASTUDIO_ENDPOINT=http://127.0.0.1:" in second and "CLOUD_SDK_AK=" in second
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_jobs_refuses_a_state_that_does_not_exist(emulator_thread: RunningEmulator):
    result = run_cli("jobs", "--state", "WAIT_FILE_UPLOAD,WAITING_FOR_GODOT",
                     env=emulator_thread.client_env())
    assert result.exit_code == 2 and "no such state: WAITING_FOR_GODOT" in result.stderr


def test_verbosity_after_the_command_too(emulator_thread: RunningEmulator):
    import asyncio

    job_id = asyncio.run(_make_jobs(emulator_thread))
    for args in (["-vv", "status", job_id], ["status", job_id, "-vv"],
                 ["status", job_id, "--debug"]):
        result = run_cli(*args, env=emulator_thread.client_env())
        assert result.exit_code == 0 and "DEBUG uploader.api: GET" in result.stderr, args
    quiet = run_cli("status", job_id, env=emulator_thread.client_env())
    assert "DEBUG" not in quiet.stderr


def test_the_library_prints_nothing_unless_the_host_configures_logging(tmp_path):
    """A host application that configures no logging sees nothing of uploader's warnings on
    its stderr (Python's last-resort handler would print them)."""
    script = ("import logging, uploader, sys; "
              "logging.getLogger('uploader.transfer').warning('a warning'); print('done')")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert ran.stdout.strip() == "done" and ran.stderr == ""


def test_an_emulator_runs_advice_does_not_point_at_a_gone_emulator(tmp_path):
    from tests.conftest import GOOD_VIDEO
    from tests.uploads import cli_env
    from tests.uploads import run_cli as run

    result = run("upload", str(GOOD_VIDEO), "--name", "trial", "--emulator",
                 env=cli_env({}, tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    assert "the emulator stopped with this command" in result.stdout
    assert "uploader submit" not in result.stdout
