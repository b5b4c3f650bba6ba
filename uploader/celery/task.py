"""The task: one manifest row, uploaded by the library's `upload_row` under the row's lock."""

from __future__ import annotations

import asyncio
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from uploader._client import AsyncClient
from uploader._errors import LocalFileError, UploaderError
from uploader._limits import Limits
from uploader._log import logger
from uploader.api.settings import Settings
from uploader.batch import Row, RowError, RowResult, row_from_json
from uploader.batch import rows as batch_rows
from uploader.celery.app import app, part_concurrency
from uploader.celery.lock import RowLock, row_key
from uploader.celery.report import Reporter
from uploader.celery.roots import outside_roots, worker_roots

__all__ = ["upload_row"]

log = logger()


@app.task(bind=True, name="uploader.upload_row")
def upload_row(self: Task[Any, Any], row: dict[str, Any], *, line: int = 0,
               reply_to: str | None = None, submit: bool = False) -> dict[str, Any]:
    """Upload one row (`Row.to_json()`: absolute paths, on storage this worker shares) with
    the settings of this worker's environment; tell `reply_to` (a batch's queue) its
    progress and result; return the result as JSON (`RowResult.to_json`)."""
    with Reporter(app, reply_to, self.request.id) as reporter:
        result = _upload(row_from_json(line, row), submit=submit, reporter=reporter)
        reporter.result(result)
    return result.to_json()


def _upload(row: Row | RowError, *, submit: bool, reporter: Reporter) -> RowResult:
    if isinstance(row, RowError):
        return RowResult.invalid(row)
    try:
        settings = Settings.from_env()
        roots = worker_roots()
    except UploaderError as exc:
        return RowResult(row.line, str(row.path), "failed", error=type(exc).__name__,
                         message=str(exc))
    refused = outside_roots(row, roots)
    if refused is not None:
        log.warning("line %s refused: %s", row.line, refused)
        return RowResult.invalid(RowError(row.line, str(row.path), refused))
    try:
        key = row_key(settings, row)
    except LocalFileError:  # the video cannot be read: the upload says so in the row's words
        return _run(row, submit=submit, reporter=reporter, settings=settings)
    with RowLock(app, key):
        return _run(row, submit=submit, reporter=reporter, settings=settings)


def _run(row: Row, *, submit: bool, reporter: Reporter, settings: Settings) -> RowResult:
    async def upload() -> RowResult:
        async with AsyncClient(settings, limits=Limits(concurrency=part_concurrency())
                               ) as client:
            return await batch_rows.upload_row(client, row, submit=submit, progress=reporter)

    try:
        result = asyncio.run(upload())
    except Exception as exc:
        if _holds(exc, SoftTimeLimitExceeded):
            message = ("the upload took longer than the task's time limit; it resumes "
                       "where it stopped when the row is sent again")
            return RowResult(row.line, str(row.path), "failed", error="TimeLimitExceeded",
                             message=message)
        log.exception("line %s: %s", row.line, row.path)
        return RowResult(row.line, str(row.path), "failed", error=type(exc).__name__,
                         message=f"unexpected error in the worker: {exc}")
    return result


def _holds(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `error` is a `kind`, or a group (from a task group) that holds one."""
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(kind) is not None
    return isinstance(error, kind)
