"""Reading pieces from disk: chunk by chunk, each chunk hashed as it is read, as a request
body or for its MD5 alone (a resume checks the pieces the server holds against the file).

Every chunk is a new `bytes` object: whoever holds it (the connection's write queue, the
hasher) holds an immutable object that stays valid for as long as they keep it, whatever
asyncio or aiohttp do with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from uploader._errors import FileChangedError, LocalFileError, UploaderError
from uploader.transfer.hashing import Hashed, LaneHasher, new_md5
from uploader.transfer.plan import Piece

__all__ = ["PartBody", "etag_matches", "multipart_etag", "piece_md5", "pieces_md5"]

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def etag_matches(etag: str, md5_hex: str) -> bool | None:
    """Whether an ETag is this MD5; None when the ETag is not a plain MD5 and says nothing."""
    plain = etag.strip().strip('"').lower()
    if not _MD5_RE.match(plain):
        return None
    return plain == md5_hex.lower()


def multipart_etag(md5s: list[str]) -> str:
    """The ETag object storage gives an object assembled from parts with these MD5s: the MD5
    of their binary digests, then "-" and their count."""
    joined = b"".join(bytes.fromhex(md5) for md5 in md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(md5s)}"


async def piece_md5(piece: Piece, chunk_size: int = 1024 * 1024,
                    hasher: LaneHasher | None = None) -> str:
    """The MD5 of one piece as it is on disk now."""
    reader = _PartReader(piece, chunk_size=chunk_size, hasher=hasher or LaneHasher())
    async with reader:
        while await reader.read() is not None:
            pass
    return await reader.md5_hex()


async def pieces_md5(pieces: list[Piece], *, chunk_size: int,
                     concurrency: int) -> dict[tuple[str, int], str]:
    """The MD5s of many pieces as they are on disk now, `concurrency` at a time and hashed
    together; by (kind, number)."""
    hasher = LaneHasher()
    limit = asyncio.Semaphore(concurrency)

    async def one(piece: Piece) -> tuple[tuple[str, int], str]:
        async with limit:
            return piece.key, await piece_md5(piece, chunk_size, hasher)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(piece)) for piece in pieces]
    except ExceptionGroup as failed:  # the first part that failed says why; the rest stop
        raise failed.exceptions[0] from None
    return dict(task.result() for task in tasks)


def _checked(got: int, path: Path) -> int:
    if not got:
        raise FileChangedError(
            f"{path} became shorter while it was being sent: it is being changed; "
            "let it be, then run the command again"
        )
    return got


class _PartReader:
    """One part of the file, read chunk by chunk, each chunk handed to the hasher as it is
    read. Every chunk is a new `bytes` object: whoever holds it (the connection's write
    queue, the hasher) holds an immutable object that stays valid for as long as they keep
    it, whatever asyncio or aiohttp do with it. A chunk is read only once the one before it is
    hashed, so memory stays near two chunks per part (one hashed, one on its way).
    """

    def __init__(self, part: Piece, *, chunk_size: int, hasher: LaneHasher) -> None:
        self._path = part.path
        self._chunk = min(chunk_size, part.size)
        self._hasher = hasher
        self._digest = new_md5()
        self._hashed: list[Hashed] = []
        self._position, self._end = part.offset, part.offset + part.size
        self._fd = -1

    async def __aenter__(self) -> _PartReader:
        try:
            self._fd = await asyncio.to_thread(os.open, self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        self._hasher.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._hasher.close()
        os.close(self._fd)

    async def read(self) -> bytes | None:
        """The next chunk, or None after the last."""
        if self._position >= self._end:
            return None
        if len(self._hashed) >= 1:
            await self._hashed.pop(0)
        size = min(self._chunk, self._end - self._position)
        try:
            chunk = await asyncio.to_thread(os.pread, self._fd, size, self._position)
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        _checked(len(chunk), self._path)
        self._hashed.append(self._hasher.add(self._digest, memoryview(chunk)))
        self._position += len(chunk)
        return chunk

    async def md5_hex(self) -> str:
        """The MD5 of what was read, once the hasher is through with it."""
        while self._hashed:
            await self._hashed.pop(0)
        return self._digest.hexdigest()


def _unreadable(path: Path, exc: OSError) -> LocalFileError:
    return LocalFileError(f"cannot read {path}: {exc.strerror or exc}; what was sent so far "
                          "is kept", path=str(path))


class PartBody:
    """A part as a request body: an async iterable of chunks (aiohttp streams those, per
    its documentation), hashed on the way out. Iterable once: a second iteration (a replay)
    fails rather than send a short body; the engine, not aiohttp, retries a part."""

    def __init__(self, part: Piece, *, chunk_size: int, hasher: LaneHasher,
                 on_chunk: Callable[[int], None],
                 throttle: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._reader = _PartReader(part, chunk_size=chunk_size, hasher=hasher)
        self._on_chunk = on_chunk
        self._throttle = throttle  # waits until a chunk of this size may go out
        self._started = False
        self.failure: UploaderError | None = None  # why the body stopped, if it did

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError("a part body is sent once; the engine retries, not aiohttp")
        self._started = True
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async with self._reader as reader:
                while (chunk := await reader.read()) is not None:
                    if self._throttle is not None:
                        await self._throttle(len(chunk))
                    yield chunk
                    self._on_chunk(len(chunk))
        except UploaderError as exc:  # aiohttp reports it as a connection error
            self.failure = exc
            raise

    async def md5_hex(self) -> str:
        """The MD5 of what was sent. Asked after the answer: the storage may answer before
        the last chunks are hashed (they are handed to the hasher as they are sent)."""
        return await self._reader.md5_hex()
