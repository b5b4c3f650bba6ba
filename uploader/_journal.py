"""The local journal of one upload: crash-safe, private, and locked against a second run.

One append-only file of JSON lines per (job, training video), each line fsync'd before the
write is trusted: a header with the job, then a `file` record per file of the job (its kind,
identity and part sizes), `urls` records (the links of the create/update answer and when
they were issued), `part` records (a piece sent, with its MD5) and `step` records (a confirm
or the submit done).
A crash can only cut the last line short, and a short last line is ignored. The folder is
0700 and the file 0600: the URLs in it are credentials for as long as they are valid.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from uploader._errors import JobLockedError, JournalError

__all__ = ["FileIdentity", "Journal", "default_state_dir"]

_VERSION = 2
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
        resolved = path.resolve()
        info = resolved.stat()
        digest = hashlib.sha256()
        with resolved.open("rb") as handle:
            digest.update(handle.read(_EDGE))
            handle.seek(max(0, info.st_size - _EDGE))
            digest.update(handle.read(_EDGE))
        return cls(str(resolved), info.st_size, info.st_mtime_ns, digest.hexdigest())


def _unusable(where: Path, exc: OSError) -> JournalError:
    return JournalError(f"cannot use the journal at {where}: {exc.strerror or exc}; free some "
                        "space or choose another --state-dir, then run the command again")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


class Journal:
    """The journal of uploading one file to one job (or to the job a name created).

    Use as a context manager: entering takes the lock (JobLockedError if another run holds
    it) and reads what an earlier run recorded; leaving releases the lock and keeps the file.
    """

    header: dict[str, Any] | None
    intent: dict[str, Any] | None
    files: dict[str, tuple[FileIdentity, tuple[int, ...]]]
    urls: dict[str, Any]
    urls_issued_at: float
    parts: dict[tuple[str, int], str]
    steps: set[str]

    def __init__(self, state_dir: Path, job_key: str, video: Path) -> None:
        self.folder = state_dir
        self.path = state_dir / f"{_digest(job_key, str(video.resolve()))}.jsonl"
        self._job_key = job_key
        self._forget()
        self._fd: int | None = None
        self._locks: dict[str, int] = {}
        self._appending = threading.Lock()

    def __enter__(self) -> Journal:
        # A folder we create is private; one the user named is left as it is (it may be
        # shared, like /tmp): the journal and lock files in it are 0600 either way.
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.lock(self._job_key)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            self.__exit__(None, None, None)
            raise _unusable(self.folder, exc) from exc
        self._replay()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for fd in self._locks.values():
            os.close(fd)  # closing releases the lock
        self._locks.clear()

    def lock(self, job_key: str) -> None:
        """Hold the lock of `job_key` ("job:ID" or "name:NAME") until exit."""
        if job_key in self._locks:
            return
        path = self.folder / f"{_digest(job_key)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobLockedError(
                f"another uploader run is uploading to this job ({job_key}); wait for it to "
                "finish, then run the command again"
            ) from None
        self._locks[job_key] = fd

    def _replay(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        records = []
        for index, line in enumerate(lines):
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if index < len(lines) - 2:  # only a crash-cut last line is forgiven
                    raise JournalError(f"the journal {self.path} is corrupt; delete it or "
                                       "run with --restart") from None
        if records and records[0].get("version") != _VERSION:
            raise JournalError(f"the journal {self.path} was written by another version of "
                               "uploader; run with --restart") from None
        for record in records:
            self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "intent":
            self.intent = record
        elif kind == "header":
            self._forget()
            self.header = record
        elif kind == "file":
            self.files[record["file"]] = (FileIdentity(**record["identity"]),
                                          tuple(record["sizes"]))
        elif kind == "urls":
            self.urls, self.urls_issued_at = record["links"], record["issued_at"]
        elif kind == "part":
            self.parts[(record["file"], int(record["number"]))] = record["md5"]
        elif kind == "drop":
            for number in record["numbers"]:
                self.parts.pop((record["file"], int(number)), None)
        elif kind == "step":
            self.steps.add(record["step"])

    def _append(self, record: dict[str, Any]) -> None:
        """Write one record durably; callable from worker threads, one at a time."""
        assert self._fd is not None, "the journal is not open"
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._appending:
            try:
                os.write(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                raise _unusable(self.path, exc) from exc
            self._apply(record)

    @property
    def job_id(self) -> str | None:
        return None if self.header is None else str(self.header["job_id"])

    def start(self, job_id: str) -> None:
        """Begin anew: forget every earlier record (the file is truncated first)."""
        self._truncate()
        self._append({"kind": "header", "version": _VERSION, "job_id": job_id})

    def record_file(self, kind: str, identity: FileIdentity, sizes: tuple[int, ...]) -> None:
        """Note the file of `kind` being uploaded, and how it is cut into parts."""
        self._append({"kind": "file", "file": kind, "identity": asdict(identity),
                      "sizes": list(sizes)})

    def record_intent(self, name: str, identity: FileIdentity) -> None:
        """Note, before creating job `name`, that this run is about to: should it be cut
        short after the service created the job, the next run can find that job."""
        self._truncate()
        self._append({"kind": "intent", "version": _VERSION, "name": name,
                      "identity": asdict(identity), "at": time.time()})

    def _truncate(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        self._forget()

    def _forget(self) -> None:
        """Drop everything read or recorded (what the file held is gone or superseded)."""
        self.header = None
        self.intent = None
        self.files = {}
        self.urls = {}
        self.urls_issued_at = 0.0
        self.parts = {}
        self.steps = set()

    def record_urls(self, links: dict[str, Any], issued_at: float | None = None) -> None:
        """Note the links of a create/update answer (link field: URL or list of URLs)."""
        self._append({"kind": "urls", "links": links,
                      "issued_at": time.time() if issued_at is None else issued_at})

    def record_part(self, key: tuple[str, int], md5: str) -> None:
        """Note piece `key` (file kind, part number) stored, with its MD5."""
        self._append({"kind": "part", "file": key[0], "number": key[1], "md5": md5})

    def forget_parts(self, kind: str, numbers: list[int]) -> None:
        self._append({"kind": "drop", "file": kind, "numbers": numbers})

    def record_step(self, step: str) -> None:
        """Note a step done (a confirm command, the submit), so a re-run does not redo it."""
        self._append({"kind": "step", "step": step})

    def remove(self) -> None:
        """Delete the journal: the upload is confirmed and nothing is left to resume."""
        self.path.unlink(missing_ok=True)
