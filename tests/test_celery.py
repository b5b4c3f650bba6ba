"""Uploads as Celery tasks (issue 14): a real RabbitMQ, real worker processes (each a machine
of its own: its own state folder), the emulator, and `uploader batch --broker` as a user
runs it. Each test has its own queue on the module's broker."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.broker import ROOT, EarlyBroker, RabbitMQ, Worker, have_rabbitmq
from tests.conftest import emulator_config
from tests.uploads import REQUIRED, Recorder, assembled, cli_env, video_of
from uploader import Job, Settings
from uploader.batch import Row, RowResult
from uploader.emulator import EmulatorThread, RunningEmulator

#: The broker tier: a real RabbitMQ and worker processes.
pytestmark = pytest.mark.slow

PART = 512 * 1024


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    if not have_rabbitmq():
        if os.environ.get("UPLOADER_REQUIRE_BROKER"):
            pytest.fail("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        pytest.skip("rabbitmq-server is not installed")
    broker = EarlyBroker.take() or RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    if not broker.running:
        broker.launch()
    broker.wait_ready()
    try:
        yield broker
    finally:
        broker.close()


@dataclass
class Cluster:
    """The emulator, the broker, a queue of the test's own, and the workers started."""

    folder: Path
    emulator: RunningEmulator
    broker: RabbitMQ
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def worker(self, name: str, **options: object) -> Worker:
        started = Worker(name, self.env, self.folder / "workers", **options)  # type: ignore[arg-type]
        self.workers.append(started)
        return started

    def batch(self, manifest: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "uploader", "batch", str(manifest), "--broker",
             self.broker.url, "--report", str(self.folder / "report.jsonl"), "--json", *args],
            env=self.env | {"XDG_STATE_HOME": str(self.folder / "sender-state")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def report(self) -> dict[int, dict[str, object]]:
        lines = (self.folder / "report.jsonl").read_text().splitlines()
        return {int(row["line"]): row for row in map(json.loads, lines)}

    def logs(self) -> str:
        return "\n".join(w.log.read_text(errors="replace")[-3000:] for w in self.workers)


@pytest.fixture
def cluster(tmp_path: Path, rabbitmq: RabbitMQ) -> Iterator[Cluster]:
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state") | {
            "UPLOADER_BROKER_URL": rabbitmq.url,
            "UPLOADER_QUEUE": f"uploader-test-{uuid.uuid4().hex[:8]}",
            "UPLOADER_DELIVERY_LIMIT": "2",
            # The test's videos and the samples: a worker reads nothing else (issue 21, 4).
            "UPLOADER_WORKER_ROOTS": f"{tmp_path}:{ROOT / 'samples'}"}
        running = Cluster(tmp_path, emulator, rabbitmq, env)
        try:
            yield running
        finally:
            for worker in running.workers:
                worker.stop()


def _manifest(folder: Path, rows: list[tuple[Path, str]], *, whole_job: bool = False
              ) -> Path:
    """A CSV manifest of (video, name) rows; with `whole_job`, each row also names the
    files the review requires."""
    manifest = folder / "rows.csv"
    extra = "".join(f",{path}" for path in REQUIRED.values()) if whole_job else ""
    header = "path,name,part_size" + ("".join(f",{k}" for k in REQUIRED) if whole_job else "")
    lines = [header] + [f"{path},{name},{PART}{extra}" for path, name in rows]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _finish(follower: subprocess.Popen[str], cluster: Cluster, timeout: float = 120
            ) -> tuple[int, dict[str, object]]:
    try:
        out, err = follower.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        follower.kill()
        out, err = follower.communicate()
        raise AssertionError(f"the batch did not end:\n{err}\n{cluster.logs()}") from None
    assert "Traceback" not in err, err
    return follower.returncode, json.loads(out or "{}")


