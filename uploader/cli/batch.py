"""`uploader batch MANIFEST`: every video of a manifest, with one budget and a report."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import IO

import click

from uploader._budget import TransferBudget
from uploader._errors import UploaderError
from uploader._files import TRAINING_VIDEO, FileKind, kind
from uploader.batch import Row, RowError, RowResult, read_manifest, upload_batch
from uploader.cli.common import fail, interrupted, print_json, settings
from uploader.cli.upload import _size
from uploader.preflight import check_files

__all__ = ["batch"]

#: Exit status when some rows failed or were invalid while the others were done.
SOME_FAILED = 6


@click.command(epilog="Exit codes: 0 every row done or skipped; 6 some rows failed or were "
               "invalid (the report says which; run again to retry the failed); 2 usage; "
               "4 settings; 130 interrupted (run again to resume).")
@click.argument("manifest")
@click.option("--files", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Videos in flight at once.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Part PUTs in flight at once, over all videos.")
@click.option("--bwlimit", callback=_size, metavar="RATE",
              help="At most RATE bytes a second on the wire, over all videos (40M).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one JSON line per row as it ends.")
@click.option("--fail-fast", is_flag=True, help="Start no row after one failed.")
@click.option("--dry-run", is_flag=True, help="Check every row and file; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary object at the end.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the resume journals are kept.")
@click.option("--submit", "submit_review", is_flag=True, help="Submit each job for review.")
@click.option("--wait", is_flag=True, help="With --submit: wait for each review's outcome.")
@click.option("--quiet", is_flag=True, help="No line per row.")
def batch(manifest: str, files: int, concurrency: int, bwlimit: int | None,
          report: Path | None, fail_fast: bool, dry_run: bool, as_json: bool,
          state_dir: Path | None, submit_review: bool, wait: bool, quiet: bool) -> None:
    """Upload every video of MANIFEST (CSV with a header row, or JSON Lines): columns
    path, name or job_id, and optionally parts, part_size, id_card_front, id_card_back,
    grant_file, cover, action_video, audio, tags (;-separated), batch_name, contact."""
    started = time.monotonic()
    counts = dict.fromkeys(("ok", "skipped", "failed", "invalid"), 0)
    sent = 0

    async def run(out: IO[str] | None) -> None:
        nonlocal sent
        invalid = await _preflight(manifest)
        for result in invalid.values():
            _ended(result, out, counts, quiet)
        if dry_run or (fail_fast and invalid):
            return
        budget = TransferBudget(concurrency=concurrency, bwlimit=bwlimit)
        rows = (row for row in read_manifest(manifest) if row.line not in invalid)
        async for result in upload_batch(rows, files=files, budget=budget,
                                         settings=settings(), state_dir=state_dir,
                                         submit=submit_review, wait=wait,
                                         fail_fast=fail_fast):
            sent += result.bytes_uploaded
            _ended(result, out, counts, quiet)

    try:
        with _opened(report) as out:
            asyncio.run(run(out))
    except UploaderError as error:
        fail(error, as_json=as_json)
    except KeyboardInterrupt:
        interrupted("rows done so far are kept; run the same command again to resume the "
                    "others.", as_json=as_json, job_id=None)
    if as_json:
        print_json({"rows": sum(counts.values()), **counts, "bytes_uploaded": sent,
                    "seconds": round(time.monotonic() - started, 3)})
    elif not quiet:
        click.echo(", ".join(f"{n} {k}" for k, n in counts.items()), err=True)
    if counts["failed"] or counts["invalid"]:
        sys.exit(SOME_FAILED)


async def _preflight(manifest: str) -> dict[int, RowResult]:
    """The rows that cannot be uploaded, by line: every row and file is checked before any
    link is spent (MediaInfo reads headers only: fast for any number of rows)."""
    invalid: dict[int, RowResult] = {}
    for row in read_manifest(manifest):
        if isinstance(row, RowError):
            invalid[row.line] = RowResult(row.line, row.path, "invalid", error="RowError",
                                          message=row.message)
            continue
        refused = [r for r in await check_files(_paths(row)) if not r.ok]
        if refused:
            message = "; ".join(f"{r.path}: {p.message}" for r in refused for p in r.problems)
            invalid[row.line] = RowResult(row.line, str(row.path), "invalid",
                                          error="PreflightError", message=message)
    return invalid


def _paths(row: Row) -> dict[FileKind, Path]:
    return {TRAINING_VIDEO: row.path} | {kind(k): p for k, p in row.files.items()}


def _ended(result: RowResult, out: IO[str] | None, counts: dict[str, int],
           quiet: bool) -> None:
    counts[result.outcome] += 1
    if out is not None:
        out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        out.flush()  # a crash leaves every line written so far whole
    if not quiet:
        job = f" job {result.job_id}" if result.job_id else ""
        why = f": {result.message}" if result.message else ""
        click.echo(f"line {result.line}: {result.path}:{job} {result.outcome}{why}", err=True)


class _opened:
    """The report file (written anew by each run), or nothing."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> IO[str] | None:
        if self._path is not None:
            try:
                self._file = self._path.open("w", encoding="utf-8")
            except OSError as exc:
                raise click.UsageError(f"cannot write the report {self._path}: "
                                       f"{exc.strerror}") from None
        return self._file

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()

