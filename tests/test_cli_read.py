"""`uploader jobs`, `status` and `voices`, run as a user runs them, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from uploader import MetaStudioClient, Settings
from uploader.emulator import RunningEmulator


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m uploader ARGS` with only `env` as MetaStudio settings."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("METASTUDIO_", "CLOUD_SDK_"))}
    return subprocess.run([sys.executable, "-m", "uploader", *args], env=base | (env or {}),
                          capture_output=True, text=True, timeout=60)


async def _make_jobs(emulator: RunningEmulator) -> str:
    async with MetaStudioClient(Settings.from_env(emulator.client_env())) as client:
        await client.create_job("first")
        return (await client.create_job("second")).job_id


def test_jobs_status_voices_as_json(emulator_thread: RunningEmulator):
    import asyncio

    job_id = asyncio.run(_make_jobs(emulator_thread))
    env = emulator_thread.client_env()

    listed = run_cli("jobs", "--json", "--state", "WAIT_FILE_UPLOAD", "--limit", "1", env=env)
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["count"] == 2 and len(page["jobs"]) == 1

    shown = run_cli("status", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "WAIT_FILE_UPLOAD"
    assert "waiting for the job's files" in status["meaning"]
    assert status["latest_log"]["log_type"] == "USER_CREATE_JOD"

    voices = run_cli("voices", "--json", env=env)
    assert voices.returncode == 0 and json.loads(voices.stdout)["count"] == 1


def test_jobs_table_is_readable(emulator_thread: RunningEmulator):
    import asyncio

    job_id = asyncio.run(_make_jobs(emulator_thread))
    result = run_cli("jobs", env=emulator_thread.client_env())
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == ["JOB", "ID", "STATE", "CREATED", "NAME"]
    assert job_id in result.stdout and "2 shown of 2" in result.stdout


@pytest.mark.parametrize(("env_change", "exit_code", "text"), [
    ({"CLOUD_SDK_SK": "wrong"}, 4, "HTTP 401"),
    ({"METASTUDIO_PROJECT_ID": ""}, 4, "METASTUDIO_PROJECT_ID"),
])
def test_read_errors_exit_4_without_traceback(emulator_thread, env_change, exit_code, text):
    result = run_cli("status", "0" * 32, env=emulator_thread.client_env() | env_change)
    assert result.returncode == exit_code
    assert text in result.stderr and "Traceback" not in result.stderr


def test_unknown_job_exits_4(emulator_thread: RunningEmulator):
    result = run_cli("status", "f" * 32, env=emulator_thread.client_env())
    assert result.returncode == 4 and "not found" in result.stderr


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
