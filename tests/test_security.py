"""Security: no credential in any output at any verbosity; TLS verified; the emulator
refuses unauthenticated or replayed requests."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import GOOD_VIDEO, SAMPLES, emulator_config
from tests.servers import LoopThread
from tests.uploads import cli_env, run_cli, video_of
from uploader.emulator import EmulatorThread, RunningEmulator


def _secrets(emulator: RunningEmulator) -> list[str]:
    config = emulator.config
    return [config.ak, config.sk, config.token, "Signature=", "AccessKeyId=", "X-Auth-Token:"]


def _scenarios(emulator: RunningEmulator, tmp_path: Path) -> list[str]:
    """Everything printed by the CLI across successes, retries, refusals and errors."""
    env = cli_env(emulator.client_env(), tmp_path / "state")
    token_env = {k: v for k, v in env.items() if not k.startswith("CLOUD_SDK_")}
    token_env["METASTUDIO_AUTH_TOKEN"] = emulator.config.token
    video = video_of(tmp_path, 6 * 200 * 1024)
    runs = [
        run_cli("--debug", "upload", str(video), "--name", "ok", "--parts", "6", env=env),
        run_cli("--debug", "upload", str(GOOD_VIDEO), "--name", "token", "--json",
                env=token_env),
        run_cli("--debug", "jobs", env=env),
        run_cli("--debug", "jobs", "--json", env=token_env),
        run_cli("--debug", "upload", str(video), "--name", "bad-sk", env=env | {
            "CLOUD_SDK_SK": "x" + emulator.config.sk}),
        run_cli("--debug", "upload", str(video), "--name", "bad-token", env=token_env | {
            "METASTUDIO_AUTH_TOKEN": emulator.config.token + "x"}),
    ]
    emulator.emulator.faults.fail_rate, emulator.emulator.faults.drop_rate = 0.3, 0.3
    runs.append(run_cli("--debug", "upload", str(video), "--name", "flaky", "--parts", "6",
                        env=env))
    emulator.emulator.faults.fail_rate = emulator.emulator.faults.drop_rate = 0.0
    emulator.emulator.storage.url_ttl = 1
    emulator.emulator.faults.link_rate = 400 * 1024
    runs.append(run_cli("--debug", "upload", str(video), "--name", "expiring", "--parts", "6",
                        "--concurrency", "1", env=env))
    emulator.emulator.faults.rewrite = lambda request, answer: b"<html>oops</html>"
    runs.append(run_cli("--debug", "upload", str(video), "--name", "garbled", env=env))
    return [run.stdout + run.stderr for run in runs]


@pytest.mark.slow
def test_no_secret_in_any_output_at_debug_level(tmp_path: Path):
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        outputs = _scenarios(emulator, tmp_path)
        printed = "\n".join(outputs)
        assert "DEBUG" in printed and "retry" in printed and "URL refused" in printed
        # Each call and each part PUT with its status and request id (issue 21, item 10).
        assert re.search(r"PUT part 1 of the training video \(http://127\.0\.0\.1:\d+/"
                         r"[^ ?]+, \d+ bytes\): HTTP 200, request id \w+", printed), printed
        assert re.search(r"POST /v1/\w+/digital-human-training-manage/user/jobs: HTTP 200, "
                         r"request id \w+", printed)
        for secret in _secrets(emulator):
            assert secret not in printed, f"{secret!r} was printed"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    return key, cert


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_certificates_are_verified(emulator_thread: RunningEmulator, tmp_path: Path):
    key, cert = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"count": 0, "jobs": []})

    with LoopThread() as servers:
        url = servers.serve(answer, ssl_context=context)
        env = cli_env(emulator_thread.client_env() | {"METASTUDIO_ENDPOINT": url},
                      tmp_path / "state")
        result = run_cli("jobs", env=env)
    assert result.returncode == 4
    assert "certificate" in result.stderr.lower() and "Traceback" not in result.stderr
    assert seen == []  # the request never reached the impostor


async def test_emulator_refuses_requests_without_credentials(emulator: RunningEmulator):
    url = f"{emulator.url}/v1/{emulator.config.project_id}/digital-human-training-manage/user/jobs"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            body = await response.json()
        assert response.status == 401 and body["error_code"] == "APIGW.0301"
        async with http.get(url, headers={"Authorization": "SDK-HMAC-SHA256 Access=x, "
                                          "SignedHeaders=host, Signature=" + "0" * 64}) as bad:
            assert bad.status == 401


def test_jobs_json_prints_no_signed_link(emulator_thread, tmp_path: Path):
    """The service's answers carry signed download links: printed without their queries."""
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    cover = ["--cover", str(SAMPLES / "id_card_front.jpg")]  # any image will do
    uploaded = run_cli("upload", str(GOOD_VIDEO), "--name", "covered", *cover, "--json",
                       env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    listed = run_cli("jobs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [job] = json.loads(listed.stdout)["jobs"]
    assert job["cover_download_url"].startswith("http://127.0.0.1:")
    assert "?" not in job["cover_download_url"]
    assert "Signature" not in listed.stdout and "AccessKeyId" not in listed.stdout


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("", False),
    ("192.0.2.7", False), ("10.1.2.3", False), ("no-such-host.invalid", False),
])
def test_which_hosts_count_as_loopback(host: str, loopback: bool):
    from uploader.emulator import is_loopback

    assert is_loopback(host) is loopback


def test_an_emulator_bound_beyond_loopback_warns_that_its_keys_are_known():
    # 192.0.2.7 (TEST-NET-1) is on no interface here: the bind fails, nothing is served and
    # no packet leaves; the warning comes before it.
    run = run_cli("emulator", "--host", "192.0.2.7", "--port", "0", env={})
    assert run.returncode == 1, run.stderr
    assert "warning: --host 192.0.2.7 lets other machines reach this emulator" in run.stderr
    assert "well-known" in run.stderr and "cannot serve on" in run.stderr
