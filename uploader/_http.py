"""aiohttp's errors become ours here, and nowhere else (httpx's `map_httpcore_exceptions`).

The API client and the transfer engine run every request inside `http_errors`: a connection
that could not be made, was cut, or timed out comes out as an `UnreachableError` that says
whether the request may have reached the server, with every link's query redacted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp

from uploader._errors import UnreachableError
from uploader._redact import redact

__all__ = ["http_errors", "never_connected"]


def never_connected(exc: BaseException) -> bool:
    """Whether a failed request cannot have reached the server: no connection was made (it
    was refused or timed out, or the host name did not resolve). A TLS failure is not one
    of these: retrying would fail the same way."""
    return (isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
            and not isinstance(exc, aiohttp.ClientSSLError))


@contextlib.contextmanager
def http_errors(target: str, *, job_id: str | None = None) -> Iterator[None]:
    """Raise what aiohttp raises inside as an UnreachableError: "cannot reach `target`"."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise UnreachableError(redact(f"cannot reach {target}: {type(exc).__name__}{detail}"),
                               may_have_arrived=not never_connected(exc),
                               job_id=job_id) from exc
