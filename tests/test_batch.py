"""`uploader batch` and `upload_batch` against the emulator: rows valid, invalid and missing,
the report, re-runs, another machine, --fail-fast, --dry-run (issue 13, in part)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, emulator_config
from tests.uploads import REQUIRED, assembled, cli_env, video_of
from uploader import Job, Settings, UsageError
from uploader.batch import Row, RowError, read_manifest, row_from_json, upload_batch
from uploader.emulator import EmulatorThread, RunningEmulator, start_emulator

PART = 512 * 1024


def _manifest(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A CSV manifest: three good videos (relative paths), a missing one, one too long, and
    a row with no name; the good videos."""
    videos = [video_of(tmp_path, (4 + n) * PART, f"v{n}.mp4") for n in range(3)]
    lines = ["path,name,tags,batch_name",
             "v0.mp4,first,a;b,week 1",
             "v1.mp4,second,,week 1",
             "missing.mp4,third,,",
             f"{SAMPLES / 'too_long.mp4'},fourth,,",
             "v2.mp4,,,",
             "v2.mp4,fifth,,week 1"]
    manifest = tmp_path / "rows.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, videos


def _batch(emulator: RunningEmulator, state: Path, *args: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader", "batch", *args],
                          env=cli_env(emulator.client_env(), state), capture_output=True,
                          text=True, timeout=120)


def _report(path: Path) -> dict[int, dict[str, object]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {int(row["line"]): row for row in rows}


@pytest.mark.slow
def test_a_manifest_of_good_bad_and_missing_rows(tmp_path: Path):
    manifest, videos = _manifest(tmp_path)
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        report = tmp_path / "report.jsonl"
        run = _batch(emulator, tmp_path / "state", str(manifest), "--report", str(report),
                     "--json")
        assert run.returncode == 6, run.stderr
        assert "Traceback" not in run.stderr
        rows = _report(report)
        assert {n: r["outcome"] for n, r in rows.items()} == {
            2: "ok", 3: "ok", 4: "invalid", 5: "invalid", 6: "invalid", 7: "ok"}
        assert "exactly one of name and job_id" in str(rows[6]["message"])
        summary = json.loads(run.stdout)
        assert (summary["ok"], summary["invalid"], summary["failed"]) == (3, 3, 0)
        settings = Settings.from_env(emulator.client_env())
        for line, video in zip((2, 3, 7), videos, strict=True):
            job_id = str(rows[line]["job_id"])
            assert asyncio.run(assembled(settings, job_id)) == video.read_bytes()
        jobs = emulator.emulator.store.jobs
        first = jobs[str(rows[2]["job_id"])]
        assert first["batch_name"] == "week 1" and {"a", "b"} <= set(first["tags"])

        # The same manifest again: every good row skipped, no job created.
        again = _batch(emulator, tmp_path / "state", str(manifest), "--report", str(report))
        assert again.returncode == 6
        assert [r["outcome"] for n, r in sorted(_report(report).items()) if n in (2, 3, 7)] \
            == ["skipped"] * 3
        # From another machine (an empty state folder): still no second job.
        elsewhere = _batch(emulator, tmp_path / "other state", str(manifest), "--json")
        assert json.loads(elsewhere.stdout)["skipped"] == 3
        assert len(jobs) == 3


@pytest.mark.slow
def test_dry_run_and_fail_fast_send_nothing_when_a_row_is_bad(tmp_path: Path):
    manifest, _ = _manifest(tmp_path)
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        for flag in ("--dry-run", "--fail-fast"):
            run = _batch(emulator, tmp_path / "state", str(manifest), flag, "--json")
            assert run.returncode == 6, run.stderr
            assert json.loads(run.stdout)["invalid"] == 3
        assert not emulator.emulator.store.jobs


@pytest.mark.slow
def test_a_clean_manifest_exits_0_and_reads_json_lines(tmp_path: Path):
    videos = [video_of(tmp_path, 8 * PART, f"j{n}.mp4") for n in range(4)]
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps({"path": v.name, "name": v.stem, "parts": 8}) + "\n"
                                for v in videos))
    config = emulator_config(tmp_path / "emulator", link_rate=8 * 1024 * 1024)
    with EmulatorThread(config) as emulator:
        run = _batch(emulator, tmp_path / "state", str(manifest), "--files", "2",
                     "--concurrency", "3", "--bwlimit", "64M", "--json")
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["ok"] == 4
        faults = emulator.emulator.faults
        # One session for the batch: K part PUTs, and an API call per row in flight.
        assert faults.most_in_flight == 3 and faults.most_connections <= 3 + 2


@pytest.mark.slow
def test_a_bad_manifest_is_a_usage_error(tmp_path: Path):
    wrong = tmp_path / "rows.csv"
    wrong.write_text("file,name\nx.mp4,y\n")
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        run = _batch(emulator, tmp_path / "state", str(wrong))
        assert run.returncode == 2 and "path" in run.stderr
        run = _batch(emulator, tmp_path / "state", str(tmp_path / "rows.txt"))
        assert run.returncode == 2 and ".csv" in run.stderr


