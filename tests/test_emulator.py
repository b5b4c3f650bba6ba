"""The emulator's object storage and review, on a real loopback socket."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conftest import SAMPLES, emulator_config
from tests.uploads import until
from uploader import MetaStudioClient, Settings
from uploader.emulator import RunningEmulator, start_emulator

OCTET = {"Content-Type": "application/octet-stream"}
PART = b"x" * (150 * 1024)


async def _put(url: str, body: bytes, headers: dict[str, str] | None = None, *,
               stream: bool = False) -> tuple[int, str, str | None]:
    """PUT `body`; `stream` sends it chunked, which aiohttp never resends by itself."""

    async def chunks():
        yield body

    async with aiohttp.ClientSession() as http, http.put(
        url, data=chunks() if stream else body, headers=OCTET if headers is None else headers
    ) as response:
        return response.status, await response.text(), response.headers.get("ETag")


async def _parts(client: MetaStudioClient, job_id: str) -> dict[int, str]:
    result = await client.command(job_id, "GET_MULTIPART_UPLOADED")
    return {p.part_number: p.etag for p in result.multipart_data}


async def test_part_etag_is_quoted_md5(client: MetaStudioClient):
    job = await client.create_job("demo", video_multipart_count=2)
    status, _, etag = await _put(job.training_video_upload_url[0], PART)
    assert status == 200 and etag == f'"{hashlib.md5(PART).hexdigest()}"'
    assert await _parts(client, job.job_id) == {1: etag}


@pytest.mark.parametrize(("headers", "code"), [
    ({"Content-Type": "video/mp4"}, "SignatureDoesNotMatch"),
    ({"Content-Type": "application/octet-stream; charset=utf-8"}, "SignatureDoesNotMatch"),
    (OCTET | {"Content-MD5": "kAFQmDzST7DWlj99KOF/cg=="}, "SignatureDoesNotMatch"),
    (OCTET | {"x-obs-meta-owner": "me"}, "SignatureDoesNotMatch"),
])
async def test_part_url_signs_content_type_and_md5(client, headers, code):
    job = await client.create_job("demo")
    status, body, _ = await _put(job.training_video_upload_url[0], PART, headers)
    assert status == 403 and f"<Code>{code}</Code>" in body
    assert await _parts(client, job.job_id) == {}


async def test_part_url_is_single_use(client: MetaStudioClient):
    job = await client.create_job("demo")
    assert (await _put(job.training_video_upload_url[0], PART))[0] == 200
    status, body, _ = await _put(job.training_video_upload_url[0], PART)
    assert status == 403 and "already been used" in body


@pytest.mark.parametrize("tamper", [
    lambda url: url.replace("partNumber=1", "partNumber=2"),
    lambda url: url.replace("Signature=", "Signature=A"),
    lambda url: url.replace("Expires=", "Expires=9"),
    lambda url: url.replace("/training_video.mp4", "/action_video.mp4"),
])
async def test_tampered_url_is_refused(client, tamper):
    job = await client.create_job("demo", video_multipart_count=2)
    status, body, _ = await _put(tamper(job.training_video_upload_url[0]), PART)
    assert status == 403 and "SignatureDoesNotMatch" in body


@pytest.mark.slow
async def test_expired_url_is_refused(tmp_path: Path):
    running = await start_emulator(emulator_config(tmp_path, url_ttl=1))
    try:
        async with MetaStudioClient(Settings.from_env(running.client_env())) as client:
            job = await client.create_job("demo")
            await asyncio.sleep(2.1)
            status, body, _ = await _put(job.training_video_upload_url[0], PART)
        assert status == 403 and "Request has expired" in body
    finally:
        await running.stop()


async def test_key_leaving_the_data_folder_is_refused(emulator: RunningEmulator, client):
    job = await client.create_job("demo")
    url = job.training_video_upload_url[0].replace("training/", "training/../../")
    async with aiohttp.ClientSession() as http, http.put(
        aiohttp.client.URL(url, encoded=True), data=PART, headers=OCTET
    ) as response:
        assert response.status in (400, 403)
    assert not any(p.name == "video.mp4" for p in Path(emulator.config.data_dir).rglob("*"))


async def test_cut_body_leaves_no_part(emulator: RunningEmulator, client: MetaStudioClient):
    job = await client.create_job("demo")
    url = urlsplit(job.training_video_upload_url[0])
    _, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(PART)}\r\n\r\n".encode()
        + PART[:50_000]
    )
    await writer.drain()
    received = emulator.emulator.faults
    await until(lambda: received.received_bytes >= 50_000)  # the server has the half body
    writer.close()
    await until(lambda: not list((Path(emulator.config.data_dir) / "tmp").iterdir()))
    assert await _parts(client, job.job_id) == {}
    assert (await _put(job.training_video_upload_url[0], PART))[0] == 200  # URL not spent


async def test_fail_rate_answers_5xx_before_storing(emulator: RunningEmulator, client):
    emulator.emulator.faults.fail_rate = 1.0
    job = await client.create_job("demo")
    status, body, _ = await _put(job.training_video_upload_url[0], PART)
    assert status in (500, 503) and "ServiceUnavailable" in body
    assert await _parts(client, job.job_id) == {}
    emulator.emulator.faults.fail_rate = 0.0
    assert (await _put(job.training_video_upload_url[0], PART))[0] == 200  # URL not spent


async def test_drop_rate_stores_then_cuts_the_connection(emulator: RunningEmulator, client):
    emulator.emulator.faults.drop_rate = 1.0
    job = await client.create_job("demo")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _put(job.training_video_upload_url[0], PART, stream=True)
    assert await _parts(client, job.job_id) == {1: f'"{hashlib.md5(PART).hexdigest()}"'}
    emulator.emulator.faults.drop_rate = 0.0
    assert (await _put(job.training_video_upload_url[0], PART))[0] == 403  # spent


async def test_link_rate_limits_each_body(emulator: RunningEmulator, client):
    emulator.emulator.faults.link_rate = 300 * 1024
    job = await client.create_job("demo")
    started = time.monotonic()
    assert (await _put(job.training_video_upload_url[0], PART))[0] == 200
    assert time.monotonic() - started >= 0.45  # 150 KiB at 300 KiB/s


async def test_update_keeps_parts_unless_told_to_reset(emulator: RunningEmulator, client):
    job = await client.create_job("demo", video_multipart_count=2)
    await _put(job.training_video_upload_url[0], PART)
    await client.update_job(job.job_id, video_multipart_count=2)
    assert list(await _parts(client, job.job_id)) == [1]
    emulator.emulator.api.update_resets_parts = True
    await client.update_job(job.job_id, video_multipart_count=2)
    assert await _parts(client, job.job_id) == {}


async def test_update_with_another_count_starts_over(client: MetaStudioClient):
    job = await client.create_job("demo", video_multipart_count=2)
    await _put(job.training_video_upload_url[0], PART)
    fresh = await client.update_job(job.job_id, video_multipart_count=3)
    assert len(fresh.training_video_upload_url) == 3
    assert await _parts(client, job.job_id) == {}
    assert (await _put(job.training_video_upload_url[1], PART))[0] == 404  # old upload gone


async def test_state_survives_a_restart(tmp_path: Path):
    config = emulator_config(tmp_path)
    first = await start_emulator(config)
    async with MetaStudioClient(Settings.from_env(first.client_env())) as client:
        job = await client.create_job("demo", video_multipart_count=2)
        await _put(job.training_video_upload_url[0], PART)
    await first.stop()
    second = await start_emulator(config)
    try:
        async with MetaStudioClient(Settings.from_env(second.client_env())) as client:
            assert (await client.show_job(job.job_id)).name == "demo"
            assert list(await _parts(client, job.job_id)) == [1]
        # A spent URL stays spent; the other part's URL works on the new port.
        second_port = urlsplit(second.url).port
        urls = [u.replace(f":{urlsplit(first.url).port}/", f":{second_port}/")
                for u in job.training_video_upload_url]
        assert (await _put(urls[0], PART))[0] == 403
        assert (await _put(urls[1], PART))[0] == 200
    finally:
        await second.stop()


async def _upload_and_confirm(client: MetaStudioClient, video: Path) -> str:
    data = video.read_bytes()
    size = max(len(data) // 2 + 1, 100 * 1024)
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    job = await client.create_job("review", video_multipart_count=len(chunks))
    for url, chunk in zip(job.training_video_upload_url, chunks, strict=True):
        assert (await _put(url, chunk))[0] == 200
    for link, body in ((job.raw["id_card_image1_upload_url"], b"front"),
                       (job.raw["id_card_image2_upload_url"], b"back"),
                       (job.raw["grant_file_upload_url"], b"letter")):
        assert (await _put(link, body))[0] == 200
    confirm = await client.command(job.job_id, "CONFIRM_MULTIPART_UPLOADED")
    assert confirm.succeeded, confirm.excute_failed_msg
    assert (await client.show_job(job.job_id)).state == "WAIT_FILE_UPLOAD"  # no review yet
    submit = await client.command(job.job_id, "SUBMITVERIFYING")
    assert submit.succeeded, submit.excute_failed_msg
    return job.job_id


async def _settled(client: MetaStudioClient, job_id: str) -> str:
    for _ in range(100):
        state = (await client.show_job(job_id)).state
        if state != "AUTO_VERIFYING":
            return state
        await asyncio.sleep(0.05)
    raise AssertionError("review did not finish")


@pytest.mark.parametrize(("sample", "state", "code"), [
    ("landscape_1080p.mp4", "MANUAL_VERIFYING", None),
    ("portrait_4k_hevc.mp4", "MANUAL_VERIFYING", None),
    ("wrong_resolution.mp4", "AUTO_VERIFY_FAILED", "44005901"),
    ("too_short.mp4", "AUTO_VERIFY_FAILED", "44005902"),
    ("matroska_named.mp4", "AUTO_VERIFY_FAILED", "44005903"),
])
async def test_review_outcomes(client: MetaStudioClient, sample, state, code):
    job_id = await _upload_and_confirm(client, SAMPLES / sample)
    assert await _settled(client, job_id) == state
    detail = await client.show_job(job_id)
    assert detail.operation_logs[-1].error_code == code
    async with aiohttp.ClientSession() as http, http.get(
        detail.training_video_download_url or ""
    ) as response:
        assert await response.read() == (SAMPLES / sample).read_bytes()


async def test_confirm_refuses_a_small_middle_part(client: MetaStudioClient):
    job = await client.create_job("demo", video_multipart_count=2)
    await _put(job.training_video_upload_url[0], b"small")
    await _put(job.training_video_upload_url[1], PART)
    confirm = await client.command(job.job_id, "CONFIRM_MULTIPART_UPLOADED")
    said = confirm.excute_failed_msg or ""
    assert not confirm.succeeded and "EntityTooSmall" in said and "(102400 bytes)" in said


async def test_a_failed_assembly_fails_the_confirm(emulator: RunningEmulator, client):
    job = await client.create_job("broken", video_multipart_count=1)
    await _put(job.training_video_upload_url[0], PART)
    objects = emulator.emulator.store.root / "objects"
    objects.rmdir()  # the assembly cannot write its output
    try:
        confirm = await client.command(job.job_id, "CONFIRM_MULTIPART_UPLOADED")
        assert not confirm.succeeded
        assert "could not be assembled" in (confirm.excute_failed_msg or "")
        assert (await client.show_job(job.job_id)).state == "WAIT_FILE_UPLOAD"
    finally:
        objects.mkdir()


def test_a_single_use_link_is_single_use_under_concurrency(tmp_path: Path):
    """Two slow PUTs on one link at the same time: the first that starts storing holds it,
    the other is refused (both got 200 before, the last writer winning)."""
    import threading
    import urllib.error
    import urllib.request

    from tests.uploads import new_job
    from uploader.emulator import EmulatorThread

    with EmulatorThread(emulator_config(tmp_path / "emulator", link_rate=64 * 1024)) as running:
        job_id = new_job(running)

        async def links() -> str:
            async with MetaStudioClient(Settings.from_env(running.client_env())) as client:
                answer = await client.update_job(job_id, video_multipart_count=1)
            return str(answer.raw["cover_upload_url"])

        url = asyncio.run(links())
        statuses: list[int] = []

        def put(body: bytes) -> None:
            request = urllib.request.Request(url, data=body, method="PUT", headers={
                "Content-Type": "application/octet-stream"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as refused:
                statuses.append(refused.code)

        puts = [threading.Thread(target=put, args=(bytes([n]) * 32 * 1024,)) for n in (1, 2)]
        for thread in puts:
            thread.start()
        for thread in puts:
            thread.join(30)
    assert sorted(statuses) == [200, 403]
