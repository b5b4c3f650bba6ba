"""The library's examples in the README and the docs run as written, against an emulator:
a page that shows code shows code that works."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import emulator_config
from tests.uploads import REQUIRED, cli_env, video_of
from uploader.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024



def _examples(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


def test_every_page_with_library_examples_is_run():
    pages = [str(p.relative_to(ROOT)) for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
             if "```python" in p.read_text()]
    assert sorted(pages) == ["README.md", "docs/library.md", "docs/voice.md"]


def test_the_voice_example_runs_as_written(tmp_path: Path):
    from samples.make_samples import make_voice

    (code,) = _examples("docs/voice.md")
    make_voice(tmp_path / "voice", seconds=4.0)
    shutil.copyfile(REQUIRED["grant_file"], tmp_path / "letter.pdf")
    with EmulatorThread(emulator_config(tmp_path / "emulator")) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        job_id, state, sentences = _run_example(code, tmp_path, env).split(maxsplit=2)
        assert emulator.emulator.store.voice_jobs[-1]["job_id"] == job_id
    assert state == "SUCCEED" and sentences.strip() == str(tuple(range(20)))


@pytest.mark.slow
def test_the_library_examples_run_as_written(tmp_path: Path):
    readme, (shared_code, loop_code) = _examples("README.md"), _examples("docs/library.md")
    assert len(readme) == 1
    for n in (1, 2, 3):
        video_of(tmp_path, 8 * MiB, f"talk{n}.mp4")
    for name, path in (("front.jpg", REQUIRED["id_card_front"]),
                       ("back.jpg", REQUIRED["id_card_back"]),
                       ("letter.pdf", REQUIRED["grant_file"])):
        shutil.copyfile(path, tmp_path / name)
    config = emulator_config(tmp_path / "emulator", link_rate=8 * MiB)
    with EmulatorThread(config) as emulator:
        env = cli_env(emulator.client_env(), tmp_path / "state")
        job_id, state, sent = _run_example(readme[0], tmp_path, env).split()
        assert state in ("AUTO_VERIFYING", "MANUAL_VERIFYING") and int(sent) > 8 * MiB
        emulator.emulator.faults.most_in_flight = 0
        shared = _run_example(shared_code, tmp_path, env)
        faults = emulator.emulator.faults
        # Three uploads of 8 parts each, 4 pieces at most in flight over all of them.
        assert 2 <= faults.most_in_flight <= 4, faults.most_in_flight
        rows = [line.split() for line in shared.splitlines()]
        assert len({job for job, _, _ in rows}) == 3 and job_id in {j for j, _, _ in rows}
        assert all(state in ("AUTO_VERIFYING", "MANUAL_VERIFYING") for _, state, _ in rows)
        inside_a_loop = _run_example(loop_code, tmp_path, env)
        job_id, state = inside_a_loop.split()
        assert state == "WAIT_FILE_UPLOAD" and job_id in emulator.emulator.store.jobs


def _run_example(code: str, folder: Path, env: dict[str, str]) -> str:
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout
