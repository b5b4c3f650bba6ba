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
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from uploader._errors import JobLockedError, JournalError
from uploader._statefile import Lock, is_held, lock_path, open_private, private_problem, same_file

__all__ = ["StateEntry", "clean", "entries"]

_NAME = re.compile(r"^[0-9a-f]{24}\.(jsonl|lock|jsonl\.lock)$")


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
        try:
            found.append(_describe(path, fd, held=is_held(_lock_of(path))))
        finally:
            os.close(fd)
    return sorted(found, key=lambda entry: entry.modified)


def clean(folder: Path, *, older_than_days: float | None = None) -> list[StateEntry]:
    """Remove the journals and locks of `folder` that no run holds (and, with
    `older_than_days`, last written that long ago or more); return what was removed."""
    removed = []
    now = time.time()
    for path, fd in _opened(folder):
        try:
            entry = _describe(path, fd, held=False)
            if older_than_days is not None and entry.age_days(now) < older_than_days:
                continue
            try:  # a lock file is its own lock; a journal's is its NAME.lock
                lock = Lock.acquire(_lock_of(path), busy="held")
            except (JobLockedError, JournalError):
                continue  # a run holds it (or its lock file is not ours: left alone)
            try:
                if entry.kind == "journal":
                    if not same_file(path, fd):
                        continue  # removed or replaced since it was opened
                    os.close(fd)  # first: Windows deletes no open file
                    fd = -1
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                removed.append(entry)  # a lock file goes with its release
            finally:
                lock.release()
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


def _lock_of(path: Path) -> Path:
    """The file whose lock guards `path`: its own for a lock file."""
    return path if path.suffix == ".lock" else lock_path(path)


def _opened(folder: Path) -> Iterator[tuple[Path, int]]:
    """The journals and the lock files of `folder`, each opened read-only; a journal's own
    lock file goes with its journal. Anything else, or unsafe, is never touched."""
    try:
        names = set(os.listdir(folder))
    except FileNotFoundError:
        return
    for name in sorted(names):
        if not _NAME.match(name) or (name.endswith(".jsonl.lock") and name[:-5] in names):
            continue  # not ours, or a journal's lock (listed with its journal)
        path = folder / name
        try:
            fd = open_private(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue  # gone, a symlink, not a regular file or not ours: never touched
        if private_problem(os.fstat(fd)) is not None:
            os.close(fd)
            continue
        yield path, fd


def _describe(path: Path, fd: int, *, held: bool) -> StateEntry:
    info = os.fstat(fd)
    kind = "journal" if path.suffix == ".jsonl" else "lock"
    header: dict[str, object] = {}
    if kind == "journal":
        with contextlib.suppress(ValueError, OSError):
            first = os.read(fd, 64 * 1024).split(b"\n", 1)[0]
            record = json.loads(first) if first else {}
            header = record if isinstance(record, dict) and record.get("kind") == "header" else {}

    def text(key: str) -> str | None:
        value = header.get(key)
        return None if value is None else str(value)

    return StateEntry(path, kind, held, info.st_size, info.st_mtime, text("job_id"),
                      text("endpoint"), text("video"))
