"""Reading pieces from disk: chunk by chunk, each chunk hashed as it is read, as a request
body or for its MD5 alone (a resume checks the pieces the server holds against the file).

A chunk is read into a buffer of the reader's own, and a buffer is read into again only once
nothing but the reader refers to it (`sys.getrefcount`, the check numpy's `ndarray.resize`
makes before it reallocates): whoever still holds a chunk (a connection's write queue, the
hasher) holds bytes that do not change under them, whatever asyncio or aiohttp do with it,
and the reader does not fault in fresh pages for every chunk (that cost 0.3 s of CPU a GiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from uploader._errors import FileChangedError, LocalFileError, UploaderError
from uploader.transfer.hashing import Hashed, LaneHasher, new_md5
from uploader.transfer.plan import Piece

__all__ = ["PartBody", "etag_matches", "multipart_etag", "piece_md5", "pieces_md5"]

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
#: Whether this Python counts references (CPython does; others read into new buffers always).
_COUNTS_REFERENCES = hasattr(sys, "getrefcount") and sys.implementation.name == "cpython"


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
    md5_hex = reader.md5_hex()
    assert md5_hex is not None  # read to its end
    return md5_hex


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


def _shorter(path: Path) -> FileChangedError:
    return FileChangedError(f"{path} became shorter while it was being sent: it is being "
                            "changed; let it be, then run the command again")


class _PartReader:
    """One part of the file, chunk by chunk, each chunk read and hashed by the hasher in one
    worker-thread step with the chunks of the other parts. The next chunk is asked for as
    one is handed out, so that it is ready when it is wanted: memory stays near two chunks
    per part (one on its way to the socket, the next); a chunk stays as it was read for as
    long as anyone holds it (see the module's docstring).
    """

    def __init__(self, part: Piece, *, chunk_size: int, hasher: LaneHasher) -> None:
        self._path = part.path
        self._chunk = min(chunk_size, part.size)
        self._hasher = hasher
        self._digest = new_md5()
        self._next: tuple[memoryview, Hashed] | None = None  # asked for, not handed out
        self._position, self._end = part.offset, part.offset + part.size
        self._file: io.FileIO | None = None
        self._buffers: list[bytearray] = []  # read into before; reused once nobody holds one

    async def __aenter__(self) -> _PartReader:
        try:
            self._file = await _opened_in_thread(self._path, self._position)
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        self._hasher.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._next is not None:  # a read in flight uses the file: let it end first
                with contextlib.suppress(Exception):
                    await self._next[1]
        finally:
            self._next = None
            self._hasher.close()
            if self._file is not None:
                self._file.close()

    async def read(self) -> memoryview | None:
        """The next chunk, read and hashed, or None after the last. A view (a bytearray's
        slices are copies, and aiohttp slices what it sends to the Content-Length)."""
        if self._next is None:
            if self._position >= self._end:
                return None
            self._next = self._ask()
        chunk, hashed = self._next
        self._next = None
        try:
            got = await hashed
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc
        if got < len(chunk):
            raise _shorter(self._path)
        if self._position < self._end:
            self._next = self._ask()
        return chunk

    def _ask(self) -> tuple[memoryview, Hashed]:
        """Have the next chunk read and hashed."""
        assert self._file is not None, "read() outside `async with`"
        size = min(self._chunk, self._end - self._position)
        buffer = self._free_buffer()
        self._buffers.append(buffer)
        chunk = memoryview(buffer)[:size]
        hashed = self._hasher.read(self._digest, self._file, chunk)
        self._position += size
        return chunk, hashed

    def _free_buffer(self) -> bytearray:
        """A buffer nobody but this reader refers to: one read into before, else a new one."""
        if _COUNTS_REFERENCES:
            for index in range(len(self._buffers)):
                # Two references: the list's, and getrefcount's own argument.
                if sys.getrefcount(self._buffers[index]) == 2:
                    return self._buffers.pop(index)
            del self._buffers[:-2]  # held elsewhere: left to whoever holds them
        return bytearray(self._chunk)

    def md5_hex(self) -> str | None:
        """The MD5 of the part (every chunk is hashed before it is handed out); None if
        the part was not handed out to its end."""
        if self._next is not None or self._position < self._end:
            return None
        return self._digest.hexdigest()


async def _opened_in_thread(path: Path, offset: int) -> io.FileIO:
    """`_open_at` in a worker thread; a file opened for a caller cancelled meanwhile is
    closed, not left to the garbage collector."""
    opening = asyncio.ensure_future(asyncio.to_thread(_open_at, path, offset))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_unclaimed)
        raise


def _close_unclaimed(opening: asyncio.Future[io.FileIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _open_at(path: Path, offset: int) -> io.FileIO:
    """The file, unbuffered, at `offset`: one handle per reader, each with its own position
    (the reads of one reader follow each other), on every platform."""
    file = io.FileIO(path, "r")
    try:
        file.seek(offset)
    except BaseException:
        file.close()
        raise
    return file


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

    def __aiter__(self) -> AsyncIterator[memoryview]:
        if self._started:
            raise RuntimeError("a part body is sent once; the engine retries, not aiohttp")
        self._started = True
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[memoryview]:
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

    def md5_hex(self) -> str | None:
        """The MD5 of what was sent (each chunk is hashed before it is handed out); None if
        the body was not sent to its end."""
        return self._reader.md5_hex()
