"""The emulator's own checks of API signatures and OBS presigned URLs.

Deliberately independent of `uploader.api.signing`: if both sides shared one signer, a bug in it
would pass every test. Known-answer vectors from the official SDK pin this code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote

__all__ = ["AuthFailure", "obs_signature", "verify_api_request"]

MAX_CLOCK_SKEW = timedelta(minutes=15)
_AUTH_RE = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=(?P<ak>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


class AuthFailure(Exception):
    """The request's credentials are missing or wrong; the message says which."""


def verify_api_request(
    *,
    method: str,
    raw_path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    secret_of: Callable[[str], str],
    project_id: str,
    now: datetime,
) -> str:
    """Check an AK/SK-signed request as the API gateway would (`secret_of(ak)` gives the SK
    of a known AK, else raises AuthFailure); return the AK it was signed with."""
    match = _AUTH_RE.match(headers.get("Authorization", "").strip())
    if not match:
        raise AuthFailure("missing or malformed Authorization header")
    sk = secret_of(match["ak"])
    _check_date(headers.get("X-Sdk-Date"), now)
    if headers.get("X-Project-Id") != project_id:
        raise AuthFailure("X-Project-Id does not match the project")
    signed = match["signed"].split(";")
    if "host" not in signed or "x-sdk-date" not in signed:
        raise AuthFailure("host and x-sdk-date must be signed")
    lines = []
    for name in signed:
        if name not in headers:
            raise AuthFailure(f"signed header {name} is missing")
        lines.append(f"{name}:{headers[name].strip()}\n")
    # The payload's hash may be replaced only by a header that is itself signed: else a
    # captured signature would pass with any body.
    unsigned = headers.get("X-Sdk-Content-Sha256") if "x-sdk-content-sha256" in signed else None
    payload_hash = unsigned or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([
        method, _uri(raw_path), _query(query_string), "".join(lines), match["signed"],
        payload_hash,
    ])
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"SDK-HMAC-SHA256\n{headers['X-Sdk-Date']}\n{digest}"
    expected = hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["sig"]):
        raise AuthFailure("the signature does not match")
    return match["ak"]


def _check_date(value: str | None, now: datetime) -> None:
    try:
        date = datetime.strptime(value or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise AuthFailure("missing or malformed X-Sdk-Date") from None
    if abs(now - date) > MAX_CLOCK_SKEW:
        raise AuthFailure("X-Sdk-Date is more than 15 minutes from the server's clock")


def _uri(raw_path: str) -> str:
    segments = [quote(segment, safe="~") for segment in unquote(raw_path).split("/")]
    joined = "/".join(segments)
    return joined if joined.endswith("/") else f"{joined}/"


def _query(query_string: str) -> str:
    pairs = sorted(parse_qsl(query_string, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)


def obs_signature(
    *, sk: str, method: str, content_md5: str, content_type: str, expires: str,
    obs_headers: Mapping[str, str], resource: str,
) -> str:
    """OBS V2 query-string signature: base64(HMAC-SHA1(SK, StringToSign))."""
    canonical_obs = "".join(
        f"{name}:{obs_headers[name].strip()}\n" for name in sorted(obs_headers)
    )
    to_sign = f"{method}\n{content_md5}\n{content_type}\n{expires}\n{canonical_obs}{resource}"
    digest = hmac.new(sk.encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
