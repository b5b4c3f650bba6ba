"""Every state a job can be in, what `--wait` makes of it, and deleting a job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmetastudio.v1 import Delete2dModelTrainingJobRequest, MetaStudioClient

from tests.conftest import GOOD_VIDEO, emulator_config
from tests.uploads import REQUIRED_FLAGS, cli_env, new_job, run_cli
from uploader.api.states import DELETABLE, STATES, explain_state, outcome
from uploader.emulator import EmulatorThread, RunningEmulator


@pytest.mark.parametrize(("ending", "expected"), [
    ("VIDEO_ANALYZE_FAILED:44005901", {"review_outcome": "failed",
                                       "review_error_code": "44005901"}),
    ("AUTO_VERIFY_FAILED:44005902", {"review_outcome": "failed",
                                     "review_error_code": "44005902"}),
    ("JOB_SUCCESS", {"review_outcome": "passed", "review_error_code": None}),
    ("TRAIN_FAILED", {"review_outcome": "passed", "review_error_code": None}),
    ("BRAND_NEW_STATE", {"review_outcome": None, "review_error_code": None}),
])
def test_wait_reports_the_state_its_meaning_and_the_outcome(tmp_path: Path, ending, expected):
    config = emulator_config(tmp_path / "emulator", review_outcome=ending)
    state = ending.split(":")[0]
    with EmulatorThread(config) as running:
        env = cli_env(running.client_env(), tmp_path / "state")
        result = run_cli("upload", str(GOOD_VIDEO), "--name", "ends", *REQUIRED_FLAGS,
                         "--submit", "--wait", "--json", env=env)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        shown = run_cli("status", report["job_id"], "--json", env=env)
    assert report["state"] == state
    assert {k: report[k] for k in expected} == expected
    assert report["state_meaning"] == explain_state(state)
    assert json.loads(shown.stdout)["review_outcome"] == expected["review_outcome"]
    if state == "BRAND_NEW_STATE":  # reported as the service wrote it
        assert "BRAND_NEW_STATE" in report["state_meaning"]


def test_every_state_of_the_sdks_enum_has_a_meaning_and_an_outcome():
    import inspect
    import re

    from huaweicloudsdkmetastudio.v1.model import training_job_basic_info

    # The states the SDK's model documents for `state` (its docstrings list the enum).
    documented = set(re.findall(r"\b([A-Z]+(?:_[A-Z]+)+)\b",
                                inspect.getsource(training_job_basic_info)))
    assert len(documented) >= 50 and documented <= set(STATES), documented - set(STATES)
    for state, known in STATES.items():
        assert known.meaning and "does not know" not in explain_state(state)
        assert outcome(state) in ("passed", "failed", "pending")
    assert outcome("VIDEO_ANALYZE_PROCESSING") == "pending"
    assert {s for s in STATES if outcome(s) == "failed"} == {
        "AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED", "VIDEO_ANALYZE_FAILED", "JOB_REJECT"}


# ---- delete --------------------------------------------------------------------------------


def test_delete_a_job(emulator_thread: RunningEmulator, tmp_path: Path):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    store = emulator_thread.emulator.store
    job_id = new_job(emulator_thread, "trial")
    unconfirmed = run_cli("delete", job_id, env=env)  # no terminal, no --yes: nothing done
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert job_id in store.jobs
    deleted = run_cli("delete", job_id, "--yes", "--json", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"job_id": job_id, "deleted": True}
    assert job_id not in store.jobs and not (store.root / "objects" / job_id).exists()
    again = run_cli("delete", job_id, "--yes", env=env)
    assert again.returncode == 4 and "not found" in again.stderr


@pytest.mark.parametrize("state", ["AUTO_VERIFYING", "TRAINING", "MANUAL_VERIFY_SUCCESS",
                                   "VIDEO_ANALYZE_PROCESSING"])
def test_a_job_in_a_state_that_refuses_delete(emulator_thread, tmp_path, state):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    job_id = new_job(emulator_thread, "busy")
    emulator_thread.emulator.store.jobs[job_id]["state"] = state
    refused = run_cli("delete", job_id, "--yes", "--json", env=env)
    assert refused.returncode == 4, refused.stderr
    assert json.loads(refused.stdout)["error"] == "JobStateError" and state in refused.stderr
    assert job_id in emulator_thread.emulator.store.jobs


def test_the_official_sdk_deletes(emulator_thread: RunningEmulator):
    env = emulator_thread.client_env()
    sdk = (MetaStudioClient.new_builder()
           .with_credentials(BasicCredentials(env["CLOUD_SDK_AK"], env["CLOUD_SDK_SK"],
                                              env["METASTUDIO_PROJECT_ID"]))
           .with_endpoints([emulator_thread.url]).build())
    store = emulator_thread.emulator.store
    job_id = new_job(emulator_thread, "sdk")
    sdk.delete2d_model_training_job(Delete2dModelTrainingJobRequest(job_id=job_id))
    assert job_id not in store.jobs
    busy = new_job(emulator_thread, "busy")
    store.jobs[busy]["state"] = "TRAINING"
    with pytest.raises(ClientRequestException) as refused:
        sdk.delete2d_model_training_job(Delete2dModelTrainingJobRequest(job_id=busy))
    assert refused.value.status_code == 409 and refused.value.error_code.startswith("MSS.")
    assert "TRAINING" not in DELETABLE
