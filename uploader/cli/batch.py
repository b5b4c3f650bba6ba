"""`uploader batch MANIFEST`: every video of a manifest, with one budget and a report."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from uploader._errors import UploaderError
from uploader._progress import Progress
from uploader.batch.manifest import Row, manifest_columns, read_manifest
from uploader.cli.common import (
    INTERRUPTED,
    TERMINATED,
    Terminated,
    celery,
    fail,
    interrupted,
    limits_of,
    print_json,
    settings,
    sigterm_raises,
    transfer_options,
)
from uploader.cli.common import run as run_stoppable

if TYPE_CHECKING:
    from uploader._limits import Limits
    from uploader.batch.rows import RowResult

__all__ = ["batch"]

#: Exit status when some rows failed or were invalid while the others were done.
SOME_FAILED = 6
#: Seconds between status lines where stderr is not a terminal.
STATUS_EVERY = 5.0


@click.command(help="Upload every video of MANIFEST (CSV with a header row, or JSON Lines): "
               "columns path (required), name or job_id, and optionally "
               f"{', '.join(c for c in manifest_columns() if c not in ('path', 'name', 'job_id'))}"
               " (tags ;-separated in CSV).",
               epilog="Exit codes: 0 every row done or skipped; 6 some rows failed or were "
               "invalid (the report says which; run again to retry the failed); 2 usage; "
               "4 settings; 130 interrupted (run again to resume); 143 stopped by SIGTERM "
               "(as Ctrl-C).")
@click.argument("manifest")
@click.option("--files", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Videos in flight at once.")
@transfer_options(most=256, over=", over all videos")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one JSON line per row as it ends.")
@click.option("--fail-fast", is_flag=True, help="Start no row after one failed.")
@click.option("--dry-run", is_flag=True, help="Check every row and file; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary object at the end.")
@click.option("--submit", "submit_review", is_flag=True, help="Submit each job for review.")
@click.option("--wait", is_flag=True, help="With --submit: wait for each review's outcome.")
@click.option("--quiet", is_flag=True, help="No line per row.")
@click.option("--broker", metavar="URL",
              help="Send the rows to the workers on this broker (amqp://...) instead of "
                   "uploading them here; see `uploader worker`.")
@click.pass_context
def batch(ctx: click.Context, manifest: str, files: int, concurrency: int | str,
          bwlimit: int | None, report: Path | None, fail_fast: bool, dry_run: bool,
          as_json: bool, state_dir: Path | None, submit_review: bool, wait: bool,
          quiet: bool, broker: str | None, retries: int | None,
          retry_window: float | None) -> None:
    """Upload every video of MANIFEST (see the help above, made from the columns)."""
    from uploader.batch.rows import OUTCOMES

    if broker is not None:
        _refuse_local_options(ctx, "files", "concurrency", "bwlimit", "state_dir", "wait",
                              "fail_fast", "retries", "retry_window")
    run = _Batch(files=files, submit=submit_review, wait=wait, fail_fast=fail_fast,
                 broker=broker, state_dir=state_dir, counts=dict.fromkeys(OUTCOMES, 0),
                 limits=limits_of({"concurrency": concurrency, "bwlimit": bwlimit,
                                   "retries": retries, "retry_window": retry_window}))
    try:
        with _opened(report) as out, _rereadable(manifest) as (manifest, base):
            run.rows(manifest, base, out, quiet=quiet or as_json, dry_run=dry_run,
                     say_dry_run=not as_json)
    except UploaderError as error:
        fail(error, as_json=as_json)
    except (KeyboardInterrupt, Terminated) as stop:
        interrupted("rows done so far are kept; run the same command again to resume the "
                    "others." if broker is None else
                    "rows not started were withdrawn, rows running end on their workers; "
                    "run the same command again: rows done are skipped.",
                    as_json=as_json, job_id=None,
                    code=TERMINATED if isinstance(stop, Terminated) else INTERRUPTED)
    counts = run.counts
    if as_json:
        print_json({"rows": sum(counts.values()), **counts, "bytes_uploaded": run.sent,
                    "seconds": round(time.monotonic() - run.started, 3)})
    elif not quiet:
        click.echo(", ".join(f"{n} {k}" for k, n in counts.items()), err=True)
    if counts["failed"] or counts["invalid"]:
        sys.exit(SOME_FAILED)


@dataclass
class _Batch:
    """One batch command: what it was asked, and what it counted."""

    files: int
    submit: bool
    wait: bool
    fail_fast: bool
    broker: str | None
    state_dir: Path | None
    limits: Limits
    counts: dict[str, int]
    sent: int = 0
    started: float = field(default_factory=time.monotonic)

    def rows(self, manifest: str, base: Path | None, out: IO[str] | None, *, quiet: bool,
             dry_run: bool, say_dry_run: bool) -> None:
        """Check every row (the library's `check_rows`), then send those that can go."""
        from uploader.batch.rows import check_rows

        checked = run_stoppable(check_rows(read_manifest(manifest, base=base)))
        status = _Status(self.counts, rows=checked.valid, total=checked.total_bytes,
                         quiet=quiet)
        for result in checked.invalid.values():
            status.ended(result, out)
        if dry_run and say_dry_run:
            click.echo(f"{checked.valid} row(s) would upload "
                       f"({checked.total_bytes / 2**20:.1f} MiB); {len(checked.invalid)} "
                       "invalid", err=True)
        if dry_run or (self.fail_fast and checked.invalid):
            return
        rows = (row for row in read_manifest(manifest, base=base)
                if isinstance(row, Row) and row.line not in checked.invalid)
        try:
            if self.broker is None:
                run_stoppable(self._here(out, status, rows))
            else:
                with sigterm_raises():
                    self._to_workers(out, status, rows)
        finally:
            status.close()

    def _ended(self, result: RowResult, status: _Status, out: IO[str] | None) -> None:
        self.sent += result.bytes_uploaded
        status.ended(result, out)

    async def _here(self, out: IO[str] | None, status: _Status, rows: Iterator[Row]) -> None:
        from uploader.batch import upload_batch

        async for result in upload_batch(rows, files=self.files, submit=self.submit,
                                         wait=self.wait, fail_fast=self.fail_fast,
                                         progress=status, settings=settings(),
                                         limits=self.limits, state_dir=self.state_dir):
            self._ended(result, status, out)

    def _to_workers(self, out: IO[str] | None, status: _Status, rows: Iterator[Row]) -> None:
        results = celery().send_batch(rows, submit=self.submit, broker=self.broker,
                                      progress=status)
        with contextlib.closing(results):  # stopped early: the rows not started are revoked
            for result in results:
                self._ended(result, status, out)


def _refuse_local_options(ctx: click.Context, *names: str) -> None:
    """With --broker the workers upload: options of a local run would be silently ignored."""
    given = [n for n in names
             if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise click.UsageError(f"{flags}: not with --broker; the workers upload, each with "
                               "its own settings (uploader worker --help)")


class _Status(Progress):
    """What the batch shows: on a terminal a bar of bytes naming the rows done, failed and
    pending; elsewhere a status line every STATUS_EVERY seconds; a line per row as it ends."""

    def __init__(self, counts: dict[str, int], *, rows: int, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.counts, self.rows, self.total, self.quiet = counts, rows, total, quiet
        self.done = 0
        self.shown = time.monotonic()
        self.bar = tqdm(total=total, unit="iB", unit_scale=True, unit_divisor=1024,
                        dynamic_ncols=True, leave=False, desc=self._what()) \
            if not quiet and sys.stderr.isatty() else None

    def _what(self) -> str:
        ended = self.counts["ok"] + self.counts["skipped"] + self.counts["failed"]
        return (f"batch: {self.counts['ok'] + self.counts['skipped']} done, "
                f"{self.counts['failed']} failed, {self.rows - ended} pending")

    def on_bytes(self, delta: int) -> None:
        self.done += delta
        done = self.done
        if self.bar is not None:
            self.bar.n = done
            self.bar.update(0)
        elif not self.quiet and time.monotonic() - self.shown >= STATUS_EVERY:
            self.shown = time.monotonic()
            click.echo(f"{self._what()}; {done / 2**20:.1f} of {self.total / 2**20:.1f} MiB",
                       err=True)

    def ended(self, result: RowResult, out: IO[str] | None) -> None:
        self.counts[result.outcome] += 1
        if out is not None:
            out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            out.flush()  # a crash leaves every line written so far whole
        if self.quiet:
            return
        job = f" job {result.job_id}" if result.job_id else ""
        why = f": {result.message}" if result.message else ""
        line = f"line {result.line}: {result.path}:{job} {result.outcome}{why}"
        if self.bar is not None:
            self.bar.set_description(self._what())
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _rereadable(manifest: str) -> Iterator[tuple[str, Path | None]]:
    """The manifest as a file that can be read twice (stdin is copied to a temporary file,
    its paths still relative to the current folder), and the folder paths are relative to."""
    if manifest != "-":
        yield manifest, None
        return
    with tempfile.TemporaryDirectory(prefix="uploader-manifest-") as folder:
        copy = Path(folder) / "stdin.csv"
        with copy.open("wb") as out:  # its bytes as they are: a bad row is refused alone
            shutil.copyfileobj(sys.stdin.buffer, out)
        yield str(copy), Path.cwd()


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
