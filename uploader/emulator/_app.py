"""The emulator's HTTP application: authentication and request ids around the API
(`_api`), the object storage (`_storage`), the review (`_review`) and the faults
(`_faults`), all over one durable store (`_store`)."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from uploader.emulator._api import Api
from uploader.emulator._auth import AuthFailure, verify_api_request
from uploader.emulator._faults import Faults
from uploader.emulator._gateway import API_NAMES, Gateway, TemporaryKeys
from uploader.emulator._links import LINK_STYLES, LinkSigner
from uploader.emulator._review import Reviewer
from uploader.emulator._storage import BUCKET, ObjectStorage
from uploader.emulator._store import Store
from uploader.emulator._voice import VoiceApi

__all__ = ["EMULATOR", "Emulator", "EmulatorConfig", "build_app", "build_metadata_app"]

_JOBS = "/v1/{project_id}/digital-human-training-manage/user/jobs"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """What the emulator accepts and which faults it injects.

    The default keys are the emulator's own, printed when it starts: they protect nothing.
    """

    data_dir: Path
    project_id: str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9"
    ak: str = "EMULATORAKEXAMPLE0001"
    sk: str = field(default="emulator-sk-not-a-secret-0000000000000000", repr=False)
    token: str = field(default="emulator-token-not-a-secret", repr=False)
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    reset_rate: float = 0.0
    link_rate: float | None = None
    total_rate: float | None = None  #: bytes a second over every body at once
    url_ttl: int = 86400
    update_resets_parts: bool = False
    #: The smallest part but the last the storage assembles: OBS's 100 KB, or S3's 5 MiB
    #: (a confirm of smaller parts answers EntityTooSmall).
    min_part_size: int = 100 * 1024
    review_delay: float = 0.5
    seed: int | None = None
    credential_ttl: float | None = None  #: serve temporary keys that live this long
    tls_cert: Path | None = None  #: serve https with this certificate (PEM) ...
    tls_key: Path | None = None  #: ... and its key
    api_rates: dict[str, float] = field(default_factory=dict)  #: calls a second, by API
    review_outcome: str | None = None  #: "STATE[:ERROR_CODE]" every review ends in
    #: "STATE[:ERROR_CODE]" every voice job's review ends in (default: SUCCEED, unless the
    #: audit finds an error in the files)
    voice_review_outcome: str | None = None
    #: OBS's signed link form: "v2" (its own), "v2-s3" (S3-compatible V2) or "v4"; answered
    #: with `x-obs-*` headers for its own form, `x-amz-*` for the others.
    link_style: str = "v2"
    link_security_token: bool = False  #: links carry their signer's security token
    link_early_expiry: float | None = None  #: links refused this long after their issue
    move_delay: float = 0.0  #: seconds before a single file reaches its download link
    etag_style: str = "md5"  #: "sse": ETags of an encrypted bucket, not the body's MD5

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate", "reset_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        positive = {"link_rate": self.link_rate, "total_rate": self.total_rate,
                    "credential_ttl": self.credential_ttl,
                    "link_early_expiry": self.link_early_expiry, "url_ttl": self.url_ttl}
        wrong = [name for name, value in positive.items() if value is not None and value <= 0]
        if wrong or self.move_delay < 0:
            raise ValueError(f"{', '.join(wrong) or 'move_delay'}: seconds or bytes a second "
                             "must be positive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        for name in ("review_outcome", "voice_review_outcome"):
            value = getattr(self, name)
            if value is not None and not re.fullmatch(r"[A-Z_]+(:[A-Za-z0-9.]+)?", value):
                raise ValueError(f"{name} is STATE or STATE:ERROR_CODE")
        if self.link_style not in LINK_STYLES or self.etag_style not in ("md5", "sse"):
            raise ValueError(f"link_style is one of {', '.join(LINK_STYLES)}; etag_style is "
                             "md5 or sse")
        if set(self.api_rates) - set(API_NAMES) or not all(
                rate > 0 for rate in self.api_rates.values()):
            raise ValueError(f"api_rates are calls a second (> 0) by API: {', '.join(API_NAMES)}")


class Emulator:
    """One emulator instance: its store, storage, API, reviewer and faults."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.faults = Faults(fail_rate=config.fail_rate, drop_rate=config.drop_rate,
                             reset_rate=config.reset_rate, link_rate=config.link_rate,
                             seed=config.seed)
        self.faults.total_rate = config.total_rate
        signer = LinkSigner(ak=config.ak, sk=config.sk, url_ttl=config.url_ttl,
                            style=config.link_style, security_token=config.link_security_token,
                            early_expiry=config.link_early_expiry)
        self.storage = ObjectStorage(signer=signer, store=self.store, faults=self.faults,
                                     move_delay=config.move_delay, etag_style=config.etag_style)
        self.reviewer = Reviewer(self.store, config.review_delay, config.review_outcome)
        self.api = Api(project_id=config.project_id, store=self.store, storage=self.storage,
                       reviewer=self.reviewer, faults=self.faults,
                       update_resets_parts=config.update_resets_parts,
                       min_part_size=config.min_part_size)
        self.voice = VoiceApi(self.store, self.storage, delay=config.review_delay,
                              outcome=config.voice_review_outcome)
        self.keys = TemporaryKeys(config.credential_ttl or 0.0)
        self.token = config.token  #: the IAM token accepted now (a test may rotate it)
        self.gateway = Gateway(config.api_rates)

    @web.middleware
    async def request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.faults.note_connection(request.transport)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.setdefault("X-Request-Id", uuid.uuid4().hex)
            raise
        response.headers.setdefault("X-Request-Id", uuid.uuid4().hex)
        return response

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/") or request.match_info.http_exception is not None:
            return await handler(request)  # no such path: 404 (or 405), as the gateway answers
        body = await request.read()
        try:
            self._check_auth(request, body)
        except AuthFailure as exc:
            return web.json_response(
                {"error_code": "APIGW.0301",
                 "error_msg": f"Incorrect IAM authentication information: {exc}"},
                status=401,
            )
        return await handler(request)

    def _check_auth(self, request: web.Request, body: bytes) -> None:
        cfg = self.config
        if request.match_info.get("project_id") != cfg.project_id:
            raise AuthFailure("the project id in the path is not the caller's project")
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            if "Authorization" in request.headers:
                raise AuthFailure("both X-Auth-Token and Authorization were sent")
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                raise AuthFailure("the token is not valid")
            return
        ak = verify_api_request(
            method=request.method, raw_path=request.raw_path.split("?", 1)[0],
            query_string=request.query_string, headers=request.headers, body=body,
            secret_of=self._secret_of, project_id=cfg.project_id, now=datetime.now(UTC),
        )
        if ak != cfg.ak:  # temporary keys: valid with their security token, until they expire
            self.keys.check(ak, request.headers)
        elif "X-Security-Token" in request.headers:
            # IAM: a security token belongs to the temporary keys it was issued with; beside
            # permanent keys it is refused, not ignored.
            raise AuthFailure("a security token was sent with permanent keys, which have none")

    def _secret_of(self, ak: str) -> str:
        if hmac.compare_digest(ak, self.config.ak):
            return self.config.sk
        return self.keys.secret_of(ak)

    @web.middleware
    async def flow_control(self, request: web.Request, handler: Handler
                           ) -> web.StreamResponse:
        """Over an API's rate (`api_rates`), 429 `APIGW.0308` as the gateway answers, and a
        line on stderr for each."""
        refused = self.gateway.refuse(request)
        return refused if refused is not None else await handler(request)

    async def on_startup(self, app: web.Application) -> None:
        for job in self.store.jobs.values():
            if job["state"] == "AUTO_VERIFYING":
                self.reviewer.schedule(job)

    async def on_cleanup(self, app: web.Application) -> None:
        await self.reviewer.stop()
        await self.voice.stop()
        self.store.close()


