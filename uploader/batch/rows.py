"""Rows through a client: one row's upload as a result, and many rows `files` at a time.

Rows are taken lazily: a manifest of any length costs the memory of the rows in flight. A
row's failure does not stop the others (unless `fail_fast`). Re-running the same rows creates
no second job: the upload finds the job it made for a row by its content tag, and a row whose
files the job holds already is reported `skipped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uploader._errors import LocalFileError, PreflightError, UploaderError, UsageError
from uploader._job import Job
from uploader._progress import Progress, Step
from uploader._voice_job import VoiceJob
from uploader.batch.manifest import Row, RowError

if TYPE_CHECKING:
    from uploader._client import AsyncClient

__all__ = ["OUTCOMES", "Checked", "RowResult", "check_rows", "upload_row", "upload_rows"]

OUTCOMES = ("ok", "skipped", "failed", "invalid")


@dataclass(frozen=True)
class RowResult:
    """How one row ended: `outcome` is "ok" (sent), "skipped" (the job held it already),
    "failed" (run again to resume) or "invalid" (the row or its files must be fixed)."""

    line: int
    path: str
    outcome: str
    job_id: str | None = None
    state: str | None = None
    bytes_uploaded: int = 0
    seconds: float = 0.0
    error: str | None = None
    message: str | None = None
    #: The preflight's warnings, as `kind: code` (the recording guide's advice, problems
    #: ignored as asked): they refused nothing.
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def invalid(cls, row: RowError) -> RowResult:
        """The result of a row that could not be read."""
        return cls(row.line, row.path, "invalid", error="RowError", message=row.message)


async def upload_row(client: AsyncClient, row: Row, *, submit: bool = False,
                     wait: bool = False, progress: Progress | None = None) -> RowResult:
    """Upload one row through `client`; its failure is its result, not an error."""
    progress = progress or Progress()
    started = time.monotonic()
    job = row.job
    try:
        if isinstance(job, VoiceJob):  # a voice row: `submit` commits it
            voiced = await client.voice_upload(job, commit=submit, wait=wait,
                                               progress=progress)
            sent, job_id, state = voiced.bytes_uploaded, voiced.job_id, voiced.state
            warned = tuple(f"{w['file']}: {w['code']}" for w in voiced.warnings)
        else:
            result = await client.upload(job, submit=submit, wait=wait, progress=progress)
            sent, job_id, state = result.bytes_uploaded, result.job_id, result.state
            warned = tuple(f"{f.kind}: {w['code']}" for f in result.files for w in f.warnings)
    except (PreflightError, UsageError, LocalFileError) as exc:
        return _failed(row, "invalid", exc, started)
    except UploaderError as exc:
        return _failed(row, "failed", exc, started)
    return RowResult(row.line, str(row.path), "ok" if sent else "skipped", job_id, state,
                     sent, round(time.monotonic() - started, 3), warnings=warned)


def _failed(row: Row, outcome: str, exc: Exception, started: float) -> RowResult:
    return RowResult(row.line, str(row.path), outcome, getattr(exc, "job_id", None),
                     seconds=round(time.monotonic() - started, 3), error=type(exc).__name__,
                     message=str(exc))


class _RowProgress(Progress):
    """One row's progress, told to the batch's; a row that waits for its review gives its
    place away (`release`)."""

    def __init__(self, batch: Progress, release: Any) -> None:
        self._batch, self._release = batch, release
        self.held = True

    def on_bytes(self, delta: int) -> None:
        self._batch.on_bytes(delta)

    def on_step(self, step: Step, job_id: str) -> None:
        self._batch.on_step(step, job_id)
        if step is Step.WAITING and self.held:
            self.held = False
            self._release()


@dataclass
class Checked:
    """What `check_rows` found: the rows that cannot be uploaded (each an `invalid` result,
    by line), how many can, and their bytes."""

    invalid: dict[int, RowResult]
    valid: int = 0
    total_bytes: int = 0


async def check_rows(rows: Iterable[Row | RowError]) -> Checked:
    """Every row and file checked before any link is spent (MediaInfo reads headers only):
    a row whose files the review would refuse, or whose part plan its video cannot take,
    is an `invalid` result saying why."""
    from uploader.preflight import check_files
    from uploader.preflight.recordings import size_on_disk
    from uploader.transfer.plan import plan_parts

    checked = Checked({})
    for row in rows:
        if isinstance(row, RowError):
            checked.invalid[row.line] = RowResult.invalid(row)
            continue
        job = row.job
        if isinstance(job, VoiceJob):
            refused = [r for r in await asyncio.to_thread(_voice_reports, job) if not r.ok]
        else:
            refused = [r for r in await check_files(job.paths, job.rules) if not r.ok]
        if refused:
            message = "; ".join((f"{r.path}: " if r.path != row.path else "") + p.message
                                for r in refused for p in r.problems)
            checked.invalid[row.line] = RowResult(row.line, str(row.path), "invalid",
                                                  error="PreflightError", message=message)
            continue
        try:
            if isinstance(job, Job):
                plan_parts(job.video.stat().st_size, parts=job.parts, part_size=job.part_size)
        except UploaderError as error:
            checked.invalid[row.line] = RowResult(row.line, str(row.path), "invalid",
                                                  error=type(error).__name__,
                                                  message=error.message)
            continue
        checked.valid += 1
        checked.total_bytes += sum(size_on_disk(p) for p in _paths(job))
    return checked


def _voice_reports(job: VoiceJob) -> list[Any]:
    """A voice row's preflight (the recordings and the letter; the tenant's durations are
    asked by the upload itself)."""
    from uploader.preflight.documents import check_letter
    from uploader.preflight.recordings import check_recordings
    from uploader.preflight.report import ReviewRules

    rules = ReviewRules(ignore=frozenset(job.ignore))
    return [*check_recordings(job.recordings, edition=job.edition, language=job.language,
                              rules=rules), check_letter(job.grant_file).judged(rules)]


def _paths(job: Job | VoiceJob) -> list[Path]:
    if isinstance(job, VoiceJob):
        return [job.recordings, job.grant_file]
    return list(job.paths.values())


async def upload_rows(client: AsyncClient, rows: Iterable[Row | RowError], *, files: int = 4,
                      submit: bool = False, wait: bool = False, fail_fast: bool = False,
                      progress: Progress | None = None) -> AsyncGenerator[RowResult, None]:
    """Upload every row through `client`, `files` at a time, every row's pieces drawing on
    the client's budget; yield each row's result as it ends. A row waiting for its review
    gives its place to the next; with `fail_fast`, no row starts after one failed or was
    invalid."""
    progress = progress or Progress()
    if isinstance(files, bool) or not isinstance(files, int) or files < 1:
        raise UsageError(f"files must be a whole number of at least 1, not {files!r}")
    results: asyncio.Queue[RowResult | None] = asyncio.Queue()
    slots = asyncio.Semaphore(files)
    stop = asyncio.Event()

    async def ended(result: RowResult) -> None:
        if fail_fast and result.outcome in ("failed", "invalid"):
            stop.set()
        await results.put(result)

    async def one(row: Row) -> None:
        told = _RowProgress(progress, slots.release)
        try:
            result = await upload_row(client, row, submit=submit, wait=wait, progress=told)
        finally:
            if told.held:
                slots.release()
        await ended(result)

    async def run() -> None:
        async with asyncio.TaskGroup() as group:
            for row in rows:
                if stop.is_set():
                    break
                if isinstance(row, RowError):
                    await ended(RowResult.invalid(row))
                    continue
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                group.create_task(one(row))
        await results.put(None)

    runner = asyncio.create_task(run())
    try:
        while (result := await results.get()) is not None:
            yield result
        await runner  # raises what the runner raised, if anything
    finally:
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
