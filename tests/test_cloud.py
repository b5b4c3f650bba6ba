"""Real cloud machines, on loopback: credentials in the SDK's order, temporary keys from the
ECS metadata service (the emulator's own copy), a real proxy, a TLS CA of the test's own,
redirects refused, and the service's flow control."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from tests.conftest import GOOD_VIDEO, emulator_config
from tests.proxy import Proxy
from tests.servers import LoopThread
from tests.uploads import REQUIRED_FLAGS, assembled, cli_env, run_cli, video_of
from uploader import Settings, SettingsError
from uploader.emulator import EmulatorThread, RunningEmulator

MiB = 1024 * 1024


def metadata_keys(url: str) -> tuple[str, str, str]:
    """Temporary keys from a metadata service, as the official SDK asks for them."""
    put = urllib.request.Request(url + "/meta-data/latest/api/token", method="PUT",
                                 headers={"X-Metadata-Token-Ttl-Seconds": "21600"})
    with urllib.request.urlopen(put, timeout=10) as answer:
        session = answer.read().decode()
    get = urllib.request.Request(url + "/openstack/latest/securitykey",
                                 headers={"X-Metadata-Token": session})
    with urllib.request.urlopen(get, timeout=10) as answer:
        found = json.loads(answer.read())["credential"]
    return found["access"], found["secret"], found["securitytoken"]


def _env(emulator: RunningEmulator, tmp_path: Path, **more: str) -> dict[str, str]:
    return cli_env(emulator.client_env(), tmp_path / "state") | more


# ---- where the credentials come from -----------------------------------------------------


def test_sdk_environment_names_with_a_security_token(tmp_path: Path):
    with EmulatorThread(emulator_config(tmp_path / "emulator", credential_ttl=60)) as running:
        assert running.metadata_url is not None
        ak, sk, token = metadata_keys(running.metadata_url)
        env = cli_env({"METASTUDIO_ENDPOINT": running.url,
                       "HUAWEICLOUD_SDK_PROJECT_ID": running.config.project_id,
                       "HUAWEICLOUD_SDK_AK": ak, "HUAWEICLOUD_SDK_SK": sk}, tmp_path / "state")
        refused = run_cli("jobs", "--json", env=env)  # temporary keys without their token
        assert refused.returncode == 4 and "HTTP 401" in refused.stderr
        listed = run_cli("jobs", "--json", env=env | {"HUAWEICLOUD_SDK_SECURITY_TOKEN": token})
        assert listed.returncode == 0, listed.stderr
        assert token not in listed.stdout + listed.stderr


def test_the_sdk_credentials_file(emulator_thread: RunningEmulator, tmp_path: Path):
    config = emulator_thread.config
    file = tmp_path / "credentials"
    file.write_text(f"[basic]\nak = {config.ak}\nsk = {config.sk}\n"
                    f"project_id = {config.project_id}\n")
    file.chmod(0o600)
    env = cli_env({"METASTUDIO_ENDPOINT": emulator_thread.url,
                   "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(file)}, tmp_path / "state")
    listed = run_cli("jobs", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "read by others" not in listed.stderr
    file.chmod(0o644)
    warned = run_cli("jobs", env=env)
    assert warned.returncode == 0 and "may be read by others" in warned.stderr
    missing = run_cli("jobs", env=env | {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/no/such"})
    assert missing.returncode == 4 and "HUAWEICLOUD_SDK_CREDENTIALS_FILE" in missing.stderr


@pytest.mark.parametrize(("env", "named"), [
    ({"CLOUD_SDK_AK": "A", "HUAWEICLOUD_SDK_AK": "B", "CLOUD_SDK_SK": "s"},
     ("CLOUD_SDK_AK", "HUAWEICLOUD_SDK_AK")),
    ({"METASTUDIO_PROJECT_ID": "p", "HUAWEICLOUD_SDK_PROJECT_ID": "q", "CLOUD_SDK_AK": "a",
      "CLOUD_SDK_SK": "s"}, ("METASTUDIO_PROJECT_ID", "HUAWEICLOUD_SDK_PROJECT_ID")),
    ({"CLOUD_SDK_AK": "a", "CLOUD_SDK_SK": "s", "METASTUDIO_CREDENTIALS": "ecs"},
     ("METASTUDIO_CREDENTIALS",)),
    ({"METASTUDIO_AUTH_TOKEN": "t", "METASTUDIO_AUTH_TOKEN_FILE": "f"},
     ("METASTUDIO_AUTH_TOKEN", "METASTUDIO_AUTH_TOKEN_FILE")),
    ({"HUAWEICLOUD_SDK_SECURITY_TOKEN": "t", "METASTUDIO_AUTH_TOKEN": "x"},
     ("HUAWEICLOUD_SDK_SECURITY_TOKEN",)),
    ({"METASTUDIO_CREDENTIALS": "iam", "METASTUDIO_PROJECT_ID": "p"},
     ("METASTUDIO_CREDENTIALS",)),
    ({"METASTUDIO_API_RATES": "command=fast"}, ("METASTUDIO_API_RATES",)),
])
def test_contradictory_settings_name_every_variable(env, named):
    env = {"METASTUDIO_PROJECT_ID": "p", "HOME": "/nonexistent"} | env
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert all(name in caught.value.message for name in named), caught.value.message


def test_the_metadata_service_is_asked_only_when_told():
    """Without METASTUDIO_CREDENTIALS=ecs nothing signs with the metadata service, and its
    default address is the real one: the tests always give their own."""
    settings = Settings.from_env({"METASTUDIO_PROJECT_ID": "p", "CLOUD_SDK_AK": "a",
                                  "CLOUD_SDK_SK": "s"})
    assert settings.credentials is None and settings.metadata_url.startswith("http://169.")
    ecs = Settings.from_env({"METASTUDIO_PROJECT_ID": "p", "METASTUDIO_CREDENTIALS": "ECS",
                             "METASTUDIO_METADATA_URL": "http://127.0.0.1:9/"})
    assert ecs.credentials == "ecs" and ecs.metadata_url == "http://127.0.0.1:9"


@pytest.mark.slow
def test_ecs_keys_are_refreshed_in_the_middle_of_an_upload(tmp_path: Path):
    """Keys that live 2 s, an upload paced to last over 6 s whose links expire on the way
    (so that the API is called throughout): exit 0, the bytes intact, keys refreshed."""
    config = emulator_config(tmp_path / "emulator", credential_ttl=2, url_ttl=2,
                             link_rate=256 * 1024)
    video = video_of(tmp_path, 1_560 * 1024)  # 6.1 s at least, at 256 KiB/s
    with EmulatorThread(config) as running:
        env = cli_env(running.ecs_env(), tmp_path / "state")
        started = time.monotonic()
        result = run_cli("-vv", "upload", str(video), "--name", "agency", "--parts", "8",
                         "--concurrency", "1", "--json", env=env)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr[-3000:]
        job_id = json.loads(result.stdout)["job_id"]
        settings = Settings.from_env(running.client_env())
        assert asyncio.run(assembled(settings, job_id)) == video.read_bytes()
        issued = running.emulator.keys.issued
    assert took > 6 and issued >= 3, (took, issued)  # the first keys, then refreshed twice+
    assert "temporary keys from the metadata service" in result.stderr


@pytest.mark.slow
def test_a_token_file_rotated_mid_batch(emulator_thread: RunningEmulator, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text(emulator_thread.config.token + "\n")
    videos = [video_of(tmp_path, 2 * MiB, f"t{n}.mp4") for n in range(4)]
    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,name\n" + "".join(f"{v.name},{v.stem}\n" for v in videos))
    emulator = emulator_thread.emulator
    seen: list[int] = []

    def rotate_after_the_first_row() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(emulator.store.jobs) < 2:
            time.sleep(0.01)  # the first row is done, the second has begun
        # The file first: a call refused in between would read the old token again.
        token.write_text("rotated-token\n")
        emulator.token = "rotated-token"  # the old one is refused from now on
        seen.append(len(emulator.store.jobs))

    emulator.faults.link_rate = 4 * MiB
    rotator = threading.Thread(target=rotate_after_the_first_row)
    rotator.start()
    env = cli_env({"METASTUDIO_ENDPOINT": emulator_thread.url,
                   "METASTUDIO_PROJECT_ID": emulator_thread.config.project_id,
                   "METASTUDIO_AUTH_TOKEN_FILE": str(token)}, tmp_path / "state")
    result = run_cli("batch", str(manifest), "--files", "1", "--json", env=env)
    rotator.join()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] == 4 and seen and seen[0] < 4


# ---- the network as enterprises have it --------------------------------------------------


def test_an_upload_and_a_batch_go_through_the_proxy(emulator_thread: RunningEmulator,
                                                    tmp_path: Path):
    video = video_of(tmp_path, 3 * MiB)
    manifest = tmp_path / "rows.csv"
    manifest.write_text(f"path,name\n{video.name},batched\n")
    with Proxy(user="alice", password="proxy-secret") as proxy:
        env = _env(emulator_thread, tmp_path,
                   HTTP_PROXY=proxy.url(user="alice", password="proxy-secret"))
        upload = run_cli("-vv", "upload", str(video), "--name", "proxied", "--parts", "3",
                         env=env)
        assert upload.returncode == 0, upload.stderr
        batch = run_cli("batch", str(manifest), "--json", env=env)
        assert batch.returncode == 0, batch.stderr
        puts = [s for s in proxy.seen if s.startswith("PUT /metastudio-emulator/")]
        api = [s for s in proxy.seen if "/digital-human-training-manage/" in s]
        assert len(puts) == 3 + 3 and len(api) >= 6, proxy.seen  # 3 parts each (1 MiB by
        # default); the calls
        assert proxy.refused == 0
        assert "proxy-secret" not in upload.stdout + upload.stderr + batch.stderr
        before = len(proxy.seen)
        bypass = run_cli("upload", str(video), "--name", "direct", "--restart",
                         env=env | {"NO_PROXY": "127.0.0.1"})
        assert bypass.returncode == 0, bypass.stderr
        assert len(proxy.seen) == before  # NO_PROXY names the host: the proxy saw nothing


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[RunningEmulator, Path]]:
    """The emulator over https, with a certificate from a CA of the test's own; the CA's
    PEM file."""
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1")
    cert, key, bundle = (tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    server.cert_chain_pems[0].write_to_path(str(cert))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(cert), append=True)
    server.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(bundle))
    config = emulator_config(tmp_path / "emulator", tls_cert=cert, tls_key=key)
    with EmulatorThread(config) as running:
        assert running.url.startswith("https://")
        yield running, bundle


def test_a_ca_bundle_through_a_connect_proxy(tls: tuple[RunningEmulator, Path],
                                             tmp_path: Path):
    running, bundle = tls
    with Proxy() as proxy:
        env = _env(running, tmp_path, HTTPS_PROXY=proxy.url())
        untrusted = run_cli("jobs", env=env)
        assert untrusted.returncode == 4
        assert "METASTUDIO_CA_BUNDLE" in untrusted.stderr and "certificate" in untrusted.stderr
        trusted = run_cli("upload", str(GOOD_VIDEO), "--name", "tls", *REQUIRED_FLAGS,
                          "--submit", "--json", env=env | {"METASTUDIO_CA_BUNDLE": str(bundle)})
        assert trusted.returncode == 0, trusted.stderr
        assert json.loads(trusted.stdout)["submitted"] is True
        assert proxy.seen and all(s.startswith("CONNECT 127.0.0.1:") for s in proxy.seen)


class _Redirector:
    """A server that answers every request 307 to `target`, and a target that counts what
    reaches it."""

    def __init__(self) -> None:
        self.redirected: list[str] = []
        self.reached: list[str] = []
        self._servers = LoopThread()

    def __enter__(self) -> _Redirector:
        self._servers.__enter__()
        self.target = self._servers.serve(self._count)
        self.url = self._servers.serve(self._redirect)
        return self

    async def _redirect(self, request: web.Request) -> web.Response:
        self.redirected.append(f"{request.method} {request.path}")
        raise web.HTTPTemporaryRedirect(self.target + request.path_qs)

    async def _count(self, request: web.Request) -> web.Response:
        self.reached.append(f"{request.method} {request.path} {dict(request.headers)}")
        return web.json_response({"count": 0, "jobs": []})

    def __exit__(self, *exc_info: Any) -> None:
        self._servers.__exit__(*exc_info)


def test_redirects_are_never_followed(emulator_thread: RunningEmulator, tmp_path: Path):
    with _Redirector() as redirector:
        env = _env(emulator_thread, tmp_path, METASTUDIO_ENDPOINT=redirector.url)
        refused = run_cli("jobs", env=env)
        assert refused.returncode == 4 and "redirect" in refused.stderr
        assert redirector.redirected and redirector.reached == []

        # The first links point at the redirector: each PUT is refused like a spent link,
        # fresh links come by an update, and nothing reaches the redirect's target.
        port = emulator_thread.url.rsplit(":", 1)[1]
        faults = emulator_thread.emulator.faults

        def first_links_redirected(request: web.Request, answer: object) -> object:
            if request.method == "POST" and request.path.endswith("/jobs"):
                faults.rewrite = None
                return json.loads(json.dumps(answer).replace(
                    f"127.0.0.1:{port}", redirector.url.split("//", 1)[1]))
            return answer

        faults.rewrite = first_links_redirected
        video = video_of(tmp_path, 2 * MiB)
        upload = run_cli("upload", str(video), "--name", "redirected", "--parts", "2",
                         env=_env(emulator_thread, tmp_path))
        assert upload.returncode == 0, upload.stderr
        assert [r for r in redirector.redirected if r.startswith("PUT")]
        assert redirector.reached == []


# ---- the service's flow control ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "hint"), [(12, True), (24, False)])
def test_a_paced_batch_meets_few_429s(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                      rows: int, hint: bool):
    """With the rates given, the pace keeps to them; with no hint at all (issue 31, item 1),
    it learns them from the gateway's first refusals: at most 5 % of the calls are 429s."""
    rates = {"command": 3.0, "show": 3.0}
    videos = [video_of(tmp_path, 256 * 1024, f"r{n:02}.mp4") for n in range(rows)]
    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,name\n" + "".join(f"{v.name},{v.stem}\n" for v in videos))
    with EmulatorThread(emulator_config(tmp_path / "emulator", api_rates=rates)) as running:
        env = _env(running, tmp_path, **({"METASTUDIO_API_RATES": "command=3,show=3"}
                                         if hint else {}))
        started = time.monotonic()
        result = run_cli("batch", str(manifest), "--files", "8", "--json", env=env)
        seconds = time.monotonic() - started
        gateway = running.emulator.gateway
        calls, refused = sum(gateway.calls.values()), sum(gateway.refused.values())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] == rows
    assert refused <= (2 if hint else 0.05 * calls), (refused, calls)
    with capfd.disabled():
        print(f"\npaced batch: {rows} videos, {'rates given' if hint else 'no hint'}, {calls} "
              f"API calls ({dict(gateway.calls)}), {refused} answered 429 APIGW.0308, "
              f"{seconds:.1f} s")


