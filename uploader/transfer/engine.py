"""The transfer engine: PUT byte ranges of a file to presigned URLs, concurrently, verified.

Each part streams from disk in chunks (memory stays near `2 x concurrency x chunk_size`
whatever the file and part sizes, and a shared budget shrinks the chunks when many pieces
are in flight), its MD5 computed while it is sent (the parts in flight
hashed together, `_hashing.LaneHasher`) and checked against the ETag the storage returns.
Transient failures are retried with the one retry policy (`_retry`); a refused URL (403:
spent, expired; or a host that refuses connections) is settled by asking the server whether
it holds the part, else by fresh URLs. The parts in flight run in one task group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from uploader import _checks as checks
from uploader._errors import (
    TransferError,
    UnreachableError,
    UploaderError,
    UsageError,
)
from uploader._http import http_errors
from uploader._log import logger
from uploader._redact import redact, without_queries
from uploader._retry import Backoff, retry, retry_after
from uploader.transfer.budget import TransferBudget
from uploader.transfer.hashing import LaneHasher
from uploader.transfer.plan import Piece
from uploader.transfer.reading import PartBody, etag_matches, piece_md5

__all__ = ["SSE_HEADER", "PartFailure", "Sent", "TransferConfig", "UrlSource", "put_part",
           "send_pieces", "storage_header", "stored_object_etag"]

log = logger("uploader.transfer")

_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """How parts are sent.

    Reads are `chunk_size` bytes (1 MiB: few enough system calls and hash calls
    to be cheap, small enough to keep memory flat), fewer when a budget lets many pieces
    fly (`TransferBudget.chunk_size`). A part that makes no progress for
    `stall_timeout` seconds (no chunk accepted by the socket, or no answer after the last)
    is abandoned and retried. `backoff` bounds the retries of each part; a part may also get
    fresh URLs `max_refreshes` times.
    """

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
        checks.whole(self.chunk_size, "chunk_size", low=4096)
        checks.number(self.stall_timeout, "stall_timeout")
        checks.number(self.connect_timeout, "connect_timeout")
        checks.whole(self.max_refreshes, "max_refreshes", low=0)
        if not isinstance(self.backoff, Backoff):
            raise UsageError(f"backoff must be a Backoff, not {self.backoff!r}")


class UrlSource(Protocol):
    """Where the engine gets each piece's link, and how it settles a refused one."""

    generation: int

    def url(self, piece: Piece) -> str: ...

    async def refresh(self, seen_generation: int) -> None: ...

    async def stored_etag(self, piece: Piece) -> str | None: ...


#: The header OBS answers for an object stored with server-side encryption: its ETag is then
#: not the MD5 of the body (API.md §5). OBS answers in the dialect of the link: `x-obs-` for
#: its own form, `x-amz-` for the S3-compatible ones (esdk-obs-python reads both).
SSE_HEADER = "x-obs-server-side-encryption"
#: The storage's headers a client reads, each in both dialects (OBS's own first).
_DIALECTS = ("x-obs-", "x-amz-")


def storage_header(headers: Mapping[str, str], name: str) -> str | None:
    """The storage's header `name` (without its prefix: "request-id"), in whichever dialect
    the storage answered."""
    return next((headers[p + name] for p in _DIALECTS if p + name in headers), None)
#: The most of an error answer's body that is read (its XML says what went wrong).
ERROR_BODY_LIMIT = 4096


@dataclass(frozen=True)
class Sent:
    """A piece the storage took: its MD5, and whether the storage's ETag proved the bytes
    (False where the ETag is not an MD5: an encrypted bucket)."""

    md5_hex: str
    verified: bool


class PartFailure(Exception):
    """One attempt at one part failed; the fields say whether to retry and how."""

    def __init__(self, reason: str, *, retryable: bool, url_refused: bool = False,
                 status: int | None = None, retry_after: float | None = None,
                 host_unreachable: bool = False, lasting: bool = False) -> None:
        super().__init__(reason)
        self.lasting = lasting
        self.retryable = retryable
        self.url_refused = url_refused
        self.host_unreachable = host_unreachable
        self.status = status
        self.retry_after = retry_after


