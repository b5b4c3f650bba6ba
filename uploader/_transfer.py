"""The transfer engine: PUT byte ranges of a file to presigned URLs, concurrently, verified.

Each part streams from disk in chunks (memory stays near `2 x concurrency x chunk_size`
whatever the file and part sizes), its MD5 computed while it is sent (the parts in flight
hashed together, `_hashing.LaneHasher`) and checked against the ETag the storage returns.
Transient failures are retried with backoff; a refused URL (403: spent, expired) is settled
by asking the server whether it holds the part, else by fresh URLs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import aiohttp.payload
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from uploader._errors import FileChangedError, TransferError, UploaderError
from uploader._hashing import Hashed, LaneHasher, new_md5
from uploader._plan import Piece
from uploader._redact import redact
from uploader._retry import Backoff

__all__ = ["PartFailure", "TransferConfig", "UrlSource", "etag_matches", "piece_md5",
           "pieces_md5", "send_pieces", "stored_object_etag"]

log = logging.getLogger("uploader.transfer")

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """How parts are sent.

    `concurrency` parts are in flight at once (8 fills most links without crowding a 2-core
    machine). Reads are `chunk_size` bytes (1 MiB: few enough system calls and hash calls
    to be cheap, small enough to keep memory flat). A part that makes no progress for
    `stall_timeout` seconds (no chunk accepted by the socket, or no answer after the last)
    is abandoned and retried. `backoff` bounds the retries of each part; a part may also get
    fresh URLs `max_refreshes` times.
    """

    concurrency: int = 8
    chunk_size: int = 1024 * 1024
    stall_timeout: float = 60.0
    connect_timeout: float = 15.0
    backoff: Backoff = field(default_factory=Backoff)
    max_refreshes: int = 3

    @property
    def client_timeout(self) -> aiohttp.ClientTimeout:
        """No overall limit (a part takes as long as the link needs); stalls are caught by
        `stall_timeout`, connection set-up by `connect_timeout`."""
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 64:
            raise ValueError("concurrency must be from 1 to 64")
        if self.chunk_size < 4096 or self.stall_timeout <= 0:
            raise ValueError("chunk_size must be at least 4 KiB and stall_timeout positive")


class UrlSource(Protocol):
    """Where the engine gets each piece's link, and how it settles a refused one."""

    generation: int

    def url(self, piece: Piece) -> str: ...

    async def refresh(self, seen_generation: int) -> None: ...

    async def stored_etag(self, piece: Piece) -> str | None: ...


