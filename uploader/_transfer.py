"""The transfer engine: PUT byte ranges of a file to presigned URLs, concurrently, verified.

Each part streams from disk in chunks (memory stays near `concurrency x chunk_size` whatever
the file and part sizes), its MD5 computed while it is sent and checked against the ETag the
storage returns. Transient failures are retried with backoff; a refused URL (403: spent,
expired) is settled by asking the server whether it holds the part, else by fresh URLs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiofiles
import aiohttp
from yarl import URL

from uploader._errors import FileChangedError, TransferError, UploaderError
from uploader._plan import Part
from uploader._redact import redact
from uploader._retry import Backoff

__all__ = ["PartFailure", "TransferConfig", "UrlSource", "etag_matches", "part_md5",
           "send_parts"]

log = logging.getLogger("uploader.transfer")

OCTET_STREAM = "application/octet-stream"
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_RETRYABLE_STATUS = frozenset({408, 429})
_HASH_IN_THREAD = 256 * 1024


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
    async with aiofiles.open(path, "rb") as handle:
        async for chunk in _read_range(handle, path, part, chunk_size):
            await _hash(digest, chunk)
    return digest.hexdigest()


async def _hash(digest: hashlib._Hash, chunk: memoryview) -> None:
    # hashlib releases the GIL on large buffers: hashing in a thread runs beside the loop.
    if len(chunk) >= _HASH_IN_THREAD:
        await asyncio.to_thread(digest.update, chunk)
    else:
        digest.update(chunk)


async def _read_range(
    handle: Any, path: Path, part: Part, chunk_size: int
) -> AsyncIterator[memoryview]:
    """The part's bytes, chunk by chunk, read into one reused buffer.

    Each chunk is a view of that buffer, valid until the next is asked for: the caller must
    be done with it (hashed it, and handed it to the socket, which sends or copies it) by
    then. Reusing one buffer keeps memory flat and spares a fresh allocation per chunk.
    """
    buffer = memoryview(bytearray(min(chunk_size, part.size)))
    await handle.seek(part.offset)
    remaining = part.size
    while remaining:
        count = await handle.readinto(buffer[: min(len(buffer), remaining)])
        if not count:
            raise FileChangedError(
                f"{path} became shorter while it was being sent: it is being changed; "
                "let it be, then run the command again"
            )
        remaining -= count
        yield buffer[:count]


async def put_part(
    session: aiohttp.ClientSession, url: str, path: Path, part: Part, *,
    config: TransferConfig, on_bytes: Callable[[int], None],
) -> str:
    """PUT one part; return its MD5 once the storage has confirmed it with a matching ETag."""
    digest = hashlib.md5()
    loop = asyncio.get_running_loop()
    async with aiofiles.open(path, "rb") as handle, asyncio.timeout(
        config.stall_timeout
    ) as deadline:

        async def body() -> AsyncIterator[memoryview]:
            async for chunk in _read_range(handle, path, part, config.chunk_size):
                await _hash(digest, chunk)
                yield chunk
                on_bytes(len(chunk))
                deadline.reschedule(loop.time() + config.stall_timeout)

        headers = {"Content-Type": OCTET_STREAM, "Content-Length": str(part.size)}
        try:
            async with session.put(URL(url, encoded=True), data=body(), headers=headers,
                                   timeout=config.client_timeout) as response:
                text = "" if response.status == 200 else (await response.text())[:2000]
                etag = response.headers.get("ETag")
                status = response.status
        except aiohttp.ClientError as exc:
            raise PartFailure(redact(f"{type(exc).__name__}: {exc}"), retryable=True) from exc
    if status != 200:
        raise _failure_for(status, text)
    md5_hex = digest.hexdigest()
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
                                          config=config, on_bytes=counted, job_id=job_id)
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
    config: TransferConfig, on_bytes: Callable[[int], None], job_id: str | None,
) -> str:
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
                                  on_bytes=count)
        except (PartFailure, TimeoutError) as exc:
            on_bytes(-sent)  # the bar winds back: these bytes must be sent again
            failure = exc if isinstance(exc, PartFailure) else PartFailure(
                f"no progress for {config.stall_timeout:g} s", retryable=True)
        if failure.url_refused:
            stored = await _stored_md5(part, path=path, urls=urls, config=config)
            if stored is not None:
                log.info("part %d: the server already holds it", part.number)
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
