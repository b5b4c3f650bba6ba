"""What the transfers of any number of uploads may use together: pieces in flight, and
bytes a second on the wire.

One `TransferBudget` shared by concurrent `upload_video` calls (or by every video of a
batch) caps them together, the way s3transfer's TransferManager caps the transfers it runs.
The bandwidth cap is aiolimiter's leaky bucket (small, maintained, and it takes amounts, so
a chunk of N bytes waits for N bytes' worth of time): writing our own token bucket would be
the same code with fewer eyes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiolimiter import AsyncLimiter

from uploader import _checks as checks
from uploader._errors import UsageError
from uploader._log import logger
from uploader.transfer.acked import AckedBytes
from uploader.transfer.tuning import Tuner

__all__ = ["TransferBudget"]

log = logger("uploader.transfer")

#: What the chunks of the pieces in flight may take together, near enough: each piece holds
#: about two (one read and hashed, the rest of one in the connection's write buffer). With
#: 1 MiB chunks whatever the pieces, `auto` (32-64 pieces on loopback) peaked at 121-139 MiB
#: for 1 GiB; with 12 MiB here, 92-100; with 8, 74-79 (one budget, 3 runs each).
CHUNK_MEMORY = 8 * 1024 * 1024
#: The smallest chunk, whatever the number of pieces in flight.
MIN_CHUNK = 64 * 1024
#: Seconds between two readings of the bytes acknowledged, while pieces fly (`auto`).
TICK = 0.05
#: Bytes taken from the bucket at a time: a part waiting for its turn shows progress (and
#: is not taken for stalled) at least this often.
STEP = 64 * 1024


class TransferBudget:
    """At most `concurrency` pieces in flight, and at most `bwlimit` bytes a second put on
    the wire (None: no cap), over every upload that uses this budget. With `auto`, the
    pieces in flight are tuned from the throughput they get (`tuning.Tuner`), between 1 and
    `concurrency`, starting at 16 (or `concurrency` if less).

    The places are an asyncio.Semaphore: raising the limit releases places into it; lowering
    it keeps back the places of pieces as they end, until it holds that many fewer. It and
    the bandwidth bucket belong to one event loop: they are made in the first loop that uses
    the budget (`bind`), and made again in a later one once that loop has stopped (a client
    reopened); a budget used by two running loops at once (two threads' `Client`s) is a
    UsageError, said when the second client opens."""

    def __init__(self, *, concurrency: int = 16, bwlimit: int | None = None,
                 auto: bool = False) -> None:
        self.concurrency = checks.whole(concurrency, "concurrency", low=1,
                                        high=checks.MAX_CONCURRENCY * 4)
        self.bwlimit = None if bwlimit is None else checks.whole(
            bwlimit, "the bandwidth limit (bytes a second)", low=STEP)
        self.tuner = Tuner(high=self.concurrency, start=min(16, self.concurrency),
                           shortest=TICK) if auto else None
        #: With `auto`, what the network took (where the kernel says): the tuner's measure,
        #: rather than bytes handed to sockets, whose buffers hold seconds of a thin link.
        self.acked = AckedBytes() if auto else None
        #: The pieces allowed in flight now (fixed, or as tuned).
        self.limit = self.tuner.limit if self.tuner is not None else self.concurrency
        self.in_flight = self.most_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(self.limit)
        self._withheld = 0  # places to keep back as pieces end (the limit went down)
        self._bucket: AsyncLimiter | None = None
        self._ticker: asyncio.Task[None] | None = None

    def bind(self) -> None:
        """Take the running event loop as the budget's: its places and bucket are made for
        it (again, if the loop that had them has stopped). UsageError if another loop that
        still runs uses the budget: asyncio's primitives serve one loop."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None and self._loop.is_running():
            raise UsageError(
                "this TransferBudget is in use by another event loop (another thread's "
                "Client, or a loop still running): a budget is shared by the clients of one "
                "event loop; give each thread's Client a budget of its own, or run the "
                "AsyncClients that share it in one loop")
        self._loop = loop
        self._slots = asyncio.Semaphore(self.limit - self.in_flight)
        self._withheld = 0
        if self.bwlimit is not None:  # a bucket of a tenth of a second: bursts stay short
            capacity = max(STEP, self.bwlimit // 10)
            self._bucket = AsyncLimiter(capacity, capacity / self.bwlimit)

    @property
    def auto(self) -> bool:
        """Whether the pieces in flight are tuned (else `concurrency`, fixed)."""
        return self.tuner is not None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the places while a piece is sent."""
        self.bind()
        await self._slots.acquire()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if (self.acked is not None and self.acked.available
                and (self._ticker is None or self._ticker.done())):
            # Pieces start flying: a window starts now (what was acknowledged before, the
            # tail of an earlier upload, is not its).
            self.acked.take()
            self._observe(0, self.in_flight, None)
            self._ticker = asyncio.ensure_future(self._tick())
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            if self._withheld:
                self._withheld -= 1  # the limit went down: this place is not given back
            else:
                self._slots.release()

    def chunk_size(self, wanted: int) -> int:
        """The chunk size for a piece starting now: `wanted`, or less when many pieces are
        allowed in flight, so that their chunks together stay near CHUNK_MEMORY: 1 MiB
        chunks for up to 8 pieces, 512 KiB at 16, 128 KiB at 64. Fixed for the piece: chunks
        that shrank at every read as the limit rose made auto on slow connections stop at
        half the pieces they wanted in two runs of three (benchmarks/tuning.py)."""
        share = CHUNK_MEMORY // max(1, self.limit)
        return max(MIN_CHUNK, min(wanted, share - share % MIN_CHUNK))

    def sent(self, size: int) -> None:
        """`size` more bytes were handed to a connection: with `auto`, the tuner measures
        them, unless the kernel counts what the network acknowledged (then `_tick` measures
        that, and hand-offs are not a measure)."""
        if self.tuner is None or (self.acked is not None and self.acked.active):
            return
        self._observe(size, self.in_flight, None)

    def _observe(self, size: int, in_flight: int, round_trip: float | None) -> None:
        assert self.tuner is not None
        changed = self.tuner.observe(size, time.monotonic(), in_flight, round_trip)
        if changed is not None:
            log.debug("pieces in flight: %d -> %d (%.1f MiB/s measured)", self.limit,
                      changed, self.tuner.history[-1][2] / 2**20)
            self._set_limit(changed)

    async def _tick(self) -> None:
        """While pieces fly, tell the tuner every TICK what the network acknowledged, and
        as pieces in flight no more than the connections that carried some of it: a chunk
        is handed to a connection long before it is sent (a part of two chunks on a thin
        link: both at once, then nothing for its whole time), and a new connection carries
        nothing for a while (its handshake, its request, its first round trip), so a level
        is measured while its connections carry."""
        assert self.acked is not None
        while True:
            await asyncio.sleep(TICK)
            if self.acked.active:
                acknowledged = self.acked.take()
                self._observe(acknowledged, min(self.in_flight, self.acked.carrying),
                              self.acked.round_trip)

    def _set_limit(self, limit: int) -> None:
        more = limit - self.limit
        self.limit = limit
        if more > 0:
            given_back = min(more, self._withheld)  # first, keep back fewer
            self._withheld -= given_back
            for _ in range(more - given_back):
                self._slots.release()
        else:
            self._withheld -= more

    async def spend(self, size: int, granted: Callable[[], None] | None = None) -> None:
        """Wait until `size` more bytes may go on the wire, a STEP at a time; `granted()` is
        called after each step (a part waiting its turn is moving, not stalled)."""
        if self.bwlimit is None:
            return
        self.bind()
        assert self._bucket is not None
        for start in range(0, size, STEP):
            await self._bucket.acquire(min(STEP, size - start))
            if granted is not None:
                granted()
