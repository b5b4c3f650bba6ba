"""The API client against the emulator on loopback: each call, its errors, auth, retries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from uploader import ApiError, Backoff, MetaStudioClient, Settings, UnreachableError
from uploader.emulator import RunningEmulator


async def test_create_show_list_update(client: MetaStudioClient):
    created = await client.create_job("demo", video_multipart_count=3, contact="a@b.c")
    assert len(created.training_video_upload_url) == 3
    shown = await client.show_job(created.job_id)
    assert (shown.name, shown.state) == ("demo", "WAIT_FILE_UPLOAD")
    assert shown.operation_logs[0].log_type == "USER_CREATE_JOD"
    page = await client.list_jobs(state=["WAIT_FILE_UPLOAD", "TRAINING"], limit=5)
    assert [j.job_id for j in page.jobs] == [created.job_id]
    assert (await client.list_jobs(state="TRAINING")).count == 0
    updated = await client.update_job(created.job_id, video_multipart_count=3)
    assert updated.job_id == created.job_id
    assert len(updated.training_video_upload_url) == 3
    assert updated.training_video_upload_url != created.training_video_upload_url


async def test_list_pages_with_offset_and_limit(client: MetaStudioClient):
    ids = [(await client.create_job(f"job{i}")).job_id for i in range(3)]
    first = await client.list_jobs(limit=2, offset=0, sort_dir="asc")
    second = await client.list_jobs(limit=2, offset=2, sort_dir="asc")
    assert first.count == 3
    assert {j.job_id for j in first.jobs + second.jobs} == set(ids)


async def test_commands(client: MetaStudioClient):
    job = await client.create_job("demo", video_multipart_count=2)
    uploaded = await client.command(job.job_id, "GET_MULTIPART_UPLOADED")
    assert uploaded.succeeded and uploaded.multipart_data == []
    confirm = await client.command(job.job_id, "CONFIRM_MULTIPART_UPLOADED")
    assert not confirm.succeeded
    assert "2 of 2 parts are missing" in (confirm.excute_failed_msg or "")


async def test_list_voice_jobs(client: MetaStudioClient):
    page = await client.list_voice_jobs(limit=5)
    assert page.count == 1 and page.jobs[0].voice_name == "emulator-demo-voice"


@pytest.mark.parametrize(("call", "status", "code"), [
    (lambda c: c.show_job("0" * 32), 404, "MSS.00000003"),
    (lambda c: c.update_job("0" * 32, video_multipart_count=1), 404, "MSS.00000003"),
    (lambda c: c.command("0" * 32, "GET_MULTIPART_UPLOADED"), 404, "MSS.00000003"),
    (lambda c: c.create_job("", video_multipart_count=1), 400, "MSS.00000003"),
    (lambda c: c.create_job("x", video_multipart_count=1001), 400, "MSS.00000003"),
    (lambda c: c.create_job("x", video_multipart_count=0), 400, "MSS.00000003"),
    (lambda c: c.list_jobs(limit=101), 400, "MSS.00000003"),
    (lambda c: c.list_jobs(offset=-1), 400, "MSS.00000003"),
    (lambda c: c.list_voice_jobs(limit=0), 400, "MSS.00000003"),
])
async def test_errors_carry_status_code_and_request_id(client, call, status, code):
    with pytest.raises(ApiError) as caught:
        await call(client)
    error = caught.value
    assert (error.status, error.error_code) == (status, code)
    assert error.request_id and error.request_id in str(error)


async def test_update_refused_while_under_review(client: MetaStudioClient, emulator):
    job = await client.create_job("demo")
    emulator.emulator.store.jobs[job.job_id]["state"] = "AUTO_VERIFYING"
    with pytest.raises(ApiError) as caught:
        await client.update_job(job.job_id, video_multipart_count=1)
    assert caught.value.status == 400 and "AUTO_VERIFYING" in str(caught.value)


async def test_token_auth(emulator: RunningEmulator):
    env = emulator.client_env()
    del env["CLOUD_SDK_AK"], env["CLOUD_SDK_SK"]
    good = Settings.from_env(env | {"METASTUDIO_AUTH_TOKEN": emulator.config.token})
    async with MetaStudioClient(good) as api:
        assert (await api.list_jobs()).count == 0
    bad = Settings.from_env(env | {"METASTUDIO_AUTH_TOKEN": "forged"})
    async with MetaStudioClient(bad) as api:
        with pytest.raises(ApiError) as caught:
            await api.list_jobs()
    assert (caught.value.status, caught.value.error_code) == (401, "APIGW.0301")


@pytest.mark.parametrize("change", [
    {"sk": "wrong-secret"},
    {"ak": "WRONGAK"},
    {"project_id": "another-project"},
])
async def test_wrong_credentials_get_401(settings: Settings, change):
    async with MetaStudioClient(dataclasses.replace(settings, **change)) as api:
        with pytest.raises(ApiError) as caught:
            await api.list_jobs()
    assert (caught.value.status, caught.value.error_code) == (401, "APIGW.0301")


async def test_stale_date_is_refused(settings: Settings):
    stale = datetime.now(UTC) - timedelta(minutes=16)
    async with MetaStudioClient(settings, clock=lambda: stale) as api:
        with pytest.raises(ApiError, match="15 minutes") as caught:
            await api.list_jobs()
    assert caught.value.status == 401


async def _flaky_server(statuses: list[int]) -> tuple[web.AppRunner, str, list[str]]:
    """A loopback server answering each request with the next status, then 200 {}."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.method)
        status = statuses.pop(0) if statuses else 200
        if status == 200:
            return web.json_response({"count": 0, "jobs": [], "commond_result": "EXCUTE_SUCCESS"})
        return web.Response(status=status, text="<html>bad gateway</html>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", seen


async def _no_sleep(_: float) -> None:
    return None


async def test_idempotent_calls_retry_5xx(settings: Settings):
    runner, url, seen = await _flaky_server([502, 503, 500])
    try:
        async with MetaStudioClient(dataclasses.replace(settings, endpoint=url),
                                    sleep=_no_sleep) as api:
            assert (await api.list_jobs()).count == 0
        assert seen == ["GET"] * 4
    finally:
        await runner.cleanup()


async def test_retries_are_bounded_and_html_is_reported(settings: Settings):
    runner, url, seen = await _flaky_server([502] * 10)
    try:
        async with MetaStudioClient(dataclasses.replace(settings, endpoint=url),
                                    backoff=Backoff(attempts=3), sleep=_no_sleep) as api:
            with pytest.raises(ApiError, match="HTTP 502 without a JSON error"):
                await api.list_jobs()
        assert len(seen) == 3
    finally:
        await runner.cleanup()


async def test_confirm_is_not_retried(settings: Settings):
    runner, url, seen = await _flaky_server([503])
    try:
        async with MetaStudioClient(dataclasses.replace(settings, endpoint=url),
                                    sleep=_no_sleep) as api:
            with pytest.raises(ApiError):
                await api.command("job", "CONFIRM_MULTIPART_UPLOADED")
        assert seen == ["POST"]
    finally:
        await runner.cleanup()


async def test_refused_connection_names_the_endpoint(settings: Settings):
    runner, url, _ = await _flaky_server([])
    await runner.cleanup()  # the port is now closed
    async with MetaStudioClient(dataclasses.replace(settings, endpoint=url),
                                backoff=Backoff(attempts=2), sleep=_no_sleep) as api:
        with pytest.raises(UnreachableError, match="cannot reach MetaStudio at " + url) as caught:
            await api.list_jobs()
    assert caught.value.status is None and not isinstance(caught.value, ApiError)
