"""Presigned links in both of OBS's forms (API.md §5), and their checks.

V2: `AccessKeyId`, `Expires`, `Signature` (HMAC-SHA1 over method, Content-MD5, Content-Type,
expiry, the `x-obs-*` headers and query keys, and the resource). V4: `X-Amz-Algorithm`,
`X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders` (host, and
content-type for a PUT), `X-Amz-Signature`, over an unsigned payload. Either may carry the
signer's security token (`x-obs-security-token`, `X-Amz-Security-Token`); with
`early_expiry`, a link is refused that long after it was issued, whatever it says, as a link
signed with temporary keys dies with their token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import web

from uploader.emulator._auth import obs_signature

__all__ = ["BUCKET", "Denied", "LinkSigner"]

BUCKET = "metastudio-emulator"
_V4_REGION = "cn-north-4"
_V4_DATE = "%Y%m%dT%H%M%SZ"


class Denied(Exception):
    """A storage request refused: status, OBS error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


#: The signed forms of a link: OBS's own V2, the S3-compatible V2, V4 (API.md §5).
LINK_STYLES = ("v2", "v2-s3", "v4")


def dialect(query: Mapping[str, str]) -> str:
    """The header prefix OBS answers a link's request with: `x-amz-` for the S3-compatible
    forms (V2 with `AWSAccessKeyId`, V4), `x-obs-` for its own (API.md §5)."""
    return "x-amz-" if "AWSAccessKeyId" in query or "X-Amz-Signature" in query else "x-obs-"


