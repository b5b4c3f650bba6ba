"""Files in the state folder that no one else can subvert, locked while in use; one code path
on Linux, macOS and Windows.

The state folder may be shared (a team's /srv/uploads/state, /tmp): whoever can write to it
could plant, at the path of our next journal, a symlink to a file of ours (which we would
then truncate) or a file of their own (whose records we would trust). So a state file

- is never opened through a link: its path is `lstat`ed (a symlink, or anything but a
  regular file, is refused before it is opened), then opened, and the open file must be the
  one `lstat` saw (device and inode): a swap between the two is caught. A new file is made
  with `O_EXCL`, which no planted link can satisfy. (No `O_NOFOLLOW`: Windows has none.)
- has no other name (one link: a hard link to a file of ours would be rewritten);
- where the platform has owners (POSIX), belongs to us and no one else may read or write it
  (it holds presigned links: credentials while they are valid). Windows has no mode bits to
  check: there the per-user state folder (platformdirs, in the user's profile, whose
  permissions are the user's alone) keeps others out.

Each state file is locked through a lock file of its own, `NAME.lock` (Windows' byte-range
locks are mandatory: a lock on the journal itself would keep `uploader state list` from
reading it), with filelock's `lock_descriptor` on a descriptor we opened and checked as
above: `flock` on Linux and macOS, `LockFileEx` on Windows, both released by the system when
the process dies, however it dies. Lock files are removed on release, while still locked
where the platform deletes open files (POSIX), after closing elsewhere; so a run that opened
the path just before the removal may take its lock on a deleted file: `Lock.acquire` checks,
once it holds the lock, that the path still names the file it locked, and tries again if not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from uploader._errors import JobLockedError, JournalError

__all__ = ["Lock", "StateFile", "Unsafe", "close_unlocked", "is_held", "lock_path",
           "open_locked", "open_private", "ours", "private_problem", "read_all", "same_file"]

_TRIES = 5
#: Whether files have owners and permission bits worth checking (POSIX).
_OWNERS = hasattr(os, "geteuid")


class Unsafe(OSError):
    """The path is a symbolic link, or not a regular file: it was not opened."""


def open_private(path: Path, flags: int, *, create: bool = False) -> int:
    """A descriptor of the regular file at `path`, opened with `flags` (O_RDONLY, O_RDWR,
    O_APPEND...) but never through a link; created (0600) with `create` when missing.

    Unsafe if the path is a symlink or not a regular file; FileNotFoundError if it is
    missing and not to be created; OSError if it keeps being replaced while it is opened.
    """
    flags |= getattr(os, "O_BINARY", 0)  # Windows: no newline translation
    for _ in range(_TRIES):
        try:
            seen = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise
            try:  # O_EXCL: fails on anything already there, a dangling symlink included
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # made meanwhile: look at what it is
        if stat.S_ISLNK(seen.st_mode):
            raise Unsafe(errno.ELOOP, "is a symbolic link", str(path))
        if not stat.S_ISREG(seen.st_mode):
            raise Unsafe(errno.EINVAL, "is not a regular file", str(path))
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            continue  # removed meanwhile
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) == (seen.st_dev, seen.st_ino):
            return fd
        os.close(fd)  # replaced between lstat and open: look again
    raise OSError(errno.EAGAIN, "keeps being replaced while it is opened", str(path))


def ours(info: os.stat_result) -> bool:
    """Whether the file (its `stat`) belongs to this user, where files have owners."""
    return not _OWNERS or info.st_uid == os.geteuid()


def private_problem(info: os.stat_result) -> str | None:
    """Why an open state file (its `fstat`) is not ours alone, or None."""
    if not ours(info):
        return f"belongs to another user (uid {info.st_uid})"
    if _OWNERS and info.st_mode & 0o077:
        return f"can be read or written by others (mode {stat.S_IMODE(info.st_mode):o})"
    if info.st_nlink > 1:  # another name of one of the user's files: never to be rewritten
        return f"has {info.st_nlink - 1} other hard link(s): it is another file's name too"
    return None


def _open_checked(path: Path, flags: int, job_id: str | None) -> int:
    """`open_private` (creating), the file's privacy checked; JournalError if unsafe."""
    try:
        fd = open_private(path, flags, create=True)
    except Unsafe as exc:
        problem = exc.strerror
    else:
        problem = private_problem(os.fstat(fd))
        if problem is None:
            return fd
        os.close(fd)
    if problem == "is a symbolic link":
        raise JournalError(f"{path} is a symbolic link: state files are never followed; "
                           "remove it, or use another state folder", job_id=job_id)
    raise JournalError(f"{path} {problem}: state files must be private to the user running "
                       "uploader; it was not used. Remove it, or use another state folder",
                       job_id=job_id)


class Lock:
    """A held lock file; `release()` lets it go (and removes the file)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, path: Path, *, busy: str, job_id: str | None = None) -> Lock:
        """Take the lock file at `path` (made if missing), without waiting: JobLockedError
        (with `busy` as its message) if another run holds it; JournalError if the path is a
        symlink or a file that is not ours alone."""
        for _ in range(_TRIES):
            fd = _open_checked(path, os.O_RDWR, job_id)
            try:
                locked = lock_descriptor(fd, blocking=False)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                raise JobLockedError(busy, job_id=job_id)
            if same_file(path, fd):
                return cls(path, fd)
            os.close(fd)  # removed (or replaced) by the run we waited for: open it afresh
        raise JournalError(f"{path} keeps being replaced while it is opened; is another "
                           "program using this state folder?", job_id=job_id)

    def release(self) -> None:
        """Remove the lock file, then let it go (see the module's note on the order)."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except PermissionError:  # Windows: not while open; after, unless another run has it
            close_unlocked(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return
        close_unlocked(fd)


def close_unlocked(fd: int) -> None:
    """Release the lock held on `fd` (if any), then close it. Closing alone releases it;
    unlocking first releases it at once on Windows too (whose documentation leaves the
    moment a close releases one to the system)."""
    with contextlib.suppress(OSError):
        unlock_descriptor(fd)
    os.close(fd)


class StateFile:
    """An open, private state file, locked by its lock file while open; `close()` releases."""

    def __init__(self, path: Path, fd: int, lock: Lock) -> None:
        self.path, self.fd, self._lock = path, fd, lock

    def remove(self) -> None:
        """Delete the file, then release its lock."""
        if self.fd >= 0:
            os.close(self.fd)  # first: Windows deletes no open file
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._lock.release()


def lock_path(path: Path) -> Path:
    """The lock file of the state file at `path`."""
    return path.with_name(path.name + ".lock")


def open_locked(path: Path, *, busy: str, job_id: str | None = None) -> StateFile:
    """Lock the state file at `path` (through its lock file), then open it for appending
    (creating it 0600). JobLockedError (with `busy` as its message) if another run holds
    it; JournalError if either path is a symlink or a file that is not ours alone."""
    lock = Lock.acquire(lock_path(path), busy=busy, job_id=job_id)
    try:
        return StateFile(path, _open_checked(path, os.O_RDWR | os.O_APPEND, job_id), lock)
    except BaseException:
        lock.release()
        raise


def is_held(path: Path) -> bool:
    """Whether a run holds the lock file at `path` (False if there is none; True if it is
    not a file we would ever lock: it is left alone)."""
    try:
        fd = open_private(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        if lock_descriptor(fd, blocking=False):
            unlock_descriptor(fd)
            return False
        return True
    finally:
        os.close(fd)


def same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def read_all(fd: int) -> bytes:
    """Everything in the open file `fd`, from its start (one position per descriptor: only
    its holder reads it)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
