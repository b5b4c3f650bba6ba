"""The official SDK, unchanged, drives the emulator: the proof that the emulator is faithful."""

from __future__ import annotations

import hashlib
import time
import urllib.error
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
from tests.conftest import GOOD_VIDEO, SAMPLES
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
    for link in (updated.id_card_image1_upload_url, updated.id_card_image2_upload_url,
                 updated.grant_file_upload_url):
        _put(link, b"x")
    assert _command(sdk, job_id, "SUBMITVERIFYING").commond_result == "EXCUTE_SUCCESS"
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


def _put_as(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, method="PUT",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request) as response:
            assert response.headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return bytes(response.read())


def _settled(sdk: MetaStudioClient, job_id: str):
    for _ in range(200):
        shown = sdk.show2d_model_training_job(Show2dModelTrainingJobRequest(job_id=job_id))
        if shown.state != "AUTO_VERIFYING":
            return shown
        time.sleep(0.05)
    raise AssertionError("the review never ended")


def test_sdk_drives_the_whole_job_flow(emulator_thread: RunningEmulator, tmp_path):
    """Huawei's documented flow: every file to its own link, confirm (the state stays),
    the action video and the letter confirmed, then SUBMITVERIFYING starts the review."""
    sdk = _sdk(emulator_thread)
    created = sdk.create2d_model_training_job(Create2dModelTrainingJobRequest(
        body=Create2dModelTrainingJobReq(name="whole", video_multipart_count=1,
                                         action_video_multipart_count=1,
                                         audio_source_type="AUDIO", tags=["t-1"])))
    job_id = created.job_id
    video = (SAMPLES / "landscape_1080p.mp4").read_bytes()
    files = {"training_video": video, "action_video": video, "id_card_image1": b"front",
             "id_card_image2": b"back", "grant_file": b"letter", "cover": b"cover",
             "audio": b"PK zip"}
    links = {"training_video": created.training_video_upload_url[0],
             "action_video": created.action_video_upload_url[0],
             "id_card_image1": created.id_card_image1_upload_url,
             "id_card_image2": created.id_card_image2_upload_url,
             "grant_file": created.grant_file_upload_url,
             "cover": created.cover_upload_url, "audio": created.audio_upload_url}
    # The audio link is signed for application/zip: octet-stream is refused, and the
    # other links the other way round.
    assert _put_as(links["audio"], files["audio"], "application/octet-stream") == 403
    assert _put_as(links["cover"], files["cover"], "application/zip") == 403
    for kind, link in links.items():
        content_type = "application/zip" if kind == "audio" else "application/octet-stream"
        assert _put_as(link, files[kind], content_type) == 200, kind
    assert _put_as(links["cover"], b"again", "application/octet-stream") == 403  # single-use

    assert _command(sdk, job_id, "CONFIRM_MULTIPART_UPLOADED").commond_result == "EXCUTE_SUCCESS"
    shown = sdk.show2d_model_training_job(Show2dModelTrainingJobRequest(job_id=job_id))
    assert shown.state == "WAIT_FILE_UPLOAD"  # the confirm does not start the review
    again = _command(sdk, job_id, "CONFIRM_MULTIPART_UPLOADED")  # the upload is closed
    assert again.commond_result == "EXCUTE_FAILED"
    assert _command(sdk, job_id, "GET_ACTION_VIDEO_MULTIPART_UPLOADED").multipart_data
    for command in ("CONFIRM_ACTION_VIDEO_MULTIPART_UPLOADED", "CONFIRM_AUTHORIZATION_LETTER",
                    "SUBMITVERIFYING"):
        assert _command(sdk, job_id, command).commond_result == "EXCUTE_SUCCESS", command
    shown = _settled(sdk, job_id)
    assert shown.state == "MANUAL_VERIFYING"
    assert [log.log_type for log in shown.operation_logs][-2:] == [
        "USER_VERIFYING_SUBMITTED", "SYSTEM_VERIFY_SUCCESS"]
    downloads = {"training_video": shown.training_video_download_url,
                 "action_video": shown.action_video_download_url,
                 "grant_file": shown.grant_file_download_url,
                 "cover": shown.cover_download_url, "audio": shown.audio_file_download_url}
    for kind, url in downloads.items():
        assert _get(url) == files[kind], kind
    # The ID card images are deleted after the identity check.
    assert shown.id_card_image1_download_url is None
    assert shown.id_card_image2_download_url is None

    listed = sdk.list2d_model_training_job(List2dModelTrainingJobRequest(tag="t-1"))
    assert [job.job_id for job in listed.jobs] == [job_id]
    assert sdk.list2d_model_training_job(List2dModelTrainingJobRequest(tag="t")).count == 0
    assert sdk.list2d_model_training_job(List2dModelTrainingJobRequest(name="whol")).count == 0