def test_the_region_sets_the_pace():
    from uploader.api.pace import rates_for

    beijing = Settings(project_id="p", ak="a", sk="s")
    shanghai = Settings(project_id="p", ak="a", sk="s",
                        endpoint="https://metastudio.cn-east-3.myhuaweicloud.com")
    local = Settings(project_id="p", ak="a", sk="s", endpoint="http://127.0.0.1:8790")
    told = Settings(project_id="p", ak="a", sk="s", endpoint="http://127.0.0.1:8790",
                    api_rates={"command": 2})
    assert rates_for(beijing)["command"] == 10 and rates_for(shanghai)["command"] == 3
    assert rates_for(shanghai)["create"] == 1 and rates_for(local) == {}
    assert rates_for(told) == {"command": 2.0}


def test_a_pace_learns_the_limit_and_is_shared_by_every_loop_of_the_process():
    """Issue 31, item 1: a 429 naming its limit sets the pace there; a later one halves
    it; answers climb it back, never above the limit; one pace serves loops in threads."""
    import threading

    from uploader.api.pace import Pace, limit_named

    assert limit_named("policy user over ratelimit,limit:3,time:1 second") == 3.0
    assert limit_named("over ratelimit,limit:120,time:1 minute") == 2.0
    assert limit_named("Internal Error") is None
    now = [100.0]
    learning = Pace("command", None, clock=lambda: now[0])
    for _ in range(3):  # alone on the tenant: its first three calls took the whole second
        learning.answered()
    learning.refused("policy user over ratelimit,limit:3,time:1 second", None)
    assert (learning.rate, learning.ceiling) == (3.0, 3.0)
    learning.refused("policy user over ratelimit,limit:3,time:1 second", None)
    assert learning.rate == 3.0  # the same burst: one fall
    now[0] += 1.5
    learning.refused("policy user over ratelimit,limit:3,time:1 second", None)
    assert learning.rate == 1.5
    for _ in range(100):
        learning.answered()
    assert learning.rate == 3.0  # back, and no further
    pace = Pace("show", 3.0)
    started = time.monotonic()

    def six_calls() -> None:
        async def calls() -> None:
            for _ in range(3):
                await pace.turn()
                pace.answered()
        asyncio.run(calls())

    threads = [threading.Thread(target=six_calls) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 5 / 3.0 - 0.05  # six calls at 3 a second, in all


def test_a_pace_that_learns_the_limit_while_others_use_the_tenant_starts_at_its_share():
    """Issue 31, item 1, across machines: a refusal naming a limit of 3 after only one of
    this pace's calls got through in the last second means others took the rest: it starts
    at its share (not at the whole limit, as three machines each would), and climbs back at
    SHARED_CLIMB."""
    from uploader.api.pace import CLIMB, SHARED_CLIMB, SHARES, Pace

    message = "policy user over ratelimit,limit:3,time:1 second"
    now = [100.0]
    sharing = Pace("command", None, clock=lambda: now[0])
    sharing.answered()
    sharing.refused(message, None)
    assert (sharing.rate, sharing.ceiling) == (1.0, 3.0)  # the one call of its own
    starved = Pace("command", None, clock=lambda: now[0])
    starved.refused(message, None)
    assert starved.rate == 3.0 / SHARES  # none got through: a quarter, not nothing
    sharing.answered()  # a second of calls at 1 a second: the climb of one second
    assert sharing.rate == pytest.approx(1.0 + SHARED_CLIMB) and SHARED_CLIMB < CLIMB


def test_processes_sharing_a_state_folder_share_one_pace(tmp_path: Path):
    """Two processes pacing the same API through one state folder take turns from one
    schedule: their calls, merged, are spaced as one process's would be (Issue 31, item 1:
    workers on one machine do not each take the tenant's whole limit)."""
    script = (
        "import asyncio, json, sys, time\n"
        "from pathlib import Path\n"
        "from uploader.api.pace import Pace\n"
        "pace = Pace('show', 10.0, shared=Path(sys.argv[1]))\n"
        "async def main():\n"
        "    times = []\n"
        "    for _ in range(6):\n"
        "        await pace.turn()\n"
        "        times.append(time.time())\n"
        "        pace.answered()\n"
        "    print(json.dumps(times))\n"
        "asyncio.run(main())\n")
    shared = tmp_path / "pace" / "show.json"
    runs = [subprocess.Popen([sys.executable, "-c", script, str(shared)],
                             stdout=subprocess.PIPE, text=True) for _ in range(2)]
    times = sorted(t for run in runs for t in json.loads(run.communicate(timeout=30)[0]))
    # 10 calls a second in all: the k-th call at least k tenths of a second after the first
    # (each process alone would make its six in 0.5 s; two taking one turn would put a call
    # ahead). A loaded machine wakes a call late, which shortens the gap after it: so the
    # calls are judged against the schedule, not each gap against a tenth.
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert len(times) == 12, times
    ahead = [k for k, at in enumerate(times) if at - times[0] < 0.1 * k - 0.02]
    assert not ahead, (ahead, gaps)
    assert shared.stat().st_mode & 0o777 == 0o600
