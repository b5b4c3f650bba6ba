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
Calls are spaced 1/rate apart (evenly spaced calls never exceed a gateway's token bucket of
the same rate, however it counts). aiolimiter's bucket, used before, belongs to one event
loop; the pace must outlive loops (a Celery task runs each row in a loop of its own), so it
is a timestamp behind a lock, and each caller sleeps in its own loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from uploader._log import logger
from uploader.api.settings import Settings

__all__ = ["CLIMB", "REGION_RATES", "Pace", "limit_named", "rates_for"]

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
#: The least rate a pace falls to (a call every 10 s).
FLOOR = 0.1
#: Calls of an API in flight at once while its rate is not known (no table, no refusal yet):
#: a burst of rows does not spend the tenant's limit many times over before it is learned.
UNKNOWN_AT_ONCE = 2
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
    """Waits for the turn of one call of one API, and learns the rate from the answers."""

    def __init__(self, name: str, ceiling: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.ceiling = ceiling  #: the most it climbs to (None: not known yet)
        self.rate = ceiling  #: calls a second now (None: not paced)
        self._lock = threading.Lock()
        self._next = 0.0  # when the next call may go (time.monotonic)
        self._recent: deque[float] = deque()  # when the calls of the last second went
        self._settled = 0.0  # a refusal before this is of a call sent before the fall
        self._in_flight = 0  # calls between `turn` and their answer, while not paced

    async def turn(self) -> None:
        """Wait until a call may go; `answered` or `refused` (or `gone`) ends it."""
        while not self._take_turn():
            await asyncio.sleep(_LOOK_AGAIN)  # its loop's own sleep: any loop, any thread

    def _take_turn(self) -> bool:
        with self._lock:
            now = self._clock()
            if self.rate is None:
                if self._in_flight >= UNKNOWN_AT_ONCE:
                    return False
                self._in_flight += 1
                self._note(now)
                return True
            if self._next > now + _LOOK_AGAIN:
                return False
            self._next = max(now, self._next) + 1.0 / self.rate
            self._note(now)
            return True

    def _note(self, now: float) -> None:
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()

    def gone(self) -> None:
        """A call ended with no answer (the service could not be reached)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def answered(self) -> None:
        """A call was answered (not 429): the rate climbs, CLIMB calls a second for each
        second of calls answered, never above the ceiling."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if self.rate is None or self.ceiling is None or self.rate >= self.ceiling:
                return
            was, self.rate = self.rate, min(self.ceiling, self.rate + CLIMB / self.rate)
            if int(was) == int(self.rate) and self.rate < self.ceiling:
                return  # said at each whole call a second, and at the ceiling
        log.debug("%s: calls answered; pace %.2f -> %.2f calls a second", self.name, was,
                  self.rate)

    def refused(self, message: str | None, retry_after: float | None) -> None:
        """A call was answered 429: the rate falls (once for a burst: refusals of calls sent
        before the fall do not count again), and no call goes before `retry_after`."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            now = self._clock()
            if retry_after:
                self._next = max(self._next, now + retry_after)
            if now < self._settled:
                return
            named = limit_named(message)
            if named is not None:
                self.ceiling = named if self.ceiling is None else min(self.ceiling, named)
            was = self.rate
            if was is None or (named is not None and was > named):
                # Not paced yet, or faster than the limit named: start at the limit (or at
                # half of what went in the last second, if none is named).
                fallen = named if named is not None else len(self._recent) / 2
            else:
                fallen = was / 2
            self.rate = max(FLOOR, fallen)
            if self.ceiling is None:
                self.ceiling = max(self.rate, len(self._recent))
            self._settled = now + 1.0
        log.debug("%s: answered 429; pace %s -> %.2f calls a second", self.name,
                  "none" if was is None else f"{was:.2f}", self.rate)

    @classmethod
    def of(cls, settings: Settings, api: str) -> Pace:
        """The process's pace for `api` of this service and project."""
        table = rates_for(settings).get(api)
        key = (settings.endpoint, settings.project_id, api, str(table))
        with _PACES_LOCK:
            pace = _PACES.get(key)
            if pace is None:
                pace = _PACES[key] = cls(api, table)
            return pace
