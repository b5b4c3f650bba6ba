"""Where to reach MetaStudio and how to authenticate, from the environment or from code."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from uploader._errors import SettingsError

__all__ = ["Settings"]

ENDPOINT = "METASTUDIO_ENDPOINT"
REGION = "METASTUDIO_REGION"
PROJECT_ID = "METASTUDIO_PROJECT_ID"
AK = "CLOUD_SDK_AK"
SK = "CLOUD_SDK_SK"
TOKEN = "METASTUDIO_AUTH_TOKEN"
APP_USER_ID = "METASTUDIO_APP_USER_ID"
ALLOW_HTTP = "METASTUDIO_ALLOW_HTTP"

DEFAULT_REGION = "cn-north-4"
_REGION_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Connection settings; exactly one of AK/SK or token authenticates.

    `endpoint` defaults to the public endpoint of `cn-north-4`. Plain `http://` is accepted
    only for loopback hosts (the emulator) unless `allow_http` is set: anything else would
    send signed requests and presigned links in the clear.
    """

    project_id: str
    endpoint: str = f"https://metastudio.{DEFAULT_REGION}.myhuaweicloud.com"
    ak: str | None = None
    sk: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    app_user_id: str | None = None
    allow_http: bool = False

    def __post_init__(self) -> None:
        for name in ("project_id", "endpoint", "ak", "sk", "token", "app_user_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SettingsError(f"the setting {name} must be text, not "
                                    f"{type(value).__name__}")
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))
        if not self.project_id:
            raise SettingsError(f"no project id: set {PROJECT_ID}", variable=PROJECT_ID)
        self._check_credentials()
        self._check_endpoint()
        if self.app_user_id is not None and not self.app_user_id.isascii():
            raise SettingsError(
                f"{APP_USER_ID} must not contain non-ASCII characters", variable=APP_USER_ID
            )

    def _check_credentials(self) -> None:
        has_keys = bool(self.ak or self.sk)
        if has_keys and self.token:
            raise SettingsError(
                f"both {AK}/{SK} and {TOKEN} are set: keep exactly one way to authenticate",
                variable=TOKEN,
            )
        if has_keys and not self.ak:
            raise SettingsError(f"{SK} is set but {AK} is not", variable=AK)
        if has_keys and not self.sk:
            raise SettingsError(f"{AK} is set but {SK} is not", variable=SK)
        if not has_keys and not self.token:
            raise SettingsError(
                f"no credentials: set {AK} and {SK}, or {TOKEN}", variable=AK
            )

    def _check_endpoint(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                f"{ENDPOINT} must be an http(s) URL such as "
                f"https://metastudio.{DEFAULT_REGION}.myhuaweicloud.com, not {self.endpoint!r}",
                variable=ENDPOINT,
            )
        if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
            raise SettingsError(
                f"{ENDPOINT} must be the service's address alone (scheme, host and port), "
                f"such as https://metastudio.{DEFAULT_REGION}.myhuaweicloud.com, without a "
                f"path, query or user: {parts.scheme}://{parts.hostname}"
                f"{parts.path or ''} ...", variable=ENDPOINT)
        if parts.scheme == "http" and not self.allow_http and not _is_loopback(parts.hostname):
            raise SettingsError(
                f"{ENDPOINT} uses plain http on a non-loopback host ({parts.hostname}): use https,"
                f" or set {ALLOW_HTTP}=1 if you really mean it", variable=ENDPOINT,
                remedy="allow_http",
            )

    @property
    def uses_token(self) -> bool:
        """True when requests authenticate with an IAM token rather than AK/SK."""
        return self.token is not None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: str | bool | None
    ) -> Settings:
        """Read settings from `environ` (default `os.environ`); `overrides` win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, str | bool | None] = {
            "endpoint": _endpoint_from(env),
            "project_id": env.get(PROJECT_ID, ""),
            "ak": env.get(AK) or None,
            "sk": env.get(SK) or None,
            "token": env.get(TOKEN) or None,
            "app_user_id": env.get(APP_USER_ID) or None,
            "allow_http": env.get(ALLOW_HTTP, "").lower() in ("1", "true", "yes"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _endpoint_from(env: Mapping[str, str]) -> str:
    if env.get(ENDPOINT):
        return env[ENDPOINT]
    region = env.get(REGION) or DEFAULT_REGION
    if not _REGION_RE.match(region):
        raise SettingsError(f"{REGION} is not a region name: {region!r}", variable=REGION)
    return f"https://metastudio.{region}.myhuaweicloud.com"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
