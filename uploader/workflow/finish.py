"""Finishing: the confirm commands, the submit, and following the review.

Create, confirm and submit are not idempotent, so a lost answer is settled by asking the
service what happened rather than by sending the command again blindly: a multipart confirm
took effect when the upload holds no parts any more and show job has the file's download
link; a submit took effect when the job left WAIT_FILE_UPLOAD.
"""

from __future__ import annotations

import asyncio
import time

from uploader._errors import (
    ApiError,
    ConfirmError,
    Remedy,
    TransferError,
    UnreachableError,
)
from uploader._files import FileKind
from uploader._journal import Journal
from uploader._log import logger
from uploader.api.client import MetaStudioClient, Settle, answer_lost
from uploader.api.models import JobDetail
from uploader.api.states import UNDER_REVIEW
from uploader.workflow.links import Links
from uploader.workflow.send import confirm_step

__all__ = ["SUBMIT_STEP", "confirm_again", "confirm_files", "follow_review", "submit"]

log = logger()

#: The smallest part but the last S3 assembles (OBS takes 100 KB): what a storage that
#: answers EntityTooSmall is likely to want.
S3_MIN_PART = 5 * 1024 * 1024

SUBMIT_STEP = "submit"


async def confirm_files(kinds: list[FileKind], *, links: Links, journal: Journal,
                        client: MetaStudioClient) -> None:
    """Send each kind's confirm command once (the journal remembers those done)."""
    for file in kinds:
        step = confirm_step(file.name)
        if file.confirm_command is None or step in journal.steps:
            continue

        async def took_effect(file: FileKind = file) -> bool:
            if file.multipart and await links.stored_parts(file):
                return False
            return bool((await links.job_detail()).raw.get(file.download_field))

        try:
            await _command(client, links.job_id, file.confirm_command, took_effect)
        except ConfirmError:
            if not await took_effect():
                raise
            # Another run on this job (another machine's) confirmed it first.
            log.info("the %s of job %s was confirmed by another run", file.title, links.job_id)
        await journal.record_step(step)


async def confirm_again(file: FileKind, *, links: Links, client: MetaStudioClient) -> None:
    """Send a file's confirm command once more (it was sent again after its confirm)."""
    if file.confirm_command is not None:
        await _command(client, links.job_id, file.confirm_command, _false)


async def _false() -> bool:
    """A letter's confirm taking effect twice does no harm: a lost answer is sent again."""
    return False


async def submit(client: MetaStudioClient, job_id: str) -> None:
    """SUBMITVERIFYING: the job goes to review."""
    async def took_effect() -> bool:
        return (await client.show_job(job_id)).state != "WAIT_FILE_UPLOAD"

    try:
        await _command(client, job_id, "SUBMITVERIFYING", took_effect)
    except ConfirmError:
        if not await took_effect():
            raise
        log.info("job %s was submitted by another run", job_id)


async def _command(client: MetaStudioClient, job_id: str, command: str,
                   took_effect: Settle) -> None:
    """Send `command`; a lost answer is settled by `took_effect` (the client retries)."""
    try:
        result = await client.command(job_id, command, settle=took_effect)
    except (ApiError, UnreachableError) as exc:
        if not answer_lost(exc):
            raise
        raise TransferError(f"{command} did not get through: {exc}", job_id=job_id) from exc
    if not result.succeeded:
        why = result.excute_failed_msg or "no reason given"
        if "EntityTooSmall" in why:  # the same plan would be refused again, forever
            raise ConfirmError(f"MetaStudio refused {command}: {why}: the storage takes no "
                               "part this small; start the upload over with larger parts "
                               f"(part_size of at least {S3_MIN_PART // 2**20} MiB, S3's "
                               "minimum, or fewer parts)", job_id=job_id, command=command,
                               remedy=Remedy.LARGER_PARTS)
        raise ConfirmError(f"MetaStudio refused {command}: {why}", job_id=job_id,
                           command=command)


async def follow_review(client: MetaStudioClient, job_id: str, *, wait: bool,
                        timeout: float) -> JobDetail:
    """The job now, or with `wait` once the automatic review has its outcome (or `timeout`
    seconds have passed). Raises ApiError if the job cannot be read at all."""
    job = await client.show_job(job_id)
    deadline = time.monotonic() + timeout
    pause = 0.25
    while wait and job.state in UNDER_REVIEW and time.monotonic() < deadline:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 10.0)
        try:
            job = await client.show_job(job_id)
        except (ApiError, UnreachableError) as exc:
            log.warning("stopped following the review of job %s (%s); ask for its state "
                        "later", job_id, exc)
            break
    return job
