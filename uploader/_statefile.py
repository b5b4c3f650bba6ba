"""Files in the state folder that no one else can subvert, locked while in use.

The state folder may be shared (a team's /srv/uploads/state, /tmp): whoever can write to it
could plant, at the path of our next journal, a symlink to a file of ours (which we would
then truncate) or a file of their own (whose records we would trust). So every state file is
opened with `O_NOFOLLOW`, and must be a regular file owned by us, of no other name (a hard
link to a file of ours would be rewritten), that no one else may read or write (it holds
presigned links: credentials while they are valid).

Each file is locked with `flock` while open. Files are removed while still locked, so a run
that opened the path just before the removal takes its lock on a deleted file: `open_locked`
checks, once it holds the lock, that the path still names the file it locked, and tries
again if not. Lock files therefore need not stay behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from uploader._errors import JobLockedError, JournalError

__all__ = ["StateFile", "open_locked", "same_file"]

_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_TRIES = 5


class StateFile:
    """An open, locked, private state file; `close()` releases the lock."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def remove(self) -> None:
        """Delete the file, then release it (in that order: see the module's note)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the lock
            self.fd = -1


def open_locked(path: Path, *, busy: str, job_id: str | None = None) -> StateFile:
    """Open (creating it 0600) and lock the state file at `path`.

    JobLockedError (with `busy` as its message) if another run holds it; JournalError if the
    path is a symlink or a file that is not ours alone.
    """
    for _ in range(_TRIES):
        try:
            fd = os.open(path, _FLAGS, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JournalError(f"{path} is a symbolic link: state files are never followed;"
                                   " remove it, or use another state folder",
                                   job_id=job_id) from None
            raise
        try:
            _check_private(path, os.fstat(fd), job_id)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobLockedError(busy, job_id=job_id) from None
        except BaseException:
            os.close(fd)
            raise
        if same_file(path, fd):
            return StateFile(path, fd)
        os.close(fd)  # removed (or replaced) by the run we waited for: open it afresh
    raise JournalError(f"{path} keeps being replaced while it is opened; is another program "
                       "using this state folder?", job_id=job_id)


def _check_private(path: Path, info: os.stat_result, job_id: str | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & 0o077:
        problem = f"can be read or written by others (mode {stat.S_IMODE(info.st_mode):o})"
    elif info.st_nlink > 1:  # another name of one of the user's files: never to be rewritten
        problem = f"has {info.st_nlink - 1} other hard link(s): it is another file's name too"
    else:
        return
    raise JournalError(f"{path} {problem}: state files must be private to the user running "
                       "uploader; it was not used. Remove it, or use another state folder",
                       job_id=job_id)


def same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
