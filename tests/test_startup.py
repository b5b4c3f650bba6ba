"""A CLI that answers at once: `uploader --help` and `uploader check` load nothing they do not
use (aiohttp, Pillow, Celery, the hashing extension); the timings are the benchmark's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import GOOD_VIDEO

HEAVY = ("aiohttp", "PIL", "celery", "kombu", "aiolimiter", "yarl", "multidict",
         "uploader.transfer._md5lanes", "uploader._client", "uploader.emulator")

_IMPORTS = """
import json, sys
sys.argv = ["uploader", *sys.argv[1:]]
from uploader.cli import main
try:
    main()
except SystemExit:
    pass
sys.stdout = sys.__stdout__
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(*args: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", _IMPORTS, *args], capture_output=True,
                         text=True, timeout=60)
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["upload", "--help"],
                                  ["batch", "--help"]])
def test_help_loads_nothing_heavy(args: list[str]):
    loaded = _loaded(*args)
    heavy = sorted(m for m in loaded if m.startswith(HEAVY))
    assert heavy == [] and "asyncio" not in loaded, heavy


def test_check_loads_mediainfo_but_no_network_or_pillow():
    loaded = _loaded("check", str(GOOD_VIDEO))
    assert "pymediainfo" in loaded
    heavy = sorted(m for m in loaded if m.startswith(HEAVY))
    assert heavy == [], heavy


def test_the_md5_kernel_is_chosen_at_the_first_hash_not_at_import():
    run = subprocess.run([sys.executable, "-c", (
        "import sys; import uploader.transfer.hashing as h; "
        "before = 'uploader.transfer._md5lanes' in sys.modules; h.new_md5(); "
        "print(before, h.kernel_name() in ('avx2x8', 'scalar', 'hashlib'))")],
        capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["False", "True"], run.stderr


def test_the_top_help_imports_no_command_and_lists_them_all():
    loaded = _loaded("--help")
    assert sorted(m for m in loaded if m.startswith("uploader.cli.")) == []
    from click.testing import CliRunner

    from uploader.cli import COMMANDS, main

    shown = CliRunner().invoke(main, ["--help"]).stdout
    for name, (_, line) in COMMANDS.items():
        assert f"{name} " in shown and line in shown, name
        assert main.get_command(None, name) is not None  # type: ignore[arg-type]
