"""Fault injection: what the emulator does wrong on purpose, and its record of each PUT."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, NoReturn

from aiohttp import web
from aiolimiter import AsyncLimiter

from uploader.emulator._gateway import api_of

__all__ = ["Faults", "cut"]


class Faults:
    """The faults in force; tests may change any of them while the emulator runs.

    `fail_rate`: share of PUTs answered with one of `fail_statuses` before storing;
    `drop_rate`: share stored, then cut off without an answer (the link is spent);
    `reset_rate`: share cut off half-way through the body; `link_rate`: bytes a second each
    body is read at (None: as fast as it comes); `total_rate`: bytes a second all bodies
    together are read at (a narrow link shared by every connection); `lose_confirms`: how
    many of the next confirm answers to cut off after the confirm took effect; `rewrite`: a
    function that mangles API answers; `api_statuses`: statuses the next API requests are
    answered with, one each, before they are carried out (with `Retry-After:
    api_retry_after` if set).
    """

    def __init__(self, *, fail_rate: float, drop_rate: float, reset_rate: float,
                 link_rate: float | None, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.fail_rate, self.drop_rate, self.reset_rate = fail_rate, drop_rate, reset_rate
        self.link_rate = link_rate
        self.total_rate: float | None = None
        self._bucket: tuple[float, AsyncLimiter] | None = None
        self.fail_statuses: tuple[int, ...] = (500, 503)
        self.lose_confirms = 0
        #: By kind of file ("grant_file", "training_video", ...): how many of its next bodies
        #: to store with a byte flipped after their ETag was computed (corruption at rest,
        #: which only reading the object back can find).
        self.corrupt: Counter[str] = Counter()
        self.rewrite: Callable[[web.Request, Any], Any] | None = None
        self.api_statuses: list[int] = []
        #: PUTs being served now, and the most served at once; the most connections open
        #: at once that made requests.
        self.in_flight = self.most_in_flight = self.most_connections = 0
        #: Bytes of PUT bodies received, stored or not.
        self.received_bytes = 0
        self._connections: set[asyncio.BaseTransport] = set()
        self.api_retry_after: float | None = None
        #: Seconds an API's answer (by name: list, create...) is held back once made.
        self.api_delays: dict[str, float] = {}
        #: What happened to each PUT, by (job id, part number; 0 for a single file):
        #: attempts, refused (403/404), failed (injected 5xx), reset (cut by the emulator
        #: mid-body), cut (by the client mid-body), stored, dropped (stored, answer cut).
        self.ledger: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)

    async def pace_total(self, size: int) -> None:
        """Wait until `size` more bytes may be read under `total_rate` (aiolimiter's leaky
        bucket, holding a tenth of a second's bytes), if it is set."""
        rate = self.total_rate
        if not rate:
            return
        if self._bucket is None or self._bucket[0] != rate:
            capacity = max(16 * 1024.0, rate / 10)
            self._bucket = (rate, AsyncLimiter(capacity, capacity / rate))
        bucket = self._bucket[1]
        while size > 0:
            step = min(size, int(bucket.max_rate))
            await bucket.acquire(step)
            size -= step

    def draw(self, rate: float) -> bool:
        """Whether a fault of this rate strikes now."""
        return self.rng.random() < rate

    def failure_status(self) -> int:
        return self.rng.choice(self.fail_statuses)

    def totals(self) -> Counter[str]:
        """The ledger summed over all PUTs (attempts, refused, failed, stored, ...)."""
        return sum(self.ledger.values(), Counter())

    def note_connection(self, transport: asyncio.BaseTransport | None) -> None:
        """Count the connection a request came on (those closed since are forgotten)."""
        if transport is not None:
            self._connections = {t for t in self._connections if not t.is_closing()}
            self._connections.add(transport)
            self.most_connections = max(self.most_connections, len(self._connections))

    def take_corruption(self, kind: str) -> bool:
        """Whether this body of `kind` is to be stored corrupted (counts one down if so)."""
        if self.corrupt[kind] <= 0:
            return False
        self.corrupt[kind] -= 1
        return True

    def take_lost_confirm(self) -> bool:
        """Whether this confirm's answer is to be lost (counts one down if so)."""
        if self.lose_confirms <= 0:
            return False
        self.lose_confirms -= 1
        return True

    @web.middleware
    async def rewrite_answers(self, request: web.Request,
                              handler: Callable[..., Any]) -> web.StreamResponse:
        """Let a test refuse API requests (`api_statuses`) or mangle API answers (`rewrite`),
        to test clients against them."""
        if self.api_statuses and request.path.startswith("/v1/"):
            headers = ({"Retry-After": f"{self.api_retry_after:g}"}
                       if self.api_retry_after is not None else {})
            return web.json_response(
                {"error_code": "MSS.00000001", "error_msg": "injected by the emulator"},
                status=self.api_statuses.pop(0), headers=headers)
        response: web.StreamResponse = await handler(request)
        delay = self.api_delays.get(api_of(request) or "")
        if delay:  # answered now, arriving late: a slow gateway, a lookup racing a create
            await asyncio.sleep(delay)
        if self.rewrite is None or not request.path.startswith("/v1/"):
            return response
        assert isinstance(response, web.Response) and response.body is not None
        changed = self.rewrite(request, json.loads(bytes(response.body)))  # type: ignore[arg-type]
        if isinstance(changed, bytes):
            return web.Response(status=response.status, body=changed,
                                content_type="text/html")
        return web.json_response(changed, status=response.status)


def cut(request: web.Request) -> NoReturn:
    """Close the connection without a response, as a network failure would."""
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError
