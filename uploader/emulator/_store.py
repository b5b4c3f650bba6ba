"""The emulator's durable state: jobs in one JSON file, parts and files named by their ETag.

Layout of the data folder:

    state.json                       jobs and their open uploads (replaced atomically)
    spent.log                        signatures of presigned URLs already used, one a line
    parts/<upload_id>/<nnnnn>.<md5>  one stored part; the rename into place is the commit
    objects/<job_id>/<kind>.<etag>   a stored file of a job: an assembled video (its ETag
                                     OBS-style, `<md5 of the parts' MD5s>-<parts>`) or a
                                     single file (its MD5)
    tmp/                             bodies being received; cleared at start
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["Store", "StoredPart"]

_PART_RE = re.compile(r"^(\d{5})\.([0-9a-f]{32})$")
_OBJECT_RE = re.compile(r"^([a-z0-9_]+)\.([0-9a-f]{32}(?:-\d+)?)$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_KIND_RE = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class StoredPart:
    """A part, or a job's file, on disk; `number` is 0 for a file. A multipart file is kept
    as its parts (a folder of hard links to them, in order): its bytes are theirs, end to
    end, so that a confirm costs no copy and the data folder holds each byte once."""

    number: int
    etag: str
    path: Path

    @property
    def size(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.iterdir())
        return self.path.stat().st_size

    def open(self) -> BinaryIO:
        """The file's bytes, readable and seekable (a multipart file's parts end to end)."""
        if not self.path.is_dir():
            return self.path.open("rb")
        return io.BufferedReader(_Concatenated(sorted(self.path.iterdir())), 1 << 20)

    def remove(self) -> None:
        if self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)


class _Concatenated(io.RawIOBase):
    """Files read end to end as one, with seeks."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._sizes = [p.stat().st_size for p in paths]
        self._size = sum(self._sizes)
        self._pos = 0
        self._open: tuple[int, io.BufferedReader] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start, index = 0, 0
        while index < len(self._sizes) and start + self._sizes[index] <= self._pos:
            start += self._sizes[index]
            index += 1
        if index == len(self._sizes):
            return 0
        if self._open is None or self._open[0] != index:
            self._close_part()
            self._open = (index, self._paths[index].open("rb"))
        handle = self._open[1]
        handle.seek(self._pos - start)
        count = handle.readinto(view[:min(len(view), start + self._sizes[index] - self._pos)])
        self._pos += count or 0
        return count or 0

    def _close_part(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_part()
        super().close()


class Store:
    """Jobs, uploads, parts and files under one folder; survives restarts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The parts of each upload touched so far, by number: read from disk once, kept in
        # step with it (a folder listing per stored part made a 1000-part upload quadratic).
        self._parts: dict[str, dict[int, StoredPart]] = {}
        self._parts_lock = threading.Lock()
        #: When each single file reaches its download link (monotonic time; in memory: after
        #: a restart every file has moved).
        self._moves: dict[tuple[str, str], float] = {}
        for sub in ("parts", "objects", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for leftover in (root / "tmp").iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink()
        state_file = root / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        self.jobs: dict[str, dict[str, Any]] = state.get("jobs", {})
        self.voice_jobs: list[dict[str, Any]] = state.get("voice_jobs", _demo_voice_jobs())
        #: The quality checks (VOICE_ASSESS short jobs), by id.
        self.short_jobs: dict[str, dict[str, Any]] = state.get("short_jobs", {})
        spent = root / "spent.log"
        self.spent: set[str] = set(spent.read_text().split()) if spent.exists() else set()
        self._spent_log = spent.open("a")

    def close(self) -> None:
        self._spent_log.close()

    def save(self) -> None:
        """Write the jobs atomically: a crash leaves the old file or the new, never half."""
        tmp = self.root / "tmp" / f"state-{uuid.uuid4().hex}.json"
        tmp.write_text(json.dumps({"jobs": self.jobs, "voice_jobs": self.voice_jobs,
                                   "short_jobs": self.short_jobs}))
        os.replace(tmp, self.root / "state.json")

    def spend(self, signature: str) -> None:
        """Remember that the URL with this signature has been used."""
        self.spent.add(signature)
        self._spent_log.write(signature + "\n")
        self._spent_log.flush()

    def new_tmp(self) -> Path:
        return self.root / "tmp" / uuid.uuid4().hex

    # ---- parts of multipart uploads -------------------------------------------------

    def parts(self, upload_id: str) -> dict[int, StoredPart]:
        """The stored parts of an upload, by part number."""
        with self._parts_lock:
            return dict(self._index(upload_id))

    def _index(self, upload_id: str) -> dict[int, StoredPart]:
        if upload_id not in self._parts:
            folder = self._upload_dir(upload_id)
            found: dict[int, StoredPart] = {}
            if folder.is_dir():
                for entry in folder.iterdir():
                    match = _PART_RE.match(entry.name)
                    if match:
                        found[int(match[1])] = StoredPart(int(match[1]), match[2], entry)
            self._parts[upload_id] = found
        return self._parts[upload_id]

    def commit_part(self, upload_id: str, number: int, etag: str, received: Path) -> None:
        """Move a fully received body into place; a re-upload of the number replaces it."""
        folder = self._upload_dir(upload_id)
        folder.mkdir(exist_ok=True)
        target = folder / f"{number:05d}.{etag}"
        with self._parts_lock:
            index = self._index(upload_id)
            old = index.get(number)
            os.replace(received, target)
            index[number] = StoredPart(number, etag, target)
        if old is not None and old.etag != etag:
            old.path.unlink(missing_ok=True)

    def drop_upload(self, upload_id: str) -> None:
        with self._parts_lock:
            self._parts.pop(upload_id, None)
            shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    # ---- a job's files ----------------------------------------------------------------

    def files(self, job_id: str, *, moved: bool = False) -> dict[str, StoredPart]:
        """The job's stored files, by kind; with `moved`, only those moved from their `_tmp`
        key to where their download link serves them."""
        folder = self._job_dir(job_id)
        found: dict[str, StoredPart] = {}
        if folder.is_dir():
            for entry in folder.iterdir():
                match = _OBJECT_RE.match(entry.name)
                if match:
                    found[match[1]] = StoredPart(0, match[2], entry)
        if moved:
            now = time.monotonic()
            found = {k: v for k, v in found.items()
                     if self._moves.get((job_id, k), 0.0) <= now}
        return found

    def commit_file(self, job_id: str, kind: str, etag: str, received: Path, *,
                    visible_after: float = 0.0) -> None:
        """Move a fully received file into place, replacing the job's earlier one; its
        download link serves it `visible_after` seconds from now."""
        if not _KIND_RE.match(kind):
            raise ValueError("not a kind of file")
        folder = self._job_dir(job_id)
        folder.mkdir(exist_ok=True)
        old = self.files(job_id).get(kind)
        target = folder / f"{kind}.{etag}"
        if old is not None and (old.etag != etag or old.path.is_dir() or received.is_dir()):
            old.remove()  # a folder is not replaced in one rename: the old one goes first
        os.replace(received, target)
        self._moves[(job_id, kind)] = time.monotonic() + visible_after

    def drop_job(self, job_id: str) -> None:
        """Remove every file of a job."""
        shutil.rmtree(self._job_dir(job_id), ignore_errors=True)

    def delete_file(self, job_id: str, kind: str) -> None:
        old = self.files(job_id).get(kind)
        if old is not None:
            old.remove()

    def _job_dir(self, job_id: str) -> Path:
        if not _ID_RE.match(job_id):
            raise ValueError("not a job id")
        return self.root / "objects" / job_id

    def _upload_dir(self, upload_id: str) -> Path:
        if not _ID_RE.match(upload_id):
            raise ValueError("not an upload id")
        return self.root / "parts" / upload_id


def _demo_voice_jobs() -> list[dict[str, Any]]:
    return [{
        "job_type": "BASIC", "job_id": "0f3e7c9a5d2b4e6f8a1c3b5d7e9f0a2b",
        "voice_name": "emulator-demo-voice", "sex": "FEMALE", "language": "CN",
        "state": "SUCCEED", "asset_id": "5b1d9c7e3a8f4b2d6e0c1a9f7b3d5e8c",
        "create_time": 1700000000000, "lastupdate_time": 1700000600000,
        "create_type": "PACKAGE", "tag": "ECOMMERCE", "batch_name": None, "reject_times": 0,
        "confirmed": [], "op_logs": [],
    }]
