"""The one retry policy: API calls and pieces alike are retried by `retry` with a `Backoff`.

Waits grow exponentially with full jitter, and a server's `Retry-After` is honoured (up to
`Backoff.longest_wait`). What is worth retrying is the caller's to say: an API call knows
whether it is idempotent, a piece whether its link was refused.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from uploader._errors import UsageError

__all__ = ["Backoff", "retry", "retry_after"]

log = logging.getLogger("uploader")

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How often and how patiently to retry a failed request.

    `attempts` counts every try, the first included: 6 tries span about 15 s of waiting with
    the defaults, enough to ride out a gateway restart without hiding a real outage.
    `base` is the first wait and doubles each time up to `cap`; each wait is drawn uniformly
    below that bound ("full jitter"), so that many parts failing together do not retry in step.
    A server that says how long to wait (`Retry-After`) is waited for, up to `longest_wait`.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0
    longest_wait: float = 60.0

    def __post_init__(self) -> None:
        if (isinstance(self.attempts, bool) or not isinstance(self.attempts, int)
                or self.attempts < 1 or not 0 <= self.base <= self.cap
                or not self.longest_wait >= 0):
            raise UsageError("Backoff needs a whole number of attempts >= 1, "
                             "0 <= base <= cap and longest_wait >= 0")

    def delay(self, failures: int, rng: random.Random | None = None, *,
              asked: float | None = None) -> float:
        """Seconds to wait after the `failures`-th consecutive failure (1-based); at least
        `asked` (the server's Retry-After), never more than `longest_wait`."""
        bound = min(self.cap, self.base * 2 ** (failures - 1))
        drawn = (rng or random).uniform(0, bound)
        return min(max(drawn, asked or 0.0), max(self.longest_wait, drawn))


def retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (an HTTP date is not honoured:
    the backoff's own wait stands)."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


async def retry(attempt: Callable[[], Awaitable[T]], *, backoff: Backoff,
                retryable: Callable[[Exception], bool], what: str,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Await `attempt()` until it succeeds, at most `backoff.attempts` times, while what it
    raises is `retryable`; the last failure is raised. An exception with a `retry_after`
    attribute (seconds) sets the least wait."""
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            failures += 1
            if not retryable(exc) or failures >= backoff.attempts:
                raise
            delay = backoff.delay(failures, asked=getattr(exc, "retry_after", None))
            log.info("%s failed (%s); retry %d in %.1f s", what, exc, failures, delay)
            await sleep(delay)
