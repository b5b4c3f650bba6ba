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
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from aiolimiter import AsyncLimiter

from uploader import _checks as checks

__all__ = ["TransferBudget"]

#: Bytes taken from the bucket at a time: a part waiting for its turn shows progress (and
#: is not taken for stalled) at least this often.
STEP = 64 * 1024


class TransferBudget:
    """At most `concurrency` pieces in flight, and at most `bwlimit` bytes a second put on
    the wire (None: no cap), over every upload that uses this budget."""

    def __init__(self, *, concurrency: int = 16, bwlimit: int | None = None) -> None:
        self.concurrency = checks.whole(concurrency, "concurrency", low=1,
                                        high=checks.MAX_CONCURRENCY * 4)
        self.bwlimit = None if bwlimit is None else checks.whole(
            bwlimit, "the bandwidth limit (bytes a second)", low=STEP)
        self._slots = asyncio.Semaphore(self.concurrency)
        self._bucket = None
        if self.bwlimit is not None:  # a bucket of a tenth of a second: bursts stay short
            capacity = max(STEP, self.bwlimit // 10)
            self._bucket = AsyncLimiter(capacity, capacity / self.bwlimit)

    def slot(self) -> AbstractAsyncContextManager[object]:
        """Hold one of the `concurrency` places while a piece is sent."""
        return self._slots

    async def spend(self, size: int, granted: Callable[[], None] | None = None) -> None:
        """Wait until `size` more bytes may go on the wire, a STEP at a time; `granted()` is
        called after each step (a part waiting its turn is moving, not stalled)."""
        if self._bucket is None:
            return
        for start in range(0, size, STEP):
            await self._bucket.acquire(min(STEP, size - start))
            if granted is not None:
                granted()
