"""Where to reach MetaStudio and how to sign in, from code, the environment or the official
SDK's credentials file, in the official SDK's order (API.md §1b).

1. explicit `Settings(...)` from code;
2. the environment: `CLOUD_SDK_AK`/`CLOUD_SDK_SK` or the SDK's `HUAWEICLOUD_SDK_AK`/`_SK`
   (with `HUAWEICLOUD_SDK_SECURITY_TOKEN` for temporary keys), `METASTUDIO_AUTH_TOKEN`,
   `METASTUDIO_AUTH_TOKEN_FILE`, or `METASTUDIO_CREDENTIALS=ecs`;
3. the SDK's credentials file (`HUAWEICLOUD_SDK_CREDENTIALS_FILE`, default
   `~/.huaweicloud/credentials`, section `[basic]`);
4. the ECS metadata service, only when `METASTUDIO_CREDENTIALS=ecs` asks for it.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from uploader._errors import Remedy, SettingsError
from uploader._log import logger

__all__ = ["API_NAMES", "ECS", "METADATA_URL", "Settings"]

log = logger()

ENDPOINT = "METASTUDIO_ENDPOINT"
REGION = "METASTUDIO_REGION"
PROJECT_ID = "METASTUDIO_PROJECT_ID"
AK = "CLOUD_SDK_AK"
SK = "CLOUD_SDK_SK"
SDK_AK = "HUAWEICLOUD_SDK_AK"
SDK_SK = "HUAWEICLOUD_SDK_SK"
SDK_TOKEN = "HUAWEICLOUD_SDK_SECURITY_TOKEN"
SDK_PROJECT_ID = "HUAWEICLOUD_SDK_PROJECT_ID"
SDK_FILE = "HUAWEICLOUD_SDK_CREDENTIALS_FILE"
TOKEN = "METASTUDIO_AUTH_TOKEN"
TOKEN_FILE = "METASTUDIO_AUTH_TOKEN_FILE"
CREDENTIALS = "METASTUDIO_CREDENTIALS"
METADATA = "METASTUDIO_METADATA_URL"
CA_BUNDLE = "METASTUDIO_CA_BUNDLE"
API_RATES = "METASTUDIO_API_RATES"
APP_USER_ID = "METASTUDIO_APP_USER_ID"
ALLOW_HTTP = "METASTUDIO_ALLOW_HTTP"

DEFAULT_REGION = "cn-north-4"
#: The ECS metadata service (Huawei Cloud machines only): contacted only when asked for.
METADATA_URL = "http://169.254.169.254"
#: `METASTUDIO_CREDENTIALS`'s value for an ECS or CCE node's agency.
ECS = "ecs"
#: The APIs the service paces per tenant (API.md §1b).
API_NAMES = ("create", "list", "show", "update", "command", "delete")
_REGION_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_HOST_REGION = re.compile(r"^metastudio\.([a-z0-9-]+)\.myhuaweicloud\.com$")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Connection settings; exactly one way to sign in: AK/SK (with `security_token` for
    temporary keys), an IAM `token`, a `token_file` read again when it is refused, or the
    ECS metadata service (`credentials="ecs"`, at `metadata_url`).

    `endpoint` defaults to the public endpoint of `cn-north-4`. Plain `http://` is accepted
    only for loopback hosts (the emulator) unless `allow_http` is set: anything else would
    send signed requests and presigned links in the clear. `ca_bundle`, a PEM file, is
    trusted besides the system's CAs; `api_rates` (calls a second by API name) override
    the region's flow-control table.
    """

    project_id: str
    endpoint: str = f"https://metastudio.{DEFAULT_REGION}.myhuaweicloud.com"
    region: str | None = None
    ak: str | None = None
    sk: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    credentials: str | None = None
    metadata_url: str = METADATA_URL
    ca_bundle: str | None = None
    api_rates: Mapping[str, float] | None = None
    app_user_id: str | None = None
    allow_http: bool = False

    def __post_init__(self) -> None:
        for name in ("project_id", "endpoint", "region", "ak", "sk", "security_token", "token",
                     "token_file", "credentials", "metadata_url", "ca_bundle", "app_user_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SettingsError(f"the setting {name} must be text, not "
                                    f"{type(value).__name__}")
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))
        if not self.project_id:
            raise SettingsError(f"no project id: set {PROJECT_ID} (or {SDK_PROJECT_ID})",
                                variable=PROJECT_ID)
        self._check_credentials()
        self._check_endpoint()
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise SettingsError(f"{CA_BUNDLE} names no readable file: {self.ca_bundle}",
                                variable=CA_BUNDLE)
        if self.api_rates is not None:
            object.__setattr__(self, "api_rates", _rates(self.api_rates))
        if self.app_user_id is not None and not self.app_user_id.isascii():
            raise SettingsError(
                f"{APP_USER_ID} must not contain non-ASCII characters", variable=APP_USER_ID
            )

    def _check_credentials(self) -> None:
        has_keys = bool(self.ak or self.sk)
        ways = [name for name, given in (
            (f"{AK}/{SK}", has_keys), (TOKEN, self.token), (TOKEN_FILE, self.token_file),
            (f"{CREDENTIALS}={ECS}", self.credentials == ECS)) if given]
        if self.credentials not in (None, ECS):
            raise SettingsError(f"{CREDENTIALS} may only be {ECS!r} (the ECS metadata "
                                f"service), not {self.credentials!r}", variable=CREDENTIALS)
        if len(ways) > 1:
            raise SettingsError(f"{' and '.join(ways)} are all set: keep exactly one way to "
                                "authenticate", variable=TOKEN)
        if has_keys and not self.ak:
            raise SettingsError(f"a secret key is set ({SK}, {SDK_SK} or the credentials "
                                f"file's sk) without its access key ({AK}, {SDK_AK} or ak)",
                                variable=AK)
        if has_keys and not self.sk:
            raise SettingsError(f"an access key is set ({AK}, {SDK_AK} or the credentials "
                                f"file's ak) without its secret key ({SK}, {SDK_SK} or sk)",
                                variable=SK)
        if self.security_token and not has_keys:
            raise SettingsError(f"{SDK_TOKEN} is set without the temporary keys it goes "
                                f"with ({SDK_AK}, {SDK_SK})", variable=SDK_TOKEN)
        if not ways:
            raise SettingsError(
                f"no credentials: set {AK} and {SK} (or {SDK_AK} and {SDK_SK}), {TOKEN}, "
                f"{TOKEN_FILE}, or {CREDENTIALS}={ECS} on an ECS with an agency; or write "
                "them to ~/.huaweicloud/credentials", variable=AK)

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
                remedy=Remedy.ALLOW_HTTP,
            )

    @property
    def uses_token(self) -> bool:
        """True when requests authenticate with an IAM token rather than AK/SK."""
        return self.token is not None or self.token_file is not None

    @property
    def service_region(self) -> str | None:
        """The region whose flow-control table applies: the endpoint's, or `region`."""
        match = _HOST_REGION.match(urlsplit(self.endpoint).hostname or "")
        return match[1] if match else self.region

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: str | bool | None
    ) -> Settings:
        """Read settings from `environ` (default `os.environ`), then the SDK's credentials
        file when the environment has no credentials; `overrides` win when not None."""
        env = os.environ if environ is None else environ
        values = _values_of(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        given = ("ak", "sk", "token", "token_file", "credentials")
        if not any(values[k] for k in given):
            _from_credentials_file(env, values)
        return cls(**values)  # type: ignore[arg-type]


def _values_of(env: Mapping[str, str]) -> dict[str, object]:
    """The settings' fields, as the environment gives them."""
    return {
        "endpoint": _endpoint_from(env),
        "region": env.get(REGION) or None,
        "project_id": _one_of(env, PROJECT_ID, SDK_PROJECT_ID) or "",
        "ak": _one_of(env, AK, SDK_AK),
        "sk": _one_of(env, SK, SDK_SK),
        "security_token": env.get(SDK_TOKEN) or None,
        "token": env.get(TOKEN) or None,
        "token_file": env.get(TOKEN_FILE) or None,
        "credentials": (env.get(CREDENTIALS) or "").lower() or None,
        "metadata_url": (env.get(METADATA) or METADATA_URL).rstrip("/"),
        "ca_bundle": env.get(CA_BUNDLE) or None,
        "api_rates": _parse_rates(env[API_RATES]) if env.get(API_RATES) else None,
        "app_user_id": env.get(APP_USER_ID) or None,
        "allow_http": env.get(ALLOW_HTTP, "").lower() in ("1", "true", "yes"),
    }


def _one_of(env: Mapping[str, str], ours: str, sdks: str) -> str | None:
    """The value of `ours` or of the SDK's name for it; both set and differing: an error."""
    mine, theirs = env.get(ours) or None, env.get(sdks) or None
    if mine and theirs and mine != theirs:
        raise SettingsError(f"{ours} and {sdks} are both set, to different values: keep one",
                            variable=ours)
    return mine or theirs


def _from_credentials_file(env: Mapping[str, str], values: dict[str, object]) -> None:
    """Fill in keys (and the project id, if none is set) from the SDK's credentials file."""
    named = env.get(SDK_FILE)
    path = Path(named) if named else Path(env.get("HOME") or Path.home()) / ".huaweicloud" / (
        "credentials")
    if not path.is_file():
        if named:
            raise SettingsError(f"{SDK_FILE} names no file: {named}", variable=SDK_FILE)
        return
    basic = _basic_section(path)
    values.update(ak=basic.get("ak") or None, sk=basic.get("sk") or None,
                  security_token=basic.get("security_token") or values["security_token"])
    if not values["project_id"]:
        values["project_id"] = basic.get("project_id") or ""


def _basic_section(path: Path) -> dict[str, str]:
    """The `[basic]` section of the SDK's credentials file at `path`, its values stripped;
    SettingsError, never quoting a line, if it cannot be read or a value is not one word."""
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise SettingsError(f"cannot read the credentials file {path}: {_why_unread(exc)}",
                            variable=SDK_FILE) from None
    if not parser.has_section("basic"):
        raise SettingsError(f"the credentials file {path} has no [basic] section",
                            variable=SDK_FILE)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the credentials file %s may be read by others: chmod 600 it", path)
    basic = {key: value.strip() for key, value in parser["basic"].items()}
    if any(value.split() != [value] for key, value in basic.items()
           if key in _KEYS_OF_FILE and value):
        raise SettingsError(f"the credentials file {path}: a key's value holds a line break "
                            "or a blank (write each as key = value on one line)",
                            variable=SDK_FILE)
    return basic


#: The values of the credentials file that are one word each.
_KEYS_OF_FILE = ("ak", "sk", "security_token", "project_id")


def _why_unread(exc: Exception) -> str:
    """Why the credentials file could not be read, by line number, never quoting a line: a
    line of it may be a secret (a value wrapped onto the next line)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    if isinstance(exc, configparser.MissingSectionHeaderError):  # a ParsingError: first
        return f"line {exc.lineno} comes before any [section] header"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(number) for number, _ in exc.errors)
        return (f"line(s) {lines} are not `key = value` (a value must stay on its key's "
                "line)")
    if isinstance(exc, configparser.DuplicateOptionError | configparser.DuplicateSectionError):
        return f"line {exc.lineno} repeats a key or section"
    return type(exc).__name__


def _parse_rates(text: str) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in text.split(","):
        name, _, number = item.partition("=")
        try:
            rates[name.strip()] = float(number)
        except ValueError:
            raise SettingsError(f"{API_RATES} is NAME=CALLS_A_SECOND[,...] (e.g. "
                                f"command=3,show=5), not {text!r}", variable=API_RATES) from None
    return rates


def _rates(rates: Mapping[str, float]) -> dict[str, float]:
    unknown = set(rates) - set(API_NAMES)
    bad = [n for n, r in rates.items() if isinstance(r, bool) or not isinstance(r, int | float)
           or not r > 0]
    if unknown or bad:
        raise SettingsError(f"API rates are calls a second (> 0) for {', '.join(API_NAMES)}; "
                            f"not {dict(rates)!r}", variable=API_RATES)
    return {name: float(rate) for name, rate in rates.items()}


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
