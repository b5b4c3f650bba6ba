"""Many videos in one run: rows in, one result per row out as each ends.

`manifest` reads rows (CSV or JSON Lines, lazily); `rows` uploads them through one client
(`upload_rows(client, rows)`; `upload_row` for one), `files` rows at a time, every row's
pieces drawing on the client's budget (pieces in flight and bandwidth in all).
`upload_batch` and `upload_batch_sync` are shortcuts that open a client for one batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING

from uploader._limits import Limits, connections_for
from uploader._progress import Progress
from uploader.batch.manifest import (
    Row,
    RowError,
    manifest_columns,
    read_manifest,
    row_from_json,
)

if TYPE_CHECKING:
    from uploader.api.settings import Settings
    from uploader.batch.rows import OUTCOMES, RowResult, upload_row, upload_rows
    from uploader.transfer.budget import TransferBudget
    from uploader.transfer.engine import TransferConfig

__all__ = ["OUTCOMES", "Row", "RowError", "RowResult", "manifest_columns",
           "read_manifest", "row_from_json", "upload_batch", "upload_batch_sync",
           "upload_row", "upload_rows"]


async def upload_batch(rows: Iterable[Row | RowError], *, files: int = 4, submit: bool = False,
                       wait: bool = False, fail_fast: bool = False,
                       progress: Progress | None = None, settings: Settings | None = None,
                       limits: Limits | None = None, budget: TransferBudget | None = None,
                       state_dir: str | os.PathLike[str] | None = None,
                       transfer: TransferConfig | None = None
                       ) -> AsyncGenerator[RowResult, None]:
    """Upload every row with a client of its own (`settings`, `limits`... as for
    `AsyncClient`), `files` rows at a time; yield each row's result as it ends. Unless
    `limits` say otherwise, the client has a connection for each piece in flight and one
    for each row's API calls (`connections_for`)."""
    from uploader._client import AsyncClient
    from uploader.batch.rows import upload_rows

    limits = _for_rows(limits or Limits(), files, budget)
    async with AsyncClient(settings, limits=limits, budget=budget, state_dir=state_dir,
                           transfer=transfer) as client:
        async for result in upload_rows(client, rows, files=files, submit=submit, wait=wait,
                                        fail_fast=fail_fast, progress=progress or Progress()):
            yield result


def upload_batch_sync(rows: Iterable[Row | RowError], *, files: int = 4, submit: bool = False,
                      wait: bool = False, fail_fast: bool = False,
                      progress: Progress | None = None, settings: Settings | None = None,
                      limits: Limits | None = None, budget: TransferBudget | None = None,
                      state_dir: str | os.PathLike[str] | None = None,
                      transfer: TransferConfig | None = None) -> list[RowResult]:
    """`upload_batch` for synchronous callers (inside a running event loop too: it then
    runs in a thread of its own): every row's result, in the order they ended."""
    import asyncio
    import concurrent.futures
    async def every() -> list[RowResult]:
        return [result async for result in upload_batch(
            rows, files=files, submit=submit, wait=wait, fail_fast=fail_fast,
            progress=progress, settings=settings, limits=limits, budget=budget,
            state_dir=state_dir, transfer=transfer)]

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(every())
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, every()).result()


def _for_rows(limits: Limits, files: int, budget: TransferBudget | None) -> Limits:
    """`limits` with room for the API calls of `files` rows at once, unless they set the
    connections."""
    if limits.connections is not None or isinstance(files, bool) or not isinstance(files, int):
        return limits
    pieces = (budget or limits.budget()).concurrency
    return dataclasses.replace(limits, connections=connections_for(pieces, uploads=files))


def __getattr__(name: str) -> object:
    """`OUTCOMES`, `RowResult`, `upload_row` and `upload_rows`, from `rows` when first
    asked."""
    if name in ("OUTCOMES", "RowResult", "upload_row", "upload_rows"):
        from uploader.batch import rows

        return getattr(rows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