def test_manifest_rows_are_read_lazily(tmp_path: Path):
    manifest = tmp_path / "many.csv"
    manifest.write_text("path,name\n" + "".join(f"v{n}.mp4,n{n}\n" for n in range(10_000)))
    rows = read_manifest(str(manifest))
    first = next(rows)
    assert isinstance(first, Row) and first.line == 2 and first.job.video == tmp_path / "v0.mp4"
    bad = list(read_manifest(str(_write(tmp_path / "bad.jsonl", '{"path": 3, "x": 1}\nnope\n'))))
    assert all(isinstance(row, RowError) for row in bad) and [r.line for r in bad] == [1, 2]


def test_a_row_sent_to_a_worker_reads_back_the_same(tmp_path: Path, monkeypatch):
    manifest = _write(tmp_path / "rows.csv",
                      "path,name,part_size,tags,cover,batch_name\n"
                      "videos/a.mp4,Alice,8M,x;y,covers/a.jpg,week 1\n")
    [row] = read_manifest(str(manifest))
    assert isinstance(row, Row)
    sent = json.loads(json.dumps(row.to_json()))  # as a task message carries it
    assert sent["path"] == str(tmp_path / "videos" / "a.mp4")  # absolute: any folder
    monkeypatch.chdir(tmp_path.parent)
    assert row_from_json(row.line, sent) == row
    assert isinstance(row_from_json(2, {**sent, "colour": "red"}), RowError)
    assert isinstance(row_from_json(2, {**sent, "job_id": "j"}), RowError)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_upload_batch_from_code_yields_each_row_as_it_ends(emulator, settings, tmp_path):
    videos = [video_of(tmp_path, 4 * PART, f"c{n}.mp4") for n in range(3)]
    rows = [Row(n + 1, Job(video=v, name=v.stem)) for n, v in enumerate(videos)]
    results = [r async for r in upload_batch(rows, files=2, settings=settings,
                                             state_dir=tmp_path / "state")]
    assert sorted(r.line for r in results) == [1, 2, 3]
    assert {r.outcome for r in results} == {"ok"}


@pytest.mark.parametrize("files", [0, "2", True])
async def test_upload_batch_refuses_bad_values(settings, files):
    with pytest.raises(UsageError):
        [r async for r in upload_batch([], files=files, settings=settings)]


@pytest.mark.slow
def test_kill_9_mid_batch_then_the_same_command(tmp_path: Path):
    videos = [video_of(tmp_path, 8 * PART, f"k{n}.mp4") for n in range(3)]
    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,name,parts\n" + "".join(f"{v.name},{v.stem},8\n" for v in videos))
    config = emulator_config(tmp_path / "emulator", link_rate=2 * 1024 * 1024)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        report = tmp_path / "report.jsonl"
        args = [sys.executable, "-m", "uploader", "batch", str(manifest), "--files", "2",
                "--concurrency", "2", "--json", "--report", str(report)]
        with subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as first:
            deadline = time.monotonic() + 30
            while emulator.emulator.faults.totals()["stored"] < 3:
                assert time.monotonic() < deadline, "nothing was stored"
                time.sleep(0.02)
            first.send_signal(signal.SIGKILL)
        assert all(json.loads(line) for line in report.read_text().splitlines())  # whole
        emulator.emulator.faults.link_rate = None
        made = set(emulator.emulator.store.jobs)
        again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["ok"] + summary["skipped"] == 3
        assert summary["bytes_uploaded"] < sum(v.stat().st_size for v in videos)
        jobs = emulator.emulator.store.jobs
        assert made <= set(jobs) and len(jobs) == 3  # no second job for any row
        settings = Settings.from_env(emulator.client_env())
        for job_id, job in jobs.items():
            video = tmp_path / f"{job['name']}.mp4"
            assert asyncio.run(assembled(settings, job_id)) == video.read_bytes()


@pytest.mark.slow
async def test_rows_waiting_for_their_review_hold_no_place(tmp_path):
    review = 3.0  # long beside the rows' own work, which a loaded machine slows
    running = await start_emulator(emulator_config(tmp_path / "emulator", review_delay=review))
    try:
        settings = Settings.from_env(running.client_env())
        rows = [Row(n, Job(video=video_of(tmp_path, 4 * PART, f"w{n}.mp4"), name=f"w{n}",
                           files=REQUIRED)) for n in range(3)]
        started = time.monotonic()
        results = [r async for r in upload_batch(rows, files=1, settings=settings,
                                                 state_dir=tmp_path / "state", submit=True,
                                                 wait=True)]
        took = time.monotonic() - started
    finally:
        await running.stop()
    assert [r.state for r in results] == ["MANUAL_VERIFYING"] * 3
    assert took < 2 * review  # the reviews overlapped (one after another: 3 * review)


@pytest.mark.slow
def test_a_manifest_on_stdin_and_a_batch_bandwidth_cap(tmp_path: Path):
    videos = [video_of(tmp_path, 4 * PART, f"s{n}.mp4") for n in range(2)]
    rows = "path,name\n" + "".join(f"{v.name},{v.stem}\n" for v in videos)
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "uploader", "batch", "-", "--bwlimit",
                              "1M", "--json"], input=rows, cwd=tmp_path, text=True,
                             capture_output=True, timeout=120,
                             env=cli_env(emulator.client_env(), tmp_path / "state"))
        took = time.monotonic() - started
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["ok"] == 2
        assert took >= 3.5, f"4 MiB at 1 MiB/s over the batch took {took:.1f} s"
