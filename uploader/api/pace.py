"""The service's flow control, kept on our side, and learned: calls of each API no faster than
the tenant's limit allows (API.md §1b), so that 429s (`APIGW.0308`) are rare rather than the
way a batch finds its limit. Those that come anyway are retried by the one policy, honouring
`Retry-After`.

Each (service, project, API) has one `Pace` in the process, shared by every event loop and
thread (batch rows, clients sharing a budget, the tasks a Celery worker runs one after
another): a tenant's limit is shared by everything that uses the account, this process and
others, so the pace adapts as botocore's adaptive retry mode and Google's SRE client-side
throttling do. It starts at the region's table (or `METASTUDIO_API_RATES`; an endpoint of no
known region is not paced until the service first refuses), falls on a 429 (to the limit the
gateway names in its answer, else to half the rate; one fall for a burst of refusals), and
climbs back additively while calls are answered, never above the table or the limit named.
The limit a gateway names is the tenant's: a pace that learns it while fewer of its own calls
than that got through in the last second knows that others (machines using the same account)
took the rest, so it starts at its share and climbs more gently.
Calls are spaced 1/rate apart (evenly spaced calls never exceed a gateway's token bucket of
the same rate, however it counts). aiolimiter's bucket, used before, belongs to one event
loop; the pace must outlive loops (a Celery task runs each row in a loop of its own), so it
is a timestamp behind a lock, and each caller sleeps in its own loop. Processes of one user
that share a state folder share that timestamp and the rate learned (a small file, locked
while read and written: a call a few milliseconds), so that workers on one machine do not
each take the tenant's whole limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import lock_descriptor

from uploader._log import logger
from uploader._statefile import close_unlocked, open_private
from uploader.api.settings import Settings

__all__ = ["CLIMB", "REGION_RATES", "SHARED_CLIMB", "SHARES", "Pace", "limit_named",
           "rates_for"]

log = logger("uploader.api")

_CN_NORTH_4 = {"create": 1.0, "list": 10.0, "show": 10.0, "update": 10.0, "command": 10.0,
               "delete": 10.0}
_STRICT = {"create": 1.0, "list": 3.0, "show": 3.0, "update": 3.0, "command": 3.0,
           "delete": 3.0}
#: Calls a second per tenant, by region and API (list and show as command: not published).
REGION_RATES: Mapping[str, Mapping[str, float]] = {
    "cn-north-4": _CN_NORTH_4, "cn-east-3": _STRICT, "ap-southeast-3": _STRICT}

#: Calls a second the rate climbs by, for each second of calls answered.
CLIMB = 0.1
#: A pace that learns the limit while others use the account starts at no less than this
#: share of it (the calls of its own that got through in the last second, if more)...
SHARES = 4
#: ... and climbs by this much instead of CLIMB: the others climb too (three machines at the
#: full climb overshoot the tenant's limit three times as often).
SHARED_CLIMB = CLIMB / 2
#: The least rate a pace falls to (a call every 10 s).
FLOOR = 0.1
#: Calls of an API in flight at once while its rate is not known (no table, no refusal yet),
#: in every process sharing the pace: a burst of rows (on every pool process of a Celery
#: worker) does not spend the tenant's limit many times over before it is learned.
UNKNOWN_AT_ONCE = 1
#: Seconds after which a call sent before the rate was known no longer counts as in flight
#: (its process was killed before the answer).
_PENDING_LAPSE = 30.0
#: A shared pace not used for this long (seconds) starts again from the table.
STALE = 600.0
#: How often a call waiting for its place (rate not known) looks again, in seconds.
_LOOK_AGAIN = 0.005
#: The gateway's 429 names the policy's limit: "...over ratelimit,limit:3,time:1 second".
_LIMIT = re.compile(r"limit:\s*(\d+(?:\.\d+)?)\s*,\s*time:\s*(\d+)\s*(second|minute)")

_PACES: dict[tuple[str, ...], Pace] = {}
_PACES_LOCK = threading.Lock()


def rates_for(settings: Settings) -> Mapping[str, float]:
    """The rates that apply: `api_rates` if set, else the region's table (none for an
    endpoint of no known region, such as the emulator's)."""
    if settings.api_rates is not None:
        return settings.api_rates
    return REGION_RATES.get(settings.service_region or "", {})


