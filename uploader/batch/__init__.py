"""Many videos in one run: rows in, one result per row out as each ends.

`manifest` reads rows (CSV or JSON Lines, lazily); `rows` uploads them through one client
(`AsyncClient.batch`), `files` rows at a time, every row's pieces drawing on the client's
budget (pieces in flight and bandwidth in all). `upload_batch` and `upload_batch_sync` are
shortcuts that open a client for one batch.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

from uploader._checks import MAX_CONCURRENCY
from uploader._progress import Progress
from uploader.batch.manifest import (
    Row,
    RowError,
    manifest_columns,
    read_manifest,
    row_from_json,
)

if TYPE_CHECKING:
    from uploader.batch.rows import OUTCOMES, RowResult

__all__ = ["OUTCOMES", "Row", "RowError", "RowResult", "manifest_columns",
           "read_manifest", "row_from_json", "upload_batch", "upload_batch_sync"]


async def upload_batch(rows: Iterable[Row | RowError], *, files: int = 4, submit: bool = False,
                       wait: bool = False, fail_fast: bool = False,
                       progress: Progress | None = None, **client_options: Any
                       ) -> AsyncGenerator[RowResult, None]:
    """Upload every row with a client of its own (`client_options`: settings, concurrency,
    bwlimit, budget, state_dir...): at most one connection per row in flight beyond the
    budget's pieces. See `AsyncClient.batch`."""
    from uploader._client import AsyncClient

    _defaults(files, client_options)
    async with AsyncClient(**client_options) as client:
        async for result in client.batch(rows, files=files, submit=submit, wait=wait,
                                         fail_fast=fail_fast, progress=progress):
            yield result


def upload_batch_sync(rows: Iterable[Row | RowError], *, files: int = 4, submit: bool = False,
                      wait: bool = False, fail_fast: bool = False,
                      progress: Progress | None = None, **client_options: Any
                      ) -> list[RowResult]:
    """`upload_batch` for synchronous callers: every row's result, in the order they ended."""
    from uploader._client import Client

    _defaults(files, client_options)
    with Client(**client_options) as client:
        return list(client.batch(rows, files=files, submit=submit, wait=wait,
                                 fail_fast=fail_fast, progress=progress))


def _defaults(files: int, options: dict[str, Any]) -> None:
    """A batch's client: pieces in flight tuned over all its rows unless told, and
    connections for the budget's pieces plus one API call per row in flight."""
    budget = options.get("budget")
    pieces = budget.concurrency if budget is not None else options.get("concurrency", "auto")
    if pieces == "auto":
        pieces = MAX_CONCURRENCY
    if isinstance(files, int) and isinstance(pieces, int):
        options.setdefault("connections", pieces + files)


def __getattr__(name: str) -> object:
    """`OUTCOMES` and `RowResult`, from `rows` when first asked (it loads asyncio)."""
    if name in ("OUTCOMES", "RowResult"):
        from uploader.batch import rows

        return getattr(rows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