@pytest.mark.parametrize(("leave_out", "code"), [
    ("id_card_image2_upload_url", "44005904"),
    ("grant_file_upload_url", "44005905"),
])
def test_sdk_review_refuses_a_job_missing_a_required_file(emulator_thread: RunningEmulator,
                                                          leave_out, code):
    sdk = _sdk(emulator_thread)
    created = sdk.create2d_model_training_job(Create2dModelTrainingJobRequest(
        body=Create2dModelTrainingJobReq(name="missing")))
    assert _put_as(created.training_video_upload_url[0],
                   (SAMPLES / "landscape_1080p.mp4").read_bytes(),
                   "application/octet-stream") == 200
    for field in ("id_card_image1_upload_url", "id_card_image2_upload_url",
                  "grant_file_upload_url"):
        if field != leave_out:
            assert _put_as(getattr(created, field), b"x", "application/octet-stream") == 200
    letter = _command(sdk, created.job_id, "CONFIRM_AUTHORIZATION_LETTER")
    assert letter.commond_result == ("EXCUTE_FAILED" if "grant" in leave_out
                                     else "EXCUTE_SUCCESS")
    early = _command(sdk, created.job_id, "SUBMITVERIFYING")  # not confirmed yet
    assert early.commond_result == "EXCUTE_FAILED"
    assert _command(sdk, created.job_id, "CONFIRM_MULTIPART_UPLOADED").commond_result == (
        "EXCUTE_SUCCESS")
    assert _command(sdk, created.job_id, "SUBMITVERIFYING").commond_result == "EXCUTE_SUCCESS"
    shown = _settled(sdk, created.job_id)
    assert shown.state == "AUTO_VERIFY_FAILED"
    assert shown.operation_logs[-1].log_type == "SYSTEM_VERIFY_FAILED"
    assert shown.operation_logs[-1].error_code == code
    assert shown.id_card_image1_download_url is None


def test_sdk_drives_the_emulator_with_temporary_keys(tmp_path):
    """BasicCredentials(...).with_security_token(...), the SDK's temporary keys, from the
    emulator's own metadata service: accepted with their token, refused without it."""
    from tests.conftest import emulator_config
    from tests.test_cloud import metadata_keys
    from uploader.emulator import EmulatorThread

    with EmulatorThread(emulator_config(tmp_path / "emulator", credential_ttl=60)) as running:
        assert running.metadata_url is not None
        ak, sk, token = metadata_keys(running.metadata_url)
        project = running.config.project_id
        sdk = (MetaStudioClient.new_builder()
               .with_credentials(BasicCredentials(ak, sk, project).with_security_token(token))
               .with_endpoints([running.url]).build())
        assert sdk.list2d_model_training_job(List2dModelTrainingJobRequest()).count == 0
        bare = (MetaStudioClient.new_builder()
                .with_credentials(BasicCredentials(ak, sk, project))
                .with_endpoints([running.url]).build())
        with pytest.raises(ClientRequestException) as refused:
            bare.list2d_model_training_job(List2dModelTrainingJobRequest())
        assert refused.value.status_code == 401
