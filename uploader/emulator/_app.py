"""The emulator's HTTP application: the MetaStudio API and the object storage behind it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web

from uploader.emulator._auth import AuthFailure, obs_signature, verify_api_request
from uploader.emulator._review import review
from uploader.emulator._store import Store

__all__ = ["EMULATOR", "Emulator", "EmulatorConfig", "build_app"]

log = logging.getLogger("uploader.emulator")

BUCKET = "metastudio-emulator"
MIN_PART = 100 * 1024
MAX_PARTS = 1000
UPDATABLE = frozenset({"WAIT_FILE_UPLOAD", "AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED"})
_CHUNK = 1024 * 1024
_BATCH = 4 * 1024 * 1024
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
    url_ttl: int = 86400
    update_resets_parts: bool = False
    review_delay: float = 0.5
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate", "reset_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.link_rate is not None and self.link_rate <= 0:
            raise ValueError("link_rate must be positive")
        if self.url_ttl < 1:
            raise ValueError("url_ttl must be at least 1 second")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mss(status: int, message: str, code: str = "MSS.00000003") -> web.Response:
    return web.json_response({"error_code": code, "error_msg": message}, status=status)


def _obs_error(status: int, code: str, message: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message><RequestId>{uuid.uuid4().hex}</RequestId>"
            "</Error>")
    return web.Response(status=status, text=body, content_type="application/xml")


class _BadRequest(Exception):
    pass


class Emulator:
    """Handlers and state of one emulator instance."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.store = Store(config.data_dir)
        self.rng = random.Random(config.seed)
        self.fail_rate = config.fail_rate
        self.drop_rate = config.drop_rate
        self.link_rate = config.link_rate
        self.url_ttl = config.url_ttl
        self.reviews: set[asyncio.Task[None]] = set()
        self.reset_rate = config.reset_rate
        #: The statuses a `fail_rate` failure answers with, one drawn at random.
        self.fail_statuses: tuple[int, ...] = (500, 503)
        self.lose_confirms = 0
        self.rewrite: Callable[[web.Request, Any], Any] | None = None
        #: What happened to each part's PUTs, by (job id, part number): attempts, refused
        #: (403/404), failed (injected 5xx), reset (cut by the emulator mid-body), cut (by
        #: the client mid-body), stored, dropped (stored, then the answer cut).
        self.ledger: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)

    def totals(self) -> Counter[str]:
        """The ledger summed over all parts (attempts, refused, failed, stored, ...)."""
        return sum(self.ledger.values(), Counter())

    # ---- plumbing ---------------------------------------------------------------------

    @web.middleware
    async def request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.setdefault("X-Request-Id", uuid.uuid4().hex)
            raise
        response.headers.setdefault("X-Request-Id", uuid.uuid4().hex)
        return response

    @web.middleware
    async def rewrite_answers(self, request: web.Request,
                              handler: Handler) -> web.StreamResponse:
        """Let a test mangle API answers (`self.rewrite`), to test clients against them."""
        response = await handler(request)
        if self.rewrite is None or not request.path.startswith("/v1/"):
            return response
        assert isinstance(response, web.Response) and response.body is not None
        changed = self.rewrite(request, json.loads(bytes(response.body)))  # type: ignore[arg-type]
        if isinstance(changed, bytes):
            return web.Response(status=response.status, body=changed,
                                content_type="text/html")
        return web.json_response(changed, status=response.status)

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
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
            if not hmac.compare_digest(token.encode(), cfg.token.encode()):
                raise AuthFailure("the token is not valid")
            return
        verify_api_request(
            method=request.method, raw_path=request.raw_path.split("?", 1)[0],
            query_string=request.query_string, headers=request.headers, body=body,
            ak=cfg.ak, sk=cfg.sk, project_id=cfg.project_id, now=datetime.now(UTC),
        )

    def _job(self, request: web.Request) -> dict[str, Any]:
        job = self.store.jobs.get(request.match_info["job_id"])
        if job is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error_code": "MSS.00000003",
                                 "error_msg": f"job {request.match_info['job_id']} not found"}),
                content_type="application/json",
            )
        return job

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise _BadRequest("the body is not JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest("the body is not a JSON object")
        return body

    # ---- the API ----------------------------------------------------------------------

    async def create_job(self, request: web.Request) -> web.Response:
        try:
            body = await self._json_body(request)
            name = body.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 64:
                raise _BadRequest("name is required (1 to 64 characters)")
            count = _part_count(body.get("video_multipart_count", 1))
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        job_id = uuid.uuid4().hex
        now = _now()
        job: dict[str, Any] = {
            "job_id": job_id, "name": name, "state": "WAIT_FILE_UPLOAD",
            "project_id": self.config.project_id, "asset_id": None,
            "create_time": now, "last_update_time": now,
            "contact": body.get("contact"), "batch_name": body.get("batch_name"),
            "tags": body.get("tags"), "model_version": body.get("model_version", "V3"),
            "matting_type": "AI", "model_resolution": "1080P",
            "app_user_id": request.headers.get("X-App-UserId"),
            "is_background_replacement": body.get("is_background_replacement", True),
            "operation_logs": [_log_entry("USER_CREATE_JOD", "USER")],
            "upload": None, "video": False,
        }
        self.store.jobs[job_id] = job
        urls = self._open_upload(request, job, count, keep_parts=False)
        self.store.save()
        return web.json_response(self._urls_answer(request, job, urls))

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            offset = _int_in(q.get("offset", "0"), "offset", 0, 10**9)
            limit = _int_in(q.get("limit", "10"), "limit", 1, 100)
            sort_key = q.get("sort_key", "create_time")
            if sort_key not in ("create_time", "update_time", "asset_order"):
                raise _BadRequest("sort_key")
            if q.get("sort_dir", "desc") not in ("asc", "desc"):
                raise _BadRequest("sort_dir")
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        jobs = list(self.store.jobs.values())
        if "state" in q:
            wanted = set(q["state"].split(","))
            jobs = [j for j in jobs if j["state"] in wanted]
        for key in ("job_id", "batch_name", "name"):
            if key in q:
                jobs = [j for j in jobs if j.get(key) == q[key]]
        if "create_since" in q:  # RFC 3339 in one format: text order is time order
            jobs = [j for j in jobs if j["create_time"] >= q["create_since"]]
        if "create_until" in q:
            jobs = [j for j in jobs if j["create_time"] <= q["create_until"]]
        field_name = "last_update_time" if sort_key == "update_time" else "create_time"
        jobs.sort(key=lambda j: j[field_name], reverse=q.get("sort_dir", "desc") == "desc")
        page = jobs[offset:offset + limit]
        return web.json_response(
            {"count": len(jobs), "jobs": [_basic_info(j) for j in page]}
        )

    async def show_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        detail = _basic_info(job) | {
            "operation_logs": job["operation_logs"], "comment_logs": [],
            "is_background_replacement": job["is_background_replacement"],
            "training_video_download_url": (
                self._presign(request, "GET", f"videos/{job['job_id']}.mp4", {})
                if job["video"] else None
            ),
        }
        return web.json_response(detail)

    async def update_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job["state"] not in UPDATABLE:
            return _mss(400, f"Invalid parameter: job in state {job['state']} cannot be updated")
        try:
            body = await self._json_body(request)
            current = job["upload"]["count"] if job["upload"] else 1
            count = _part_count(body.get("video_multipart_count", current))
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        for key in ("contact", "batch_name", "tags", "is_background_replacement"):
            if key in body:
                job[key] = body[key]
        keep = (job["upload"] is not None and count == job["upload"]["count"]
                and job["state"] == "WAIT_FILE_UPLOAD" and not self.config.update_resets_parts)
        if job["state"] != "WAIT_FILE_UPLOAD":
            job["state"] = "WAIT_FILE_UPLOAD"
            job["video"] = False
            job["operation_logs"].append(_log_entry("USER_UPDATE_VIDEO", "USER"))
        job["last_update_time"] = _now()
        urls = self._open_upload(request, job, count, keep_parts=keep)
        self.store.save()
        return web.json_response(self._urls_answer(request, job, urls))

    async def command(self, request: web.Request) -> web.Response:
        job = self._job(request)
        try:
            body = await self._json_body(request)
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        command = body.get("command")
        if command == "GET_MULTIPART_UPLOADED":
            return web.json_response(self._uploaded(job))
        if command == "CONFIRM_MULTIPART_UPLOADED":
            answer = await self._confirm(job)
            if self.lose_confirms > 0:
                self.lose_confirms -= 1
                _cut(request)
            return web.json_response(answer)
        if not isinstance(command, str) or not command:
            return _mss(400, "Invalid parameter: command is required")
        return web.json_response(
            {"commond_result": "EXCUTE_FAILED",
             "excute_failed_msg": f"command {command} is not emulated"}
        )

    async def list_voice_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            offset = _int_in(q.get("offset", "0"), "offset", 0, 10**9)
            limit = _int_in(q.get("limit", "10"), "limit", 1, 100)
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        jobs = self.store.voice_jobs
        if "state" in q:
            jobs = [j for j in jobs if j["state"] in q["state"].split(",")]
        return web.json_response({"count": len(jobs), "jobs": jobs[offset:offset + limit]})

    def _uploaded(self, job: dict[str, Any]) -> dict[str, Any]:
        parts = self.store.parts(job["upload"]["upload_id"]) if job["upload"] else {}
        return {
            "commond_result": "EXCUTE_SUCCESS",
            "multipart_data": [{"part_number": str(n), "etag": f'"{parts[n].etag}"'}
                               for n in sorted(parts)],
        }

    async def _confirm(self, job: dict[str, Any]) -> dict[str, Any]:
        def failed(message: str) -> dict[str, Any]:
            return {"commond_result": "EXCUTE_FAILED", "excute_failed_msg": message}

        if job["state"] != "WAIT_FILE_UPLOAD" or job["upload"] is None:
            return failed(f"the job is in state {job['state']}, not WAIT_FILE_UPLOAD")
        count = job["upload"]["count"]
        parts = self.store.parts(job["upload"]["upload_id"])
        missing = [n for n in range(1, count + 1) if n not in parts]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            return failed(f"{len(missing)} of {count} parts are missing: {shown}")
        small = [n for n in range(1, count) if parts[n].size < MIN_PART]
        if small:
            return failed(f"part {small[0]} is smaller than 100 KB and is not the last part")
        job.update(state="AUTO_VERIFYING", last_update_time=_now())
        job["operation_logs"].append(_log_entry("USER_VERIFYING_SUBMITTED", "USER"))
        self.store.save()
        self.schedule_review(job)
        return {"commond_result": "EXCUTE_SUCCESS"}

    def schedule_review(self, job: dict[str, Any]) -> None:
        """Assemble (if not yet done) and review the job's video in the background."""
        task = asyncio.get_running_loop().create_task(self._review(job["job_id"]))
        self.reviews.add(task)
        task.add_done_callback(self.reviews.discard)

    async def _review(self, job_id: str) -> None:
        try:
            await self._assemble_and_review(job_id)
        except Exception as exc:  # a broken review must not leave the job reviewing forever
            log.exception("review of job %s failed", job_id)
            job = self.store.jobs[job_id]
            job.update(state="AUTO_VERIFY_FAILED", last_update_time=_now())
            job["operation_logs"].append(_log_entry(
                "SYSTEM_VERIFY_FAILED", "SYSTEM", f"the video could not be processed: {exc}",
                "44005903"))
            self.store.save()

    async def _assemble_and_review(self, job_id: str) -> None:
        job = self.store.jobs[job_id]
        loop = asyncio.get_running_loop()
        if not job["video"]:
            upload = job["upload"]
            parts = self.store.parts(upload["upload_id"])
            ordered = [parts[n].path for n in range(1, upload["count"] + 1)]
            target = self.store.video_path(job_id)
            await loop.run_in_executor(None, _assemble, ordered, target)
            self.store.drop_upload(upload["upload_id"])
            job.update(video=True, upload=None)
            self.store.save()
        await asyncio.sleep(self.config.review_delay)
        verdict = await loop.run_in_executor(None, review, self.store.video_path(job_id))
        if verdict is None:
            job["state"] = "MANUAL_VERIFYING"
            job["operation_logs"].append(_log_entry("SYSTEM_VERIFY_SUCCESS", "SYSTEM"))
        else:
            code, description = verdict
            job["state"] = "AUTO_VERIFY_FAILED"
            job["operation_logs"].append(
                _log_entry("SYSTEM_VERIFY_FAILED", "SYSTEM", description, code)
            )
        job["last_update_time"] = _now()
        self.store.save()

    def _open_upload(
        self, request: web.Request, job: dict[str, Any], count: int, *, keep_parts: bool
    ) -> list[str]:
        upload = job["upload"]
        if not keep_parts:
            if upload is not None:
                self.store.drop_upload(upload["upload_id"])
            upload = {"upload_id": uuid.uuid4().hex, "count": count, "last_expires": 0}
            job["upload"] = upload
        expires = max(int(time.time()) + self.url_ttl, upload["last_expires"] + 1)
        upload["last_expires"] = expires
        key = f"training/{job['job_id']}/video.mp4"
        return [
            self._presign(request, "PUT", key,
                          {"partNumber": str(n), "uploadId": upload["upload_id"]},
                          content_type="application/octet-stream", expires=expires)
            for n in range(1, count + 1)
        ]

    def _urls_answer(
        self, request: web.Request, job: dict[str, Any], urls: list[str]
    ) -> dict[str, Any]:
        def single(name: str) -> str:
            return self._presign(request, "PUT", f"assets/{job['job_id']}/{name}", {},
                                 content_type="application/octet-stream")

        return {
            "job_id": job["job_id"], "training_video_upload_url": urls,
            "cover_upload_url": single("cover.jpg"),
            "id_card_image1_upload_url": single("id_card_image1.jpg"),
            "id_card_image2_upload_url": single("id_card_image2.jpg"),
            "grant_file_upload_url": single("grant_file.pdf"),
        }

    def _presign(
        self, request: web.Request, method: str, key: str, sub: dict[str, str], *,
        content_type: str = "", expires: int | None = None,
    ) -> str:
        expires = expires or int(time.time()) + self.url_ttl
        resource = _resource(key, sub)
        signature = obs_signature(
            sk=self.config.sk, method=method, content_md5="", content_type=content_type,
            expires=str(expires), obs_headers={}, resource=resource,
        )
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in sub.items())
        query += (f"{'&' if query else ''}AccessKeyId={self.config.ak}&Expires={expires}"
                  f"&Signature={quote(signature, safe='')}")
        return f"{request.scheme}://{request.host}/{BUCKET}/{quote(key)}?{query}"

    # ---- the object storage -----------------------------------------------------------

    def _check_presigned(self, request: web.Request, key: str) -> tuple[str, int]:
        """Check an OBS V2 presigned request; return its signature and Expires, or raise."""
        q = request.query
        if not {"AccessKeyId", "Expires", "Signature"} <= q.keys():
            raise _ObsDenied(403, "AccessDenied", "Anonymous access is forbidden")
        if ".." in key.split("/") or key.startswith("/") or "\\" in key:
            raise _ObsDenied(400, "InvalidObjectName", "The object key is not valid")
        sub = {k: q[k] for k in ("partNumber", "uploadId") if k in q}
        obs_headers = {k.lower(): v for k, v in request.headers.items()
                       if k.lower().startswith("x-obs-")}
        expected = obs_signature(
            sk=self.config.sk, method=request.method,
            content_md5=request.headers.get("Content-MD5", ""),
            content_type=request.headers.get("Content-Type", ""),
            expires=q["Expires"], obs_headers=obs_headers, resource=_resource(key, sub),
        )
        if q["AccessKeyId"] != self.config.ak or not hmac.compare_digest(
            expected, q["Signature"]
        ):
            raise _ObsDenied(403, "SignatureDoesNotMatch",
                             "The request signature we calculated does not match the "
                             "signature you provided")
        if not q["Expires"].isdigit() or int(q["Expires"]) < time.time():
            raise _ObsDenied(403, "AccessDenied", "Request has expired")
        return q["Signature"], int(q["Expires"])

    async def put_object(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        ledger = self.ledger[(key.split("/")[1] if key.count("/") >= 2 else "",
                              _int_or_zero(request.query.get("partNumber")))]
        ledger["attempts"] += 1
        try:
            signature, _ = self._check_presigned(request, key)
            if signature in self.store.spent:
                raise _ObsDenied(403, "AccessDenied", "This URL has already been used")
            upload_id, number = self._part_target(request, key)
        except _ObsDenied as exc:
            ledger["refused"] += 1
            await _discard(request)
            return exc.response()
        if self.rng.random() < self.fail_rate:
            ledger["failed"] += 1
            await _discard(request)
            return _obs_error(self.rng.choice(self.fail_statuses), "ServiceUnavailable",
                              "Please reduce your request rate (injected fault)")
        if self.rng.random() < self.reset_rate:
            ledger["reset"] += 1
            await request.content.read(max(1, (request.content_length or 2) // 2))
            _cut(request)
        try:
            received = await self._receive(request)
        except asyncio.CancelledError:
            ledger["cut"] += 1  # the client went away mid-body
            raise
        if received is None:
            ledger["cut"] += 1
            return web.Response(status=400)
        tmp, etag = received
        if upload_id is None:
            tmp.unlink()
        else:
            self.store.commit_part(upload_id, number, etag, tmp)
            ledger["stored"] += 1
        self.store.spend(signature)
        if self.rng.random() < self.drop_rate:
            ledger["dropped"] += 1
            _cut(request)
        return web.Response(status=200, headers={"ETag": f'"{etag}"'})

    def _part_target(self, request: web.Request, key: str) -> tuple[str | None, int]:
        q = request.query
        if "uploadId" not in q:
            return None, 0
        job = next((j for j in self.store.jobs.values()
                    if j["upload"] and j["upload"]["upload_id"] == q["uploadId"]), None)
        if (job is None or job["state"] != "WAIT_FILE_UPLOAD"
                or key != f"training/{job['job_id']}/video.mp4"):
            raise _ObsDenied(404, "NoSuchUpload", "The specified upload does not exist")
        number = q.get("partNumber", "")
        if not number.isdigit() or not 1 <= int(number) <= job["upload"]["count"]:
            raise _ObsDenied(400, "InvalidArgument", "partNumber is out of range")
        return q["uploadId"], int(number)

    async def _receive(self, request: web.Request) -> tuple[Path, str] | None:
        """Stream the body to a temporary file; None (and no file) if it did not all arrive.

        Received data is hashed and written in a worker thread, a batch at a time, so that
        the event loop goes on receiving (hashlib and file writes release the GIL). With a
        link rate set (it may change while a body arrives), the body is read no faster, and
        each read is stored before the next.
        """
        tmp = self.store.new_tmp()
        digest = hashlib.md5()
        received = 0
        paced_from, paced_bytes = time.monotonic(), 0
        loop = asyncio.get_running_loop()
        try:
            with tmp.open("wb", buffering=0) as out:
                batch: list[bytes] = []
                batched = 0
                while chunk := await (request.content.read(_pace_chunk(self.link_rate))
                                      if self.link_rate else request.content.readany()):
                    batch.append(chunk)
                    batched += len(chunk)
                    received += len(chunk)
                    # On a paced link each read is stored at once, while the pacing waits:
                    # the body is done when its last byte arrives, as on a real server.
                    if batched >= (_pace_chunk(self.link_rate) if self.link_rate else _BATCH):
                        await loop.run_in_executor(None, _store_batch, out, digest, batch)
                        batch, batched = [], 0
                    rate = self.link_rate
                    if not rate:
                        paced_from, paced_bytes = time.monotonic(), 0
                        continue
                    paced_bytes += len(chunk)
                    ahead = paced_bytes / rate - (time.monotonic() - paced_from)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                await loop.run_in_executor(None, _store_batch, out, digest, batch)
            expected = request.content_length
            if expected is not None and received != expected:
                raise ConnectionResetError("short body")
        except (ConnectionError, asyncio.CancelledError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return None
        return tmp, digest.hexdigest()

    async def get_object(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        try:
            self._check_presigned(request, key)
        except _ObsDenied as exc:
            return exc.response()
        match = re.fullmatch(r"videos/([0-9a-f]{32})\.mp4", key)
        job = self.store.jobs.get(match[1]) if match else None
        if job is None or not job["video"]:
            return _obs_error(404, "NoSuchKey", "The specified key does not exist")
        return web.FileResponse(self.store.video_path(job["job_id"]))

    async def on_startup(self, app: web.Application) -> None:
        for job in self.store.jobs.values():
            if job["state"] == "AUTO_VERIFYING":
                self.schedule_review(job)

    async def on_cleanup(self, app: web.Application) -> None:
        for task in list(self.reviews):
            task.cancel()
        await asyncio.gather(*self.reviews, return_exceptions=True)
        self.store.close()


def _cut(request: web.Request) -> NoReturn:
    """Close the connection without a response, as a network failure would."""
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError


def _int_or_zero(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


class _ObsDenied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        return _obs_error(self.status, self.code, self.message)


async def _discard(request: web.Request) -> None:
    try:
        async for _ in request.content.iter_chunked(_CHUNK):
            pass
    except (ConnectionError, OSError):
        pass


def _pace_chunk(rate: float) -> int:
    """Bytes to read between pauses on a paced link: about 1/50 s of data, so pacing is
    smooth yet costs the loop at most ~50 wake-ups a second per connection."""
    return max(4096, min(_CHUNK, int(rate / 50)))


def _store_batch(out: Any, digest: Any, batch: list[bytes]) -> None:
    for chunk in batch:
        digest.update(chunk)
        out.write(chunk)


def _resource(key: str, sub: dict[str, str]) -> str:
    query = "&".join(f"{k}={sub[k]}" for k in sorted(sub))
    return f"/{BUCKET}/{key}" + (f"?{query}" if query else "")


def _assemble(parts: list[Path], target: Path) -> None:
    """Concatenate the parts into `target`, in the kernel where it can (copy_file_range)."""
    tmp = target.with_suffix(".partial")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                remaining = os.fstat(src.fileno()).st_size
                while remaining:
                    copied = os.copy_file_range(src.fileno(), out.fileno(), remaining)
                    if copied == 0:
                        raise OSError(f"{part} ended early")
                    remaining -= copied
    tmp.replace(target)


def _part_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARTS:
        raise _BadRequest(f"video_multipart_count must be an integer from 1 to {MAX_PARTS}")
    return value


def _int_in(text: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d+", text) or not low <= int(text) <= high:
        raise _BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(text)


def _log_entry(
    log_type: str, user: str, description: str | None = None, code: str | None = None
) -> dict[str, Any]:
    entry = {"operate_time": _now(), "log_type": log_type, "operate_user": user}
    if description:
        entry["log_description"] = description
    if code:
        entry["error_code"] = code
    return entry


_BASIC = ("job_id", "name", "state", "asset_id", "project_id", "last_update_time",
          "create_time", "contact", "batch_name", "tags", "model_version", "matting_type",
          "model_resolution", "app_user_id")


def _basic_info(job: dict[str, Any]) -> dict[str, Any]:
    return {key: job.get(key) for key in _BASIC} | {"is_flexus": False,
                                                     "is_only_human_model": False}


EMULATOR = web.AppKey("emulator", Emulator)


def build_app(config: EmulatorConfig) -> web.Application:
    """The aiohttp application of an emulator keeping its state in `config.data_dir`."""
    emulator = Emulator(config)
    app = web.Application(
        middlewares=[emulator.request_id, emulator.authenticate, emulator.rewrite_answers],
        client_max_size=1024**2,
    )
    app[EMULATOR] = emulator
    jobs = _JOBS
    app.router.add_post(jobs, emulator.create_job)
    app.router.add_get(jobs, emulator.list_jobs)
    app.router.add_get(jobs + "/{job_id}", emulator.show_job)
    app.router.add_put(jobs + "/{job_id}", emulator.update_job)
    app.router.add_post(jobs + "/{job_id}/command", emulator.command)
    app.router.add_get("/v1/{project_id}/voice-training-manage/user/jobs",
                       emulator.list_voice_jobs)
    app.router.add_put(f"/{BUCKET}/{{key:.+}}", emulator.put_object)
    app.router.add_get(f"/{BUCKET}/{{key:.+}}", emulator.get_object)
    app.on_startup.append(emulator.on_startup)
    app.on_cleanup.append(emulator.on_cleanup)
    return app
