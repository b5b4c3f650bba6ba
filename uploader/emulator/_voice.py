"""The emulator's voice training jobs (API.md §7): create per edition, links, sentences
confirmed one by one, commit, review, audit result, op-logs, durations, the quality check.

Every file is one presigned PUT to `voice/{job_id}/{kind}` (kinds `package`, `letter`,
`audio_{i}`, `text_{i}`), taken by the object storage like the 2D jobs' single files. The
decisions where Huawei's pages are silent are API.md §7's "Emulator decisions".
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import wave
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web

from uploader.emulator._storage import ObjectStorage
from uploader.emulator._store import Store

__all__ = ["VOICE", "VoiceApi"]

VOICE = "/v1/{project_id}/voice-training-manage/user"
EDITIONS = {"basic": "BASIC", "middle": "MIDDLE", "advance": "ADVANCE",
            "third-party": "THIRD_PARTY"}
#: Sentences of a SEGMENT job (and WAV/text pairs of a PACKAGE zip) per edition.
SENTENCES = {"BASIC": 20, "MIDDLE": 100}
TAGS = ("ECOMMERCE", "NEWS", "MARKETING", "LIVE", "EDUCATION", "CUSTOMER", "STORYTELLING")
#: The emulator's `tenant-duration-cfg` (seconds of recordings allowed and advised).
DURATIONS = {"basic_min": 60, "basic_max": 600, "basic_advice_value": 200,
             "middle_min": 300, "middle_max": 3000, "middle_advice_value": 1000,
             "advance_min": 600, "advance_max": 7200, "advance_advice_value": 1800}
DELETABLE = frozenset({"UPLOADING", "AUDIT_FAILED", "USER_REVIEW_REJECT", "FAILED", "SUCCEED"})
ACCEPTS_FILES = frozenset({"UPLOADING", "AUDIT_FAILED"})
ZIP, WAV, TEXT, OCTET = "application/zip", "audio/wav", "text/plain", "application/octet-stream"


def _mss(status: int, message: str, code: str = "MSS.00000003") -> web.Response:
    return web.json_response({"error_code": code, "error_msg": message}, status=status)


def _ms() -> int:
    return int(time.time() * 1000)


class VoiceApi:
    """The voice paths. `outcome` ("STATE[:CODE]") names the state every review ends in."""

    def __init__(self, store: Store, storage: ObjectStorage, *, delay: float,
                 outcome: str | None = None) -> None:
        self.store, self.storage, self.delay, self.outcome = store, storage, delay, outcome
        self._reviews: set[asyncio.Task[None]] = set()
        self._expiry: dict[str, int] = {}  #: the latest expiry issued, by object key

    def routes(self, app: web.Application) -> None:
        for edition in EDITIONS:
            app.router.add_post(f"{VOICE}/{edition}-jobs", self._creator(EDITIONS[edition]))
        app.router.add_get(f"{VOICE}/jobs", self.list_jobs)
        app.router.add_get(f"{VOICE}/jobs/{{job_id}}", self.show)
        app.router.add_post(f"{VOICE}/jobs/{{job_id}}", self.commit)
        app.router.add_delete(f"{VOICE}/jobs/{{job_id}}", self.delete)
        app.router.add_get(f"{VOICE}/jobs/{{job_id}}/uploading-address-url", self.links)
        app.router.add_get(f"{VOICE}/jobs/{{job_id}}/audit-result", self.audit_result)
        app.router.add_get(f"{VOICE}/jobs/{{job_id}}/op-logs", self.op_logs)
        app.router.add_post(f"{VOICE}/training-segment", self.confirm_segment)
        app.router.add_get(f"{VOICE}/training-segment", self.segments)
        app.router.add_get(f"{VOICE}/tenant-duration-cfg", self.durations)
        app.router.add_post(f"{VOICE}/short-jobs", self.create_short)
        app.router.add_post(f"{VOICE}/short-jobs/{{job_id}}", self.commit_short)
        app.router.add_get(f"{VOICE}/short-jobs/{{job_id}}", self.show_short)

    async def stop(self) -> None:
        for task in list(self._reviews):
            task.cancel()
        await asyncio.gather(*self._reviews, return_exceptions=True)

    # ---- jobs ---------------------------------------------------------------------------

    def _creator(self, job_type: str) -> Any:
        async def create(request: web.Request) -> web.Response:
            return await self._create(request, job_type)
        return create

    async def _create(self, request: web.Request, job_type: str) -> web.Response:
        body = await _body(request)
        if body is None:
            return _mss(400, "the body is not a JSON object")
        refused = _refuse_create(body, job_type)
        if refused is not None:
            return _mss(400, refused)
        job_id = uuid.uuid4().hex
        job = {"job_id": job_id, "job_type": job_type, "voice_name": body["voice_name"],
               "sex": body["sex"], "language": body["language"], "tag": body["tag"],
               "create_type": body["create_type"], "state": "UPLOADING",
               "batch_name": body.get("batch_name"), "description": body.get("description"),
               "dhtms_job_id": body.get("dhtms_job_id"), "reject_times": 0,
               "create_time": _ms(), "lastupdate_time": _ms(), "confirmed": [],
               "op_logs": [_log("CREATE_JOB")]}
        self.store.voice_jobs.append(job)
        self.store.save()
        return web.json_response({"job_id": job_id, **self._links(request, job)})

    def _links(self, request: web.Request, job: dict[str, Any], *, fresh: bool = False
               ) -> dict[str, Any]:
        """The job's upload links (create's shape, or with `fresh` the
        uploading-address-url's)."""
        job_id = job["job_id"]

        def link(kind: str, content_type: str) -> str:
            # A link is signed over its expiry: two issued in the same second would be one
            # (spent together). Each issue of a key expires a second after the last.
            key = f"voice/{job_id}/{kind}"
            expires = max(int(time.time()) + self.storage.url_ttl, self._expiry.get(key, 0) + 1)
            self._expiry[key] = expires
            return self.storage.presign(request, "PUT", key, content_type=content_type,
                                        expires=expires)

        letter = link("letter", OCTET)
        if job["create_type"] == "PACKAGE":
            package = {"training_data_uploading_url": link("package", ZIP)}
            segment = None
        else:
            count = SENTENCES[job["job_type"]]
            package = None
            segment = {"audio_uploading_url": [link(f"audio_{i}", WAV) for i in range(count)],
                       "txt_uploading_url": [link(f"text_{i}", TEXT) for i in range(count)]}
        if fresh:
            return {"package_url": package, "segment_url": segment,
                    "authorization_letter_uploading_url": letter}
        return {**(package or {}), "segment_uploading_url": segment,
                "authorization_letter_uploading_url": letter}

    def _job(self, request: web.Request) -> dict[str, Any] | None:
        job_id = request.match_info.get("job_id") or request.query.get("job_id", "")
        return next((j for j in self.store.voice_jobs if j["job_id"] == job_id), None)

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            offset = int(q.get("offset", "0"))
            limit = int(q.get("limit", "10"))
            if not (offset >= 0 and 1 <= limit <= 100):
                raise ValueError
        except ValueError:
            return _mss(400, "Invalid parameter: offset from 0, limit from 1 to 100")
        jobs = self.store.voice_jobs
        if "state" in q:
            jobs = [j for j in jobs if j["state"] in q["state"].split(",")]
        for key in ("voice_name", "batch_name"):
            if key in q:
                jobs = [j for j in jobs if j.get(key) == q[key]]
        return web.json_response({"count": len(jobs),
                                  "jobs": [_public(j) for j in jobs[offset:offset + limit]]})

    async def show(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        shown = _public(job)
        files = self.store.files(job["job_id"])
        if "package" in files:
            shown["training_input_source_url"] = self.storage.presign(
                request, "GET", f"files/{job['job_id']}/package")
        if "letter" in files:
            shown["voice_authorization_url"] = self.storage.presign(
                request, "GET", f"files/{job['job_id']}/letter")
        return web.json_response(shown)

    async def links(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        return web.json_response(self._links(request, job, fresh=True))

    async def delete(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        if job["state"] not in DELETABLE:
            return _mss(409, f"a job in state {job['state']} cannot be deleted")
        self.store.voice_jobs.remove(job)
        self.store.drop_job(job["job_id"])
        self.store.save()
        return web.Response(status=204)

    # ---- sentences ----------------------------------------------------------------------

    async def confirm_segment(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        if job["create_type"] != "SEGMENT" or job["state"] not in ACCEPTS_FILES:
            return _mss(400, f"a {job['create_type']} job in state {job['state']} takes no "
                        "sentence confirm")
        count = SENTENCES[job["job_type"]]
        index_text = request.query.get("index", "")
        if not index_text.isdigit() or not 0 <= int(index_text) < count:
            return _mss(400, f"index must be from 0 to {count - 1}")
        index = int(index_text)
        if index in job["confirmed"]:
            return web.json_response({"confirm_result": True, "unmatched_index_hit": []})
        files = self.store.files(job["job_id"])
        audio, text = files.get(f"audio_{index}"), files.get(f"text_{index}")
        unmatched: list[int] = []
        ok = (audio is not None and text is not None and _is_wav(audio.path.read_bytes())
              and (index == 0 or index - 1 in job["confirmed"]))
        if ok and text is not None and b"MISMATCH" in text.path.read_bytes():
            ok, unmatched = False, [index]
        if ok:
            job["confirmed"] = sorted({*job["confirmed"], index})
            job["lastupdate_time"] = _ms()
            self.store.save()
        return web.json_response({"confirm_result": ok, "unmatched_index_hit": unmatched})

    async def segments(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        return web.json_response({"confirmed_index": job["confirmed"]})

    # ---- commit and review --------------------------------------------------------------

    async def commit(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        if job["state"] not in ACCEPTS_FILES:
            return _mss(409, f"a job in state {job['state']} cannot be committed")
        files = self.store.files(job["job_id"])
        missing = [] if "letter" in files else ["the authorization letter"]
        if job["create_type"] == "PACKAGE" and "package" not in files:
            missing.append("the zip of recordings")
        if job["create_type"] == "SEGMENT":
            count = SENTENCES[job["job_type"]]
            unconfirmed = [i for i in range(count) if i not in job["confirmed"]]
            if unconfirmed:
                missing.append(f"{len(unconfirmed)} sentences confirmed (first: "
                               f"{unconfirmed[0]})")
        if missing:
            return _mss(400, "the job lacks " + ", ".join(missing), "MSS.20020016")
        body = await _body(request) or {}
        for key in ("tag", "description", "sex", "voice_name", "language"):
            if body.get(key):
                job[key] = body[key]
        job.update(state="SYSTEM_AUDITING", lastupdate_time=_ms())
        job["op_logs"].append(_log("COMMIT_JOB"))
        self.store.save()
        task = asyncio.ensure_future(self._review(job))
        self._reviews.add(task)
        task.add_done_callback(self._reviews.discard)
        return web.Response(status=200)

    async def _review(self, job: dict[str, Any]) -> None:
        await asyncio.sleep(self.delay)
        errors = await asyncio.to_thread(self._audit, job)
        state, code = "SUCCEED", None
        if errors:
            state, code = "AUDIT_FAILED", errors[0]["error_code"]
        elif self.outcome is not None:
            state, _, code = self.outcome.partition(":")
            code = code or None
            if state == "AUDIT_FAILED":
                errors = [{"audio_name": None, "text_name": None,
                           "error_code": code or "MSS.20020011",
                           "error_message": "rejected by the emulator's review switch"}]
        job.update(state=state, lastupdate_time=_ms(), job_failed_code=code,
                   audit={"audit_time": _ms(), "errors": errors})
        if state == "SUCCEED":
            job["asset_id"] = uuid.uuid4().hex
        if state == "AUDIT_FAILED":
            job["confirmed"], job["reject_times"] = [], job["reject_times"] + 1
        job["op_logs"].append(_log(f"AUDIT_{state}", code))
        self.store.save()

    def _audit(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The system audit's errors: each WAV must be a WAV, a zip must hold the edition's
        count of WAV/text pairs (one long WAV for advance and third-party)."""
        files = self.store.files(job["job_id"])
        errors: list[dict[str, Any]] = []
        if job["create_type"] == "SEGMENT":
            for i in range(SENTENCES[job["job_type"]]):
                audio = files.get(f"audio_{i}")
                if audio is None or not _is_wav(audio.path.read_bytes()[:12]):
                    errors.append(_error(f"{i}.wav", f"{i}.txt", "MSS.20020011",
                                         "the audio format is wrong"))
            return errors
        return _audit_zip(files["package"].path, job["job_type"])

    async def audit_result(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        audit = job.get("audit") or {"audit_time": None, "errors": []}
        return web.json_response({"system_audit_result": audit, "admin_audit_result": None})

    async def op_logs(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        return web.json_response({"count": len(job["op_logs"]), "operations": job["op_logs"]})

    async def durations(self, request: web.Request) -> web.Response:
        return web.json_response({"tenant_id": request.match_info["project_id"], **DURATIONS})

    # ---- the quality check (VOICE_ASSESS) -----------------------------------------------

    async def create_short(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body is None or body.get("job_type") != "VOICE_ASSESS" or body.get(
                "language") not in ("CN", "EN"):
            return _mss(400, "job_type VOICE_ASSESS and language CN|EN are required")
        job_id = uuid.uuid4().hex
        self.store.short_jobs[job_id] = {"job_id": job_id, "job_type": "VOICE_ASSESS",
                                         "language": body["language"], "state": "WAITING"}
        self.store.save()
        link = self.storage.presign(request, "PUT", f"voice/{job_id}/package",
                                    content_type=ZIP)
        return web.json_response({"job_id": job_id, "data_uploading_url": link})

    async def commit_short(self, request: web.Request) -> web.Response:
        job = self.store.short_jobs.get(request.match_info["job_id"])
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        package = self.store.files(job["job_id"]).get("package")
        if package is None:
            return _mss(400, "the zip is not uploaded", "MSS.20020016")
        job["assess_result"] = await asyncio.to_thread(assess, package.path)
        job["state"] = "SUCCEED"
        self.store.save()
        return web.Response(status=200)

    async def show_short(self, request: web.Request) -> web.Response:
        job = self.store.short_jobs.get(request.match_info["job_id"])
        if job is None:
            return _mss(404, "The job does not exist", "MSS.00000004")
        return web.json_response(job)


def _refuse_create(body: dict[str, Any], job_type: str) -> str | None:
    """Why a create body is refused, or None."""
    name = body.get("voice_name")
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        return "voice_name is required (1 to 256 characters)"
    choices = {"sex": ("FEMALE", "MALE"), "language": ("CN", "EN"), "tag": TAGS,
               "create_type": ("PACKAGE", "SEGMENT")}
    for key, allowed in choices.items():
        if body.get(key) not in allowed:
            return f"{key} must be one of {', '.join(allowed)}"
    if body["create_type"] == "SEGMENT" and job_type not in SENTENCES:
        return f"a {job_type} job takes PACKAGE only (one long recording in a zip)"
    return None


def _public(job: dict[str, Any]) -> dict[str, Any]:
    """What show and list answer: the job without the emulator's own bookkeeping."""
    hidden = ("confirmed", "op_logs", "audit")
    return {k: v for k, v in job.items() if k not in hidden}


def _log(action: str, code: str | None = None) -> dict[str, Any]:
    """An op-logs entry in the SDK's OperationLogItem shape."""
    return {"time": _ms(), "action": action, "operator": "SYSTEM" if code else "USER",
            "external_info": {"error_code": code} if code else None}


def _error(audio: str | None, text: str | None, code: str, message: str) -> dict[str, Any]:
    return {"audio_name": audio, "text_name": text, "error_code": code,
            "error_message": message}


def _is_wav(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def _audit_zip(path: Path, job_type: str) -> list[dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            wavs = sorted(n for n in names if n.lower().endswith(".wav"))
            texts = sorted(n for n in names if n.lower().endswith(".txt"))
            bad = [n for n in wavs if not _is_wav(archive.read(n)[:12])]
    except (zipfile.BadZipFile, OSError):
        return [_error(None, None, "MSS.20020012", "the file is not a zip")]
    errors = [_error(n, None, "MSS.20020011", "the audio format is wrong") for n in bad]
    want = SENTENCES.get(job_type)
    if want is not None and (len(wavs) != want or len(texts) != want):
        errors.append(_error(None, None, "MSS.20020016",
                             f"the zip holds {len(wavs)} wav and {len(texts)} txt files; "
                             f"a {job_type} job takes {want} of each"))
    if want is None and len(wavs) != 1:
        errors.append(_error(None, None, "MSS.20020016",
                             f"a {job_type} job takes one long recording, not {len(wavs)}"))
    return errors


def assess(path: Path) -> dict[str, Any]:
    """VOICE_ASSESS's measures of a zip of WAVs, from their levels: the sound's loudness
    (sound), a noise floor (snr), and fixed values for what the emulator cannot measure."""
    import array
    import math

    loudest, quietest = -120.0, 0.0
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.lower().endswith(".wav"):
                continue
            try:
                with wave.open(io.BytesIO(archive.read(name))) as recording:
                    if recording.getsampwidth() != 2:
                        continue
                    samples = array.array("h", recording.readframes(recording.getnframes()))
            except (wave.Error, EOFError):
                continue
            blocks = [samples[i:i + 1600] for i in range(0, len(samples), 1600)]
            for block in blocks:
                if block:
                    rms = math.sqrt(sum(s * s for s in block[::8]) / len(block[::8]))
                    level = 20 * math.log10(max(rms, 1.0) / 32768)
                    loudest, quietest = max(loudest, level), min(quietest, level)
    snr = loudest - quietest

    def measure(actual: float, expected: str, ok: bool, advice: str) -> dict[str, Any]:
        # status: 1 meets the expectation, 0 does not (the SDK's AssessProperty is an int).
        return {"expected": expected, "actual": f"{actual:.1f}",
                "suggestion": "" if ok else advice, "suggestion_en": "" if ok else advice,
                "status": 1 if ok else 0}

    return {
        "speed": measure(4.0, "3.0-5.0 words/s", True, "speak at an even pace"),
        "sound": measure(loudest, "-30.0 to -6.0 dBFS", -30 <= loudest <= -6,
                         "record louder or softer: the voice at -30 to -6 dBFS"),
        "snr": measure(snr, ">= 30 dB", snr >= 30, "record in a quieter room"),
        "reverb": measure(0.3, "<= 0.5 s", True, "record in a room with less echo"),
        "dnsmos_ovrl": measure(3.5, ">= 3.0", True, "record cleaner sound"),
        "dnsmos_bak": measure(4.0, ">= 3.5", True, "reduce the background noise"),
    }


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
