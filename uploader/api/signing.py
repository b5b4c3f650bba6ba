"""SDK-HMAC-SHA256 request signing, as the official huaweicloudsdkcore signer does it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import quote, unquote

__all__ = ["ALGORITHM", "DATE_FORMAT", "authorization", "canonical_query"]

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def authorization(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
    date: datetime,
) -> str:
    """The `Authorization` value for a request whose `headers` (all of them signed) are final."""
    signed = sorted(name.lower() for name in headers if "_" not in name)
    values = {name.lower(): str(value).strip() for name, value in headers.items()}
    canonical_request = "\n".join([
        method.upper(),
        _canonical_uri(path),
        canonical_query(query),
        "".join(f"{name}:{values[name]}\n" for name in signed),
        ";".join(signed),
        hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256,
    ])
    string_to_sign = "\n".join([
        ALGORITHM,
        date.strftime(DATE_FORMAT),
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    signature = hmac.new(sk.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"


def canonical_query(query: Iterable[tuple[str, str]]) -> str:
    """Sorted `key=value` pairs, each side percent-encoded; also the query string to send."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query))


def _canonical_uri(path: str) -> str:
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def _encode(text: str) -> str:
    return quote(text, safe="~")