EMULATOR = web.AppKey("emulator", Emulator)


def build_app(config: EmulatorConfig) -> web.Application:
    """The aiohttp application of an emulator keeping its state in `config.data_dir`."""
    emulator = Emulator(config)
    api, storage = emulator.api, emulator.storage
    app = web.Application(
        middlewares=[emulator.request_id, emulator.flow_control, emulator.authenticate,
                     emulator.faults.rewrite_answers],
        client_max_size=1024**2,
    )
    app[EMULATOR] = emulator
    app.router.add_post(_JOBS, api.create_job)
    app.router.add_get(_JOBS, api.list_jobs)
    app.router.add_get(_JOBS + "/{job_id}", api.show_job)
    app.router.add_put(_JOBS + "/{job_id}", api.update_job)
    app.router.add_delete(_JOBS + "/{job_id}", api.delete_job)
    app.router.add_post(_JOBS + "/{job_id}/command", api.command)
    emulator.voice.routes(app)
    app.router.add_put(f"/{BUCKET}/{{key:.+}}", storage.put_object,
                       expect_handler=storage.expect_continue)
    app.router.add_get(f"/{BUCKET}/{{key:.+}}", storage.get_object)
    app.on_response_prepare.append(storage.stamp)
    app.on_startup.append(emulator.on_startup)
    app.on_cleanup.append(emulator.on_cleanup)
    return app


def build_metadata_app(emulator: Emulator) -> web.Application:
    """The ECS metadata service's two paths, issuing `emulator`'s temporary keys."""
    app = web.Application()
    app.router.add_put("/meta-data/latest/api/token", emulator.keys.session_token)
    app.router.add_get("/openstack/latest/securitykey", emulator.keys.security_key)
    return app