def limit_named(message: str | None) -> float | None:
    """Calls a second the gateway's 429 message names as its limit, if it names one."""
    match = _LIMIT.search(message or "")
    if match is None:
        return None
    per = 1.0 if match[3] == "second" else 60.0
    return float(match[1]) / (per * float(match[2]))


class Pace:
    """Waits for the turn of one call of one API, and learns the rate from the answers.

    With `shared` (a file in the state folder), the rate, the ceiling and the next call's
    time are kept in that file, under a lock, for every process of this user that paces the
    same (service, project, API): three workers on one machine then share one schedule, as
    they share the tenant's limit. Without it, in this process only.
    """

    def __init__(self, name: str, ceiling: float | None,
                 clock: Callable[[], float] | None = None, shared: Path | None = None) -> None:
        self.name = name
        self._shared = shared
        # Wall-clock time where processes compare times; monotonic time within one.
        self._clock = clock or (time.time if self._shared is not None else time.monotonic)
        self._initial: dict[str, Any] = {"rate": ceiling, "ceiling": ceiling, "next": 0.0,
                                         "settled": 0.0, "recent": [], "through": [],
                                         "shared": False, "pending": []}
        self._memory = dict(self._initial)
        self._lock = threading.Lock()
        self._pending = 0  # calls of this process in `pending` (sent before the rate was known)

    @property
    def rate(self) -> float | None:
        """Calls a second now (None: not paced yet)."""
        with self._state() as state:
            return state["rate"]  # type: ignore[no-any-return]

    @property
    def ceiling(self) -> float | None:
        """The most the rate climbs to (None: not known yet)."""
        with self._state() as state:
            return state["ceiling"]  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The pace's state, held: this process's lock, and the shared file's."""
        with self._lock:
            if self._shared is None:
                yield self._memory
                return
            with _locked_state(self._shared, self._initial) as state:
                yield state

    async def turn(self) -> None:
        """Wait until a call may go; `answered` or `refused` (or `gone`) ends it."""
        while not self._take_turn():
            await asyncio.sleep(_LOOK_AGAIN)  # its loop's own sleep: any loop, any thread

    def _take_turn(self) -> bool:
        with self._state() as state:
            now = self._clock()
            rate = state["rate"]
            if rate is None:
                # Calls not yet answered, of every process sharing the pace (a process
                # killed mid-call leaves its own: they lapse).
                pending = [t for t in state["pending"] if t > now - _PENDING_LAPSE]
                if len(pending) >= UNKNOWN_AT_ONCE:
                    state["pending"] = pending
                    return False
                state["pending"] = [*pending, now]
                self._pending += 1
                _note(state, now)
                return True
            if state["next"] > now + _LOOK_AGAIN:
                return False
            state["next"] = max(now, state["next"]) + 1.0 / rate
            _note(state, now)
            return True

    def gone(self) -> None:
        """A call ended with no answer (the service could not be reached)."""
        with self._state() as state:
            self._ended(state)

    def _ended(self, state: dict[str, Any]) -> None:
        """One call of this process sent while the rate was not known is no longer pending."""
        if self._pending > 0:
            self._pending -= 1
            state["pending"] = state["pending"][1:]

    def answered(self) -> None:
        """A call was answered (not 429): the rate climbs, CLIMB calls a second for each
        second of calls answered (SHARED_CLIMB while others share the limit), never above
        the ceiling."""
        with self._state() as state:
            self._ended(state)
            _note(state, self._clock(), "through")
            rate, ceiling = state["rate"], state["ceiling"]
            if rate is None or ceiling is None or rate >= ceiling:
                return
            climb = SHARED_CLIMB if state["shared"] else CLIMB
            state["rate"] = min(ceiling, rate + climb / rate)
            if int(rate) == int(state["rate"]) and state["rate"] < ceiling:
                return  # said at each whole call a second, and at the ceiling
            now_rate = state["rate"]
        log.debug("%s: calls answered; pace %.2f -> %.2f calls a second", self.name, rate,
                  now_rate)

    def refused(self, message: str | None, retry_after: float | None) -> None:
        """A call was answered 429: the rate falls (once for a burst: refusals of calls sent
        before the fall do not count again), and no call goes before `retry_after`."""
        with self._state() as state:
            self._ended(state)
            now = self._clock()
            if retry_after:
                state["next"] = max(state["next"], now + retry_after)
            if now < state["settled"]:
                return
            named = limit_named(message)
            if named is not None:
                state["ceiling"] = named if state["ceiling"] is None else min(
                    state["ceiling"], named)
            was = state["rate"]
            if was is None or (named is not None and was > named):
                # Not paced yet, or faster than the limit named: start at the limit (or at
                # half of what went in the last second, if none is named); at our share of
                # it if fewer of our calls than the limit got through in the last second:
                # others (machines using the same account) took the rest.
                got = len(_last_second(state["through"], now))
                if named is None:
                    fallen = len(state["recent"]) / 2
                else:
                    fallen = named if got >= named else max(got, named / SHARES)
                    state["shared"] = got < named
            else:
                fallen = was / 2
            state["rate"] = max(FLOOR, fallen)
            if state["ceiling"] is None:
                state["ceiling"] = max(state["rate"], len(state["recent"]))
            state["settled"] = now + 1.0
            rate = state["rate"]
        log.debug("%s: answered 429; pace %s -> %.2f calls a second", self.name,
                  "none" if was is None else f"{was:.2f}", rate)

    @classmethod
    def of(cls, settings: Settings, api: str, folder: Path | None = None) -> Pace:
        """The process's pace for `api` of this service and project; with `folder` (the
        state folder's), shared with the other processes that use it."""
        table = rates_for(settings).get(api)
        key = (settings.endpoint, settings.project_id, api, str(table), str(folder))
        with _PACES_LOCK:
            pace = _PACES.get(key)
            if pace is None:
                shared = None
                if folder is not None:
                    digest = hashlib.sha256("\0".join(key[:4]).encode()).hexdigest()[:24]
                    shared = folder / f"pace-{digest}.json"
                pace = _PACES[key] = cls(api, table, shared=shared)
            return pace


