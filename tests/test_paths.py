"""Long paths and names that are not ASCII, everywhere a path goes (issue 34, item 5, on
this machine): the upload and its re-run (the journal's key), a batch's manifest and report,
`check --json` with the content rules (PyAV and MediaInfo open the file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import GOOD_VIDEO
from tests.uploads import cli_env, run_cli
from uploader.emulator import RunningEmulator


@pytest.mark.slow
@pytest.mark.content_checks
def test_a_300_character_path_of_cjk_and_emoji(emulator_thread: RunningEmulator,
                                                tmp_path: Path):
    deep = tmp_path
    for level in range(6):
        deep = deep / f"层级目录📁{'x' * 40}{level}"
    deep.mkdir(parents=True)
    video = deep / f"训练视频🎬{'v' * 30}.mp4"
    shutil.copyfile(GOOD_VIDEO, video)
    assert len(str(video)) > 300
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    checked = run_cli("check", str(video), "--json", env=env)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)[0]["path"] == str(video)
    first = run_cli("upload", str(video), "--name", "长路径🎥", "--json", env=env)
    assert first.returncode == 0, first.stderr
    again = run_cli("upload", str(video), "--name", "长路径🎥", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["job_id"] == json.loads(first.stdout)["job_id"]
    assert json.loads(again.stdout)["bytes_uploaded"] == 0  # found again, nothing resent
    manifest = deep / "行📋.csv"
    manifest.write_text(f"path,name\n{video.name},行🎞\n", encoding="utf-8")
    report = deep / "报告📝.jsonl"
    batch = run_cli("batch", str(manifest), "--report", str(report), "--json", env=env)
    assert batch.returncode == 0, batch.stderr
    row = json.loads(report.read_text(encoding="utf-8"))
    assert row["outcome"] == "ok" and row["path"] == str(video)
