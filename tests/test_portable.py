"""The code path taken where the Unix-only names are missing (issue 34).

Windows lacks `fcntl`, `os.preadv`/`pread`/`pwrite`, `os.O_NOFOLLOW`, `os.O_CLOEXEC`,
`os.geteuid` and the event loop's `add_signal_handler`; `uploader` uses none of them, and
these tests hold it to that. The behaviour tests run again with all of them hidden in every
process: `PYTHONPATH=tests/portable pytest tests/test_upload.py ...` (see tests/portable and
.ci/run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from uploader._errors import JobLockedError, JournalError
from uploader._statefile import Lock, Unsafe, open_locked, open_private

HIDE = textwrap.dedent("""
    import os, sys
    # Libraries that choose their backend by sys.platform (filelock: msvcrt on Windows; Celery's
    # billiard: _winapi) are imported first, as they are here: on Windows they take the other
    # branch, which this machine cannot run. What is hidden after is hidden from uploader.
    import filelock, celery.app, kombu
    for name in ("preadv", "pread", "pwrite", "pwritev", "O_NOFOLLOW", "O_CLOEXEC",
                 "geteuid", "getuid", "fchmod", "fchown"):
        if hasattr(os, name):
            delattr(os, name)
    for module in ("fcntl", "termios", "pwd", "grp", "resource"):
        sys.modules[module] = None  # import fails, as on Windows
""")


def test_every_module_imports_with_the_unix_only_names_hidden():
    code = HIDE + textwrap.dedent("""
        import importlib, pkgutil
        import uploader
        failed = []
        for info in pkgutil.walk_packages(uploader.__path__, "uploader."):
            if info.name == "uploader.__main__":
                continue  # runs the command
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                failed.append(f"{info.name}: {exc!r}")
        print(len(list(pkgutil.walk_packages(uploader.__path__, "uploader."))))
        print("\\n".join(failed), file=sys.stderr)
        sys.exit(1 if failed else 0)
    """)
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout) > 60  # every module of the package was tried


def test_a_private_file_is_made_and_written_with_the_unix_only_names_hidden(tmp_path: Path):
    code = HIDE + textwrap.dedent(f"""
        from pathlib import Path
        from uploader._statefile import open_private
        fd = open_private(Path({str(tmp_path / 'f')!r}), os.O_RDWR, create=True)
        os.write(fd, b"written")
        os.close(fd)
        print(Path({str(tmp_path / 'f')!r}).read_bytes().decode())
    """)
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "written"


def test_a_state_file_swapped_for_a_link_between_look_and_open_is_never_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The race O_NOFOLLOW closed, closed without it: the path is looked at (lstat), then
    replaced by a symlink to a file of ours before it is opened; the file opened is not the
    one looked at, so it is let go and looked at again: a symlink, refused."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "state.jsonl"
    path.write_bytes(b"")
    path.chmod(0o600)
    real_lstat = os.lstat
    swapped = []

    def lstat_then_swap(target, *args, **kwargs):
        seen = real_lstat(target, *args, **kwargs)
        if Path(target) == path and not swapped:  # an attacker's rename lands just now
            swapped.append(True)
            os.unlink(path)
            path.symlink_to(victim)
        return seen

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    with pytest.raises(Unsafe, match="symbolic link"):
        open_private(path, os.O_RDWR | os.O_APPEND)
    assert swapped and victim.read_bytes() == b"precious"


def test_a_dangling_link_is_never_created_through(tmp_path: Path):
    """O_EXCL (not O_NOFOLLOW) keeps a create from making the file a planted link names."""
    path = tmp_path / "state.jsonl"
    path.symlink_to(tmp_path / "made-elsewhere")
    with pytest.raises(JournalError, match="symbolic link"):
        open_locked(path, busy="busy")
    assert not (tmp_path / "made-elsewhere").exists()


def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path):
    """Opening a FIFO would wait for a writer: it is refused on what lstat says."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "state.jsonl"
    os.mkfifo(path)
    with pytest.raises(Unsafe, match="not a regular file"):
        open_private(path, os.O_RDONLY)


def test_a_lock_is_one_run_s_and_its_file_goes_with_it(tmp_path: Path):
    path = tmp_path / "x.jsonl"
    held = open_locked(path, busy="another run has it")
    lock_file = tmp_path / "x.jsonl.lock"
    assert lock_file.exists()
    with pytest.raises(JobLockedError, match="another run has it"):
        open_locked(path, busy="another run has it")
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from uploader._statefile import Lock; from uploader._errors import JobLockedError\n"
         "try:\n Lock.acquire(Path(sys.argv[1]), busy='held')\n"
         "except JobLockedError: sys.exit(3)", str(lock_file)], timeout=60)
    assert child.returncode == 3  # another process: refused too
    os.write(held.fd, b"kept\n")
    held.close()
    assert path.read_bytes() == b"kept\n" and not lock_file.exists()
    again = open_locked(path, busy="busy")
    again.remove()
    assert not path.exists() and not lock_file.exists()
    assert isinstance(Lock.acquire(lock_file, busy="busy"), Lock)