def _wait(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def _stored(emulator: RunningEmulator) -> dict[str, int]:
    """Parts stored so far, by job."""
    counts: dict[str, int] = {}
    for (job, _part), happened in list(emulator.emulator.faults.ledger.items()):
        counts[job] = counts.get(job, 0) + (happened["stored"] > 0)
    return counts


def _leftovers(cluster: Cluster) -> set[str]:
    """Queues of batches or row locks still on the broker."""
    return {q for q in cluster.broker.queues()
            if q.startswith(("uploader.batch.", "uploader.lock."))}


def _identical(cluster: Cluster, rows: dict[int, Path]) -> None:
    """Every row's job holds its video, byte for byte, and each row has a job of its own."""
    report = cluster.report()
    settings = Settings.from_env(cluster.emulator.client_env())
    jobs = {str(report[line]["job_id"]) for line in rows}
    assert len(jobs) == len(rows) == len(cluster.emulator.emulator.store.jobs)
    for line, video in rows.items():
        job = str(report[line]["job_id"])
        assert asyncio.run(assembled(settings, job)) == video.read_bytes()


class UnderWay(NamedTuple):
    videos: list[Path]
    manifest: Path
    workers: list[Worker]
    batch: subprocess.Popen[str]


def _four_rows_under_way(cluster: Cluster) -> UnderWay:
    """Four videos of 8 parts on a link slowed to a part a second, two workers ready, and
    `uploader batch --broker` started on them."""
    videos = [video_of(cluster.folder, 8 * PART, f"v{n}.mp4") for n in range(4)]
    manifest = _manifest(cluster.folder, [(v, f"row {n}") for n, v in enumerate(videos)])
    cluster.emulator.emulator.faults.link_rate = 512 * 1024.0
    workers = [cluster.worker("w1"), cluster.worker("w2")]
    for worker in workers:
        worker.wait_ready()
    return UnderWay(videos, manifest, workers, cluster.batch(manifest))


def test_a_worker_killed_mid_upload_loses_nothing_and_resends_nothing(cluster: Cluster):
    videos, _, (first, second), follower = _four_rows_under_way(cluster)
    faults = cluster.emulator.emulator.faults

    # Both workers mid-upload: two jobs with parts stored, neither done.
    _wait(lambda: sum(n >= 2 for n in _stored(cluster.emulator).values()) >= 2,
          "two rows mid-upload")
    stored_before = {key for key, happened in list(faults.ledger.items())
                     if happened["stored"]}
    first.kill()
    faults.link_rate = None

    code, summary = _finish(follower, cluster)
    assert code == 0, cluster.logs()
    assert (summary["ok"], summary["failed"]) == (4, 0)
    _identical(cluster, {n + 2: v for n, v in enumerate(videos)})
    # The row the killed worker held was taken by the other one, which sent only what the
    # service lacked: every part stored before the kill was PUT once, ever.
    assert len({job for job, _ in stored_before}) == 2
    assert all(faults.ledger[key]["attempts"] == 1 for key in stored_before)
    assert "upload_row" in second.log.read_text()
    assert _leftovers(cluster) == set()  # the dead worker's lock went with it


def test_the_same_row_twice_at_once_uploads_once(cluster: Cluster):
    video = video_of(cluster.folder, 8 * PART)
    manifest = _manifest(cluster.folder, [(video, "twice"), (video, "twice")], whole_job=True)
    faults = cluster.emulator.emulator.faults
    faults.link_rate = 2 * 1024 * 1024.0
    for name in ("w1", "w2"):
        cluster.worker(name).wait_ready()

    code, summary = _finish(cluster.batch(manifest, "--submit"), cluster)

    assert code == 0, cluster.logs()
    report = cluster.report()
    assert sorted(str(report[n]["outcome"]) for n in (2, 3)) == ["ok", "skipped"]
    assert report[2]["job_id"] == report[3]["job_id"]
    [job] = cluster.emulator.emulator.store.jobs.values()
    assert job["state"] != "WAIT_FILE_UPLOAD"  # submitted for review (--submit)
    # Each video part PUT once; the three other files (all counted under part 0) once each.
    assert {part: happened["attempts"] for (_, part), happened in faults.ledger.items()} \
        == {0: 3} | dict.fromkeys(range(1, 9), 1)
    assert summary["bytes_uploaded"] == video.stat().st_size + sum(
        path.stat().st_size for path in REQUIRED.values())
    assert "another copy of this row is running" in cluster.logs()


def test_a_worker_uploads_only_files_under_its_roots(cluster: Cluster):
    allowed, private = cluster.folder / "allowed", cluster.folder / "private"
    allowed.mkdir()
    private.mkdir()
    good = video_of(allowed, 2 * PART, "good.mp4")
    secret = video_of(private, 2 * PART, "secret.mp4")
    (allowed / "link.mp4").symlink_to(secret)  # inside by its name, outside once resolved
    letter = private / "grant.pdf"
    letter.write_bytes(REQUIRED["grant_file"].read_bytes())
    manifest = cluster.folder / "rows.csv"
    manifest.write_text(f"path,name,grant_file\n{good},good,\n{secret},secret,\n"
                        f"{allowed / 'link.mp4'},linked,\n{good},letter,{letter}\n")
    cluster.env["UPLOADER_WORKER_ROOTS"] = str(allowed)
    cluster.worker("w1").wait_ready()

    code, _ = _finish(cluster.batch(manifest), cluster)

    assert code == 6, cluster.logs()
    started = cluster.workers[0].log.read_text()
    assert f"uploading only files under {allowed}" in started  # it says so as it starts
    report = cluster.report()
    assert {line: row["outcome"] for line, row in report.items()} == {
        2: "ok", 3: "invalid", 4: "invalid", 5: "invalid"}
    assert f"outside this worker's roots ({allowed})" in str(report[3]["message"])
    assert f"resolves to {secret}" in str(report[4]["message"])
    assert str(letter) in str(report[5]["message"])
    uploaded = {job["name"] for job in cluster.emulator.emulator.store.jobs.values()}
    assert uploaded == {"good"}, "a file outside the roots reached the service"


def test_a_row_that_kills_its_worker_every_time_ends_failed(cluster: Cluster):
    good = video_of(cluster.folder, 4 * PART, "good.mp4")
    bad = video_of(cluster.folder, 4 * PART, "bad.mp4")
    manifest = _manifest(cluster.folder, [(bad, "crash me"), (good, "fine")])
    worker = cluster.worker("w1", app="tests.crashing_app")
    worker.wait_ready()

    code, summary = _finish(cluster.batch(manifest), cluster)

    assert code == 6, cluster.logs()
    report = cluster.report()
    assert report[3]["outcome"] == "ok"
    assert report[2]["outcome"] == "failed"
    assert report[2]["error"] == "DeliveryLimitReached"
    assert "delivery limit" in str(report[2]["message"])
    assert (summary["ok"], summary["failed"]) == (1, 1)
    crashes = worker.log.read_text().count("crashing on")
    assert crashes == 3, crashes  # the first delivery, and the two the limit allows after it
    assert len(cluster.emulator.emulator.store.jobs) == 1


@pytest.mark.parametrize(("sig", "code", "error"), [(signal.SIGINT, 130, "Interrupted"),
                                                     (signal.SIGTERM, 143, "Terminated")])
def test_a_batch_stopped_and_run_again_finishes_every_row_once(cluster: Cluster, sig: int,
                                                               code: int, error: str):
    videos, manifest, _, follower = _four_rows_under_way(cluster)
    faults = cluster.emulator.emulator.faults

    _wait(lambda: sum(_stored(cluster.emulator).values()) >= 2, "parts stored")

    follower.send_signal(sig)  # Ctrl-C, or SIGTERM (timeout, systemd) handled as it is
    ended, stopped = _finish(follower, cluster)
    assert ended == code
    assert stopped["error"] == error and "withdrawn" in str(stopped["message"])
    faults.link_rate = None

    ended, summary = _finish(cluster.batch(manifest), cluster)
    assert ended == 0, cluster.logs()
    assert (summary["ok"] + summary["skipped"], summary["failed"]) == (4, 0)
    _identical(cluster, {n + 2: v for n, v in enumerate(videos)})
    assert all(happened["attempts"] == 1 for happened in faults.ledger.values())


def test_a_worker_sent_sigterm_ends_its_rows_then_stops_as_after_ctrl_c(cluster: Cluster):
    videos, _, (first, _), follower = _four_rows_under_way(cluster)
    faults = cluster.emulator.emulator.faults
    _wait(lambda: sum(n >= 2 for n in _stored(cluster.emulator).values()) >= 2,
          "two rows mid-upload")
    first.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown, as a first Ctrl-C
    faults.link_rate = None
    code, summary = _finish(follower, cluster)
    assert code == 0, cluster.logs()
    assert (summary["ok"], summary["failed"]) == (4, 0)
    assert first.process.wait(timeout=60) == 0
    log = first.log.read_text()
    assert "warm shutdown" in log.lower() and "Traceback" not in log
    _identical(cluster, {n + 2: v for n, v in enumerate(videos)})
    assert all(happened["attempts"] == 1 for happened in faults.ledger.values())


def test_send_batch_from_code_waits_for_a_worker(cluster: Cluster,
                                                 caplog: pytest.LogCaptureFixture):
    from uploader.celery import app, send_batch
    from uploader.celery.app import delivery_limit

    videos = [video_of(cluster.folder, 4 * PART, f"v{n}.mp4") for n in range(2)]
    rows = [Row(n + 1, Job(video=v, name=f"code {n}")) for n, v in enumerate(videos)]
    results: list[RowResult] = []
    told = Recorder()
    follower = threading.Thread(target=lambda: results.extend(send_batch(
        rows, broker=cluster.broker.url, progress=told, silence=0.5)))
    with caplog.at_level(logging.WARNING, logger="uploader"):
        follower.start()
        _wait(lambda: "worker (of uploader.celery) running" in caplog.text, "the warning", 20)
    # This process's app has the queue its environment gave it at import: so must the worker.
    cluster.env |= {"UPLOADER_QUEUE": app.conf.task_default_queue,
                    "UPLOADER_DELIVERY_LIMIT": str(delivery_limit())}
    cluster.worker("late")
    follower.join(60)
    assert not follower.is_alive(), cluster.logs()
    assert sorted((r.line, r.outcome) for r in results) == [(1, "ok"), (2, "ok")]
    assert told.done[-1] == sum(v.stat().st_size for v in videos)
    assert len({r.job_id for r in results}) == 2 == len(cluster.emulator.emulator.store.jobs)
    assert _leftovers(cluster) == set()  # the batch's own queue deleted at its end


def test_broker_options_and_an_unreachable_broker(tmp_path: Path):
    video = video_of(tmp_path, 4 * PART)
    manifest = _manifest(tmp_path, [(video, "one")])
    env = cli_env({}, tmp_path / "state")
    base = [sys.executable, "-m", "uploader", "batch", str(manifest), "--broker",
            "amqp://guest:s3cret@127.0.0.1:1//"]
    refused = subprocess.run([*base, "--bwlimit", "1M", "--wait"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--bwlimit, --wait: not with --broker" in refused.stderr

    unreachable = subprocess.run([*base, "--json"], env=env, capture_output=True, text=True,
                                 timeout=60)
    assert unreachable.returncode == 4, unreachable.stderr
    assert json.loads(unreachable.stdout)["error"] == "BrokerError"
    assert "amqp://guest:**@127.0.0.1:1//" in unreachable.stderr
    assert "s3cret" not in unreachable.stdout + unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    malformed = subprocess.run([*base, "--json"], env=env | {"UPLOADER_DELIVERY_LIMIT": "x"},
                               capture_output=True, text=True, timeout=60)
    assert malformed.returncode == 4
    assert json.loads(malformed.stdout)["error"] == "SettingsError"


def test_the_broker_restarted_mid_batch(cluster: Cluster):
    videos, _, _, follower = _four_rows_under_way(cluster)
    faults = cluster.emulator.emulator.faults

    _wait(lambda: sum(_stored(cluster.emulator).values()) >= 2, "parts stored")

    cluster.broker.restart_app()  # every connection closed, the queues recovered
    faults.link_rate = None

    code, summary = _finish(follower, cluster, timeout=150)
    assert code == 0, cluster.logs()
    assert "Connection to broker lost" in cluster.logs()  # the workers saw it go
    assert (summary["ok"] + summary["skipped"], summary["failed"]) == (4, 0)
    _identical(cluster, {n + 2: v for n, v in enumerate(videos)})


def test_two_workers_with_default_names_on_one_machine(cluster: Cluster):
    """Celery's default node name is the same for every worker of a machine: both start."""
    first, second = (cluster.worker(name, named=False) for name in ("d1", "d2"))
    first.wait_ready()
    second.wait_ready()
    logs = first.log.read_text() + second.log.read_text()
    assert "RESOURCE_LOCKED" not in logs and "Traceback" not in logs
    assert logs.count("uploader-") >= 2


def test_three_machines_learning_one_tenant_s_limit_meet_few_429s(tmp_path: Path,
                                                                   rabbitmq: RabbitMQ):
    """Issue 31, item 1: three workers, each a machine of its own (its own state folder, so no
    shared pace), no region and no METASTUDIO_API_RATES, one tenant limited to 3 calls a
    second of command and show: each learns the limit from its first refusal, at its share
    when others took the rest of the second, and climbs back gently. benchmarks/tenant.py
    prints the figure against the 5 % target (2.4-4.0 %); this shape, whose rows end closer
    together (the content rules pace them), measured 6.3 % (8 of 128, three runs), and 15.5 %
    (22 of 142) where each worker learned the tenant's whole limit: the bound is between."""
    config = emulator_config(tmp_path / "emulator", api_rates={"command": 3.0, "show": 3.0})
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state") | {
            "UPLOADER_BROKER_URL": rabbitmq.url,
            "UPLOADER_QUEUE": f"uploader-test-{uuid.uuid4().hex[:8]}",
            "UPLOADER_WORKER_ROOTS": str(tmp_path)}
        env.pop("METASTUDIO_API_RATES", None)
        cluster = Cluster(tmp_path, emulator, rabbitmq, env)
        try:
            for n in range(3):
                cluster.worker(f"m{n}", concurrency=2, part_concurrency=4)
            for worker in cluster.workers:
                worker.wait_ready()
            rows = [(video_of(tmp_path, PART + 1000 * n, f"t{n}.mp4"), f"t{n}")
                    for n in range(24)]
            code, summary = _finish(cluster.batch(_manifest(tmp_path, rows)), cluster)
        finally:
            for worker in cluster.workers:
                worker.stop()
        gateway = emulator.emulator.gateway
        calls, refused = sum(gateway.calls.values()), sum(gateway.refused.values())
    assert code == 0 and summary["ok"] == 24, (summary, cluster.logs())
    assert refused <= 0.10 * calls, f"{refused} of {calls} calls answered 429"
