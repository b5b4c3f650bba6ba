"""The benchmark command must keep working: run its smoke size (16 MiB) end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The benchmark tier: whole benchmark scripts, shrunk.
pytestmark = pytest.mark.slow

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


#: Each script, and the rows its table must print.
SCRIPTS = {
    "run.py": ("(a) http, shared cores: uploader / curl", "(b) http, shared cores: uploader CPU",
               "(b) http, shared cores: uploader CPU / (curl + MD5)",
               "(b) the content rules, once per video",
               "(a) https, shared cores: uploader / curl", "(b) https, shared cores: uploader CPU",
               "(c) peak RSS, 16 MiB file", "(d) 16 MiB/s link, K=16",
               "(e) defaults, 16 MiB in 16 parts",
               "(f) preflight"),
    "batch.py": ("(g) uploader batch", "(h) batch peak RSS, 8 videos",
                 "(g) the same videos again, the content rules on",
                 "(h) batch peak RSS, 24 videos", "(i) --bwlimit 32M", "(i) API calls"),
    "review.py": ("r1 check, 1080p H.264", "r2 check, 4K HEVC 100 Mb/s",
                  "r3 upload --submit, a slow link"),
    "tuning.py": ("slow connections: 2 MiB/s each", "narrow link: 16 MiB/s each",
                  "loopback, no cap", "auto / best (medians)"),
}


@pytest.mark.skipif(shutil.which("curl") is None, reason="the baseline needs curl")
@pytest.mark.timeout(240)
def test_every_benchmark_smoke_prints_every_figure(tmp_path: Path):
    """The scripts at once (their figures mean nothing at this size and load: they
    only must run, print every row and clean up)."""
    runs = {}
    for script in SCRIPTS:
        workdir = tmp_path / script
        workdir.mkdir()
        runs[script] = (workdir, subprocess.Popen(
            [sys.executable, str(BENCHMARK.parent / script), "--smoke", "--workdir",
             str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for script, (workdir, process) in runs.items():
        out, err = process.communicate(timeout=230)
        assert process.returncode == 0, (script, err[-3000:])
        for row in SCRIPTS[script]:
            assert row in out, (script, row, out[-3000:])
        assert list(workdir.iterdir()) == [], script  # it cleans up after itself
