"""The local journal of one upload: crash-safe, private, and locked against a second run.

One append-only file of JSON lines per (service, job or name, training video), each line
fsync'd before the write is trusted: a header with the job, then a `file` record per file of
the job (its kind, identity and part sizes), `urls` records (the links of the create/update
answer and when they were issued), `part` records (a piece sent, with its MD5) and `step`
records (a confirm or the submit done).

A record is whole or ignored: a crash or a full disk can only cut the last line short, and
that tail is cut off before anything is appended after it; a line that does not read as a
record is skipped with a warning. A journal of another version is set aside (emptied): what
the server holds is checked against the file anyway. The journal's lock file (`NAME.lock`)
is the lock of its (job or name, video); a run on a job also holds the job's lock file, so
that two videos never go to one job at once. State files are private and never followed
(`_statefile`).
Every method that touches the disk runs in a worker thread: a slow disk stalls no transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from uploader._errors import JournalError, LocalFileError, Remedy
from uploader._log import logger
from uploader._statefile import Lock, StateFile, open_locked, read_all

__all__ = ["FileIdentity", "Journal", "default_state_dir"]

log = logger()

_VERSION = 3
_EDGE = 1024 * 1024


def default_state_dir() -> Path:
    """The per-user state folder, e.g. ~/.local/state/uploader on Linux."""
    import platformdirs

    return Path(platformdirs.user_state_dir("uploader", appauthor=False))


@dataclass(frozen=True)
class FileIdentity:
    """What makes a file the same file: path, size, mtime, and a hash of both ends."""

    path: str
    size: int
    mtime_ns: int
    edges_sha256: str

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        """The identity of the file at `path` now; LocalFileError if it cannot be read."""
        resolved = path.resolve()
        digest = hashlib.sha256(usedforsecurity=False)
        try:
            info = resolved.stat()
            with resolved.open("rb") as handle:
                digest.update(handle.read(_EDGE))
                handle.seek(max(0, info.st_size - _EDGE))
                digest.update(handle.read(_EDGE))
        except OSError as exc:
            raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}",
                                 path=str(path)) from exc
        return cls(str(resolved), info.st_size, info.st_mtime_ns, digest.hexdigest())


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode(), usedforsecurity=False).hexdigest()[:24]


class Journal:
    """The journal of uploading one file to one job (or to the job a name created) of one
    service (`service`: its endpoint and project id).

    Use as an async context manager: entering takes the lock (JobLockedError if another run
    holds it) and reads what an earlier run recorded (nothing with `restart`); leaving
    releases the locks, and deletes the file if it holds nothing worth keeping.
    """

    header: dict[str, Any] | None
    files: dict[str, tuple[FileIdentity, tuple[int, ...]]]
    urls: dict[str, Any]
    urls_issued_at: float
    parts: dict[tuple[str, int], str]
    steps: set[str]

    def __init__(self, state_dir: Path, *, service: tuple[str, str], job_key: str,
                 video: Path, restart: bool = False) -> None:
        self.folder = state_dir
        self._service = service
        self.path = state_dir / f"{_digest(*service, job_key, str(video.resolve()))}.jsonl"
        self._job_key, self._restart = job_key, restart
        self._video = str(video.resolve())
        self._forget()
        self._file: StateFile | None = None
        self._locks: dict[str, Lock] = {}
        self._size = 0
        self._writing = threading.Lock()

    # ---- opening and closing -------------------------------------------------------------

    async def __aenter__(self) -> Journal:
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.to_thread(self._close)

    def _open(self) -> None:
        busy = (f"another run is uploading this file ({self._job_key}); wait for it "
                "to finish, then run the command again")
        try:
            # A folder we create is private; one the user named is left as it is (it may be
            # shared, like /tmp): the files in it are private either way.
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._file = open_locked(self.path, busy=busy)
            data = b"" if self._restart else read_all(self._file.fd)
            whole = data[:data.rfind(b"\n") + 1]
            if whole != data or self._restart:
                os.ftruncate(self._file.fd, len(whole))
        except OSError as exc:
            self._close()
            raise self._unusable(self.folder, exc) from exc
        except BaseException:
            self._close()
            raise
        if whole != data:
            log.warning("the journal %s ended in a cut record (a crash, or a full disk); it "
                        "was ignored", self.path)
        self._size = len(whole)
        self._replay(whole)

    def _close(self) -> None:
        if self._file is not None:
            if self.header is None:
                self._file.remove()  # nothing worth keeping
            self._file.close()
            self._file = None
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()

    async def lock_job(self, job_id: str) -> None:
        """Hold the lock of job `job_id` until exit: one video goes to a job at a time."""
        if job_id not in self._locks:
            busy = (f"another run is uploading to job {job_id}; wait for it to "
                    "finish, then run the command again")
            path = self.folder / f"{_digest(*self._service, 'job', job_id)}.lock"
            self._locks[job_id] = await asyncio.to_thread(
                Lock.acquire, path, busy=busy, job_id=job_id)

    # ---- reading -------------------------------------------------------------------------

    def _replay(self, data: bytes) -> None:
        skipped = 0
        for line in data.splitlines():
            try:
                record = json.loads(line)
                self._apply(record)
            except (ValueError, TypeError, KeyError, AttributeError):
                skipped += 1
        if skipped:
            log.warning("the journal %s had %d unreadable record(s); they were ignored",
                        self.path, skipped)
        version = (self.header or {}).get("version", _VERSION)
        if version != _VERSION:
            log.warning("the journal %s was written by another version of uploader; it was "
                        "set aside (what the service holds is checked against the files)",
                        self.path)
            self._truncate()

    def _apply(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "header":
            self._forget()
            self.header = {"job_id": str(record["job_id"]), "version": record["version"]}
        elif kind == "file":
            self.files[record["file"]] = (FileIdentity(**record["identity"]),
                                          tuple(int(s) for s in record["sizes"]))
        elif kind == "urls":
            self.urls, self.urls_issued_at = dict(record["links"]), float(record["issued_at"])
        elif kind == "part":
            self.parts[(str(record["file"]), int(record["number"]))] = str(record["md5"])
        elif kind == "drop":
            for number in record["numbers"]:
                self.parts.pop((record["file"], int(number)), None)
        elif kind == "step":
            self.steps.add(str(record["step"]))

    @property
    def job_id(self) -> str | None:
        return None if self.header is None else str(self.header["job_id"])

    # ---- writing -------------------------------------------------------------------------

    async def _append(self, record: dict[str, Any], *, fresh: bool = False) -> None:
        """Write one record durably (after emptying the file, with `fresh`), then apply it."""
        await asyncio.to_thread(self._write, record, fresh)
        if fresh:
            self._forget()
        self._apply(record)

    def _write(self, record: dict[str, Any], fresh: bool) -> None:
        assert self._file is not None, "the journal is not open"
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._writing:
            fd = self._file.fd
            try:
                if fresh:
                    os.ftruncate(fd, 0)
                    self._size = 0
                written = 0
                while written < len(line):  # O_APPEND: each write lands at the end
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError as exc:
                # Leave no partial record for the next one to be glued to (should this fail
                # too, the next open cuts the partial record off).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._size)
                raise self._unusable(self.path, exc) from exc
            self._size += len(line)

    def _unusable(self, where: Path, exc: OSError) -> JournalError:
        job = f" (job {self.job_id})" if self.job_id else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            remedy = "free some space (or raise the quota)"
        elif exc.errno == errno.EROFS:
            remedy = "the file system is read-only: choose a writable state folder"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            remedy = "this user may not write there: choose a state folder it owns"
        else:
            remedy = "choose another state folder"
        return JournalError(f"cannot use the journal at {where}{job}: {exc.strerror or exc}; "
                            f"{remedy} (state_dir), then try again", job_id=self.job_id,
                            remedy=Remedy.STATE_DIR)

    async def start(self, job_id: str) -> None:
        """Begin anew on `job_id`: every earlier record is forgotten (and erased)."""
        # The endpoint and the video are for `uploader state list` (a person's eyes).
        await self._append({"kind": "header", "version": _VERSION, "job_id": job_id,
                            "endpoint": self._service[0], "video": self._video}, fresh=True)

    async def set_aside(self, reason: str) -> None:
        """Forget and erase what an earlier run recorded, saying why."""
        log.warning("the journal of an earlier run was set aside: %s", reason)
        await asyncio.to_thread(self._truncate)

    def _truncate(self) -> None:
        assert self._file is not None
        with self._writing:
            os.ftruncate(self._file.fd, 0)
            self._size = 0
        self._forget()

    async def record_file(self, kind: str, identity: FileIdentity,
                          sizes: tuple[int, ...]) -> None:
        """Note the file of `kind` being uploaded, and how it is cut into parts."""
        await self._append({"kind": "file", "file": kind, "identity": asdict(identity),
                            "sizes": list(sizes)})

    async def record_urls(self, links: dict[str, Any], issued_at: float | None = None) -> None:
        """Note the links of a create/update answer (link field: URL or list of URLs)."""
        await self._append({"kind": "urls", "links": links,
                            "issued_at": time.time() if issued_at is None else issued_at})

    async def record_part(self, key: tuple[str, int], md5: str) -> None:
        """Note piece `key` (file kind, part number) stored, with its MD5."""
        await self._append({"kind": "part", "file": key[0], "number": key[1], "md5": md5})

    async def forget_parts(self, kind: str, numbers: list[int]) -> None:
        await self._append({"kind": "drop", "file": kind, "numbers": numbers})

    async def record_step(self, step: str) -> None:
        """Note a step done (a confirm command, the submit), so a re-run does not redo it."""
        await self._append({"kind": "step", "step": step})

    async def remove(self) -> None:
        """Delete the journal: the job is done and nothing is left to resume."""
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.remove)
        self._forget()

    def _forget(self) -> None:
        """Drop everything read or recorded (what the file held is gone or superseded)."""
        self.header = None
        self.files = {}
        self.urls = {}
        self.urls_issued_at = 0.0
        self.parts = {}
        self.steps = set()

