"""Concurrency that tunes itself: how many pieces to keep in flight, from the throughput
they get.

A fixed number is wrong somewhere: on a link where each connection is slow (a long round
trip, a proxy that shapes each connection) more connections carry more, on a narrow link
more only crowd it. `Tuner` climbs from a start: it doubles the pieces in flight while each
doubling brings at least 10 % more bytes a second and holds where one does not (in two
windows running: one may be a pause of the link or the machine), then tries
now and then a quarter more (kept if it pays) and a quarter fewer (kept if it carries as
much: fewer connections for the same throughput), stepping back from a probe that did not
pay, so that it follows a link that changes.

What it is told is, where the kernel counts them (Linux), the bytes the network
acknowledged, every 50 ms, with as pieces in flight those whose connections carried some
(`TransferBudget`): a level is measured once most of its connections carry, and a window lasts
eight round trips of theirs (a tick on loopback; on a far link long enough for new
connections to leave slow start). Elsewhere it is told bytes handed to the sockets, and
new connections first fill their buffers (on loopback, several MiB each), which looks like
throughput the link does not have: while it first climbs that can only make more look
better, so it climbs on windows of 0.15 s (a wave of long parts started late ends late).
After a probe or a step back, the first window only settles; and a window where the pieces
in flight do not match the limit is not measured (after the limit falls, pieces already
sent go on until they end; at the end of a transfer fewer are left). Pure: it is told
bytes, times, pieces in flight and round trips, and answers with the new number;
`TransferBudget` applies it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Tuner"]

#: A step up is kept when it brings at least this much more throughput.
GAIN = 1.10
#: A step down is kept when it keeps at least this much of the throughput.
KEEP = 0.95
#: The most windows between two probes the same way.
_LONGEST_WAIT = 64
#: Where the connections' round trip is known, a window lasts this many of them (at least
#: `shortest`): a new connection's slow start takes about four to reach 2 MiB/s over
#: 100 ms (ten segments, doubled each round trip), then the level must be measured. On
#: loopback that is a tick; elsewhere a window as long as the link needs.
ROUND_TRIPS = 8


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

    def __init__(self, *, low: int = 1, high: int = 64, start: int = 16,
                 window: float = 0.5, grow_window: float = 0.15, shortest: float = 0.05,
                 probe_every: int = 6) -> None:
        if not 1 <= low <= start <= high:
            raise ValueError("Tuner needs 1 <= low <= start <= high")
        self.low, self.high = low, high
        self.limit = start
        self._window, self._grow_window, self._probe_every = window, grow_window, probe_every
        self._shortest = shortest
        self._phase = _Phase.GROW
        self._base: _Level | None = None  # the level the current one is compared with
        # Windows to hold before a probe each way: `probe_every` up (a probe up that does
        # not pay costs nothing), four times that down, doubled after each that did not pay
        # (on a link that needs every connection it costs a quarter of the throughput until
        # undone, the more so as a piece sent on goes on until it ends).
        self._wait = {True: probe_every, False: 4 * probe_every}
        self._since_probe = {True: 0, False: 0}  # hold windows since the last probe each way
        self._since: float | None = None
        self._bytes = 0
        self._settling = False  # the window after a probe or a step back is not measured
        self._doubted: float | None = None  # while climbing, a window that did not pay
        self.history: list[tuple[float, int, float]] = []  # (time, limit, bytes a second)

    def observe(self, sent: int, now: float, in_flight: int | None = None,
                round_trip: float | None = None) -> int | None:
        """`sent` more bytes went out at `now` (seconds, any monotonic clock), with
        `in_flight` pieces being sent (None: as many as the limit) over connections whose
        round trip is `round_trip` seconds (None: not known); the new limit if this ends a
        window that changes it, else None.

        A window measures the limit only while the pieces in flight match it: after the
        limit falls, pieces already sent go on until they end (a part of 8 MiB takes 4 s at
        2 MiB/s), and at the end of a transfer fewer are left than the limit. Windows
        where fewer than three quarters of the limit, or more than the limit, are in flight
        are dropped, and once it has first climbed, the next one only settles."""
        if in_flight is not None and not self.limit * 3 / 4 <= in_flight <= self.limit:
            # While it first climbs, the next window counts at once: what was dropped is
            # pieces that had not begun yet (after a rise, or at the start).
            self._since, self._bytes = now, 0
            self._settling = self._phase is not _Phase.GROW
            return None
        if self._since is None:
            # The first report starts the first window; what it reports went out before.
            self._since = now
            return None
        self._bytes += sent
        elapsed = now - self._since
        if elapsed < self._window_for(round_trip):
            return None
        rate = self._bytes / elapsed
        self._since, self._bytes = now, 0
        if self._settling:
            # New connections first fill their socket buffers, which looks like throughput
            # the link does not have: the window after a change only lets them settle.
            self._settling = False
            return None
        self.history.append((now, self.limit, rate))
        new = self._decide(rate)
        if new is None or new == self.limit:
            return None
        self.limit = new
        # While it first climbs, every window counts: new connections filling their buffers
        # can only make more look better, and a link that takes more is climbed at once.
        self._settling = self._phase is not _Phase.GROW
        return new

    def _window_for(self, round_trip: float | None) -> float:
        """How long a window lasts now: while it first climbs `grow_window`, else `window`;
        where the round trip is known, ROUND_TRIPS of them instead while it climbs (at least
        `shortest`), and at least as many when it holds."""
        climbing = self._phase is _Phase.GROW
        if round_trip is None:
            return self._grow_window if climbing else self._window
        measured = ROUND_TRIPS * round_trip
        return max(self._shortest, measured) if climbing else max(self._window, measured)

    def _decide(self, rate: float) -> int | None:
        base = self._base
        if self._phase is _Phase.GROW:
            if base is None or rate >= base.rate * GAIN:
                self._base, self._doubted = _Level(self.limit, rate), None
                return self._grow()
            if self._doubted is None:
                # One window that says a doubling did not pay may be one where the link or
                # the machine paused (a window is 50 ms on loopback): it is asked again, as
                # stopping the climb costs half the connections until a probe up finds them.
                self._doubted = rate
                return None
            # The last doubling did not pay, twice: hold there rather than step back. The
            # first windows' figures are inflated by buffers filling, so "did not pay" may be
            # wrong, and more pieces never carry less; probes down shed what is not needed.
            self._base, self._doubted = _Level(self.limit, max(rate, self._doubted)), None
            self._hold()
            return None
        assert base is not None
        if self._phase is _Phase.HOLD:
            base.rate = 0.7 * base.rate + 0.3 * rate  # the level's throughput, smoothed
            for way in self._since_probe:
                self._since_probe[way] += 1
            return self._probe()
        # PROBE: compare the tried level with the held one.
        up = self.limit > base.limit
        if up and rate >= base.rate * GAIN:
            self._wait[True] = self._probe_every
            self._base = _Level(self.limit, rate)  # more paid: keep climbing from here
            self._phase = _Phase.GROW
            return self._grow()
        self._hold()
        if not up and rate >= base.rate * KEEP:
            self._wait[False] = 4 * self._probe_every
            self._base = _Level(self.limit, rate)  # as much with fewer: keep fewer
            return None
        if not up:  # a probe up that did not pay cost nothing; one down cost throughput
            self._wait[False] = min(_LONGEST_WAIT, self._wait[False] * 2)
        return base.limit

    def _grow(self) -> int | None:
        if self.limit >= self.high:
            self._hold()
            return None
        return min(self.high, self.limit * 2)

    def _hold(self) -> None:
        self._phase = _Phase.HOLD

    def _probe(self) -> int | None:
        """A probe a quarter up or down, whichever has waited its turn (up first), if the
        bounds leave room for it; else None (hold on)."""
        step = max(1, self.limit // 4)
        targets = {True: min(self.high, self.limit + step),
                   False: max(self.low, self.limit - step)}
        for up in (True, False):
            if self._since_probe[up] >= self._wait[up] and targets[up] != self.limit:
                self._since_probe[up] = 0
                self._phase = _Phase.PROBE
                return targets[up]
        return None
