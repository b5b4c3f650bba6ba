"""One job, start to end: preflight → the job and its links → what is missing → confirm →
submit → follow the review.

Each step is a module: `job` (which job, what an earlier run did), `links` (the upload
links), `send` (what the server lacks, through the transfer engine), `finish` (confirms,
submit, review), `result` (what a run returns), `local` (the files on this machine). The
client (`uploader.AsyncClient`) owns the connection, the budget and the state folder, and
hands them to `upload` and `submit` here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiohttp

from uploader._errors import (
    ApiError,
    JobStateError,
    PreflightError,
    RefusedError,
    Remedy,
    UnreachableError,
    UploaderError,
)
from uploader._files import TRAINING_VIDEO, FileKind, kind
from uploader._job import Job
from uploader._journal import FileIdentity, Journal
from uploader._log import logger
from uploader._progress import Progress, Step
from uploader.api.client import MetaStudioClient
from uploader.api.states import ACCEPTS_VIDEO, DELETABLE, REVIEW_FAILED, explain_state
from uploader.preflight import check_files, content_wanted
from uploader.transfer.budget import TransferBudget
from uploader.transfer.engine import TransferConfig
from uploader.transfer.plan import PartPlan, plan_parts
from uploader.workflow.finish import SUBMIT_STEP, confirm_again, confirm_files, follow_review
from uploader.workflow.finish import submit as submit_for_review
from uploader.workflow.job import open_job, refuse_missing, stored_kinds
from uploader.workflow.links import Links
from uploader.workflow.local import LocalFile, Seen, refuse_changed
from uploader.workflow.result import (
    FileResult,
    JobOutcome,
    SubmitResult,
    UploadResult,
    outcome_of,
)
from uploader.workflow.review import Review
from uploader.workflow.send import Sender, confirm_step
from uploader.workflow.verify import verify_by_download

__all__ = ["FileResult", "Run", "SubmitResult", "UploadResult", "delete", "submit", "upload"]

log = logger()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """What one upload uses, from the client that runs it."""

    api: MetaStudioClient
    session: aiohttp.ClientSession
    state_dir: Path
    config: TransferConfig
    pieces: int  #: the most pieces one upload sends at once
    budget: TransferBudget | None
    wait_timeout: float


async def upload(job: Job, run: Run, *, submit: bool, wait: bool, restart: bool,
                 progress: Progress, verify: str = "etag") -> UploadResult:
    """Upload `job`'s files, resuming any earlier attempt; confirm them (with `verify`
    "download", read them back and compare) and, with `submit`, submit the job (`wait`:
    until the automatic review has its outcome)."""
    reports = await check_files(job.paths, job.rules)
    refused = [report for report in reports if not report.ok]
    if refused:
        raise PreflightError(*refused)
    # The content rules take seconds of decoding: they run beside the transfer, in a
    # worker thread, and gate the confirm (`_send_and_confirm`).
    review = Review(reports, job.rules, content_wanted(job.content_checks))
    if not review.pending:
        await review.reports()  # the warnings, said now
    try:
        return await _upload(job, run, review, submit=submit, wait=wait, restart=restart,
                             progress=progress, verify=verify)
    finally:
        await review.close()


async def _upload(job: Job, run: Run, review: Review, *, submit: bool, wait: bool,
                  restart: bool, progress: Progress, verify: str) -> UploadResult:
    files = [await _local_file(k, p, job.parts, job.part_size) for k, p in job.paths.items()]
    progress.on_total(sum(f.size for f in files))
    key = f"job:{job.job_id}" if job.job_id is not None else f"name:{job.name}"
    service = (run.api.settings.endpoint, run.api.settings.project_id)
    async with Journal(run.state_dir, service=service, job_key=key, video=job.video,
                       restart=restart) as journal:
        opened, files = await open_job(job, files, restart=restart, submit=submit,
                                       journal=journal, client=run.api, session=run.session)
        progress.on_step(Step.SENDING, opened.job_id)
        sender = Sender(files=files, links=opened.links, journal=journal,
                        session=run.session, config=run.config, pieces=run.pieces,
                        progress=progress, new_job=opened.created, budget=run.budget)
        seconds = 0.0
        if SUBMIT_STEP not in journal.steps:
            seconds = await _send_and_confirm(opened.links, files, sender, journal, run,
                                              review, submit=submit, restart=restart,
                                              verify=verify, progress=progress)
        submitted = SUBMIT_STEP in journal.steps
        if submitted:
            progress.on_step(Step.SUBMITTED, opened.job_id)
        if wait and submitted:
            progress.on_step(Step.WAITING, opened.job_id)
        outcome = await _outcome(run.api, opened.job_id, wait=wait and submitted,
                                 timeout=run.wait_timeout)
        await journal.remove()  # the last thing: until now, a re-run must know the job
    warned = {r.kind: tuple(w for w in r.to_json()["warnings"])
              for r in await review.reports()}
    return _upload_result(opened.job_id, files, sender, seconds, outcome, submitted, warned)


async def _send_and_confirm(links: Links, files: list[LocalFile], sender: Sender,
                            journal: Journal, run: Run, review: Review, *, submit: bool,
                            restart: bool, verify: str, progress: Progress) -> float:
    """Send what the job lacks, confirm every file (with `verify` "download", read them back
    first; the content rules' verdict first, where no file is confirmed yet) and, with
    `submit`, submit it; the seconds the transfer took. A run that fails because another
    run finished the job meanwhile ends as if it had done so itself."""
    job_id = links.job_id
    started = time.monotonic()
    try:
        await sender.send_missing(restart=restart)
        # Every byte sent was read by now: a file written meanwhile is not confirmed.
        await asyncio.to_thread(refuse_changed, files, job_id=job_id)
        seconds = round(time.monotonic() - started, 3)
        if confirm_step(TRAINING_VIDEO.name) not in journal.steps:
            await review.refuse_if_refused(job_id)
        progress.on_step(Step.CONFIRMING, job_id)
        await confirm_files([f.kind for f in files], links=links, journal=journal,
                            client=run.api)
        if verify == "download":
            await _verify(files, links, sender, run)
        progress.on_step(Step.CONFIRMED, job_id)
        if submit:
            await submit_for_review(run.api, job_id)
            await journal.record_step(SUBMIT_STEP)
    except UploaderError:
        if not await _finished_elsewhere(job_id, files[0], sender, run.api):
            raise
        await journal.record_step(SUBMIT_STEP)
        seconds = round(time.monotonic() - started, 3)
    return seconds


async def submit(job_id: str, api: MetaStudioClient, *, wait: bool, wait_timeout: float
                 ) -> SubmitResult:
    """Submit a job whose files are all stored already: confirm its authorization letter
    (when it holds one), then SUBMITVERIFYING; with `wait`, follow the automatic review. A
    job submitted already is reported as it stands (and followed with `wait`)."""
    job = await api.show_job(job_id)
    if job.state in REVIEW_FAILED:
        raise JobStateError(f"job {job_id} is in state {job.state} ({explain_state(job.state)}"
                            "): it takes a submit only with its corrected files: upload them "
                            f"to it (a Job with job_id={job_id!r}, the video and the ID card "
                            "images) with submit=True", job_id=job_id, state=job.state,
                            remedy=Remedy.UPLOAD_FILES)
    if job.state != "WAIT_FILE_UPLOAD":
        log.info("job %s was submitted already (state %s)", job_id, job.state)
        outcome = await _outcome(api, job_id, wait=wait, timeout=wait_timeout)
        return SubmitResult(job_id, True, **dataclasses.asdict(outcome), already=True)
    refuse_missing([], stored=stored_kinds(job), job_id=job_id)
    letter = kind("grant_file")
    if letter.confirm_command is not None:
        result = await api.command(job_id, letter.confirm_command)
        if not result.succeeded:
            log.warning("%s: %s", letter.confirm_command, result.excute_failed_msg)
    await submit_for_review(api, job_id)
    outcome = await _outcome(api, job_id, wait=wait, timeout=wait_timeout)
    return SubmitResult(job_id, True, **dataclasses.asdict(outcome))


async def delete(job_id: str, api: MetaStudioClient) -> None:
    """Delete a job, once its state allows it (API.md §2): JobStateError otherwise."""
    job = await api.show_job(job_id)
    if job.state not in DELETABLE:
        raise JobStateError(f"job {job_id} is in state {job.state} ({explain_state(job.state)})"
                            ": it cannot be deleted now (a job under review or in training "
                            "cannot)", job_id=job_id, state=job.state)
    try:
        await api.delete_job(job_id)
    except RefusedError as exc:
        if exc.status != 409:
            raise
        raise JobStateError(f"MetaStudio refused to delete job {job_id} in its state: "
                            f"{exc.error_msg or exc}", job_id=job_id, state=job.state) from exc


async def _finished_elsewhere(job_id: str, video: LocalFile, sender: Sender,
                              api: MetaStudioClient) -> bool:
    """Whether a run that failed did so because another run (another machine's, on the job
    both found or agreed on) finished the job meanwhile: it was submitted, holding this
    very video. The run then ends as if it had done so itself."""
    try:
        detail = await api.show_job(job_id)
    except (ApiError, UnreachableError):
        return False
    if detail.state in ACCEPTS_VIDEO or not await sender.confirmed_before(video, detail):
        return False
    log.warning("job %s was finished by another run (state %s), holding this video: nothing "
                "is left to do", job_id, detail.state)
    return True


async def _verify(files: list[LocalFile], links: Links, sender: Sender, run: Run) -> None:
    """Read every file back; one sent again is confirmed again."""
    async def resend(file: LocalFile) -> None:
        await sender.resend(file)
        await confirm_again(file.kind, links=links, client=run.api)

    proved = await verify_by_download(files, links=links, session=run.session, resend=resend)
    sender.tally.unverified -= proved


async def _local_file(file: FileKind, path: Path, parts: int | None,
                      part_size: int | None) -> LocalFile:
    seen = await asyncio.to_thread(Seen.of, path)  # before any read: a change since shows
    identity = await asyncio.to_thread(FileIdentity.of, path)
    if file is TRAINING_VIDEO:
        plan = plan_parts(identity.size, parts=parts, part_size=part_size)
    elif file.multipart:
        plan = plan_parts(identity.size)
    else:
        plan = PartPlan(identity.size, (identity.size,))
    return LocalFile(file, path, identity, plan, seen)


async def _outcome(client: MetaStudioClient, job_id: str, *, wait: bool,
                   timeout: float) -> JobOutcome:
    """Where the job stands. The files are confirmed by now: failing to read the state does
    not make the run a failure."""
    try:
        return outcome_of(await follow_review(client, job_id, wait=wait, timeout=timeout))
    except (ApiError, UnreachableError) as exc:
        log.warning("the files are confirmed, but the state of job %s could not be read "
                    "(%s); ask for it later", job_id, exc)
        return outcome_of(None)


def _upload_result(job_id: str, files: list[LocalFile], sender: Sender, seconds: float,
                   outcome: JobOutcome, submitted: bool,
                   warned: dict[str, tuple[dict[str, str], ...]]) -> UploadResult:
    tally = sender.tally
    video = TRAINING_VIDEO.name
    results = [FileResult(kind=f.kind.name, path=str(f.path),
                          outcome="sent" if tally.sent_pieces.get(f.kind.name) else "skipped",
                          size_bytes=f.size, bytes_uploaded=tally.sent_bytes.get(f.kind.name, 0),
                          verified=f.kind.name not in tally.unverified,
                          warnings=warned.get(f.kind.name, ()))
               for f in files]
    return UploadResult(
        job_id=job_id, parts_total=files[0].plan.count,
        parts_skipped=tally.skipped_pieces.get(video, files[0].plan.count),
        parts_uploaded=tally.sent_pieces.get(video, 0),
        bytes_uploaded=sum(tally.sent_bytes.values()), bytes_sent=tally.wire_bytes,
        seconds=seconds, submitted=submitted, files=results, **dataclasses.asdict(outcome))
