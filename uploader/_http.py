"""aiohttp's errors become ours here, and nowhere else (httpx's `map_httpcore_exceptions`).

The API client and the transfer engine run every request inside `http_errors`: a connection
that could not be made, was cut, or timed out comes out as an `UnreachableError` that says
whether the request may have reached the server, with every link's query redacted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp

from uploader._errors import SettingsError, UnreachableError
from uploader._redact import redact
from uploader.api.settings import CA_BUNDLE, Settings

__all__ = ["http_errors", "never_connected", "new_session", "tls_context"]


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
    except aiohttp.ClientConnectorCertificateError as exc:
        raise UnreachableError(
            redact(f"cannot reach {target}: its TLS certificate could not be verified "
                   f"({exc.certificate_error}); if your network re-signs TLS (an inspecting "
                   f"proxy), set {CA_BUNDLE} to its CA certificate (a PEM file)"),
            may_have_arrived=False, lasting=True, job_id=job_id) from exc
    except aiohttp.ClientConnectorDNSError as exc:
        # A name the resolver says does not exist is a mistake, not an outage: not retried
        # (a resolver that cannot answer now, EAI_AGAIN, is waited for like any outage).
        missing = getattr(exc.os_error, "errno", None) == socket.EAI_NONAME
        raise UnreachableError(redact(f"cannot reach {target}: {exc}"), may_have_arrived=False,
                               lasting=missing, job_id=job_id) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise UnreachableError(redact(f"cannot reach {target}: {type(exc).__name__}{detail}"),
                               may_have_arrived=not never_connected(exc),
                               job_id=job_id) from exc


def tls_context(settings: Settings) -> ssl.SSLContext | bool:
    """The system's CAs, and `settings.ca_bundle` besides (a TLS-inspecting proxy's CA).
    Without a bundle, True: aiohttp's default verified context, the system's CAs, which it
    builds as it is imported (a context of our own cost 30-50 ms of CPU per session)."""
    if settings.ca_bundle is None:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=settings.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{CA_BUNDLE} ({settings.ca_bundle}) is not a PEM file of "
                            f"certificates: {exc}", variable=CA_BUNDLE) from None
    return context


def new_session(settings: Settings, *, limit: int = 100,
                socket_factory: Callable[[Any], socket.socket] | None = None
                ) -> aiohttp.ClientSession:
    """A session as enterprises need it: the proxy variables honoured (`HTTPS_PROXY`,
    `HTTP_PROXY`, `NO_PROXY`: aiohttp's `trust_env`), the CA bundle trusted, at most
    `limit` connections. Redirects are refused by each request, never followed. With
    `socket_factory`, its sockets (the transfer's meter of acknowledged bytes)."""
    connector = aiohttp.TCPConnector(limit=limit, ssl=tls_context(settings),
                                     socket_factory=socket_factory)
    return aiohttp.ClientSession(connector=connector, trust_env=True)
