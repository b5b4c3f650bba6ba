"""The model a job trains: every create option from the CLI, the library and the manifest,
checked before any call, stored by the emulator, and read back by the official SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkmetastudio.v1 import MetaStudioClient, Show2dModelTrainingJobRequest

from tests.conftest import GOOD_VIDEO
from tests.uploads import cli_env, run_cli
from uploader import Job, JobOptions, UsageError
from uploader.api.options import create_fields, update_fields
from uploader.emulator import RunningEmulator


def _shown(emulator: RunningEmulator, job_id: str) -> dict[str, Any]:
    """Show job through the official SDK, as a dict of what it read."""
    env = emulator.client_env()
    sdk = (MetaStudioClient.new_builder()
           .with_credentials(BasicCredentials(env["CLOUD_SDK_AK"], env["CLOUD_SDK_SK"],
                                              env["METASTUDIO_PROJECT_ID"]))
           .with_endpoints([emulator.url]).build())
    shown = sdk.show2d_model_training_job(Show2dModelTrainingJobRequest(job_id=job_id))
    read = {key: getattr(shown, key) for key in (
        "is_background_replacement", "model_version", "is_flexus", "is_fast_flexus",
        "is_only_human_model")}
    voice = shown.voice_properties
    read["voice_properties"] = None if voice is None else {
        "job_tag": voice.job_tag, "sex": voice.sex, "language": voice.language}
    read["supported_service"] = [str(getattr(s, "value", s)) for s in
                                 shown.supported_service or []]
    return read


def _upload(emulator: RunningEmulator, tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    env = cli_env(emulator.client_env(), tmp_path / "state")
    result = run_cli("upload", str(GOOD_VIDEO), "--name", "options", "--restart", *flags,
                     "--json", env=env)
    job_id = json.loads(result.stdout)["job_id"] if result.returncode == 0 else ""
    return result.returncode, job_id, result.stderr


@pytest.mark.parametrize(("flags", "expected"), [
    ([], {"is_background_replacement": True, "model_version": "V3.2", "is_flexus": False,
          "voice_properties": None}),
    (["--no-background-replacement", "--model-version", "V3.3", "--service", "VIDEO_2D",
      "--service", "live_2d", "--voice-tag", "NEWS", "--voice-sex", "female",
      "--voice-language", "EN"],
     {"is_background_replacement": False, "model_version": "V3.3", "is_flexus": False,
      "supported_service": ["VIDEO_2D", "LIVE_2D"],
      "voice_properties": {"job_tag": "NEWS", "sex": "FEMALE", "language": "EN"}}),
    (["--edition", "flexus", "--human-only", "--background-replacement"],
     {"is_flexus": True, "is_fast_flexus": False, "is_only_human_model": True,
      "is_background_replacement": True, "supported_service": ["VIDEO_2D"]}),
    (["--edition", "fast-flexus"],
     {"is_fast_flexus": True, "is_flexus": False, "model_version": "V3.3"}),
])
def test_the_sdk_reads_back_every_option_the_cli_set(emulator_thread, tmp_path, flags,
                                                     expected):
    code, job_id, stderr = _upload(emulator_thread, tmp_path, *flags)
    assert code == 0, stderr
    shown = _shown(emulator_thread, job_id)
    assert {k: shown[k] for k in expected} == expected


@pytest.mark.parametrize(("flags", "says"), [
    (["--edition", "flexus", "--service", "LIVE_2D"], "VIDEO_2D only"),
    (["--edition", "fast-flexus", "--model-version", "V3.2"], "V3.3"),
    (["--human-only"], "flexus and fast-flexus editions only"),
    (["--edition", "flexus", "--human-only", "--voice-sex", "MALE"], "trains no voice"),
    (["--model-version", "V2"], "withdrawn"),
    (["--edition", "premium"], "edition must be one of"),
    (["--voice-language", "FR"], "--voice-language must be one of"),
    (["--service", "VIDEO_2D", "--service", "VIDEO_2D"], "named twice"),
])
def test_a_contradictory_set_is_a_usage_error_and_creates_nothing(emulator_thread, tmp_path,
                                                                 flags, says):
    code, _, stderr = _upload(emulator_thread, tmp_path, *flags)
    assert code == 2 and says in stderr, stderr
    assert emulator_thread.emulator.store.jobs == {}


def test_the_manifest_takes_the_options(emulator_thread, tmp_path: Path):
    manifest = tmp_path / "rows.csv"
    manifest.write_text(
        "path,name,background_replacement,edition,service,human_only,voice_tag\n"
        f"{GOOD_VIDEO},real scene,false,,VIDEO_2D;CHAT_2D,,MARKETING\n"
        f"{GOOD_VIDEO},figure only,,flexus,,yes,\n"
        f"{GOOD_VIDEO},contradictory,,flexus,LIVE_2D,,\n")
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    result = run_cli("batch", str(manifest), "--report", str(tmp_path / "report.jsonl"),
                     env=env)
    assert result.returncode == 6  # one row invalid
    lines = (tmp_path / "report.jsonl").read_text().splitlines()
    report = {r["line"]: r for r in map(json.loads, lines)}
    assert report[4]["outcome"] == "invalid" and "VIDEO_2D only" in report[4]["message"]
    real, figure = (_shown(emulator_thread, report[n]["job_id"]) for n in (2, 3))
    assert real["is_background_replacement"] is False
    assert real["supported_service"] == ["VIDEO_2D", "CHAT_2D"]
    assert real["voice_properties"] == {"job_tag": "MARKETING", "sex": None, "language": None}
    assert figure["is_flexus"] is True and figure["is_only_human_model"] is True
    assert len(emulator_thread.emulator.store.jobs) == 2


def test_options_from_code_and_their_json_row():
    job = Job.of("talk.mp4", name="n", edition="FLEXUS", services=["video_2d"],
                 background_replacement=False)
    assert job.options == JobOptions(edition="flexus", services=("VIDEO_2D",),
                                     background_replacement=False)
    assert create_fields(job.options) == {
        "is_background_replacement": False, "supported_service": ["VIDEO_2D"],
        "is_flexus": True, "is_fast_flexus": False}
    assert update_fields(job.options) == {"is_background_replacement": False,
                                           "supported_service": ["VIDEO_2D"]}
    row = job.to_json()
    assert row["edition"] == "flexus" and row["service"] == ["VIDEO_2D"]
    with pytest.raises(UsageError, match="true or false"):
        JobOptions(human_only="yes")  # type: ignore[arg-type]