def _note(state: dict[str, Any], now: float, key: str = "recent") -> None:
    """Keep when the calls of the last second went (`recent`), or those that got through."""
    state[key] = [*_last_second(state[key], now), now]


def _last_second(times: list[float], now: float) -> list[float]:
    return [t for t in times if t >= now - 1.0]


@contextlib.contextmanager
def _locked_state(path: Path, initial: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The shared state in `path` (created private, never through a symlink), under an
    exclusive lock for as long as it is held; written back after. A file that does not read
    as a pace (damaged, or planted) starts again from `initial`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = open_private(path, os.O_RDWR, create=True)
    try:
        # Held for a read and a write: waiters poll briefly (filelock: flock, LockFileEx).
        lock_descriptor(fd, poll_interval=0.002)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        state = _valid(raw, initial)
        used = max(state["next"], state["settled"], *state["recent"], *state["through"],
                   *state["pending"])
        if time.time() - used > STALE:
            state = dict(initial)  # learned long ago: the tenant's limits may have changed
        before = dict(state)
        yield state
        if state != before:
            data = json.dumps(state).encode()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
    finally:
        close_unlocked(fd)


def _valid(raw: bytes, initial: dict[str, Any]) -> dict[str, Any]:
    try:
        state = json.loads(raw) if raw else None
    except ValueError:
        state = None
    numbers = ("next", "settled")
    if (not isinstance(state, dict) or set(state) != set(initial)
            or not all(isinstance(state[k], int | float) for k in numbers)
            or not all(isinstance(state[k], list) for k in ("recent", "through", "pending"))
            or not isinstance(state["shared"], bool)
            or any(state[k] is not None and not (isinstance(state[k], int | float)
                                                 and state[k] >= FLOOR)
                   for k in ("rate", "ceiling"))):
        return dict(initial)
    return state