async def put_part(
    session: aiohttp.ClientSession, url: str, part: Piece, *,
    config: TransferConfig, hasher: LaneHasher, on_bytes: Callable[[int], None],
    budget: TransferBudget | None = None,
) -> Sent:
    """PUT one part; return its MD5 once the storage has taken it, checked against the ETag
    where the ETag is an MD5. With a `budget`, each chunk waits for its share of the
    bandwidth (waiting for it is not a stall). An error's body is read up to
    ERROR_BODY_LIMIT bytes, whatever its length."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(config.stall_timeout) as deadline:

        def moving() -> None:
            deadline.reschedule(loop.time() + config.stall_timeout)

        def progressed(count: int) -> None:
            on_bytes(count)
            moving()
            if budget is not None:
                budget.sent(count)

        async def throttle(size: int) -> None:
            assert budget is not None
            await budget.spend(size, granted=moving)

        # With many pieces in flight each reads less at a time: memory stays flat.
        chunk_size = config.chunk_size if budget is None else budget.chunk_size(
            config.chunk_size)
        body = PartBody(part, chunk_size=chunk_size, hasher=hasher, on_chunk=progressed,
                        throttle=throttle if budget is not None else None)
        headers = {"Content-Type": part.content_type, "Content-Length": str(part.size)}
        try:
            with http_errors("the storage"):
                # Expect: 100-continue: a spent, expired or refused link is answered before
                # the body is sent (OBS answers the expectation), costing a round trip, not
                # a part.
                async with session.put(URL(url, encoded=True), data=body, headers=headers,
                                       timeout=config.client_timeout, expect100=True,
                                       allow_redirects=False) as response:
                    text = "" if response.status == 200 else (await response.content.read(
                        ERROR_BODY_LIMIT)).decode("utf-8", "replace")
                    etag = response.headers.get("ETag")
                    status = response.status
                    asked = retry_after(response.headers.get("Retry-After"))
                    request_id = storage_header(response.headers, "request-id")
                    encrypted = storage_header(response.headers,
                                               "server-side-encryption") is not None
        except UnreachableError as exc:
            if body.failure is not None:
                raise body.failure from None
            # A host that is gone (never connected) is as good as a spent link.
            raise PartFailure(exc.message, retryable=exc.may_have_arrived,
                              url_refused=not exc.may_have_arrived,
                              host_unreachable=not exc.may_have_arrived,
                              lasting=exc.lasting) from exc
    if log.isEnabledFor(logging.DEBUG):
        log.debug("PUT %s (%s, %d bytes): HTTP %s, request id %s, ETag %s", part.label,
                  without_queries(url), part.size, status, request_id, etag)
    if status != 200:
        raise _failure_for(status, text, asked, request_id)
    md5_hex = body.md5_hex()
    if md5_hex is None:  # a storage that answers 200 before the body has all arrived
        raise PartFailure("the storage answered before the part was sent whole",
                          retryable=True, status=status)
    match = None if encrypted else etag_matches(etag or "", md5_hex)
    if match is None:
        log.debug("%s: ETag %r is not an MD5 (%s); not checked", part.label, etag,
                  "server-side encryption" if encrypted else "not 32 hex digits")
    elif not match:
        raise PartFailure(f"the stored part's ETag {etag} is not its MD5 {md5_hex}",
                          retryable=False, url_refused=True, status=status)
    return Sent(md5_hex, verified=bool(match))


def _failure_for(status: int, text: str, asked: float | None,
                 request_id: str | None) -> PartFailure:
    code = re.search(r"<Code>([^<]*)</Code>", text)
    reason = f"HTTP {status}" + (f" {code[1]}" if code else "") + (
        f" (storage request id {request_id})" if request_id else "")
    if status in _RETRYABLE_STATUS or status >= 500:
        return PartFailure(reason, retryable=True, status=status, retry_after=asked)
    if status in (403, 404) or 300 <= status < 400:  # a redirect is never followed
        return PartFailure(reason, retryable=False, url_refused=True, status=status)
    return PartFailure(reason, retryable=False, status=status)


async def send_pieces(
    parts: list[Piece], *, session: aiohttp.ClientSession, urls: UrlSource,
    config: TransferConfig, on_bytes: Callable[[int], None], concurrency: int = 8,
    on_done: Callable[[Piece, Sent], Awaitable[None]], job_id: str | None = None,
    budget: TransferBudget | None = None, most_at_risk: int | None = None,
) -> int:
    """Send `parts` (of any files: video parts and single files alike) with `concurrency`
    workers in one task group; return the bytes put on the wire. A
    `budget` shared with other uploads caps the pieces in flight and the bandwidth of all.
    `most_at_risk` caps the workers further, so that the pieces in flight hold at most that
    many bytes (one piece at least): what an interruption may cost.

    The first piece that cannot be sent cancels the others in flight (their bytes are
    wound back), and is raised: as the UploaderError it is, or, for anything unforeseen, as
    a TransferError that says what happened. Nothing outlives the call.
    """
    queue = deque(parts)
    hasher = LaneHasher()
    sent = 0

    def counted(delta: int) -> None:
        nonlocal sent
        sent += max(delta, 0)
        on_bytes(delta)

    async def worker() -> None:
        while queue:
            part = queue.popleft()
            async with budget.slot() if budget is not None else contextlib.nullcontext():
                sent = await _send_one(part, session=session, urls=urls, config=config,
                                          hasher=hasher, on_bytes=counted,
                                          on_settled=on_bytes, job_id=job_id, budget=budget)
            await on_done(part, sent)

    workers = min(concurrency, len(parts))
    if most_at_risk is not None and parts:
        workers = min(workers, max(1, most_at_risk // max(p.size for p in parts)))
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except ExceptionGroup as failed:
        raise _first_failure(failed, job_id) from None
    return sent


def _first_failure(failed: ExceptionGroup[Exception], job_id: str | None) -> UploaderError:
    """The error to report for a task group that failed: its first UploaderError, else the
    first unforeseen exception wrapped (logged with its traceback at debug level)."""
    leaves: list[Exception] = []
    pending: list[Exception] = [failed]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, ExceptionGroup):
            pending[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    for exc in leaves:
        if isinstance(exc, UploaderError):
            if exc.job_id is None:
                exc.job_id = job_id
            return exc
    exc = leaves[0]
    log.debug("the transfer failed", exc_info=exc)
    return TransferError(f"the transfer stopped on an unexpected error: {type(exc).__name__}: "
                         f"{redact(str(exc))}; what was sent so far is kept",
                         job_id=job_id)


async def _send_one(
    part: Piece, *, session: aiohttp.ClientSession, urls: UrlSource,
    config: TransferConfig, hasher: LaneHasher, on_bytes: Callable[[int], None],
    on_settled: Callable[[int], None], job_id: str | None, budget: TransferBudget | None,
) -> Sent:
    """Send one part until it is stored, with the one retry policy. `on_bytes` follows the
    bytes put on the wire (back down when an attempt fails); `on_settled` is told of a part
    the server turned out to hold already, which counts as done without being sent again.
    A refused link (spent, expired, its host gone) is settled by asking the server whether
    it holds the part, else replaced by fresh links and tried again at once. A host that
    cannot be reached even on fresh links is a storage outage: waited out like any failure."""
    refreshes = 0
    relinked_for_host = False

    async def attempt() -> Sent:
        nonlocal refreshes, relinked_for_host
        generation = urls.generation
        sent = 0

        def count(delta: int) -> None:
            nonlocal sent
            sent += delta
            on_bytes(delta)

        try:
            return await put_part(session, urls.url(part), part, config=config,
                                  hasher=hasher, on_bytes=count, budget=budget)
        except (PartFailure, TimeoutError) as exc:
            on_bytes(-sent)  # the bar winds back: these bytes must be sent again
            failure = exc if isinstance(exc, PartFailure) else PartFailure(
                f"no progress for {config.stall_timeout:g} s", retryable=True)
        if failure.host_unreachable:
            if relinked_for_host:  # fresh links, and their host is away too: an outage
                raise PartFailure(str(failure), retryable=not failure.lasting) from None
            relinked_for_host = True
        if not failure.url_refused:
            raise failure
        try:
            stored = await _stored_md5(part, urls=urls, config=config, hasher=hasher)
            if stored is not None:
                log.info("%s: the server already holds it", part.label)
                on_settled(part.size)
                return Sent(stored, verified=True)
            refreshes += 1
            if refreshes > config.max_refreshes:
                raise TransferError(f"{part.label} was refused ({failure}) even with fresh "
                                    "URLs", job_id=job_id, part_number=part.number)
            log.info("%s: URL refused (%s); getting fresh URLs", part.label, failure)
            await urls.refresh(generation)
        except UnreachableError as exc:  # the service is away too: wait for it, as for a part
            raise PartFailure(f"{failure}; the service cannot be asked: {exc}",
                              retryable=True) from exc
        raise _Refreshed

    failures = 0

    def retryable(exc: Exception) -> bool:
        nonlocal failures
        failures += 1
        return isinstance(exc, PartFailure) and exc.retryable

    while True:
        failures = 0
        try:
            return await retry(attempt, backoff=config.backoff, retryable=retryable,
                               what=part.label)
        except _Refreshed:
            continue  # fresh links: the retries start over
        except PartFailure as failure:
            raise TransferError(f"{part.label} failed after {failures} attempt(s): {failure}",
                                job_id=job_id, part_number=part.number) from None


class _Refreshed(Exception):
    """A part's link was refused and fresh links were issued: try again at once."""


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
        with http_errors("a stored file's link"):
            async with session.get(URL(url, encoded=True), headers={"Range": "bytes=0-0"},
                                   timeout=aiohttp.ClientTimeout(total=60),
                                   allow_redirects=False) as response:
                # The headers say it all. The one byte asked for is read, so that the
                # connection is kept and the storage is not left writing to a closed one;
                # the body of a storage that ignores Range (the whole object) is not.
                if response.status == 206 and response.content_length == 1:
                    await response.read()
    except UnreachableError as exc:
        if not exc.may_have_arrived:  # the link's host is gone: the file is as good as absent
            log.info("%s; sending it", exc)
            return None
        raise TransferError(f"cannot read a stored file's ETag: {exc}") from exc
    if response.status in (200, 206):
        return response.headers.get("ETag")
    if response.status == 404 or 300 <= response.status < 400:  # a redirect: not followed
        return None
    raise TransferError(f"reading a stored file's ETag answered HTTP {response.status}")
