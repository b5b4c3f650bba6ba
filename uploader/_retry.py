"""The one retry policy: API calls and pieces alike are retried by `retry` with a `Backoff`.

Waits grow exponentially with full jitter, and a server's `Retry-After` is honoured (up to
`Backoff.longest_wait`). A request is retried while its failures last less than the
policy's window (3 minutes by default: a gateway restart, a storage failover or a dropped
VPN is ridden out), and at most `attempts` times when that is set. What is worth retrying
is the caller's to say: an API call knows whether it is idempotent, a piece whether its
link was refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from uploader._errors import UsageError
from uploader._log import logger

__all__ = ["Backoff", "retry", "retry_after"]

log = logger()

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How often and how patiently to retry a failed request.

    A request that keeps failing is retried until its failures have lasted `window` seconds
    (180 by default: an outage of two minutes or more is ridden out), and at most `attempts`
    tries in all, the first included, when `attempts` is set (None: as many as the window
    allows). `base` is the first wait and doubles each time up to `cap`; each wait is drawn
    uniformly below that bound ("full jitter"), so that many parts failing together do not
    retry in step. A server that says how long to wait (`Retry-After`) is waited for, up to
    `longest_wait`. `first_window`, when set, is the window of a client that has had no
    answer yet: a wrong address or port fails in seconds, an outage met later is ridden out.
    """

    attempts: int | None = None
    window: float = 180.0
    first_window: float | None = None
    base: float = 0.5
    cap: float = 8.0
    longest_wait: float = 60.0

    def __post_init__(self) -> None:
        if ((self.attempts is not None and (isinstance(self.attempts, bool)
                                            or not isinstance(self.attempts, int)
                                            or self.attempts < 1))
                or not 0 <= self.base <= self.cap or not self.longest_wait >= 0
                or not all(isinstance(w, (int, float)) and 0 <= w < math.inf
                           for w in (self.window, self.first_window) if w is not None)):
            raise UsageError("Backoff needs a whole number of attempts >= 1 (or None), "
                             "windows of seconds >= 0, 0 <= base <= cap and longest_wait >= 0")

    def before_first_answer(self) -> Backoff:
        """The policy for a client that has had no answer yet."""
        if self.first_window is None or self.first_window >= self.window:
            return self
        return dataclasses.replace(self, window=self.first_window)

    def gives_up(self, failures: int, failing_for: float) -> bool:
        """Whether a request that failed `failures` times in a row, for `failing_for`
        seconds since its first failure, is given up."""
        return ((self.attempts is not None and failures >= self.attempts)
                or failing_for >= self.window)

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
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                clock: Callable[[], float] = time.monotonic) -> T:
    """Await `attempt()` until it succeeds, while what it raises is `retryable` and the
    policy does not give up (`Backoff.gives_up`); the last failure is raised. An exception
    with a `retry_after` attribute (seconds) sets the least wait; the last wait ends at the
    window's end, for one last try."""
    failures = 0
    first_failure = 0.0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            failures += 1
            now = clock()
            if failures == 1:
                first_failure = now
            failing_for = now - first_failure
            if not retryable(exc) or backoff.gives_up(failures, failing_for):
                raise
            delay = min(backoff.delay(failures, asked=getattr(exc, "retry_after", None)),
                        max(0.0, backoff.window - failing_for))
            log.info("%s failed (%s); retry %d in %.1f s", what, exc, failures, delay)
            _say_still_failing(what, exc, failing_for, backoff.window, now)
            await sleep(delay)


_last_said = -math.inf


def _say_still_failing(what: str, exc: Exception, failing_for: float, window: float,
                       now: float) -> None:
    """A warning, at most every 15 s for the whole process, once a request has failed for
    5 s: a long outage is ridden out in view, not in silence."""
    global _last_said
    if failing_for >= 5 and now - _last_said >= 15:
        _last_said = now
        log.warning("%s has failed for %.0f s (%s); still retrying, for up to %.0f s in all",
                    what, failing_for, exc, window)
