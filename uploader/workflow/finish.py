"""Finishing: the confirm commands, the submit, and following the review.

Create, confirm and submit are not idempotent, so a lost answer is settled by asking the
service what happened rather than by sending the command again blindly: a multipart confirm
took effect when the upload holds no parts any more and show job has the file's download
link; a submit took effect when the job left WAIT_FILE_UPLOAD.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from uploader._errors import (
    ApiError,
    ConfirmError,
    RefusedError,
    TransferError,
    UnreachableError,
)
from uploader._files import FileKind
from uploader._journal import Journal
from uploader._retry import Backoff, retry
from uploader.api.client import MetaStudioClient
from uploader.api.models import CommandResult, JobDetail
from uploader.workflow.links import Links
from uploader.workflow.send import confirm_step

__all__ = ["SUBMIT_STEP", "confirm_files", "follow_review", "submit"]

log = logging.getLogger("uploader")

SUBMIT_STEP = "submit"
_Check = Callable[[], Awaitable[bool]]
#: States a submitted job passes through before the automatic review has its outcome.
_BEFORE_OUTCOME = frozenset({"WAIT_FILE_UPLOAD", "AUTO_VERIFYING"})


async def confirm_files(kinds: list[FileKind], *, links: Links, journal: Journal,
                        client: MetaStudioClient, backoff: Backoff) -> None:
    """Send each kind's confirm command once (the journal remembers those done)."""
    for file in kinds:
        step = confirm_step(file.name)
        if file.confirm_command is None or step in journal.steps:
            continue

        async def took_effect(file: FileKind = file) -> bool:
            if file.multipart and await links.stored_parts(file):
                return False
            return bool((await links.job_detail()).raw.get(file.download_field))

        await _command(client, links.job_id, file.confirm_command, took_effect, backoff)
        await journal.record_step(step)


async def submit(client: MetaStudioClient, job_id: str, backoff: Backoff) -> None:
    """SUBMITVERIFYING: the job goes to review."""
    async def took_effect() -> bool:
        return (await client.show_job(job_id)).state != "WAIT_FILE_UPLOAD"

    await _command(client, job_id, "SUBMITVERIFYING", took_effect, backoff)


async def _command(client: MetaStudioClient, job_id: str, command: str,
                   took_effect: _Check, backoff: Backoff) -> None:
    async def attempt() -> CommandResult | None:
        try:
            return await client.command(job_id, command)
        except ApiError as exc:
            if _lost(exc) and await took_effect():
                log.info("the answer to %s was lost, but it took effect", command)
                return None
            raise

    try:
        result = await retry(attempt, backoff=backoff, retryable=_lost, what=command)
    except ApiError as exc:
        if not _lost(exc):
            raise
        raise TransferError(f"{command} did not get through after {backoff.attempts} "
                            f"attempts: {exc}", job_id=job_id) from exc
    if result is not None and not result.succeeded:
        raise ConfirmError(f"MetaStudio refused {command}: "
                           f"{result.excute_failed_msg or 'no reason given'}",
                           job_id=job_id, command=command)


def _lost(exc: Exception) -> bool:
    """Whether a command's fate is unknown: no answer, or a server error (the service then
    tells what happened). A refusal or a malformed answer is an answer."""
    return isinstance(exc, UnreachableError) or (
        isinstance(exc, RefusedError) and (exc.status or 0) >= 500)


async def follow_review(client: MetaStudioClient, job_id: str, *, wait: bool,
                        timeout: float) -> JobDetail:
    """The job now, or with `wait` once the automatic review has its outcome (or `timeout`
    seconds have passed). Raises ApiError if the job cannot be read at all."""
    job = await client.show_job(job_id)
    deadline = time.monotonic() + timeout
    pause = 0.25
    while wait and job.state in _BEFORE_OUTCOME and time.monotonic() < deadline:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 10.0)
        try:
            job = await client.show_job(job_id)
        except ApiError as exc:
            log.warning("stopped following the review (%s); see: uploader status %s",
                        exc, job_id)
            break
    return job
