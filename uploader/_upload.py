"""Orchestration: preflight → job and URLs → missing parts → verify → confirm → (wait)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from uploader._api import MetaStudioClient
from uploader._errors import (
    ApiError,
    ConfirmError,
    FileChangedError,
    JobStateError,
    PreflightError,
    TransferError,
    UsageError,
)
from uploader._journal import FileIdentity, Journal, default_state_dir
from uploader._models import JobUrls
from uploader._plan import Part, PartPlan, plan_parts
from uploader._preflight import check_video_async
from uploader._settings import Settings
from uploader._states import ACCEPTS_VIDEO, explain_error_code, explain_state
from uploader._transfer import TransferConfig, etag_matches, parts_md5, send_parts

__all__ = ["UploadResult", "upload_video", "upload_video_sync"]

log = logging.getLogger("uploader")

#: Presigned links live about 24 h; links older than this are replaced before use.
URL_REUSE_SECONDS = 20 * 3600
#: `UploadResult.state` when the upload is confirmed but the job's state cannot be read.
UNKNOWN_STATE = "UNKNOWN"
#: How far the service's clock may be behind ours when looking for a job we created.
CLOCK_SLACK = 600
_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
#: After this many rounds of "send what is missing, then ask the server", give up.
MAX_ROUNDS = 3
_REVIEWING = frozenset({"WAIT_FILE_UPLOAD", "AUTO_VERIFYING"})

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class UploadResult:
    """What an upload did; `to_json()` is what `uploader upload --json` prints."""

    job_id: str
    parts_total: int
    parts_skipped: int
    parts_uploaded: int
    bytes_uploaded: int
    bytes_sent: int
    seconds: float
    state: str
    state_meaning: str
    review_error_code: str | None = None
    review_error_meaning: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def upload_video(
    path: str | os.PathLike[str],
    *,
    job_id: str | None = None,
    name: str | None = None,
    parts: int | None = None,
    part_size: int | None = None,
    concurrency: int | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    wait: bool = False,
    wait_timeout: float = 1800.0,
    settings: Settings | None = None,
    progress: Progress | None = None,
    transfer: TransferConfig | None = None,
) -> UploadResult:
    """Upload a training video to a job (`job_id`) or to a new one (`name`), resuming any
    earlier attempt, and confirm it. `progress(done, total)` is called with byte counts;
    `concurrency` (parts in flight, default 8) overrides the one in `transfer`."""
    if (job_id is None) == (name is None):
        raise UsageError("give exactly one of job_id (an existing job) or name (a new job)")
    video = Path(path)
    report = await check_video_async(video)
    if not report.ok or report.facts is None:
        raise PreflightError(report)
    plan = plan_parts(report.facts.size_bytes, parts=parts, part_size=part_size)
    config = transfer or TransferConfig()
    if concurrency is not None:  # the plain argument wins over the one inside `transfer`
        config = dataclasses.replace(config, concurrency=concurrency)
    identity = await asyncio.to_thread(FileIdentity.of, video)
    folder = Path(state_dir) if state_dir is not None else default_state_dir()
    job_key = f"job:{job_id}" if job_id is not None else f"name:{name}"
    settings = settings or Settings.from_env()
    # One session for the API and the parts: one TLS context, connections reused.
    connector = aiohttp.TCPConnector(limit=config.concurrency + 2)
    with Journal(folder, job_key, video) as journal:
        async with aiohttp.ClientSession(connector=connector) as session, MetaStudioClient(
            settings, session=session
        ) as client:
            run = _Upload(client=client, session=session, journal=journal, video=video,
                          identity=identity, plan=plan,
                          explicit_plan=parts is not None or part_size is not None,
                          config=config, progress=progress)
            return await run.execute(job_id=job_id, name=name, restart=restart, wait=wait,
                                     wait_timeout=wait_timeout)


def upload_video_sync(path: str | os.PathLike[str], **options: Any) -> UploadResult:
    """`upload_video` for synchronous callers: runs it in a new event loop."""
    return asyncio.run(upload_video(path, **options))


class _Links:
    """The job's current part URLs, refreshed once however many parts find them refused."""

    def __init__(self, client: MetaStudioClient, journal: Journal, job_id: str,
                 count: int) -> None:
        self._client, self._journal = client, journal
        self.job_id, self.count = job_id, count
        self.generation = 0
        self._lock = asyncio.Lock()

    def url(self, number: int) -> str:
        return self._journal.urls[number - 1]

    def adopt(self, answer: JobUrls) -> None:
        if len(answer.training_video_upload_url) != self.count:
            raise ApiError(f"MetaStudio sent a malformed answer: "
                           f"{len(answer.training_video_upload_url)} upload URLs for "
                           f"{self.count} parts", job_id=self.job_id)
        self._journal.record_urls(answer.training_video_upload_url)
        self.generation += 1

    async def refresh(self, seen_generation: int) -> None:
        async with self._lock:
            if self.generation == seen_generation:
                self.adopt(await self._client.update_job(
                    self.job_id, video_multipart_count=self.count))

    async def stored(self) -> dict[int, str]:
        """The parts the server holds, by number, checked to be within 1..count."""
        result = await self._client.command(self.job_id, "GET_MULTIPART_UPLOADED")
        stored = {p.part_number: p.etag for p in result.multipart_data}
        outside = sorted(n for n in stored if not 1 <= n <= self.count)
        if not result.succeeded or outside:
            what = f"part numbers {outside} outside 1..{self.count}" if outside else (
                result.excute_failed_msg or "GET_MULTIPART_UPLOADED failed")
            raise ApiError(f"MetaStudio sent a malformed answer: {what}", job_id=self.job_id)
        return stored

    async def stored_etag(self, number: int) -> str | None:
        return (await self.stored()).get(number)


