"""What a new user (then a hostile one) broke (issue 28, items 3-9): each case as the user
met it, through the CLI or the library as they ran it."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import uploader
from tests.conftest import GOOD_VIDEO, emulator_config
from tests.uploads import (
    REQUIRED_FLAGS,
    cli_env,
    json_out,
    new_job,
    run_cli,
    start_cli,
    video_of,
)
from uploader import Job, MetaStudioClient, Settings, UploaderError, UsageError
from uploader.batch.manifest import Row, RowError, read_manifest
from uploader.cli.common import EXIT_CODES, exit_code
from uploader.emulator import EmulatorThread, RunningEmulator

MIB = 1024 * 1024


# ---- item 3: manifests, and names with control characters ----------------------------


def test_a_stray_quote_makes_its_row_invalid_and_the_next_rows_are_read(tmp_path: Path):
    manifest = tmp_path / "rows.csv"
    manifest.write_text('path,name\nvids/v1.mp4,A\nvids/v3.mp4,"Rock\nvids/v4.mp4,S4\n'
                        'vids/v5.mp4,"tab\there"\nvids/v6.mp4,"comma, quoted"\n')
    rows = list(read_manifest(str(manifest)))
    assert [(type(r).__name__, r.line) for r in rows] == [
        ("Row", 2), ("RowError", 3), ("Row", 4), ("RowError", 5), ("Row", 6)]
    assert isinstance(rows[1], RowError) and "quote that does not close" in rows[1].message
    assert isinstance(rows[2], Row) and rows[2].job.name == "S4"
    assert isinstance(rows[4], Row) and rows[4].job.name == "comma, quoted"


def test_the_dry_run_counts_a_stray_quote_as_invalid(emulator_thread: RunningEmulator,
                                                     tmp_path: Path):
    for name in ("v1.mp4", "v3.mp4", "v4.mp4"):
        (tmp_path / name).write_bytes(GOOD_VIDEO.read_bytes())
    manifest = tmp_path / "rows.csv"
    manifest.write_text('path,name\nv1.mp4,A\nv3.mp4,"Rock\nv4.mp4,S4\n')
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    dry = run_cli("batch", str(manifest), "--dry-run", env=env)
    assert dry.returncode == 6 and "2 row(s) would upload" in dry.stderr
    assert "1 invalid" in dry.stderr and "line 3" in dry.stderr


@pytest.mark.parametrize("name", ["a\nb", "red\x1b[31m", "tab\tbed", "para\u2029graph"])
def test_names_with_control_characters_are_refused_everywhere(
        emulator_thread: RunningEmulator, tmp_path: Path, name: str):
    with pytest.raises(UsageError, match="control character"):
        Job.of(GOOD_VIDEO, name=name)
    with pytest.raises(UsageError, match="control character"):
        Job.of(GOOD_VIDEO, name="fine", tags=[name])
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(GOOD_VIDEO), "--name", name, env=env)
    assert result.returncode == 2 and "control character" in result.stderr
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"path": str(GOOD_VIDEO), "name": name}) + "\n")
    assert isinstance(next(read_manifest(str(manifest))), RowError)
    assert not emulator_thread.emulator.store.jobs


def test_a_name_from_the_service_is_printed_escaped(emulator_thread: RunningEmulator,
                                                    tmp_path: Path):
    job_id = new_job(emulator_thread, "evil\x1b[31m\nname")  # another tool made it
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    listed = run_cli("jobs", env=env)
    shown = run_cli("status", job_id, env=env)
    for result in (listed, shown):
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "evil\\x1b[31m\\nname" in result.stdout


# ---- item 4: options the API cannot change on an existing job -------------------------


@pytest.mark.parametrize(("flags", "said"), [
    (("--model-version", "V3.3"), "--model-version V3.3 (it is V3.2)"),
    (("--edition", "flexus"), "edition flexus (it is standard)"),
])
def test_unchangeable_options_on_an_existing_job_are_a_usage_error(
        emulator_thread: RunningEmulator, tmp_path: Path, flags: tuple[str, ...], said: str):
    job_id = new_job(emulator_thread)
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("upload", str(GOOD_VIDEO), "--job-id", job_id, *flags, env=env)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "create a new job" in result.stderr
    assert emulator_thread.emulator.faults.totals()["attempts"] == 0  # nothing was sent
    same = run_cli("upload", str(GOOD_VIDEO), "--job-id", job_id, "--model-version", "V3.2",
                   "--edition", "standard", "--json", env=env)
    assert same.returncode == 0, same.stderr  # what the job is already: fine


# ---- item 5: every error has its documented exit code ---------------------------------


def _every_error_class() -> set[type[UploaderError]]:
    for module in pkgutil.walk_packages(uploader.__path__, "uploader."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: set[type[UploaderError]] = set()
    pending: list[type[UploaderError]] = [UploaderError]
    while pending:
        kind = pending.pop()
        found.add(kind)
        pending.extend(kind.__subclasses__())
    return found


def test_every_error_class_has_an_exit_code_of_its_own_or_a_family():
    for kind in _every_error_class() - {UploaderError}:
        mapped = next(c for c in kind.__mro__ if c in EXIT_CODES)
        assert mapped is not UploaderError, f"{kind.__name__} has no exit code"


def test_credential_errors_exit_4(tmp_path: Path):
    with socket.socket() as probe:  # a port nobody listens on: a dead metadata service
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    base = cli_env({"METASTUDIO_ENDPOINT": "http://127.0.0.1:9",
                    "METASTUDIO_PROJECT_ID": "0a1b2c3d4e5f40718293a4b5c6d7e8f9"},
                   tmp_path / "state")
    empty = tmp_path / "token"
    empty.write_text("")
    for more in ({"METASTUDIO_CREDENTIALS": "ecs", "METASTUDIO_METADATA_URL": dead},
                 {"METASTUDIO_AUTH_TOKEN_FILE": str(tmp_path / "missing")},
                 {"METASTUDIO_AUTH_TOKEN_FILE": str(empty)}):
        result = run_cli("jobs", "--json", env=base | more)
        assert result.returncode == 4, (more, result.stderr)
        assert json.loads(result.stdout)["error"] == "CredentialsError"
    assert exit_code(uploader.CredentialsError("x", source="y")) == 4


# ---- item 6: no secret in a parse error -----------------------------------------------


@pytest.mark.parametrize("layout", [
    "[basic]\nak = AKEXAMPLE\nsk =\nS3CR3TWRAPPEDVALUE\n",         # wrapped onto the next line
    "[basic]\nak = AKEXAMPLE\nS3CR3TWRAPPEDVALUE\nsk = x\n",       # a secret on its own line
    "ak = AKEXAMPLE\nsk = S3CR3TWRAPPEDVALUE\n",                   # no section header
    "[basic]\nak = AKEXAMPLE\nsk = S3CR3TWRAPPEDVALUE\nsk = S3CR3TWRAPPEDVALUE\n",  # twice
])
def test_a_malformed_credentials_file_never_prints_its_secret(tmp_path: Path, layout: str):
    credentials = tmp_path / "credentials"
    credentials.write_text(layout)
    credentials.chmod(0o600)
    env = cli_env({"METASTUDIO_ENDPOINT": "http://127.0.0.1:9",
                   "METASTUDIO_PROJECT_ID": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
                   "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(credentials)}, tmp_path / "state")
    for args in (("jobs",), ("jobs", "--json"), ("-vv", "status", "x")):
        result = run_cli(*args, env=env)
        assert result.returncode == 4, result.stderr
        assert "S3CR3T" not in result.stdout + result.stderr
        assert "credentials file" in result.stdout + result.stderr


def test_redaction_covers_secrets_however_they_are_laid_out():
    from uploader._redact import redact

    for text in ("sk = S3CR3T", "sk =\nS3CR3T", '"sk": "S3CR3T"', "secret_key: S3CR3T",
                 "security_token=S3CR3T", "SK:S3CR3T", "password = S3CR3T"):
        assert "S3CR3T" not in redact(text), text
    assert redact("task: a row") == "task: a row"


# ---- item 7: read-only commands fail fast ---------------------------------------------


def _closed_port_env(tmp_path: Path) -> dict[str, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return cli_env({"METASTUDIO_ENDPOINT": f"http://127.0.0.1:{port}",
                    "METASTUDIO_PROJECT_ID": "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
                    "CLOUD_SDK_AK": "AK", "CLOUD_SDK_SK": "SK"}, tmp_path / "state")


@pytest.mark.parametrize("args", [("jobs",), ("status", "j"), ("voices",),
                                  ("delete", "j", "--yes"), ("submit", "j")])
def test_commands_that_do_not_transfer_take_a_retry_window(tmp_path: Path,
                                                           args: tuple[str, ...]):
    env = _closed_port_env(tmp_path)
    started = time.monotonic()
    result = run_cli(*args, "--retry-window", "0.5", env=env)
    assert result.returncode == 4 and "cannot reach" in result.stderr.lower(), result.stderr
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_wrong_port_fails_a_read_in_seconds_not_minutes(tmp_path: Path):
    started = time.monotonic()
    result = run_cli("jobs", env=_closed_port_env(tmp_path))
    took = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    assert 5 <= took < 30, took  # the 10 s window, not the transfer's 180


async def test_a_client_answered_once_rides_out_an_outage_with_its_long_window(
        tmp_path: Path):
    from uploader._retry import Backoff
    from uploader.emulator import start_emulator

    running = await start_emulator(emulator_config(tmp_path / "emulator"))
    settings = Settings.from_env(running.client_env())
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            running.emulator.faults.api_statuses = []
        await asyncio.sleep(0)

    policy = Backoff(window=60, first_window=0.0001, base=0.001, cap=0.002)
    async with MetaStudioClient(settings, backoff=policy, sleep=sleep) as client:
        await client.list_jobs()  # answered: the long window applies from now on
        running.emulator.faults.api_statuses = [503] * 50
        await client.list_jobs()
    await running.stop()
    assert len(waits) >= 3


# ---- item 8: SIGTERM as Ctrl-C (an upload: tests/test_upload.py) ----------------------


@pytest.mark.slow
def test_sigterm_stops_submit_wait_and_a_batch(tmp_path: Path):
    config = emulator_config(tmp_path / "emulator", review_delay=30.0)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        job_id = str(json_out(run_cli("upload", str(GOOD_VIDEO), "--name", "waiting",
                                      *REQUIRED_FLAGS, "--json", env=env))["job_id"])
        with start_cli("submit", job_id, "--wait", env=env) as waiting:
            # Once it waits for the review (a fixed sleep could land before the command set
            # its handler, on a loaded machine).
            _until(lambda: emulator.emulator.store.jobs[job_id]["state"] != "WAIT_FILE_UPLOAD")
            time.sleep(0.3)
            waiting.send_signal(signal.SIGTERM)
            _, stderr = waiting.communicate(timeout=30)
        assert waiting.returncode == 143 and "uploader status" in stderr, stderr
        emulator.emulator.faults.link_rate = 64 * 1024
        video = video_of(tmp_path, 2 * MIB)
        manifest = tmp_path / "rows.csv"
        manifest.write_text(f"path,name\n{video},slow\n")
        with start_cli("batch", str(manifest), env=env) as batch:
            _until(lambda: emulator.emulator.faults.in_flight > 0)  # parts crawling
            batch.send_signal(signal.SIGTERM)
            _, stderr = batch.communicate(timeout=30)
        assert batch.returncode == 143 and "run the same command again" in stderr, stderr


def _until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


# ---- item 9: the smaller things -------------------------------------------------------


def test_the_emulator_refuses_a_security_token_beside_permanent_keys(
        emulator_thread: RunningEmulator, tmp_path: Path):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    env["HUAWEICLOUD_SDK_SECURITY_TOKEN"] = "bogus"
    result = run_cli("jobs", env=env)
    assert result.returncode == 4 and "401" in result.stderr, result.stderr


def test_declining_delete_deletes_nothing_and_exits_0(emulator_thread: RunningEmulator,
                                                     tmp_path: Path):
    import os
    import subprocess
    import sys

    job_id = new_job(emulator_thread)
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    terminal, its_end = os.openpty()  # the prompt is asked on a terminal only
    with subprocess.Popen([sys.executable, "-m", "uploader", "delete", job_id], env=env,
                          stdin=its_end, stdout=subprocess.PIPE, text=True) as asked:
        os.close(its_end)
        os.write(terminal, b"n\n")
        stdout, _ = asked.communicate(timeout=30)
    os.close(terminal)
    assert asked.returncode == 0 and "not deleted" in stdout, stdout
    assert job_id in emulator_thread.emulator.store.jobs


def test_usage_errors_name_flags_not_keywords(tmp_path: Path):
    result = run_cli("upload", str(GOOD_VIDEO), "--name", "x", "--human-only",
                     env=cli_env({}, tmp_path / "state"))
    assert result.returncode == 2 and "--human-only" in result.stderr
    assert "human_only" not in result.stderr


def test_a_file_name_that_is_not_utf8_passes_the_preflight(tmp_path: Path):
    import os

    from uploader.preflight.video import check_video

    name = os.fsdecode(bytes(tmp_path) + b"/" + "数字人".encode("gbk") + b".mp4")
    Path(name).write_bytes(GOOD_VIDEO.read_bytes())
    report = check_video(name)
    assert report.ok, report.problems
    result = run_cli("check", name, env=cli_env({}, tmp_path / "state"))
    assert result.returncode == 0, result.stderr


def test_the_quick_start_does_not_ask_for_submit_when_it_was_given(tmp_path: Path):
    result = run_cli("upload", str(GOOD_VIDEO), "--name", "demo", *REQUIRED_FLAGS,
                     "--submit", "--emulator", env=cli_env({}, tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    assert "add --submit" not in result.stdout and "MANUAL_VERIFYING" in result.stdout


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads any file: no file is unreadable to it")
def test_an_unreadable_file_is_the_preflights_unreadable_not_a_usage_error(tmp_path: Path):
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(GOOD_VIDEO.read_bytes())
    locked.chmod(0)
    env = cli_env({}, tmp_path / "state")
    for args in (("check", str(locked)), ("upload", str(locked), "--name", "x")):
        result = run_cli(*args, env=env)
        assert result.returncode == 3 and "unreadable" in result.stdout + result.stderr
