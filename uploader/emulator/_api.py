"""The emulator's MetaStudio API: create, list, show, update, commands (voice jobs: `_voice`).

The job's files are the table `FILES`, kept apart from the client's own table on purpose:
were both sides to share one, a wrong field name would match on both and no test would see
it (the official SDK's models pin these names in tests/test_official_sdk.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from uploader.emulator._faults import Faults, cut
from uploader.emulator._review import Reviewer, assemble, log_entry, now
from uploader.emulator._storage import ObjectStorage
from uploader.emulator._store import Store

__all__ = ["FILES", "Api"]

#: The command a command request carried (for `Faults.rewrite`, which sees the request).
COMMAND = web.RequestKey("command", str)

MIN_PART = 100 * 1024
MAX_PARTS = 1000
UPDATABLE = frozenset({"WAIT_FILE_UPLOAD", "AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED"})
OCTET = "application/octet-stream"


@dataclass(frozen=True)
class JobFile:
    """A file of a job: its link is `{name}_upload_url`, its download `download_field`."""

    name: str
    content_type: str = OCTET
    count_field: str | None = None
    list_command: str | None = None
    confirm_command: str | None = None
    download: str | None = None

    @property
    def download_field(self) -> str:
        return self.download or f"{self.name}_download_url"


FILES = (
    JobFile("training_video", count_field="video_multipart_count",
            list_command="GET_MULTIPART_UPLOADED", confirm_command="CONFIRM_MULTIPART_UPLOADED"),
    JobFile("action_video", count_field="action_video_multipart_count",
            list_command="GET_ACTION_VIDEO_MULTIPART_UPLOADED",
            confirm_command="CONFIRM_ACTION_VIDEO_MULTIPART_UPLOADED"),
    JobFile("id_card_image1"), JobFile("id_card_image2"), JobFile("grant_file"),
    JobFile("cover"), JobFile("pre_beauty_image"), JobFile("post_beauty_image"),
    JobFile("audio", content_type="application/zip", download="audio_file_download_url"),
)
_MULTIPART = tuple(f for f in FILES if f.count_field)
_BY_LIST = {f.list_command: f for f in _MULTIPART}
_BY_CONFIRM = {f.confirm_command: f for f in _MULTIPART}
#: API.md §2: the states in which delete is accepted.
DELETABLE = frozenset({
    "WAIT_FILE_UPLOAD", "AUTO_VERIFY_FAILED", "MANUAL_VERIFYING", "MANUAL_VERIFY_FAILED",
    "TRAINING_DATA_PREPROCESS_FAILED", "TRAIN_FAILED", "INFERENCE_DATA_PREPROCESS_FAILED",
    "JOB_SUCCESS", "WAIT_USER_CONFIRM", "JOB_REJECT", "JOB_FINISH"})
_BASIC = ("job_id", "name", "state", "asset_id", "project_id", "last_update_time",
          "create_time", "contact", "batch_name", "tags", "model_version", "matting_type",
          "model_resolution", "app_user_id")


class _BadRequest(Exception):
    pass


def _mss(status: int, message: str, code: str = "MSS.00000003") -> web.Response:
    return web.json_response({"error_code": code, "error_msg": message}, status=status)


def _failed(message: str) -> web.Response:
    return web.json_response({"commond_result": "EXCUTE_FAILED", "excute_failed_msg": message})


_SUCCEEDED = {"commond_result": "EXCUTE_SUCCESS"}


class Api:
    """The handlers of the six calls, over the store, the storage and the reviewer."""

    def __init__(self, *, project_id: str, store: Store, storage: ObjectStorage,
                 reviewer: Reviewer, faults: Faults, update_resets_parts: bool,
                 min_part_size: int = MIN_PART) -> None:
        self.project_id, self.store, self.storage = project_id, store, storage
        self.reviewer, self.faults = reviewer, faults
        self.update_resets_parts = update_resets_parts
        self.min_part_size = min_part_size

    def _job(self, request: web.Request) -> dict[str, Any]:
        job = self.store.jobs.get(request.match_info["job_id"])
        if job is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error_code": "MSS.00000003",
                                 "error_msg": f"job {request.match_info['job_id']} not found"}),
                content_type="application/json",
            )
        return job

    # ---- create, update: a job and its links ------------------------------------------

    async def create_job(self, request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            name = body.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 64:
                raise _BadRequest("name is required (1 to 64 characters)")
            counts = _counts(body, defaults={"video_multipart_count": 1})
            _check_fields(body)
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        job_id = uuid.uuid4().hex
        created = now()
        job: dict[str, Any] = {
            "job_id": job_id, "name": name, "state": "WAIT_FILE_UPLOAD",
            "project_id": self.project_id, "asset_id": None,
            "create_time": created, "last_update_time": created,
            "contact": body.get("contact"), "batch_name": body.get("batch_name"),
            "tags": body.get("tags"), "model_version": body.get(
                "model_version", "V3.3" if body.get("is_fast_flexus") else "V3.2"),
            "matting_type": "AI", "model_resolution": "1080P",
            "app_user_id": request.headers.get("X-App-UserId"),
            "is_background_replacement": body.get("is_background_replacement", True),
            "audio_source_type": body.get("audio_source_type", "VIDEO"),
            "is_flexus": body.get("is_flexus", False),
            "is_fast_flexus": body.get("is_fast_flexus", False),
            "is_only_human_model": body.get("is_only_human_model", False),
            "supported_service": body.get("supported_service") or _default_services(body),
            "voice_properties": body.get("voice_properties"),
            "operation_logs": [log_entry("USER_CREATE_JOD", "USER")],
            "uploads": {}, "last_expires": 0,
        }
        self.store.jobs[job_id] = job
        answer = self._links(request, job, counts, keep=False)
        self.store.save()
        return web.json_response(answer)

    async def update_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job["state"] not in UPDATABLE:
            return _mss(400, f"Invalid parameter: job in state {job['state']} cannot be updated")
        try:
            body = await _json_body(request)
            open_counts = {f.count_field: u["count"] for f in _MULTIPART
                           if (u := job["uploads"].get(f.name)) and f.count_field}
            counts = _counts(body, defaults={"video_multipart_count": 1} | open_counts)
            _check_fields(body)
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        for key in ("contact", "batch_name", "tags", "is_background_replacement",
                    "audio_source_type", "is_only_human_model", "supported_service",
                    "voice_properties"):
            if key in body:
                job[key] = body[key]
        keep = job["state"] == "WAIT_FILE_UPLOAD" and not self.update_resets_parts
        if job["state"] != "WAIT_FILE_UPLOAD":  # after a failed review: a new video is due
            job["state"] = "WAIT_FILE_UPLOAD"
            self.store.delete_file(job["job_id"], "training_video")
            job["operation_logs"].append(log_entry("USER_UPDATE_VIDEO", "USER"))
        job["last_update_time"] = now()
        answer = self._links(request, job, counts, keep=keep)
        self.store.save()
        return web.json_response(answer)

    def _links(self, request: web.Request, job: dict[str, Any], counts: dict[str, int], *,
               keep: bool) -> dict[str, Any]:
        """The answer of create and update: a link per file (a list for multipart files).
        An upload whose count is unchanged keeps its stored parts when `keep`."""
        expires = max(int(time.time()) + self.storage.url_ttl, job["last_expires"] + 1)
        job["last_expires"] = expires  # every answer's links differ from the last one's
        answer: dict[str, Any] = {"job_id": job["job_id"]}
        for file in FILES:
            if file.count_field is not None:
                if file.count_field not in counts:
                    continue
                upload = self._open_upload(job, file.name, counts[file.count_field], keep)
                answer[f"{file.name}_upload_url"] = [
                    self.storage.presign(
                        request, "PUT", f"training/{job['job_id']}/{file.name}.mp4",
                        sub={"partNumber": str(n), "uploadId": upload["upload_id"]},
                        content_type=OCTET, expires=expires)
                    for n in range(1, upload["count"] + 1)]
            elif file.name != "audio" or job["audio_source_type"] == "AUDIO":
                answer[f"{file.name}_upload_url"] = self.storage.presign(
                    request, "PUT", f"assets/{job['job_id']}/{file.name}_tmp",
                    content_type=file.content_type, expires=expires)
        return answer

    def _open_upload(self, job: dict[str, Any], name: str, count: int,
                     keep: bool) -> dict[str, Any]:
        upload = job["uploads"].get(name)
        if upload is not None and keep and upload["count"] == count:
            return dict(upload)
        if upload is not None:
            self.store.drop_upload(upload["upload_id"])
        upload = {"upload_id": uuid.uuid4().hex, "count": count}
        job["uploads"][name] = upload
        return dict(upload)

    async def delete_job(self, request: web.Request) -> web.StreamResponse:
        """DELETE: in the states the API lists, the job and its files go (204); elsewhere
        409 with an MSS error."""
        job = self._job(request)
        if job["state"] not in DELETABLE:
            return _mss(409, f"job in state {job['state']} cannot be deleted",
                        code="MSS.00000009")
        for upload in job["uploads"].values():
            self.store.drop_upload(upload["upload_id"])
        self.store.drop_job(job["job_id"])
        del self.store.jobs[job["job_id"]]
        self.store.save()
        return web.Response(status=204)

    # ---- list, show -------------------------------------------------------------------

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
        if "tag" in q:
            jobs = [j for j in jobs if q["tag"] in (j.get("tags") or [])]
        if "create_since" in q:  # RFC 3339 in one format: text order is time order
            jobs = [j for j in jobs if j["create_time"] >= q["create_since"]]
        if "create_until" in q:
            jobs = [j for j in jobs if j["create_time"] <= q["create_until"]]
        field_name = "last_update_time" if sort_key == "update_time" else "create_time"
        # Jobs of one second keep the order they were made in (asc), or its reverse (desc).
        jobs.sort(key=lambda j: j[field_name])
        if q.get("sort_dir", "desc") == "desc":
            jobs.reverse()
        page = jobs[offset:offset + limit]
        return web.json_response(
            {"count": len(jobs), "jobs": [self._basic_info(request, j) for j in page]})

    async def show_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        stored = self.store.files(job["job_id"], moved=True)
        detail = self._basic_info(request, job) | {
            "operation_logs": job["operation_logs"], "comment_logs": [],
            "is_background_replacement": job["is_background_replacement"],
            "audio_source_type": job["audio_source_type"],
            "is_fast_flexus": job.get("is_fast_flexus", False),
            "supported_service": job.get("supported_service"),
            "voice_properties": job.get("voice_properties"),
        }
        for file in FILES:
            detail[file.download_field] = (
                self.storage.download_url(request, job["job_id"], file.name)
                if file.name in stored else None)
        return web.json_response(detail)

    def _basic_info(self, request: web.Request, job: dict[str, Any]) -> dict[str, Any]:
        cover = "cover" in self.store.files(job["job_id"], moved=True)
        return {key: job.get(key) for key in _BASIC} | {
            "is_flexus": job.get("is_flexus", False),
            "is_only_human_model": job.get("is_only_human_model", False),
            "cover_download_url": (self.storage.download_url(request, job["job_id"], "cover")
                                   if cover else None),
        }

    # ---- commands ---------------------------------------------------------------------

    async def command(self, request: web.Request) -> web.Response:
        job = self._job(request)
        try:
            body = await _json_body(request)
        except _BadRequest as exc:
            return _mss(400, f"Invalid parameter: {exc}")
        command = body.get("command")
        if not isinstance(command, str) or not command:
            return _mss(400, "Invalid parameter: command is required")
        request[COMMAND] = command  # for the fault middleware: which command this was
        if command in _BY_LIST:
            return web.json_response(self._uploaded(job, _BY_LIST[command]))
        if command in _BY_CONFIRM:
            answer = await self._confirm(job, _BY_CONFIRM[command])
            if command == "CONFIRM_MULTIPART_UPLOADED" and self.faults.take_lost_confirm():
                cut(request)
            return answer
        if command == "CONFIRM_AUTHORIZATION_LETTER":
            if "grant_file" not in self.store.files(job["job_id"]):
                return _failed("the authorization letter has not been uploaded")
            job["grant_confirmed"] = True
            self.store.save()
            return web.json_response(_SUCCEEDED)
        if command == "SUBMITVERIFYING":
            return self._submit(job)
        return _failed(f"command {command} is not emulated")

    def _uploaded(self, job: dict[str, Any], file: JobFile) -> dict[str, Any]:
        upload = job["uploads"].get(file.name)
        parts = self.store.parts(upload["upload_id"]) if upload else {}
        return {
            "commond_result": "EXCUTE_SUCCESS",
            "multipart_data": [{"part_number": str(n), "etag": f'"{parts[n].etag}"'}
                               for n in sorted(parts)],
        }

    async def _confirm(self, job: dict[str, Any], file: JobFile) -> web.Response:
        """Assemble the parts in order and close the upload; the state stays as it is."""
        upload = job["uploads"].get(file.name)
        if job["state"] != "WAIT_FILE_UPLOAD":
            return _failed(f"the job is in state {job['state']}, not WAIT_FILE_UPLOAD")
        if upload is None:
            return _failed(f"no upload of the {file.name} is open")
        count = upload["count"]
        parts = self.store.parts(upload["upload_id"])
        missing = [n for n in range(1, count + 1) if n not in parts]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            return _failed(f"{len(missing)} of {count} parts are missing: {shown}")
        small = [n for n in range(1, count) if parts[n].size < self.min_part_size]
        if small:
            return _failed(f"EntityTooSmall: part {small[0]} ({parts[small[0]].size} bytes) "
                           "is smaller than the minimum allowed size "
                           f"({self.min_part_size} bytes) and is not the last part")
        ordered = [(parts[n].path, parts[n].etag) for n in range(1, count + 1)]
        try:
            await asyncio.to_thread(assemble, self.store, job["job_id"], file.name, ordered)
        except OSError as exc:
            return _failed(f"the parts could not be assembled: {exc.strerror or exc}")
        self.store.drop_upload(upload["upload_id"])
        job["uploads"].pop(file.name)
        job["last_update_time"] = now()
        self.store.save()
        return web.json_response(_SUCCEEDED)

    def _submit(self, job: dict[str, Any]) -> web.Response:
        if job["state"] != "WAIT_FILE_UPLOAD":
            return _failed(f"the job is in state {job['state']}, not WAIT_FILE_UPLOAD")
        if "training_video" not in self.store.files(job["job_id"]):
            return _failed("the training video is not uploaded and confirmed "
                           "(CONFIRM_MULTIPART_UPLOADED)")
        job.update(state="AUTO_VERIFYING", last_update_time=now())
        job["operation_logs"].append(log_entry("USER_VERIFYING_SUBMITTED", "USER"))
        self.store.save()
        self.reviewer.schedule(job)
        return web.json_response(_SUCCEEDED)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body is not a JSON object")
    return body


def _counts(body: dict[str, Any], *, defaults: dict[str, int]) -> dict[str, int]:
    """The part count of each multipart file the answer is to carry links for."""
    counts = dict(defaults)
    for file in _MULTIPART:
        assert file.count_field is not None
        if file.count_field in body:
            value = body[file.count_field]
            if (isinstance(value, bool) or not isinstance(value, int)
                    or not 1 <= value <= MAX_PARTS):
                raise _BadRequest(f"{file.count_field} must be an integer from 1 to {MAX_PARTS}")
            counts[file.count_field] = value
    return counts


def _default_services(body: dict[str, Any]) -> list[str]:
    flexus = body.get("is_flexus") or body.get("is_fast_flexus")
    return ["VIDEO_2D"] if flexus else ["VIDEO_2D", "LIVE_2D", "CHAT_2D"]


_VOICE = {"job_tag": ("ECOMMERCE", "NEWS", "MARKETING"), "sex": ("FEMALE", "MALE"),
          "language": ("CN", "EN")}


def _check_fields(body: dict[str, Any]) -> None:
    """The create/update fields the service checks (API.md §2)."""
    if body.get("audio_source_type", "VIDEO") not in ("VIDEO", "AUDIO"):
        raise _BadRequest("audio_source_type must be VIDEO or AUDIO")
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, list)
                                 and all(isinstance(t, str) for t in tags)):
        raise _BadRequest("tags must be a list of strings")
    flags = ("is_background_replacement", "is_flexus", "is_fast_flexus", "is_only_human_model")
    if any(key in body and not isinstance(body[key], bool) for key in flags):
        raise _BadRequest(f"{', '.join(flags)} are booleans")
    _check_model(body)
    voice = body.get("voice_properties")
    if voice is not None and not (isinstance(voice, dict) and all(
            k in _VOICE and v in _VOICE[k] for k, v in voice.items())):
        raise _BadRequest("voice_properties: job_tag ECOMMERCE|NEWS|MARKETING, sex "
                          "FEMALE|MALE, language CN|EN")


def _check_model(body: dict[str, Any]) -> None:
    """The model's version, edition and services, which must agree."""
    flexus = body.get("is_flexus") or body.get("is_fast_flexus")
    if body.get("model_version", "V3.2") not in ("V3.2", "V3.3"):
        raise _BadRequest("model_version must be V3.2 or V3.3 (V2 and V3 are withdrawn)")
    if body.get("is_fast_flexus") and body.get("model_version", "V3.3") != "V3.3":
        raise _BadRequest("the fast Flexus edition trains model V3.3")
    services = body.get("supported_service")
    if services is not None and not (isinstance(services, list) and services and set(
            services) <= {"VIDEO_2D", "LIVE_2D", "CHAT_2D"}):
        raise _BadRequest("supported_service is a list of VIDEO_2D, LIVE_2D, CHAT_2D")
    if flexus and services not in (None, ["VIDEO_2D"]):
        raise _BadRequest("a Flexus job serves VIDEO_2D only")


def _int_in(text: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d+", text) or not low <= int(text) <= high:
        raise _BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(text)
