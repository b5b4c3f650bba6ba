"""The transfer engine: PUT byte ranges of a file to presigned URLs, concurrently, verified.

Each part streams from disk in chunks (memory stays near `2 x concurrency x chunk_size`
whatever the file and part sizes), its MD5 computed while it is sent (the parts in flight
hashed together, `_hashing.LaneHasher`) and checked against the ETag the storage returns.
Transient failures are retried with backoff; a refused URL (403: spent, expired) is settled
by asking the server whether it holds the part, else by fresh URLs.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from uploader._plan import Part
from uploader._redact import redact
from uploader._retry import Backoff

__all__ = ["PartFailure", "TransferConfig", "UrlSource", "etag_matches", "part_md5",
           "send_parts"]

log = logging.getLogger("uploader.transfer")

OCTET_STREAM = "application/octet-stream"
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
    """Where the engine gets part URLs, and how it settles a refused one."""

    generation: int

    def url(self, number: int) -> str: ...

    async def refresh(self, seen_generation: int) -> None: ...

    async def stored_etag(self, number: int) -> str | None: ...


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


async def part_md5(path: Path, part: Part, chunk_size: int = 1024 * 1024) -> str:
    """The MD5 of one part as it is on disk now."""
    digest = hashlib.md5()
    buffer = bytearray(min(chunk_size, part.size))
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        position, end = part.offset, part.offset + part.size
        while position < end:
            count = min(len(buffer), end - position)
            got = await asyncio.to_thread(_read_and_hash, fd, buffer, count, position, digest)
            position += _checked(got, path)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _read_and_hash(fd: int, buffer: bytearray, count: int, offset: int,
                   digest: hashlib._Hash) -> int:
    """Read up to `count` bytes at `offset` into `buffer` and hash them: one worker-thread
    step (hashlib releases the GIL on large buffers, so the loop runs on beside it)."""
    view = memoryview(buffer)[:count]
    got = os.preadv(fd, [view], offset)
    digest.update(view[:got])
    view.release()
    return got


def _checked(got: int, path: Path) -> int:
    if not got:
        raise FileChangedError(
            f"{path} became shorter while it was being sent: it is being changed; "
            "let it be, then run the command again"
        )
    return got


class PartBody(aiohttp.payload.Payload):
    """One part of the file as a request body, hashed on the way out.

    Each chunk is read in a worker thread into one of two buffers, handed to the connection
    without a copy and to the hasher beside it: memory stays near two chunks per part in
    flight. A buffer is refilled only once it is hashed and the connection has nothing of it
    left to send (asyncio since 3.12 queues unsent data by reference, not by copy); should
    the connection still hold some, a fresh buffer takes its place. The body is sent once:
    aiohttp must not replay it on a dropped connection, since the engine counts and retries
    attempts itself.
    """

    def __init__(self, path: Path, part: Part, *, chunk_size: int, hasher: LaneHasher,
                 on_chunk: Callable[[int], None]) -> None:
        super().__init__(None, content_type=OCTET_STREAM)
        self._size = part.size
        self._path = path
        self._part = part
        self._chunk = min(chunk_size, part.size)
        self._hasher = hasher
        self._on_chunk = on_chunk
        self._digest = new_md5()
        self._hashed: list[Hashed | None] = [None, None]  # the last chunk of each buffer
        self.file_changed: FileChangedError | None = None  # why the body stopped, if so

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a part of a video has no text form")

    async def write(self, writer: AbstractStreamWriter) -> None:
        if self._consumed:
            raise RuntimeError("a part body is sent once; the engine retries, not aiohttp")
        self._consumed = True
        fd = await asyncio.to_thread(os.open, self._path, os.O_RDONLY)
        self._hasher.open()
        try:
            await self._send(fd, writer)
        except FileChangedError as exc:  # aiohttp reports it as a connection error
            self.file_changed = exc
            raise
        finally:
            self._hasher.close()
            os.close(fd)

    async def _send(self, fd: int, writer: AbstractStreamWriter) -> None:
        buffers: list[bytearray | None] = [None, None]
        hashed = self._hashed
        turn = last = 0  # `last`: the length of the chunk written last
        position, end = self._part.offset, self._part.offset + self._part.size
        while position < end:
            pending = hashed[turn]
            if pending is not None:  # this buffer's last chunk is hashed before it is refilled
                await pending
            # This buffer went out two chunks ago. What the connection still queues is the
            # tail of what was written; if that is more than the last chunk, part of this
            # buffer may be queued by reference: leave it be and take a fresh one.
            buffer = buffers[turn]
            if buffer is None or _queued(writer) > last:
                buffer = buffers[turn] = bytearray(self._chunk)
            view = memoryview(buffer)[:min(self._chunk, end - position)]
            got = _checked(await asyncio.to_thread(os.preadv, fd, [view], position),
                           self._path)
            chunk = view[:got]
            hashed[turn] = self._hasher.add(self._digest, chunk)
            await writer.write(chunk)
            position += got
            last, turn = got, 1 - turn
            self._on_chunk(got)

    async def md5_hex(self) -> str:
        """The MD5 of what was sent, once the hasher is through with it. Asked after the
        answer: aiohttp cancels the body's task once the storage has answered, which may be
        before the last chunks are hashed (they were handed to the hasher before being sent)."""
        for pending in self._hashed:
            if pending is not None:
                await pending
        return self._digest.hexdigest()


def _queued(writer: AbstractStreamWriter) -> int:
    """Bytes written to the connection but not yet sent."""
    transport = getattr(writer, "transport", None)
    return transport.get_write_buffer_size() if transport is not None else 0


async def put_part(
    session: aiohttp.ClientSession, url: str, path: Path, part: Part, *,
    config: TransferConfig, hasher: LaneHasher, on_bytes: Callable[[int], None],
) -> str:
    """PUT one part; return its MD5 once the storage has confirmed it with a matching ETag."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(config.stall_timeout) as deadline:

        def progressed(count: int) -> None:
            on_bytes(count)
            deadline.reschedule(loop.time() + config.stall_timeout)

        body = PartBody(path, part, chunk_size=config.chunk_size, hasher=hasher,
                        on_chunk=progressed)
        headers = {"Content-Type": OCTET_STREAM, "Content-Length": str(part.size)}
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
        log.debug("part %d: ETag %r is not a plain MD5; not checked", part.number, etag)
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


