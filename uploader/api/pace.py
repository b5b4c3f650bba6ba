"""The service's flow control, kept on our side: calls of each API no faster than the
region's table allows (API.md §1b), so that 429s (`APIGW.0308`) are rare rather than the way
a batch finds its limit. Those that come anyway are retried by the one policy, honouring
`Retry-After`.

Each (service, project, API) has one pace in the process (per event loop), shared by every
client and every upload that runs in it. A pace lets one call through every 1/rate seconds
(aiolimiter's leaky bucket, one call deep): evenly spaced calls never exceed a gateway's
token bucket of the same rate, however it counts.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping

from aiolimiter import AsyncLimiter

from uploader.api.settings import Settings

__all__ = ["REGION_RATES", "Pace", "rates_for"]

_CN_NORTH_4 = {"create": 1.0, "list": 10.0, "show": 10.0, "update": 10.0, "command": 10.0,
               "delete": 10.0}
_STRICT = {"create": 1.0, "list": 3.0, "show": 3.0, "update": 3.0, "command": 3.0,
           "delete": 3.0}
#: Calls a second per tenant, by region and API (list and show as command: not published).
REGION_RATES: Mapping[str, Mapping[str, float]] = {
    "cn-north-4": _CN_NORTH_4, "cn-east-3": _STRICT, "ap-southeast-3": _STRICT}

_PACES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], Pace]] = (
    weakref.WeakKeyDictionary())


def rates_for(settings: Settings) -> Mapping[str, float]:
    """The rates that apply: `api_rates` if set, else the region's table (none for an
    endpoint of no known region, such as the emulator's)."""
    if settings.api_rates is not None:
        return settings.api_rates
    return REGION_RATES.get(settings.service_region or "", {})


class Pace:
    """Waits for the turn of one call of one API."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._limiter = AsyncLimiter(1, 1 / rate)

    async def turn(self) -> None:
        await self._limiter.acquire()

    @classmethod
    def of(cls, settings: Settings, api: str) -> Pace | None:
        """The process's pace for `api` of this service and project (None: unpaced)."""
        rate = rates_for(settings).get(api)
        if rate is None:
            return None
        paces = _PACES.setdefault(asyncio.get_running_loop(), {})
        key = (settings.endpoint, settings.project_id, api, str(rate))
        return paces.setdefault(key, cls(rate))