class PartFailure(Exception):
    """One attempt at one part failed; the fields say whether to retry and how."""

    def __init__(self, reason: str, *, retryable: bool, url_refused: bool = False,
                 status: int | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.url_refused = url_refused
        self.status = status


def etag_matches(etag: str, md5_hex: str) -> bool | None:
    """Whether an ETag is this MD5; None when the ETag is not a plain MD5 and says nothing."""
    plain = etag.strip().strip('"').lower()
    if not _MD5_RE.match(plain):
        return None
    return plain == md5_hex.lower()


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
    """One part of the file, read chunk by chunk into two alternating buffers, each chunk
    handed to the hasher as it is read: memory stays near two chunks whatever the part size.

    A buffer is refilled only once its last chunk is hashed, and only if what the connection
    still queues (`queued`) is no more than the chunk read since: asyncio since 3.12 queues
    unsent data by reference, not by copy. Otherwise a fresh buffer takes its place.
    """

    def __init__(self, part: Piece, *, chunk_size: int, hasher: LaneHasher) -> None:
        self._path = part.path
        self._chunk = min(chunk_size, part.size)
        self._hasher = hasher
        self._digest = new_md5()
        self._buffers: list[bytearray | None] = [None, None]
        self._hashed: list[Hashed | None] = [None, None]  # each buffer's last chunk
        self._turn = self._last = 0  # `_last`: the length of the chunk read last
        self._position, self._end = part.offset, part.offset + part.size
        self._fd = -1

    async def __aenter__(self) -> _PartReader:
        self._fd = await asyncio.to_thread(os.open, self._path, os.O_RDONLY)
        self._hasher.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._hasher.close()
        os.close(self._fd)

    async def read(self, queued: Callable[[], int] = lambda: 0) -> memoryview | None:
        """The next chunk, or None after the last."""
        if self._position >= self._end:
            return None
        turn = self._turn
        pending = self._hashed[turn]
        if pending is not None:
            await pending
        # This buffer went out two chunks ago. What the connection still queues is the tail
        # of what was written; if that is more than the last chunk, part of this buffer may
        # be queued by reference: leave it be and take a fresh one.
        buffer = self._buffers[turn]
        if buffer is None or queued() > self._last:
            buffer = self._buffers[turn] = bytearray(self._chunk)
        view = memoryview(buffer)[:min(self._chunk, self._end - self._position)]
        got = _checked(await asyncio.to_thread(os.preadv, self._fd, [view], self._position),
                       self._path)
        chunk = view[:got]
        self._hashed[turn] = self._hasher.add(self._digest, chunk)
        self._position += got
        self._last, self._turn = got, 1 - turn
        return chunk

    async def md5_hex(self) -> str:
        """The MD5 of what was read, once the hasher is through with it."""
        for pending in self._hashed:
            if pending is not None:
                await pending
        return self._digest.hexdigest()


class PartBody(aiohttp.payload.Payload):
    """One part of the file as a request body, hashed on the way out.

    Chunks come from a `_PartReader` and go to the connection without a copy. The body is sent
    once: aiohttp must not replay it on a dropped connection, since the engine counts and
    retries attempts itself.
    """

    def __init__(self, part: Piece, *, chunk_size: int, hasher: LaneHasher,
                 on_chunk: Callable[[int], None]) -> None:
        super().__init__(None, content_type=part.content_type)
        self._size = part.size
        self._reader = _PartReader(part, chunk_size=chunk_size, hasher=hasher)
        self._on_chunk = on_chunk
        self.file_changed: FileChangedError | None = None  # why the body stopped, if so

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a part of a video has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        if self._consumed:
            raise RuntimeError("a part body is sent once; the engine retries, not aiohttp")
        self._consumed = True
        try:
            async with self._reader as reader:
                while (chunk := await reader.read(lambda: _queued(writer))) is not None:
                    await writer.write(chunk)
                    self._on_chunk(len(chunk))
        except FileChangedError as exc:  # aiohttp reports it as a connection error
            self.file_changed = exc
            raise

    async def md5_hex(self) -> str:
        """The MD5 of what was sent. Asked after the answer: aiohttp cancels the body's task
        once the storage has answered, which may be before the last chunks are hashed (they
        are handed to the hasher as they are sent)."""
        return await self._reader.md5_hex()


def _queued(writer: AbstractStreamWriter) -> int:
    """Bytes written to the connection but not yet sent."""
    transport = getattr(writer, "transport", None)
    return transport.get_write_buffer_size() if transport is not None else 0


async def put_part(
    session: aiohttp.ClientSession, url: str, part: Piece, *,
    config: TransferConfig, hasher: LaneHasher, on_bytes: Callable[[int], None],
) -> str:
    """PUT one part; return its MD5 once the storage has confirmed it with a matching ETag."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(config.stall_timeout) as deadline:

        def progressed(count: int) -> None:
            on_bytes(count)
            deadline.reschedule(loop.time() + config.stall_timeout)

        body = PartBody(part, chunk_size=config.chunk_size, hasher=hasher, on_chunk=progressed)
        headers = {"Content-Type": part.content_type, "Content-Length": str(part.size)}
        try:
            async with session.put(URL(url, encoded=True), data=body, headers=headers,
                                   timeout=config.client_timeout) as response:
                text = "" if response.status == 200 else (await response.text())[:2000]
                etag = response.headers.get("ETag")
                status = response.status
        except aiohttp.ClientError as exc:
            if body.file_changed is not None:
                raise body.file_changed from None
            raise PartFailure(redact(f"{type(exc).__name__}: {exc}"), retryable=True) from exc
    if status != 200:
        raise _failure_for(status, text)
    md5_hex = await body.md5_hex()
    match = etag_matches(etag or "", md5_hex)
    if match is None:
        log.debug("%s: ETag %r is not a plain MD5; not checked", part.label, etag)
    elif not match:
        raise PartFailure(f"the stored part's ETag {etag} is not its MD5 {md5_hex}",
                          retryable=False, url_refused=True, status=status)
    return md5_hex


def _failure_for(status: int, text: str) -> PartFailure:
    code = re.search(r"<Code>([^<]*)</Code>", text)
    reason = f"HTTP {status}" + (f" {code[1]}" if code else "")
    if status in _RETRYABLE_STATUS or status >= 500:
        return PartFailure(reason, retryable=True, status=status)
    if status in (403, 404):
        return PartFailure(reason, retryable=False, url_refused=True, status=status)
    return PartFailure(reason, retryable=False, status=status)


async def send_pieces(
    parts: list[Piece], *, session: aiohttp.ClientSession, urls: UrlSource,
    config: TransferConfig, on_bytes: Callable[[int], None],
    on_done: Callable[[Piece, str], Awaitable[None]], job_id: str | None = None,
) -> int:
    """Send `parts` (of any files: video parts and single files alike) with
    `config.concurrency` workers; return the bytes put on the wire.

    A piece that cannot be sent stops new pieces from starting; those in flight finish, then
    the first failure is raised as TransferError.
    """
    queue = list(reversed(parts))
    hasher = LaneHasher()
    failures: list[BaseException] = []
    sent = 0

    def counted(delta: int) -> None:
        nonlocal sent
        sent += max(delta, 0)
        on_bytes(delta)

    async def worker() -> None:
        while queue and not failures:
            part = queue.pop()
            try:
                md5_hex = await _send_one(part, session=session, urls=urls,
                                          config=config, hasher=hasher, on_bytes=counted,
                                          on_settled=on_bytes, job_id=job_id)
                await on_done(part, md5_hex)
            except UploaderError as exc:  # a part that cannot be sent, or a journal failure
                failures.append(exc)
                return

    await asyncio.gather(*(worker() for _ in range(min(config.concurrency, len(parts)))))
    if failures:
        raise failures[0]
    return sent


async def _send_one(
    part: Piece, *, session: aiohttp.ClientSession, urls: UrlSource,
    config: TransferConfig, hasher: LaneHasher, on_bytes: Callable[[int], None],
    on_settled: Callable[[int], None], job_id: str | None,
) -> str:
    """Send one part until it is stored. `on_bytes` follows the bytes put on the wire (back
    down when an attempt fails); `on_settled` is told of a part the server turned out to hold
    already, which counts as done without being sent again."""
    failures = refreshes = 0
    while True:
        generation = urls.generation
        sent = 0

        def count(delta: int) -> None:
            nonlocal sent
            sent += delta
            on_bytes(delta)

        try:
            return await put_part(session, urls.url(part), part, config=config,
                                  hasher=hasher, on_bytes=count)
        except (PartFailure, TimeoutError) as exc:
            on_bytes(-sent)  # the bar winds back: these bytes must be sent again
            failure = exc if isinstance(exc, PartFailure) else PartFailure(
                f"no progress for {config.stall_timeout:g} s", retryable=True)
        if failure.url_refused:
            stored = await _stored_md5(part, urls=urls, config=config, hasher=hasher)
            if stored is not None:
                log.info("%s: the server already holds it", part.label)
                on_settled(part.size)
                return stored
            refreshes += 1
            if refreshes > config.max_refreshes:
                raise TransferError(f"{part.label} was refused ({failure}) even with fresh "
                                    "URLs", job_id=job_id, part_number=part.number)
            log.info("%s: URL refused (%s); getting fresh URLs", part.label, failure)
            await urls.refresh(generation)
            continue
        failures += 1
        if not failure.retryable or failures >= config.backoff.attempts:
            raise TransferError(f"{part.label} failed after {failures} attempt(s): "
                                f"{failure}", job_id=job_id, part_number=part.number)
        delay = config.backoff.delay(failures)
        log.info("%s failed (%s); retry %d in %.1f s", part.label, failure, failures, delay)
        await asyncio.sleep(delay)


async def _stored_md5(part: Piece, *, urls: UrlSource, config: TransferConfig,
                      hasher: LaneHasher) -> str | None:
    """The part's MD5 if the server holds exactly this part already, else None."""
    etag = await urls.stored_etag(part)
    if etag is None:
        return None
    local = await piece_md5(part, config.chunk_size, hasher)
    return local if etag_matches(etag, local) is True else None


async def stored_object_etag(session: aiohttp.ClientSession, url: str) -> str | None:
    """The ETag of the object behind a download link, read from a GET of its first byte
    (OBS answers every GET with the object's ETag); None if it is not there."""
    try:
        async with session.get(URL(url, encoded=True), headers={"Range": "bytes=0-0"},
                               timeout=aiohttp.ClientTimeout(total=60)) as response:
            await response.read()
            if response.status in (200, 206):
                return response.headers.get("ETag")
            if response.status == 404:
                return None
            raise TransferError(f"reading a stored file's ETag answered HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransferError(redact(f"cannot read a stored file's ETag: {exc!r}")) from exc