class LinkSigner:
    """Signs and checks the storage's links, in `style` "v2" (OBS's own form), "v2-s3"
    (the S3-compatible V2: `AWSAccessKeyId`, `x-amz-security-token`) or "v4"."""

    def __init__(self, *, ak: str, sk: str, url_ttl: int, style: str = "v2",
                 security_token: bool = False, early_expiry: float | None = None) -> None:
        if style not in LINK_STYLES:
            raise ValueError(f"link style is one of {', '.join(LINK_STYLES)}")
        self.ak, self._sk, self.url_ttl, self.style = ak, sk, url_ttl, style
        self.token = secrets.token_urlsafe(32) if security_token else None
        self.early_expiry = early_expiry

    def presign(self, scheme: str, host: str, method: str, key: str, *,
                sub: Mapping[str, str], content_type: str, expires: int) -> str:
        path = f"/{BUCKET}/{quote(key)}"
        if self.style == "v4":
            query = self._v4_query(method, host, path, sub, content_type, expires)
        else:
            query = self._v2_query(method, key, sub, content_type, expires,
                                   s3=self.style == "v2-s3")
        return f"{scheme}://{host}{path}?{query}"

    def check(self, request: web.Request, key: str) -> str:
        """The request's signature if its link is valid now, else Denied."""
        q = request.query
        if ".." in key.split("/") or key.startswith("/") or "\\" in key:
            raise Denied(400, "InvalidObjectName", "The object key is not valid")
        if "X-Amz-Signature" in q:
            signature, issued, expires = self._check_v4(request)
        elif {"AccessKeyId", "Expires", "Signature"} <= q.keys():
            signature, issued, expires = self._check_v2(request, key, s3=False)
        elif {"AWSAccessKeyId", "Expires", "Signature"} <= q.keys():
            signature, issued, expires = self._check_v2(request, key, s3=True)
        else:
            raise Denied(403, "AccessDenied", "Anonymous access is forbidden")
        now = time.time()
        if now >= expires:
            raise Denied(403, "AccessDenied", "Request has expired")
        if self.early_expiry is not None and now >= issued + self.early_expiry:
            raise Denied(403, "AccessDenied", "Request has expired (the security token of "
                                              "its signer has expired)")
        return signature

    # ---- V2 -----------------------------------------------------------------------------

    def _v2_query(self, method: str, key: str, sub: Mapping[str, str], content_type: str,
                  expires: int, *, s3: bool) -> str:
        prefix, ak_name = ("x-amz-", "AWSAccessKeyId") if s3 else ("x-obs-", "AccessKeyId")
        signed = {f"{prefix}security-token": self.token} if self.token else {}
        signature = obs_signature(sk=self._sk, method=method, content_md5="",
                                  content_type=content_type, expires=str(expires),
                                  obs_headers=signed, resource=_resource(key, sub))
        pairs = [*sub.items(), (ak_name, self.ak), ("Expires", str(expires)),
                 *signed.items(), ("Signature", signature)]
        return "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs)

    def _check_v2(self, request: web.Request, key: str, *, s3: bool
                  ) -> tuple[str, float, float]:
        q = request.query
        prefix, ak_name = ("x-amz-", "AWSAccessKeyId") if s3 else ("x-obs-", "AccessKeyId")
        sub = {k: q[k] for k in ("partNumber", "uploadId") if k in q}
        signed = {k.lower(): v for k, v in request.headers.items()
                  if k.lower().startswith(prefix)}
        signed |= {k.lower(): v for k, v in q.items() if k.lower().startswith(prefix)}
        self._check_token(signed.get(f"{prefix}security-token"))
        expected = obs_signature(
            sk=self._sk, method=request.method,
            content_md5=request.headers.get("Content-MD5", ""),
            content_type=request.headers.get("Content-Type", ""),
            expires=q["Expires"], obs_headers=signed, resource=_resource(key, sub))
        if q[ak_name] != self.ak or not hmac.compare_digest(expected, q["Signature"]):
            raise _mismatch()
        if not q["Expires"].isdigit():
            raise Denied(403, "AccessDenied", "Request has expired")
        expires = float(q["Expires"])
        return q["Signature"], expires - self.url_ttl, expires

    # ---- V4 -----------------------------------------------------------------------------

    def _v4_query(self, method: str, host: str, path: str, sub: Mapping[str, str],
                  content_type: str, expires: int) -> str:
        issued = datetime.now(UTC)
        date = issued.strftime(_V4_DATE)
        signed = "content-type;host" if content_type else "host"
        params = {**sub, "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                  "X-Amz-Credential": f"{self.ak}/{date[:8]}/{_V4_REGION}/s3/aws4_request",
                  "X-Amz-Date": date, "X-Amz-Expires": str(max(1, expires - int(time.time()))),
                  "X-Amz-SignedHeaders": signed}
        if self.token:
            params["X-Amz-Security-Token"] = self.token
        headers = {"host": host, "content-type": content_type}
        params["X-Amz-Signature"] = self._v4_signature(method, path, params, headers, signed)
        return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in params.items())

    def _check_v4(self, request: web.Request) -> tuple[str, float, float]:
        q = dict(request.query)
        try:
            ak, date8, region, service, end = q["X-Amz-Credential"].split("/")
            issued = datetime.strptime(q["X-Amz-Date"], _V4_DATE).replace(tzinfo=UTC)
            lifetime = int(q["X-Amz-Expires"])
            signed = q["X-Amz-SignedHeaders"]
        except (KeyError, ValueError):
            raise Denied(403, "AccessDenied", "The V4 query parameters are incomplete") from None
        if (ak, date8, region, service, end) != (self.ak, q["X-Amz-Date"][:8], _V4_REGION, "s3",
                                                "aws4_request"):
            raise _mismatch()
        self._check_token(q.get("X-Amz-Security-Token"))
        headers = {"host": request.host,
                   "content-type": request.headers.get("Content-Type", "")}
        given = q.pop("X-Amz-Signature")
        expected = self._v4_signature(request.method, request.raw_path.split("?", 1)[0], q,
                                      headers, signed)
        if not hmac.compare_digest(expected, given):
            raise _mismatch()
        start = issued.timestamp()
        return given, start, start + lifetime

    def _v4_signature(self, method: str, path: str, params: Mapping[str, str],
                      headers: Mapping[str, str], signed: str) -> str:
        names = signed.split(";")
        canonical = "\n".join([
            method, path, "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params.items())),
            "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in names), signed,
            "UNSIGNED-PAYLOAD"])
        date = params["X-Amz-Date"]
        scope = f"{date[:8]}/{_V4_REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = f"AWS4{self._sk}".encode()
        for part in (date[:8], _V4_REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()

    def _check_token(self, given: str | None) -> None:
        if self.token is not None and not hmac.compare_digest(given or "", self.token):
            raise Denied(403, "InvalidAccessKeyId" if given is None else "AccessDenied",
                         "The security token of this link is missing or invalid")


def _mismatch() -> Denied:
    return Denied(403, "SignatureDoesNotMatch", "The request signature we calculated does not "
                  "match the signature you provided")


def _enc(text: str) -> str:
    return quote(text, safe="-_.~")


def _resource(key: str, sub: Mapping[str, str]) -> str:
    query = "&".join(f"{k}={sub[k]}" for k in sorted(sub))
    return f"/{BUCKET}/{key}" + (f"?{query}" if query else "")
