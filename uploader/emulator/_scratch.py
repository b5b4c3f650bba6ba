"""The temporary data folder of an emulator that lives for one command.

A killed run (kill -9, a lost terminal) cannot remove its folder, which holds copies of every
file it was sent. So each folder carries an `.owner` file locked by its run for as long as it
lives (filelock's `lock_descriptor`: `flock`, or `LockFileEx` on Windows); the system
releases the lock when the process dies, however it dies. The next run removes every folder
of this kind it can lock whose `.owner` says it was locked (a run writes it once it holds
the lock; one found empty is a run starting up, or one killed in that instant: removed
once an hour old).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import lock_descriptor

from uploader._log import logger
from uploader._statefile import close_unlocked, open_private, ours

__all__ = ["PREFIX", "reclaim", "scratch_folder"]

log = logger("uploader.emulator")

PREFIX = "metastudio-emulator-"
_OWNER = ".owner"
_LOCKED = b"locked\n"


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A new private folder under the temporary folder (TMPDIR), removed when the block
    ends; first, the folders of earlier runs that died without removing theirs go."""
    reclaim()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    fd = open_private(folder / _OWNER, os.O_RDWR, create=True)
    try:
        lock_descriptor(fd, blocking=False)
        os.write(fd, _LOCKED)
        yield folder
    finally:
        close_unlocked(fd)  # first: Windows removes no open file
        shutil.rmtree(folder, ignore_errors=True)


def reclaim(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders under `root` (the temporary folder) whose run is gone;
    return them. Folders of other users, of a run still alive, or without an `.owner` (not
    made by `scratch_folder`) are left alone."""
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for folder in sorted(root.glob(PREFIX + "*")):
        with contextlib.suppress(OSError):
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or not ours(info):
                continue
            fd = open_private(folder / _OWNER, os.O_RDWR)
            try:
                if not lock_descriptor(fd, blocking=False):
                    continue  # its run is alive
                if os.read(fd, len(_LOCKED)) != _LOCKED and time.time() - info.st_mtime < 3600:
                    continue  # a run starting up
            finally:
                close_unlocked(fd)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.info("removed %s (%.1f MiB), left by an emulator run that was killed",
                     folder, size / 2**20)
    return removed
