"""`Limits`: what a client's transfers and calls may use, in one frozen object (httpx's
`Limits`, s3transfer's `TransferConfig`).

One place says how each limit follows from another: the connections from the pieces in
flight (`connections_for`), the retry policy from the retries and windows (`backoff`), the
budget from the concurrency and the bandwidth (`budget`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from uploader import _checks as checks
from uploader._errors import UsageError

if TYPE_CHECKING:
    from uploader._retry import Backoff
    from uploader.transfer.budget import TransferBudget

__all__ = ["API_CONNECTIONS", "AUTO", "Limits", "connections_for"]

#: `concurrency="auto"`: pieces in flight tuned from the throughput (`transfer.tuning`).
AUTO: Literal["auto"] = "auto"
#: Connections beyond the pieces in flight: room for the API calls of the uploads running.
API_CONNECTIONS = 2
#: Pieces in flight at most over the uploads of a client (a batch's rows share them).
MOST_SHARED = 4 * checks.MAX_CONCURRENCY


def connections_for(pieces: int, *, uploads: int = 1) -> int:
    """The HTTP connections a client needs: one for each piece in flight, and room for the
    API calls of `uploads` running at once (at least API_CONNECTIONS)."""
    return pieces + max(API_CONNECTIONS, uploads)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What a client may use. Every value is checked when the object is made: UsageError."""

    #: Pieces in flight at once over every upload of the client: a number (1 to 256; one
    #: upload sends at most 64 of them), or "auto", tuned from the throughput measured, from
    #: 16 up to 64 (the default).
    concurrency: int | Literal["auto"] = AUTO
    #: HTTP connections at most; None: `connections_for` the pieces in flight.
    connections: int | None = None
    #: Bytes a second on the wire over every upload of the client; None: no cap.
    bwlimit: int | None = None
    #: Times a failed request (a piece, an API call) is tried again; None: as often as the
    #: retry window allows (or as `TransferConfig.backoff` says, for pieces).
    retries: int | None = None
    #: Seconds a failing request keeps being retried: an outage shorter than this is ridden
    #: out; None: 180 (or as `TransferConfig.backoff` says, for pieces).
    retry_window: float | None = None
    #: Seconds a call is retried while the service has not answered yet (a wrong address
    #: fails fast); None: `retry_window`.
    first_contact_window: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency != AUTO:
            checks.whole(self.concurrency, "concurrency (a number or 'auto')", low=1,
                         high=MOST_SHARED)
        if self.connections is not None:
            checks.whole(self.connections, "connections", low=1)
        if self.bwlimit is not None:
            checks.whole(self.bwlimit, "bwlimit (bytes a second)", low=1)
        if self.retries is not None:
            checks.whole(self.retries, "retries", low=0)
        if self.retry_window is not None:
            checks.number(self.retry_window, "retry_window")
        if self.first_contact_window is not None:
            checks.number(self.first_contact_window, "first_contact_window")

    @property
    def auto(self) -> bool:
        """Whether the pieces in flight are tuned."""
        return self.concurrency == AUTO

    @property
    def pieces(self) -> int:
        """The most pieces one upload sends at once (auto: the most it may tune up to)."""
        if self.concurrency == AUTO:
            return checks.MAX_CONCURRENCY
        return min(int(self.concurrency), checks.MAX_CONCURRENCY)

    def budget(self) -> TransferBudget:
        """A budget of these limits, for a client that is given none."""
        from uploader.transfer.budget import TransferBudget

        shared = checks.MAX_CONCURRENCY if self.concurrency == AUTO else int(self.concurrency)
        return TransferBudget(concurrency=shared, bwlimit=self.bwlimit, auto=self.auto)

    def backoff(self, base: Backoff, *, first_contact: bool = False) -> Backoff:
        """`base` with the tries and the window these limits set; with `first_contact`, the
        window before the service's first answer too (API calls: a part's first answer
        comes after the API's)."""
        changed: dict[str, object] = {}
        if self.retries is not None:
            changed["attempts"] = self.retries + 1
        if self.retry_window is not None:
            changed["window"] = self.retry_window
        if first_contact and self.first_contact_window is not None:
            changed["first_window"] = self.first_contact_window
        return dataclasses.replace(base, **changed)  # type: ignore[arg-type]

    def checked_with(self, *, budget: TransferBudget | None, session: object) -> None:
        """UsageError for what these limits cannot be given beside: a budget brings its own
        bandwidth cap; a caller's session its own connections."""
        if budget is not None and self.bwlimit is not None:
            raise UsageError("give bwlimit to the budget (TransferBudget(bwlimit=...)), not "
                             "to the limits beside it")
        if session is not None and self.connections is not None:
            raise UsageError("connections cannot be set beside a session: the session's "
                             "connector sets them (aiohttp.TCPConnector(limit=...))")