class _Upload:
    """One run of one upload; each method is one stage."""

    def __init__(self, *, client: MetaStudioClient, session: aiohttp.ClientSession,
                 journal: Journal, video: Path,
                 identity: FileIdentity, plan: PartPlan, explicit_plan: bool,
                 config: TransferConfig, progress: Progress | None) -> None:
        self.client, self.session, self.journal, self.video = client, session, journal, video
        self.identity, self.plan, self.explicit_plan = identity, plan, explicit_plan
        self.config, self.progress = config, progress
        self.started = time.monotonic()
        self.done_bytes = 0
        self.skipped = self.uploaded = self.bytes_uploaded = self.bytes_sent = 0

    async def execute(self, *, job_id: str | None, name: str | None, restart: bool,
                      wait: bool, wait_timeout: float) -> UploadResult:
        links, state = await self._prepare(job_id, name, restart)
        if state is not None:  # an earlier run confirmed; only its journal was left
            self.journal.remove()
            return await self._result(links.job_id, wait, wait_timeout)
        await self._send_missing(links, restart)
        await self._confirm(links.job_id)
        self.journal.remove()
        return await self._result(links.job_id, wait, wait_timeout)

    # ---- stage 1: the job, the plan and the URLs ---------------------------------------

    async def _prepare(self, job_id: str | None, name: str | None,
                       restart: bool) -> tuple[_Links, str | None]:
        journal = self.journal
        if journal.header is not None:
            if not restart:
                self._check_journal_matches()
            job_id = journal.job_id
        if job_id is None:
            assert name is not None
            job_id = await self._job_an_earlier_run_created(name)
        if job_id is None:
            assert name is not None
            journal.record_intent(name, self.identity)
            answer = await self.client.create_job(
                name, video_multipart_count=self.plan.count)
            journal.lock(f"job:{answer.job_id}")
            journal.start(answer.job_id, self.identity, self.plan.sizes)
            links = _Links(self.client, journal, answer.job_id, self.plan.count)
            links.adopt(answer)
            log.info("created job %s with %d parts", answer.job_id, self.plan.count)
            return links, None
        journal.lock(f"job:{job_id}")
        job = await self.client.show_job(job_id)
        resumable = journal.header is not None and not restart
        if resumable and job.state not in ACCEPTS_VIDEO and self._all_parts_recorded():
            return _Links(self.client, journal, job_id, self.plan.count), job.state
        if job.state not in ACCEPTS_VIDEO:
            raise JobStateError(
                f"job {job_id} is in state {job.state} ({explain_state(job.state)}): it cannot "
                "take a video now; only WAIT_FILE_UPLOAD, AUTO_VERIFY_FAILED and "
                "MANUAL_VERIFY_FAILED can", job_id=job_id, state=job.state)
        if not resumable:
            journal.start(job_id, self.identity, self.plan.sizes)
        links = _Links(self.client, journal, job_id, self.plan.count)
        fresh_enough = time.time() - journal.urls_issued_at < URL_REUSE_SECONDS
        if len(journal.urls) == self.plan.count and fresh_enough:
            log.info("reusing the %d part URLs issued earlier", self.plan.count)
        else:
            links.adopt(await self.client.update_job(job_id,
                                                     video_multipart_count=self.plan.count))
        return links, None

    async def _job_an_earlier_run_created(self, name: str) -> str | None:
        """The job an earlier run of this command created but did not live to record.

        That run noted its intent (name, file, time) before asking for the job; a job of
        that name created since then, still waiting for its file, is the one it got.
        """
        intent = self.journal.intent
        if (intent is None or intent["name"] != name
                or FileIdentity(**intent["identity"]) != self.identity):
            return None
        since = datetime.fromtimestamp(intent["at"] - CLOCK_SLACK, UTC)
        page = await self.client.list_jobs(
            name=name, state="WAIT_FILE_UPLOAD", create_since=since.strftime(_RFC3339),
            limit=10)
        found = [job for job in page.jobs if job.name == name]
        if not found:
            return None
        job = max(found, key=lambda j: j.create_time or "")
        log.warning("continuing with job %s, created by an earlier run of this command that "
                    "stopped before it could record it", job.job_id)
        return job.job_id

    def _check_journal_matches(self) -> None:
        journal = self.journal
        if journal.identity != self.identity:
            raise FileChangedError(
                f"{self.video} changed since its upload to job {journal.job_id} began "
                "(size, time or content differ): run with --restart to upload it from the "
                "start", job_id=journal.job_id)
        sizes = journal.sizes
        assert sizes is not None
        if sizes != self.plan.sizes:
            if self.explicit_plan:
                raise UsageError(
                    f"an upload of this file to job {journal.job_id} is under way in "
                    f"{len(sizes)} parts: resume it without --parts/--part-size, or run with "
                    "--restart to start over with the new plan", job_id=journal.job_id)
            self.plan = PartPlan(self.plan.file_size, sizes)

    def _all_parts_recorded(self) -> bool:
        return len(self.journal.parts) == self.plan.count

    # ---- stage 2: send what the server does not hold -----------------------------------

    async def _send_missing(self, links: _Links, restart: bool) -> None:
        missing = await self._missing(links, trust_server=not restart)
        self.skipped = self.plan.count - len(missing)
        for _ in range(MAX_ROUNDS):
            # Counted from what the server lacks: parts it lost since count as not done.
            self.done_bytes = self.plan.file_size - sum(p.size for p in missing)
            self._report()
            if not missing:
                return
            self.bytes_sent += await send_parts(
                missing, path=self.video, session=self.session, urls=links,
                config=self.config, on_bytes=self._advance, on_done=self._part_done,
                job_id=links.job_id)
            missing = await self._missing(links, trust_server=True)
        if missing:
            raise TransferError(f"the server still lacks {len(missing)} part(s) after "
                                f"{MAX_ROUNDS} rounds", job_id=links.job_id)

    async def _missing(self, links: _Links, *, trust_server: bool) -> list[Part]:
        """The parts to send: all on a restart's first round, else those the server lacks."""
        if not trust_server:
            return self.plan.parts
        stored = await links.stored()
        recorded = self.journal.parts
        lost = sorted(n for n in recorded if n not in stored)
        if lost:
            log.warning("the server no longer holds %d part(s) sent earlier (%s); sending "
                        "them again", len(lost), _shorten(lost))
            self.journal.forget_parts(lost)
        # Parts stored but not in the journal (it was lost, or is another machine's) are
        # hashed from the file, several at once, to see whether they are this file's.
        unknown = [part for part in self.plan.parts
                   if part.number in stored and part.number not in recorded]
        hashed = await parts_md5(self.video, unknown, chunk_size=self.config.chunk_size,
                                 concurrency=self.config.concurrency)
        missing = []
        for part in self.plan.parts:
            etag = stored.get(part.number)
            if etag is None:
                missing.append(part)
                continue
            if not self._stored_part_is_ours(part, etag, hashed, links.job_id):
                missing.append(part)
        return missing

    def _stored_part_is_ours(self, part: Part, etag: str, hashed: dict[int, str],
                             job_id: str) -> bool:
        known = self.journal.parts.get(part.number)
        local = known or hashed[part.number]
        match = etag_matches(etag, local)
        if match is None:
            log.debug("part %d: ETag %r is not a plain MD5; trusting the journal",
                      part.number, etag)
            return known is not None
        if not match:
            raise FileChangedError(
                f"part {part.number} on the server does not match {self.video}: the file "
                "changed since it was sent; run with --restart to upload it from the start",
                job_id=job_id)
        if known is None:
            self.journal.record_part(part.number, local)
        return True

    async def _part_done(self, part: Part, md5_hex: str) -> None:
        # The append is fsync'd: off the event loop, so a slow disk stalls no transfer.
        await asyncio.to_thread(self.journal.record_part, part.number, md5_hex)
        self.uploaded += 1
        self.bytes_uploaded += part.size

    def _advance(self, delta: int) -> None:
        self.done_bytes += delta
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done_bytes, self.plan.file_size)

    # ---- stage 3: confirm, settle a lost answer, and report ----------------------------

    async def _confirm(self, job_id: str) -> None:
        for attempt in range(1, 4):
            try:
                result = await self.client.command(job_id, "CONFIRM_MULTIPART_UPLOADED")
            except ApiError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
                state = (await self.client.show_job(job_id)).state
                if state != "WAIT_FILE_UPLOAD":
                    log.info("the confirm answer was lost, but job %s is in %s: confirmed",
                             job_id, state)
                    return
                log.info("confirm failed (%s); attempt %d", exc, attempt)
                await asyncio.sleep(self.config.backoff.delay(attempt))
                continue
            if not result.succeeded:
                raise ConfirmError(f"MetaStudio refused to assemble the parts: "
                                   f"{result.excute_failed_msg or 'no reason given'}",
                                   job_id=job_id)
            return
        raise TransferError("confirm did not get through after 3 attempts", job_id=job_id)

    async def _result(self, job_id: str, wait: bool, wait_timeout: float) -> UploadResult:
        """The outcome, with the job's state (after the review, with `wait`). The upload is
        confirmed by now: failing to read the state does not make it a failure."""
        try:
            job = await self.client.show_job(job_id)
        except ApiError as exc:
            log.warning("the upload is confirmed, but the job's state could not be read (%s); "
                        "see: uploader status %s", exc, job_id)
            return self._outcome(job_id, UNKNOWN_STATE, None)
        deadline = time.monotonic() + wait_timeout
        pause = 0.25
        while wait and job.state in _REVIEWING and time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
            try:
                job = await self.client.show_job(job_id)
            except ApiError as exc:
                log.warning("stopped following the review (%s); see: uploader status %s",
                            exc, job_id)
                break
        code = next((e.error_code for e in reversed(job.operation_logs) if e.error_code), None)
        failed = job.state in ("AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED")
        return self._outcome(job_id, job.state, code if failed else None)

    def _outcome(self, job_id: str, state: str, code: str | None) -> UploadResult:
        meaning = (explain_state(state) if state != UNKNOWN_STATE else
                   "the upload is confirmed, but its state could not be read")
        return UploadResult(
            job_id=job_id, parts_total=self.plan.count, parts_skipped=self.skipped,
            parts_uploaded=self.uploaded, bytes_uploaded=self.bytes_uploaded,
            bytes_sent=self.bytes_sent, seconds=round(time.monotonic() - self.started, 3),
            state=state, state_meaning=meaning, review_error_code=code,
            review_error_meaning=explain_error_code(code),
        )


def _shorten(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
