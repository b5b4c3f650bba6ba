"""The content rules' verdict, worked out beside the transfer and waited for at the confirm.

The header rules refuse before any job exists; the content rules (faces, green screen,
sound) need seconds of decoding, so they start with the upload, in a worker thread, while the
parts go. The confirm waits for their verdict: a problem stops the run there, with the job
and its stored parts kept, so that a re-run with the option fixed (or the finding ignored)
sends nothing again.
"""

from __future__ import annotations

import asyncio
import contextlib

from uploader._errors import PreflightError
from uploader._log import logger
from uploader.preflight import Report, ReviewRules, check_content

__all__ = ["Review"]

log = logger()


class Review:
    """The content rules on `reports` (the header rules' passed reports), started at once
    when `content` is on; else the reports as they are."""

    def __init__(self, reports: list[Report], rules: ReviewRules, content: bool) -> None:
        self._given = reports
        self._warned = False
        self._task: asyncio.Task[list[Report]] | None = None
        if content:
            self._task = asyncio.ensure_future(check_content(reports, rules))

    @property
    def pending(self) -> bool:
        """Whether the content rules are still at work."""
        return self._task is not None and not self._task.done()

    async def reports(self) -> list[Report]:
        """Every file's report, with the content rules' findings (waited for); each
        warning is logged once."""
        reports = self._given if self._task is None else await self._task
        if not self._warned:
            self._warned = True
            for report in reports:
                for warning in report.warnings:
                    log.warning("%s: %s: %s", report.path, warning.code, warning.message)
        return reports

    async def refuse_if_refused(self, job_id: str) -> None:
        """Wait for the verdict; PreflightError (naming `job_id`, which keeps what it
        stored) if a file would be refused."""
        if self.pending:
            log.info("the parts are stored; waiting for the content rules' verdict")
        refused = [r for r in await self.reports() if not r.ok]
        if refused:
            raise PreflightError(*refused, job_id=job_id)

    async def close(self) -> None:
        """Stop waiting for the verdict (a run that ended early); a thread already deciding
        finishes on its own."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
