"""The temporary data folder of an emulator that lives for one command.

A killed run (kill -9, a lost terminal) cannot remove its folder, which holds copies of every
file it was sent. So each folder carries an `.owner` file locked (`flock`) by its run for as
long as it lives; the kernel releases the lock when the process dies, however it dies. The
next run removes every folder of this kind it can lock: their runs are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from uploader._log import logger

__all__ = ["PREFIX", "reclaim", "scratch_folder"]

log = logger("uploader.emulator")

PREFIX = "metastudio-emulator-"
_OWNER = ".owner"


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A new private folder under the temporary folder (TMPDIR), removed when the block
    ends; first, the folders of earlier runs that died without removing theirs go."""
    reclaim()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    # Locked under another name, then renamed: `.owner` is never seen unlocked.
    fd = os.open(folder / ".owner-new", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(folder / ".owner-new", folder / _OWNER)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def reclaim(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders under `root` (the temporary folder) whose run is gone;
    return them. Folders of other users, of a run still alive, or without an `.owner` (not
    made by `scratch_folder`) are left alone."""
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for folder in sorted(root.glob(PREFIX + "*")):
        with contextlib.suppress(OSError):
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            fd = os.open(folder / _OWNER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive
            else:
                size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                log.info("removed %s (%.1f MiB), left by an emulator run that was killed",
                         folder, size / 2**20)
            finally:
                os.close(fd)
    return removed
