"""The official SDK, unchanged, drives the emulator: the proof that the emulator is faithful."""

from __future__ import annotations

import hashlib
import time
import urllib.request

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmetastudio.v1 import (
    Create2dModelTrainingJobReq,
    Create2dModelTrainingJobRequest,
    Execute2dModelTrainingCommandByUserReq,
    Execute2dModelTrainingCommandByUserRequest,
    List2dModelTrainingJobRequest,
    ListVoiceTrainingJobRequest,
    MetaStudioClient,
    Show2dModelTrainingJobRequest,
    Update2dModelTrainingJobRequest,
)

from samples.make_samples import grow
from tests.conftest import GOOD_VIDEO
from uploader.emulator import RunningEmulator


def _sdk(emulator: RunningEmulator, sk: str | None = None) -> MetaStudioClient:
    env = emulator.client_env()
    credentials = BasicCredentials(env["CLOUD_SDK_AK"], sk or env["CLOUD_SDK_SK"],
                                   env["METASTUDIO_PROJECT_ID"])
    return (MetaStudioClient.new_builder().with_credentials(credentials)
            .with_endpoints([emulator.url]).build())


def _command(sdk: MetaStudioClient, job_id: str, command: str):
    body = Execute2dModelTrainingCommandByUserReq(command=command)
    return sdk.execute2d_model_training_command_by_user(
        Execute2dModelTrainingCommandByUserRequest(job_id=job_id, body=body))


def _put(url: str, body: bytes) -> str:
    request = urllib.request.Request(url, data=body, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request) as response:
        return str(response.headers["ETag"])


def test_sdk_drives_the_whole_upload(emulator_thread: RunningEmulator, tmp_path):
    sdk = _sdk(emulator_thread)
    created = sdk.create2d_model_training_job(Create2dModelTrainingJobRequest(
        body=Create2dModelTrainingJobReq(name="sdk-job", video_multipart_count=2)))
    job_id = created.job_id
    listed = sdk.list2d_model_training_job(List2dModelTrainingJobRequest(
        state="WAIT_FILE_UPLOAD", limit=10))
    assert listed.count == 1 and listed.jobs[0].job_id == job_id
    updated = sdk.update2d_model_training_job(Update2dModelTrainingJobRequest(
        job_id=job_id, body=Create2dModelTrainingJobReq(name="sdk-job", video_multipart_count=2)))
    video = tmp_path / "video.mp4"
    grow(GOOD_VIDEO, video, 300_000)
    data = video.read_bytes()
    halves = [data[: len(data) // 2], data[len(data) // 2:]]
    etags = [_put(url, part) for url, part in zip(updated.training_video_upload_url, halves,
                                                   strict=True)]
    assert etags == [f'"{hashlib.md5(part).hexdigest()}"' for part in halves]
    uploaded = _command(sdk, job_id, "GET_MULTIPART_UPLOADED")
    assert [(p.part_number, p.etag) for p in uploaded.multipart_data] == [("1", etags[0]),
                                                                          ("2", etags[1])]
    assert _command(sdk, job_id, "CONFIRM_MULTIPART_UPLOADED").commond_result == "EXCUTE_SUCCESS"
    for _ in range(100):
        shown = sdk.show2d_model_training_job(Show2dModelTrainingJobRequest(job_id=job_id))
        if shown.state != "AUTO_VERIFYING":
            break
        time.sleep(0.05)
    assert shown.state == "MANUAL_VERIFYING"
    with urllib.request.urlopen(shown.training_video_download_url) as response:
        assert response.read() == data
    voices = sdk.list_voice_training_job(ListVoiceTrainingJobRequest())
    assert voices.count == 1


def test_sdk_with_a_wrong_sk_gets_401(emulator_thread: RunningEmulator):
    sdk = _sdk(emulator_thread, sk="not-the-secret")
    with pytest.raises(ClientRequestException) as caught:
        sdk.list2d_model_training_job(List2dModelTrainingJobRequest())
    assert caught.value.status_code == 401
    assert caught.value.error_code == "APIGW.0301"
