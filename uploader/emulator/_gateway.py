"""What the API gateway and the ECS metadata service do around the API: temporary keys
(issued by the emulator's own metadata paths, accepted with their security token until they
expire) and flow control (429 `APIGW.0308` over an API's rate, per tenant)."""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from uploader.emulator._auth import AuthFailure

__all__ = ["API_NAMES", "Gateway", "TemporaryKeys", "api_of"]

API_NAMES = ("create", "list", "show", "update", "command", "delete")
_SIGNED = re.compile(r"SignedHeaders=([^,\s]+)")
_JOBS = re.compile(r"^/v1/[^/]+/digital-human-training-manage/user/jobs(/[^/]+)?(/command)?/?$")
_VOICES = re.compile(r"^/v1/[^/]+/voice-training-manage/user/(.+?)/?$")
#: The voice paths by flow-control table: creates, reads, and the rest (confirms, commits).
_VOICE_CREATE = re.compile(r"^(basic|middle|advance|third-party|short)-jobs$")


class TemporaryKeys:
    """Keys that live `ttl` seconds, each with its security token, as an agency's are."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.issued = 0  #: key sets handed out so far
        self._keys: dict[str, tuple[str, str, float]] = {}  # ak: (sk, token, expires)
        self._sessions: set[str] = set()

    def secret_of(self, ak: str) -> str:
        if ak not in self._keys:
            raise AuthFailure("unknown access key")
        return self._keys[ak][0]

    def check(self, ak: str, headers: Mapping[str, str]) -> None:
        """A request signed with temporary keys must carry their token, signed."""
        _, token, expires = self._keys[ak]
        signed = _SIGNED.search(headers.get("Authorization", ""))
        if signed is None or "x-security-token" not in signed[1].split(";"):
            raise AuthFailure("temporary keys need their X-Security-Token, signed")
        if not secrets.compare_digest(headers.get("X-Security-Token", ""), token):
            raise AuthFailure("the security token does not belong to these keys")
        if time.time() >= expires:
            raise AuthFailure("the security token has expired")

    async def session_token(self, request: web.Request) -> web.Response:
        """PUT /meta-data/latest/api/token: a session token for the key requests."""
        token = secrets.token_hex(16)
        self._sessions.add(token)
        return web.Response(text=token)

    async def security_key(self, request: web.Request) -> web.Response:
        """GET /openstack/latest/securitykey: fresh temporary keys, in the SDK's JSON."""
        if request.headers.get("X-Metadata-Token") not in self._sessions:
            return web.Response(status=401, text="the metadata token is missing or invalid")
        ak, sk, token = ("TMP" + secrets.token_hex(8).upper(), secrets.token_hex(20),
                         secrets.token_urlsafe(48))
        expires = time.time() + self.ttl
        self._keys[ak] = (sk, token, expires)
        self.issued += 1
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return web.json_response({"credential": {
            "access": ak, "secret": sk, "securitytoken": token, "expires_at": stamp}})


def api_of(request: web.Request) -> str | None:
    """Which API of the flow-control table a request calls (None: not an API call)."""
    path = request.path
    voice = _VOICES.match(path)
    if voice is not None:
        return _voice_api(voice[1], request.method)
    match = _JOBS.match(path)
    if match is None:
        return None
    if match[2]:
        return "command"
    if match[1] is None:
        return {"POST": "create", "GET": "list"}.get(request.method)
    return {"GET": "show", "PUT": "update", "DELETE": "delete"}.get(request.method)


def _voice_api(rest: str, method: str) -> str:
    if method == "POST" and _VOICE_CREATE.match(rest):
        return "create"
    if method == "GET":
        return "list" if rest in ("jobs", "short-jobs") else "show"
    return "delete" if method == "DELETE" else "command"


class Gateway:
    """Token buckets per tenant and API, `rates` calls a second (each as deep as its rate)."""

    def __init__(self, rates: Mapping[str, float]) -> None:
        self.rates = dict(rates)
        self.calls: Counter[str] = Counter()  #: API calls received, by API
        self.refused: Counter[str] = Counter()  #: 429s answered, by API
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # tokens, when

    def refuse(self, request: web.Request) -> web.Response | None:
        api = api_of(request)
        if api is None:
            return None
        self.calls[api] += 1
        rate = self.rates.get(api)
        if rate is None:
            return None
        key = (request.match_info.get("project_id", ""), api)
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (rate, now))
        tokens = min(rate, tokens + (now - then) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return None
        self._buckets[key] = (tokens, now)
        self.refused[api] += 1
        print(f"APIGW.0308 {api}: {request.method} {request.path} over {rate:g}/s",
              file=sys.stderr, flush=True)
        body: dict[str, Any] = {
            "error_code": "APIGW.0308",
            "error_msg": f"The throttling threshold has been reached: policy user over "
                         f"ratelimit,limit:{rate:g},time:1 second"}
        return web.json_response(body, status=429)
