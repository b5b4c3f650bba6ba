"""What the state folder holds, and clearing out what no run holds.

The state folder keeps a journal per (service, job or name, video) and a lock per job in
use (`_journal`). A journal stays after a failed or interrupted run, so that the next one
resumes; one of an endpoint the user no longer uses, or of a video given up, would stay
forever. `entries` lists them; `clean` removes those no run holds (older than a given age).
Removing a journal loses nothing: a run without one resumes from what the service holds,
only checking more.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from uploader._statefile import same_file

__all__ = ["StateEntry", "clean", "entries"]

_NAME = re.compile(r"^[0-9a-f]{24}\.(jsonl|lock)$")


@dataclass(frozen=True)
class StateEntry:
    """One journal or lock: whether a run holds it now, and what its header says."""

    path: Path
    kind: str  # "journal" or "lock"
    held: bool
    size: int
    modified: float
    job_id: str | None = None
    endpoint: str | None = None
    video: str | None = None

    def age_days(self, now: float | None = None) -> float:
        return max(0.0, ((time.time() if now is None else now) - self.modified) / 86400)


def entries(folder: Path) -> list[StateEntry]:
    """The journals and locks in `folder` (oldest first); nothing if it does not exist."""
    found = []
    for path, fd in _opened(folder):
        with _closing(fd):
            found.append(_describe(path, fd, held=not _try_lock(fd)))
    return sorted(found, key=lambda entry: entry.modified)


def clean(folder: Path, *, older_than_days: float | None = None) -> list[StateEntry]:
    """Remove the journals and locks of `folder` that no run holds (and, with
    `older_than_days`, last written that long ago or more); return what was removed."""
    removed = []
    now = time.time()
    for path, fd in _opened(folder):
        with _closing(fd):
            if not _try_lock(fd):
                continue  # a run holds it
            entry = _describe(path, fd, held=False)
            if older_than_days is not None and entry.age_days(now) < older_than_days:
                continue
            if not same_file(path, fd):
                continue  # removed or replaced since it was opened
            # Removed while locked: a run that opened it meanwhile sees, once it holds the
            # lock, that the path no longer names its file, and opens it afresh.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed.append(entry)
    return removed


def _opened(folder: Path) -> Iterator[tuple[Path, int]]:
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    for name in names:
        if not _NAME.match(name):
            continue  # not ours: never touched
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.EPERM):
                continue  # gone, a symlink, or not ours: never touched
            raise
        info = os.fstat(fd)
        if not os.path.isfile(path) or info.st_uid != os.geteuid() or info.st_nlink > 1:
            os.close(fd)
            continue
        yield path, fd


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[None]:
    try:
        yield
    finally:
        os.close(fd)  # releases a lock taken on it


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _describe(path: Path, fd: int, *, held: bool) -> StateEntry:
    info = os.fstat(fd)
    kind = "journal" if path.suffix == ".jsonl" else "lock"
    header: dict[str, object] = {}
    if kind == "journal":
        with contextlib.suppress(ValueError, OSError):
            first = os.pread(fd, 64 * 1024, 0).split(b"\n", 1)[0]
            record = json.loads(first) if first else {}
            header = record if isinstance(record, dict) and record.get("kind") == "header" else {}

    def text(key: str) -> str | None:
        value = header.get(key)
        return None if value is None else str(value)

    return StateEntry(path, kind, held, info.st_size, info.st_mtime, text("job_id"),
                      text("endpoint"), text("video"))