async def send_parts(
    parts: list[Part], *, path: Path, session: aiohttp.ClientSession, urls: UrlSource,
    config: TransferConfig, on_bytes: Callable[[int], None],
    on_done: Callable[[Part, str], Awaitable[None]], job_id: str | None = None,
) -> int:
    """Send `parts` with `config.concurrency` workers; return the bytes put on the wire.

    A part that cannot be sent stops new parts from starting; those in flight finish, then
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
                md5_hex = await _send_one(part, path=path, session=session, urls=urls,
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
    part: Part, *, path: Path, session: aiohttp.ClientSession, urls: UrlSource,
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
            return await put_part(session, urls.url(part.number), path, part, config=config,
                                  hasher=hasher, on_bytes=count)
        except (PartFailure, TimeoutError) as exc:
            on_bytes(-sent)  # the bar winds back: these bytes must be sent again
            failure = exc if isinstance(exc, PartFailure) else PartFailure(
                f"no progress for {config.stall_timeout:g} s", retryable=True)
        if failure.url_refused:
            stored = await _stored_md5(part, path=path, urls=urls, config=config)
            if stored is not None:
                log.info("part %d: the server already holds it", part.number)
                on_settled(part.size)
                return stored
            refreshes += 1
            if refreshes > config.max_refreshes:
                raise TransferError(f"part {part.number} was refused ({failure}) even with "
                                    "fresh URLs", job_id=job_id, part_number=part.number)
            log.info("part %d: URL refused (%s); getting fresh URLs", part.number, failure)
            await urls.refresh(generation)
            continue
        failures += 1
        if not failure.retryable or failures >= config.backoff.attempts:
            raise TransferError(f"part {part.number} failed after {failures} attempt(s): "
                                f"{failure}", job_id=job_id, part_number=part.number)
        delay = config.backoff.delay(failures)
        log.info("part %d failed (%s); retry %d in %.1f s", part.number, failure, failures,
                 delay)
        await asyncio.sleep(delay)


async def _stored_md5(part: Part, *, path: Path, urls: UrlSource,
                      config: TransferConfig) -> str | None:
    """The part's MD5 if the server holds exactly this part already, else None."""
    etag = await urls.stored_etag(part.number)
    if etag is None:
        return None
    local = await part_md5(path, part, config.chunk_size)
    return local if etag_matches(etag, local) is True else None
