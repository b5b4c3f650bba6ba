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


@pytest.mark.skipif(shutil.which("curl") is None, reason="the baseline needs curl")
@pytest.mark.timeout(180)
def test_benchmark_smoke_prints_every_figure(tmp_path: Path):
    result = subprocess.run([sys.executable, str(BENCHMARK), "--smoke", "--workdir",
                             str(tmp_path)], capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| what"):]
    for row in ("(a) shared cores: uploader / curl", "(b) shared cores: uploader CPU",
                "(c) peak RSS, 16 MiB file", "(d) 16 MiB/s link, K=16", "(e) resume after kill",
                "(f) preflight"):
        assert row in table, row
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself


@pytest.mark.skipif(shutil.which("curl") is None, reason="the baseline needs curl")
@pytest.mark.timeout(180)
def test_batch_benchmark_smoke_prints_every_figure(tmp_path: Path):
    result = subprocess.run([sys.executable, str(BENCHMARK.parent / "batch.py"), "--smoke",
                             "--workdir", str(tmp_path)], capture_output=True, text=True,
                            timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| what"):]
    for row in ("(g) uploader batch", "(h) batch peak RSS, 16 videos",
                "(h) batch peak RSS, 32 videos", "(i) --bwlimit 32M", "(i) API calls"):
        assert row in table, row
    assert list(tmp_path.iterdir()) == []
