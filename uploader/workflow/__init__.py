"""One job, start to end: preflight → the job and its links → what is missing → confirm →
submit → follow the review.

Each step is a module: `job` (which job, what an earlier run did), `links` (the upload
links), `send` (what the server lacks, through the transfer engine), `finish` (confirms,
submit, review), `result` (what a run returns), `local` (the files on this machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from uploader import _checks as checks
from uploader._errors import ApiError, PreflightError, UsageError
from uploader._files import TRAINING_VIDEO, FileKind, kind
from uploader._journal import FileIdentity, Journal, default_state_dir
from uploader.api.client import MetaStudioClient
from uploader.api.settings import Settings
from uploader.api.states import explain_state
from uploader.preflight import check_files
from uploader.transfer.budget import TransferBudget
from uploader.transfer.engine import TransferConfig
from uploader.transfer.plan import MAX_PARTS, PartPlan, plan_parts
from uploader.workflow.finish import SUBMIT_STEP, confirm_files, follow_review
from uploader.workflow.finish import submit as submit_for_review
from uploader.workflow.job import JobRequest, open_job, refuse_missing, stored_kinds
from uploader.workflow.local import LocalFile
from uploader.workflow.result import (
    FileResult,
    JobOutcome,
    SubmitResult,
    UploadResult,
    outcome_of,
)
from uploader.workflow.send import Sender

__all__ = ["STEPS", "FileResult", "SubmitResult", "UploadResult", "submit_job", "submit_job_sync",
           "upload_video", "upload_video_sync"]

log = logging.getLogger("uploader")

Progress = Callable[[int, int], None]
OnStep = Callable[[str, str], None]

#: What `on_step` is told, in order: "sending" (the job is known, its files go out),
#: "confirmed" (every file is the job's), "submitted", "waiting" (for the review).
STEPS = ("sending", "confirmed", "submitted", "waiting")


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
    submit: bool = False,
    wait: bool = False,
    wait_timeout: float = 1800.0,
    settings: Settings | None = None,
    progress: Progress | None = None,
    on_step: OnStep | None = None,
    transfer: TransferConfig | None = None,
    budget: TransferBudget | None = None,
    session: aiohttp.ClientSession | None = None,
    tags: Sequence[str] = (),
    batch_name: str | None = None,
    contact: str | None = None,
    id_card_front: str | os.PathLike[str] | None = None,
    id_card_back: str | os.PathLike[str] | None = None,
    grant_file: str | os.PathLike[str] | None = None,
    cover: str | os.PathLike[str] | None = None,
    action_video: str | os.PathLike[str] | None = None,
    audio: str | os.PathLike[str] | None = None,
) -> UploadResult:
    """Upload a training video, and the job's other files, to a job (`job_id`) or to a new
    one (`name`), resuming any earlier attempt; confirm them and, with `submit`, submit the
    job for review (`wait`: until the automatic review has its outcome).

    `parts`/`part_size` cut the training video; `progress(done, total)` is called with byte
    counts over all files; `on_step(step, job_id)` as the run reaches each of STEPS (after
    "confirmed", an interruption loses nothing: the files are the job's); `concurrency`
    (pieces in flight, default 8) overrides the one in `transfer`; a `budget` shared with
    other concurrent calls (same event loop) caps their pieces in flight and bandwidth
    together; a `session` shared with them (left open) shares their connections. A job
    this call creates gets `tags` (besides its content tag), `batch_name`
    and `contact`. Every value is checked before anything is read or sent: UsageError.
    """
    given = {"id_card_front": id_card_front, "id_card_back": id_card_back,
             "grant_file": grant_file, "cover": cover, "action_video": action_video,
             "audio": audio}
    paths = {TRAINING_VIDEO: checks.path(path, "the video's path")} | {
        kind(k): checks.path(v, f"{k}'s path") for k, v in given.items() if v is not None}
    request = dataclasses.replace(_request(job_id, name, parts, part_size, restart, submit),
                                  labels=_labels(tags, batch_name, contact))
    config = _transfer_config(transfer, concurrency)
    wait_timeout = checks.number(wait_timeout, "wait_timeout")
    folder = checks.path(state_dir, "state_dir") if state_dir is not None else (
        default_state_dir())
    settings = _settings(settings)
    if budget is not None and not isinstance(budget, TransferBudget):
        raise UsageError(f"budget must be a TransferBudget, not {budget!r}")
    step = on_step or (lambda step, job: None)
    reports = await check_files(paths)
    refused = [report for report in reports if not report.ok]
    if refused:
        raise PreflightError(*refused)
    files = [await _local_file(k, p, parts, part_size) for k, p in paths.items()]
    key = f"job:{job_id}" if job_id is not None else f"name:{name}"
    service = (settings.endpoint, settings.project_id)
    async with Journal(folder, service=service, job_key=key, video=paths[TRAINING_VIDEO],
                       restart=restart) as journal, \
            _session(session, config) as session, \
            MetaStudioClient(settings, session=session) as client:
        job, files = await open_job(request, files, journal=journal, client=client,
                                    session=session)
        step("sending", job.job_id)
        sender = Sender(files=files, links=job.links, journal=journal, session=session,
                        config=config, progress=progress, new_job=job.created, budget=budget)
        started = time.monotonic()
        if SUBMIT_STEP not in journal.steps:
            await sender.send_missing(restart=restart)
            seconds = round(time.monotonic() - started, 3)
            await confirm_files([f.kind for f in files], links=job.links,
                                journal=journal, client=client, backoff=config.backoff)
            step("confirmed", job.job_id)
            if submit:
                await submit_for_review(client, job.job_id, config.backoff)
                await journal.record_step(SUBMIT_STEP)
        else:
            seconds = 0.0
        submitted = SUBMIT_STEP in journal.steps
        if submitted:
            step("submitted", job.job_id)
        if wait and submitted:
            step("waiting", job.job_id)
        outcome = await _outcome(client, job.job_id, wait=wait and submitted,
                                 timeout=wait_timeout)
        await journal.remove()  # the last thing: until now, a re-run must know the job
    return _upload_result(job.job_id, files, sender, seconds, outcome, submitted)


def upload_video_sync(path: str | os.PathLike[str], **options: Any) -> UploadResult:
    """`upload_video` for synchronous callers: runs it in a new event loop."""
    return asyncio.run(upload_video(path, **options))


async def submit_job(job_id: str, *, wait: bool = False, wait_timeout: float = 1800.0,
                     settings: Settings | None = None,
                     transfer: TransferConfig | None = None) -> SubmitResult:
    """Submit a job whose files are all stored already: confirm its authorization letter
    (when it holds one), then SUBMITVERIFYING; with `wait`, follow the automatic review."""
    job_id = checks.job_id(job_id)
    wait_timeout = checks.number(wait_timeout, "wait_timeout")
    backoff = _transfer_config(transfer, None).backoff
    async with MetaStudioClient(_settings(settings)) as client:
        job = await client.show_job(job_id)
        if job.state != "WAIT_FILE_UPLOAD":
            raise UsageError(f"job {job_id} is in state {job.state} ({explain_state(job.state)}"
                             "): only a job waiting for its files (WAIT_FILE_UPLOAD) can be "
                             "submitted", job_id=job_id)
        refuse_missing([], stored=stored_kinds(job), job_id=job_id)
        letter = kind("grant_file")
        if letter.confirm_command is not None:
            result = await client.command(job_id, letter.confirm_command)
            if not result.succeeded:
                log.warning("%s: %s", letter.confirm_command, result.excute_failed_msg)
        await submit_for_review(client, job_id, backoff)
        outcome = await _outcome(client, job_id, wait=wait, timeout=wait_timeout)
    return SubmitResult(job_id, True, **dataclasses.asdict(outcome))


def submit_job_sync(job_id: str, **options: Any) -> SubmitResult:
    """`submit_job` for synchronous callers: runs it in a new event loop."""
    return asyncio.run(submit_job(job_id, **options))


def _request(job_id: object, name: object, parts: object, part_size: object, restart: bool,
             submit: bool) -> JobRequest:
    if (job_id is None) == (name is None):
        raise UsageError("give exactly one of job_id (an existing job) or name (a new job)")
    if parts is not None:
        checks.whole(parts, "the number of parts", low=1, high=MAX_PARTS)
    if part_size is not None:
        checks.whole(part_size, "the part size (bytes)", low=1)
    return JobRequest(job_id=checks.job_id(job_id) if job_id is not None else None,
                      name=checks.name(name) if name is not None else None,
                      restart=bool(restart), submit=bool(submit),
                      explicit_plan=parts is not None or part_size is not None)


@contextlib.asynccontextmanager
async def _session(given: aiohttp.ClientSession | None, config: TransferConfig
                   ) -> AsyncIterator[aiohttp.ClientSession]:
    """The caller's session, left open; else one of this call's own for the API and the
    files (one TLS context, connections reused), closed at the end."""
    if given is not None:
        yield given
        return
    connector = aiohttp.TCPConnector(limit=config.concurrency + 2)
    async with aiohttp.ClientSession(connector=connector) as own:
        yield own


def _labels(tags: Sequence[str], batch_name: str | None, contact: str | None
            ) -> dict[str, Any]:
    if (isinstance(tags, str) or not isinstance(tags, Sequence)
            or not all(isinstance(t, str) and t for t in tags)):
        raise UsageError(f"tags must be a list of non-empty texts, not {tags!r}")
    labels: dict[str, Any] = {"tags": list(tags)} if tags else {}
    for key, value in (("batch_name", batch_name), ("contact", contact)):
        if value is not None:
            labels[key] = checks.text(value, key, longest=checks.MAX_NAME)
    return labels


def _transfer_config(transfer: object, concurrency: object) -> TransferConfig:
    if transfer is not None and not isinstance(transfer, TransferConfig):
        raise UsageError(f"transfer must be a TransferConfig, not {transfer!r}")
    config = transfer or TransferConfig()
    if concurrency is not None:  # the plain argument wins over the one inside `transfer`
        config = dataclasses.replace(config, concurrency=checks.whole(
            concurrency, "concurrency", low=1, high=checks.MAX_CONCURRENCY))
    return config


def _settings(settings: object) -> Settings:
    if settings is not None and not isinstance(settings, Settings):
        raise UsageError(f"settings must be a Settings, not {settings!r}")
    return settings or Settings.from_env()


async def _local_file(file: FileKind, path: Path, parts: int | None,
                      part_size: int | None) -> LocalFile:
    identity = await asyncio.to_thread(FileIdentity.of, path)
    if file is TRAINING_VIDEO:
        plan = plan_parts(identity.size, parts=parts, part_size=part_size)
    elif file.multipart:
        plan = plan_parts(identity.size)
    else:
        plan = PartPlan(identity.size, (identity.size,))
    return LocalFile(file, path, identity, plan)


async def _outcome(client: MetaStudioClient, job_id: str, *, wait: bool,
                   timeout: float) -> JobOutcome:
    """Where the job stands. The files are confirmed by now: failing to read the state does
    not make the run a failure."""
    try:
        return outcome_of(await follow_review(client, job_id, wait=wait, timeout=timeout))
    except ApiError as exc:
        log.warning("the files are confirmed, but the job's state could not be read (%s); "
                    "see: uploader status %s", exc, job_id)
        return outcome_of(None)


def _upload_result(job_id: str, files: list[LocalFile], sender: Sender, seconds: float,
                   outcome: JobOutcome, submitted: bool) -> UploadResult:
    tally = sender.tally
    video = TRAINING_VIDEO.name
    results = [FileResult(kind=f.kind.name, path=str(f.path),
                          outcome="sent" if tally.sent_pieces.get(f.kind.name) else "skipped",
                          size_bytes=f.size, bytes_uploaded=tally.sent_bytes.get(f.kind.name, 0))
               for f in files]
    return UploadResult(
        job_id=job_id, parts_total=files[0].plan.count,
        parts_skipped=tally.skipped_pieces.get(video, files[0].plan.count),
        parts_uploaded=tally.sent_pieces.get(video, 0),
        bytes_uploaded=sum(tally.sent_bytes.values()), bytes_sent=tally.wire_bytes,
        seconds=seconds, submitted=submitted, files=results, **dataclasses.asdict(outcome))
