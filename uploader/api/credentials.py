"""What the API client signs with: one object per way of signing in, asked before every
request (`current`) and once more after a 401 (`refresh`).

Static keys and tokens never change. A token file is read again after a 401 (an outside
refresher rotates it). Temporary keys from the ECS metadata service (an agency's) are
fetched when first needed and again well before they expire (`REFRESH_BEFORE`, or a third of
their life when that is shorter), and after a 401: the way the official SDK's
`MetadataAccessor` does it (API.md §1b). The metadata service is contacted by nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from uploader._errors import CredentialsError
from uploader._log import logger
from uploader.api.settings import ECS, METADATA, TOKEN_FILE, Settings

__all__ = ["Credentials", "MetadataKeys", "Signing", "StaticCredentials", "TokenFile",
           "credentials_for"]

log = logger("uploader.api")

#: Temporary keys are refreshed this long before they expire (the official SDK's margin).
REFRESH_BEFORE = 40 * 60.0
_TOKEN_PATH = "/meta-data/latest/api/token"
_KEYS_PATH = "/openstack/latest/securitykey"
_NO_AGENCY = "Please configure Cloud Service Agency first"
_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)


@dataclass(frozen=True)
class Signing:
    """What one request is signed with: AK/SK (and a security token for temporary keys), or
    an IAM token."""

    ak: str | None = None
    sk: str | None = None
    security_token: str | None = None
    token: str | None = None


class Credentials:
    """Where a client's `Signing` comes from."""

    async def current(self) -> Signing:
        """What to sign the next request with."""
        raise NotImplementedError

    async def refresh(self, refused: Signing) -> bool:
        """After a 401 for a request signed with `refused`: whether there is something new
        to sign with (then the request is sent once more)."""
        return False


class StaticCredentials(Credentials):
    """Keys or a token given once."""

    def __init__(self, signing: Signing) -> None:
        self._signing = signing

    async def current(self) -> Signing:
        return self._signing


class TokenFile(Credentials):
    """An IAM token in a file that something else keeps fresh: read when first needed and
    again after a 401."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._signing: Signing | None = None

    async def current(self) -> Signing:
        if self._signing is None:
            self._signing = Signing(token=await asyncio.to_thread(self._read))
        return self._signing

    async def refresh(self, refused: Signing) -> bool:
        token = await asyncio.to_thread(self._read)
        self._signing = Signing(token=token)
        if token != refused.token:
            log.debug("the token file %s holds a new token", self._path)
        return token != refused.token

    def _read(self) -> str:
        try:
            token = self._path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CredentialsError(f"cannot read the token file {self._path} ({TOKEN_FILE}): "
                                   f"{exc.strerror or exc}", source=TOKEN_FILE) from None
        if not token:
            raise CredentialsError(f"the token file {self._path} ({TOKEN_FILE}) is empty",
                                   source=TOKEN_FILE)
        return token


class MetadataKeys(Credentials):
    """An ECS or CCE node's agency keys, from the metadata service at `url`."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")
        self._signing: Signing | None = None
        self._renew_at = 0.0
        self._session_token: str | None = None
        self._lock: asyncio.Lock | None = None

    async def current(self) -> Signing:
        if self._signing is None or time.time() >= self._renew_at:
            await self._fetch(stale=self._signing)
        assert self._signing is not None
        return self._signing

    async def refresh(self, refused: Signing) -> bool:
        await self._fetch(stale=refused)
        return self._signing != refused

    async def _fetch(self, *, stale: Signing | None) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._signing is not None and self._signing != stale and (
                    time.time() < self._renew_at):
                return  # another request fetched them while this one waited
            # Never through a proxy: the metadata service is on the machine's own link.
            async with aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=False) as session:
                keys = await self._keys(session)
            self._signing, expires = _parse(keys, self._url)
            left = expires - time.time()
            self._renew_at = expires - min(REFRESH_BEFORE, left / 3)
            log.debug("temporary keys from the metadata service, valid for %.0f s", left)

    async def _keys(self, session: aiohttp.ClientSession) -> bytes:
        if self._session_token is None:
            await self._new_session_token(session)
        for attempt in range(2):
            headers = {"X-Metadata-Token": self._session_token or ""}
            async with session.get(self._url + _KEYS_PATH, headers=headers,
                                   allow_redirects=False) as response:
                body = await response.read()
            if response.status == 200:
                return body
            if response.status == 401 and attempt == 0 and _NO_AGENCY.encode() not in body:
                await self._new_session_token(session)
                continue
            break
        why = _NO_AGENCY if _NO_AGENCY.encode() in body else f"HTTP {response.status}"
        raise CredentialsError(f"the ECS metadata service at {self._url} gave no keys ({why}):"
                               " does this machine have an agency?", source=METADATA)

    async def _new_session_token(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.put(self._url + _TOKEN_PATH, allow_redirects=False,
                                   headers={"X-Metadata-Token-Ttl-Seconds": "21600"}
                                   ) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CredentialsError(
                f"cannot reach the ECS metadata service at {self._url} ({type(exc).__name__})"
                f": {ECS} credentials work only on a Huawei Cloud machine (or set {METADATA})",
                source=METADATA) from exc
        # 404/405/503: a service without session tokens; the keys are asked for without one.
        self._session_token = text.strip() if response.status == 200 else None


def _parse(body: bytes, url: str) -> tuple[Signing, float]:
    """The keys and their expiry (epoch seconds) in the metadata service's JSON (the SDK's
    field names and their alternatives)."""
    try:
        data = json.loads(body)
        found = data.get("credential") or data.get("credentials") or data
        ak = found.get("access") or found.get("accessKeyId")
        sk = found.get("secret") or found.get("secretAccessKey")
        token = found.get("securitytoken") or found.get("securityToken")
        expires = datetime.fromisoformat(found.get("expires_at") or found.get("expiration"))
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    except (ValueError, TypeError, AttributeError):
        raise CredentialsError(f"the ECS metadata service at {url} answered keys that cannot "
                               "be read", source=METADATA) from None
    if not (isinstance(ak, str) and isinstance(sk, str) and isinstance(token, str)):
        raise CredentialsError(f"the ECS metadata service at {url} answered no keys",
                               source=METADATA)
    return Signing(ak=ak, sk=sk, security_token=token), expires.timestamp()


def credentials_for(settings: Settings) -> Credentials:
    """The credentials the settings name."""
    if settings.credentials == ECS:
        return MetadataKeys(settings.metadata_url)
    if settings.token_file is not None:
        return TokenFile(settings.token_file)
    return StaticCredentials(Signing(ak=settings.ak, sk=settings.sk,
                                     security_token=settings.security_token,
                                     token=settings.token))
