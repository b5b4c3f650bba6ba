"""Many videos in one run: rows in, one result per row out as each ends.

`upload_batch` runs `upload_video` for each row, `files` rows at a time, every row's pieces
drawing on one `TransferBudget` (pieces in flight and bandwidth in all). Rows are taken
lazily: a manifest of any length costs the memory of the rows in flight. A row's failure
does not stop the others (unless `fail_fast`). Re-running the same rows creates no second
job: `upload_video` finds the job it made for a row by its content tag, and a row whose
files the job holds already is reported `skipped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from uploader._errors import PreflightError, UploaderError, UsageError
from uploader.api.settings import Settings
from uploader.batch.manifest import FILE_COLUMNS, Row, RowError, read_manifest, row_from_json
from uploader.transfer.budget import TransferBudget
from uploader.workflow import upload_video

__all__ = ["FILE_COLUMNS", "OUTCOMES", "Row", "RowError", "RowResult", "read_manifest",
           "row_from_json",
           "upload_batch", "upload_batch_sync"]

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def upload_batch(
    rows: Iterable[Row | RowError], *, files: int = 4, budget: TransferBudget | None = None,
    settings: Settings | None = None, state_dir: str | os.PathLike[str] | None = None,
    submit: bool = False, wait: bool = False, fail_fast: bool = False,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[RowResult]:
    """Upload every row, `files` at a time; yield each row's result as it ends. A row that
    waits for its review (`submit` and `wait`) gives its place to the next. With
    `fail_fast`, no row starts after one failed or was invalid. `progress(done_bytes)` follows
    the bytes of every row in flight or ended."""
    if isinstance(files, bool) or not isinstance(files, int) or files < 1:
        raise UsageError(f"files must be a whole number of at least 1, not {files!r}")
    budget = budget or TransferBudget()
    settings = settings or Settings.from_env()
    results: asyncio.Queue[RowResult | None] = asyncio.Queue()
    slots = asyncio.Semaphore(files)
    stop = asyncio.Event()

    async def ended(result: RowResult) -> None:
        if fail_fast and result.outcome in ("failed", "invalid"):
            stop.set()
        await results.put(result)

    async def run() -> None:
        async with asyncio.TaskGroup() as group:
            for row in rows:
                if stop.is_set():
                    break
                if isinstance(row, RowError):
                    await ended(RowResult(row.line, row.path, "invalid", error="RowError",
                                          message=row.message))
                    continue
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                group.create_task(one(row))
        await results.put(None)

    # One session for every row: at most K part PUTs and one API call per row at once.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=budget.concurrency + files))

    done = 0  # bytes of every row, in flight or ended: a running sum, flat in the rows

    def row_progress() -> Callable[[int, int], None]:
        row_done = 0

        def report(sent: int, total: int) -> None:
            nonlocal done, row_done
            done += sent - row_done
            row_done = sent
            if progress is not None:
                progress(done)
        return report

    async def one(row: Row) -> None:
        held = True

        def on_step(step: str, job_id: str) -> None:
            nonlocal held
            if step == "waiting" and held:  # waiting for a review holds no place
                held = False
                slots.release()

        try:
            result = await _upload_row(row, budget=budget, settings=settings,
                                       state_dir=state_dir, submit=submit, wait=wait,
                                       session=session, on_step=on_step,
                                       progress=row_progress())
        finally:
            if held:
                slots.release()
        await ended(result)

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
        await session.close()


def upload_batch_sync(rows: Iterable[Row | RowError], **options: Any) -> list[RowResult]:
    """`upload_batch` for synchronous callers: every row's result, in the order they ended."""
    async def collect() -> list[RowResult]:
        return [result async for result in upload_batch(rows, **options)]

    return asyncio.run(collect())


async def _upload_row(row: Row, *, budget: TransferBudget, settings: Settings,
                      state_dir: str | os.PathLike[str] | None, submit: bool,
                      wait: bool, session: aiohttp.ClientSession,
                      on_step: Callable[[str, str], None],
                      progress: Callable[[int, int], None]) -> RowResult:
    started = time.monotonic()
    try:
        result = await upload_video(
            row.path, job_id=row.job_id, name=row.name, parts=row.parts,
            part_size=row.part_size, settings=settings, state_dir=state_dir, submit=submit,
            wait=wait, budget=budget, session=session, on_step=on_step, progress=progress,
            tags=row.tags,
            batch_name=row.batch_name,
            contact=row.contact, id_card_front=row.files.get("id_card_front"),
            id_card_back=row.files.get("id_card_back"), grant_file=row.files.get("grant_file"),
            cover=row.files.get("cover"), action_video=row.files.get("action_video"),
            audio=row.files.get("audio"))
    except (PreflightError, UsageError, FileNotFoundError) as exc:
        return _failed(row, "invalid", exc, started)
    except UploaderError as exc:
        return _failed(row, "failed", exc, started)
    outcome = "ok" if result.bytes_uploaded else "skipped"
    return RowResult(row.line, str(row.path), outcome, result.job_id, result.state,
                     result.bytes_uploaded, round(time.monotonic() - started, 3))


def _failed(row: Row, outcome: str, exc: Exception, started: float) -> RowResult:
    return RowResult(row.line, str(row.path), outcome, getattr(exc, "job_id", None),
                     seconds=round(time.monotonic() - started, 3), error=type(exc).__name__,
                     message=str(exc))
