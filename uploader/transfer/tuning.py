"""Concurrency that tunes itself: how many pieces to keep in flight, from the throughput
they get.

A fixed number is wrong somewhere: on a link where each connection is slow (a long round
trip, a proxy that shapes each connection) more connections carry more, on a narrow link
more only crowd it. `Tuner` climbs from a start: it doubles the pieces in flight while each
doubling brings at least 10 % more bytes a second, steps back to the last level that paid
when one does not, then holds, trying now and then a quarter more (kept if it pays) and a
quarter fewer (kept if it carries as much: fewer connections for the same throughput), so
that it follows a link that changes. Pure: it is told bytes and times, and answers with the
new number; `TransferBudget` applies it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Tuner"]

#: A step up is kept when it brings at least this much more throughput.
GAIN = 1.10
#: A step down is kept when it keeps at least this much of the throughput.
KEEP = 0.95


class _Phase(enum.Enum):
    GROW = "grow"
    HOLD = "hold"
    PROBE = "probe"


@dataclass
class _Level:
    limit: int
    rate: float


class Tuner:
    """Pieces in flight between `low` and `high`, starting at `start`. Feed it with
    `observe(bytes, now)` as bytes go out; it returns a new limit when it changes one. A
    window of `window` seconds (`grow_window` while it first climbs) measures each level."""

    def __init__(self, *, low: int = 1, high: int = 64, start: int = 8,
                 window: float = 0.5, grow_window: float = 0.25,
                 probe_every: int = 6) -> None:
        if not 1 <= low <= start <= high:
            raise ValueError("Tuner needs 1 <= low <= start <= high")
        self.low, self.high = low, high
        self.limit = start
        self._window, self._grow_window, self._probe_every = window, grow_window, probe_every
        self._phase = _Phase.GROW
        self._base: _Level | None = None  # the level the current one is compared with
        self._held = 0
        self._up_next = True  # the direction of the next probe
        self._since: float | None = None
        self._bytes = 0
        self.history: list[tuple[float, int, float]] = []  # (time, limit, bytes a second)

    def observe(self, sent: int, now: float) -> int | None:
        """`sent` more bytes went out at `now` (seconds, any monotonic clock); the new limit
        if this ends a window that changes it, else None."""
        if self._since is None:
            self._since = now  # the first bytes start the first window
        self._bytes += sent
        elapsed = now - self._since
        if elapsed < (self._grow_window if self._phase is _Phase.GROW else self._window):
            return None
        rate = self._bytes / elapsed
        self._since, self._bytes = now, 0
        self.history.append((now, self.limit, rate))
        new = self._decide(rate)
        if new is None or new == self.limit:
            return None
        self.limit = new
        return new

    def _decide(self, rate: float) -> int | None:
        base = self._base
        if self._phase is _Phase.GROW:
            if base is None or rate >= base.rate * GAIN:
                self._base = _Level(self.limit, rate)
                return self._grow()
            self._hold()
            return base.limit  # the last doubling did not pay
        assert base is not None
        if self._phase is _Phase.HOLD:
            base.rate = 0.7 * base.rate + 0.3 * rate  # the level's throughput, smoothed
            self._held += 1
            return self._probe() if self._held >= self._probe_every else None
        # PROBE: compare the tried level with the held one.
        if self.limit > base.limit and rate >= base.rate * GAIN:
            self._base = _Level(self.limit, rate)  # more paid: keep climbing from here
            self._phase = _Phase.GROW
            return self._grow()
        self._hold()
        if self.limit < base.limit and rate >= base.rate * KEEP:
            self._base = _Level(self.limit, rate)  # as much with fewer: keep fewer
            return None
        return base.limit

    def _grow(self) -> int | None:
        if self.limit >= self.high:
            self._hold()
            return None
        return min(self.high, self.limit * 2)

    def _hold(self) -> None:
        self._phase, self._held = _Phase.HOLD, 0

    def _probe(self) -> int | None:
        assert self._base is not None
        step = max(1, self.limit // 4)
        up, down = min(self.high, self.limit + step), max(self.low, self.limit - step)
        if self._up_next and up == self.limit:
            self._up_next = False
        if not self._up_next and down == self.limit:
            self._up_next = True
        target = up if self._up_next else down
        self._up_next = not self._up_next
        if target == self.limit:
            self._held = 0
            return None
        self._phase = _Phase.PROBE
        return target
