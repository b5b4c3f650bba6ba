"""The `uploader` command: parse, call the library, print, exit with the documented code."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from uploader._api import MetaStudioClient
from uploader._errors import PreflightError, TransferError, UploaderError
from uploader._plan import parse_size
from uploader._preflight import Report, check_video
from uploader._redact import RedactingFilter, redact
from uploader._settings import Settings
from uploader._states import explain_error_code, explain_state
from uploader._upload import UploadResult, upload_video

__all__ = ["main"]

T = TypeVar("T")


def _fail(error: UploaderError) -> NoReturn:
    if isinstance(error, PreflightError):
        click.echo(f"error: {error.report.path} would be refused by review; nothing was sent",
                   err=True)
        _echo_problems(error.report, err=True)
    else:
        click.echo(redact(f"error: {error}"), err=True)
    if isinstance(error, TransferError):
        click.echo("The parts sent so far are kept: run the same command again to resume.",
                   err=True)
    sys.exit(error.exit_code)


def _with_client(call: Callable[[MetaStudioClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with MetaStudioClient(_settings()) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except UploaderError as error:
        _fail(error)


def _settings() -> Settings:
    """Settings from the environment, with the command line's --allow-http."""
    allow = click.get_current_context().find_root().params.get("allow_http")
    return Settings.from_env(allow_http=True if allow else None)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Log everything (same as -vv).")
@click.option("--allow-http", is_flag=True,
              help="Allow a plain http:// endpoint that is not on loopback (unsafe).")
@click.version_option(package_name="uploader")
def main(verbose: int, debug: bool, allow_http: bool) -> None:
    """Upload training videos to Huawei Cloud MetaStudio digital-human training jobs.

    Settings come from the environment: METASTUDIO_ENDPOINT (or METASTUDIO_REGION),
    METASTUDIO_PROJECT_ID, and CLOUD_SDK_AK + CLOUD_SDK_SK or METASTUDIO_AUTH_TOKEN.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(2 if debug else verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


@main.command()
@click.argument("videos", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object a file.")
def check(videos: tuple[Path, ...], as_json: bool) -> None:
    """Check videos against MetaStudio's review rules; exit 3 if any would be refused."""
    reports = [check_video(video) for video in videos]
    if as_json:
        _print_json([report.to_json() for report in reports])
    else:
        for report in reports:
            _echo_verdict(report)
    if not all(report.ok for report in reports):
        sys.exit(3)


def _echo_verdict(report: Report) -> None:
    facts = report.facts
    if report.ok and facts is not None:
        click.echo(f"{report.path}: passes ({facts.width}x{facts.height} {facts.orientation}, "
                   f"{facts.duration_seconds:.3f} s, {facts.video_codec})")
        return
    click.echo(f"{report.path}: would be refused")
    _echo_problems(report, err=False)


def _echo_problems(report: Report, *, err: bool) -> None:
    for problem in report.problems:
        click.echo(f"  - {problem.code}: {problem.message}", err=err)


@main.command()
@click.option("--state", help="Only jobs in these states (comma-separated).")
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs(state: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List training jobs."""
    page = _with_client(lambda c: c.list_jobs(state=state, limit=limit, offset=offset))
    if as_json:
        _print_json({"count": page.count, "jobs": [job.raw for job in page.jobs]})
        return
    rows = [("JOB ID", "STATE", "CREATED", "NAME")]
    rows += [(j.job_id, j.state, j.create_time or "", j.name or "") for j in page.jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
                   + "  " + row[3])
    click.echo(f"{len(page.jobs)} shown of {page.count}")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's state, what it means, and its latest log entry."""
    job = _with_client(lambda c: c.show_job(job_id))
    latest = job.operation_logs[-1] if job.operation_logs else None
    if as_json:
        _print_json({
            "job_id": job.job_id, "name": job.name, "state": job.state,
            "meaning": explain_state(job.state),
            "latest_log": None if latest is None else {
                "operate_time": latest.operate_time, "log_type": latest.log_type,
                "log_description": latest.log_description, "error_code": latest.error_code,
                "error_meaning": explain_error_code(latest.error_code),
            },
        })
        return
    click.echo(f"{job.job_id}  {job.name or ''}")
    click.echo(f"state: {job.state}: {explain_state(job.state)}")
    if latest is not None:
        line = f"latest: {latest.operate_time} {latest.log_type}"
        if latest.log_description:
            line += f": {latest.log_description}"
        click.echo(line)
        if latest.error_code:
            meaning = explain_error_code(latest.error_code) or "no explanation known"
            click.echo(f"error code {latest.error_code}: {meaning}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def voices(as_json: bool) -> None:
    """List voice training jobs."""
    page = _with_client(lambda c: c.list_voice_jobs())
    if as_json:
        _print_json({"count": page.count, "jobs": [job.raw for job in page.jobs]})
        return
    for job in page.jobs:
        click.echo(f"{job.job_id}  {job.state or '':<16}  {job.voice_name or ''}")
    click.echo(f"{len(page.jobs)} shown of {page.count}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8790, show_default=True,
              help="0 picks a free port.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where jobs and parts are kept [default: a new temporary folder].")
@click.option("--project-id", default="0a1b2c3d4e5f40718293a4b5c6d7e8f9", show_default=True)
@click.option("--ak", default="EMULATORAKEXAMPLE0001", show_default=True)
@click.option("--sk", default="emulator-sk-not-a-secret-0000000000000000", show_default=True)
@click.option("--token", default="emulator-token-not-a-secret", show_default=True)
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of part PUTs answered 500/503 before storing.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of part PUTs stored, then cut off with no response.")
@click.option("--reset-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of part PUTs cut off half-way through the body (nothing stored).")
@click.option("--link-rate", type=click.FloatRange(min=1, min_open=False), default=None,
              help="Read each request body no faster than this many bytes a second.")
@click.option("--url-ttl", type=click.IntRange(1), default=86400, show_default=True,
              help="Seconds an upload URL stays valid.")
@click.option("--update-resets-parts", is_flag=True, help="Every update drops stored parts.")
@click.option("--review-delay", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Seconds the automatic review takes.")
@click.option("--seed", type=int, default=None, help="Seed the fault injection.")
def emulator(host: str, port: int, data_dir: Path | None, **options: Any) -> None:
    """Run a local MetaStudio emulator until interrupted."""
    from uploader.emulator import EmulatorConfig, start_emulator

    folder = data_dir or Path(tempfile.mkdtemp(prefix="metastudio-emulator-"))
    config = EmulatorConfig(data_dir=folder, **options)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = await start_emulator(config, host, port)
        click.echo(f"MetaStudio emulator serving on {running.url} (data in {folder})")
        exports = " ".join(f"{k}={v}" for k, v in running.client_env().items())
        click.echo(f"export {exports}")
        sys.stdout.flush()
        await stop.wait()
        await running.stop()

    asyncio.run(serve())


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_size(value)
    except UploaderError as error:
        raise click.BadParameter(error.message) from None


@main.command(epilog="Exit codes: 0 done; 2 usage; 3 the video would be refused (nothing "
               "sent); 4 API, settings, job state, changed file or a run already going; 5 the "
               "transfer did not complete (run the same command to resume); 130 interrupted.")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--job-id", help="Upload to this existing job.")
@click.option("--name", help="Create a job with this name and upload to it.")
@click.option("--parts", type=click.IntRange(1, 1000), help="Cut the file into N parts.")
@click.option("--part-size", callback=_size, help="Cut the file into parts of SIZE (32MiB, 8M).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Parts in flight at once.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the resume journal is kept [default: the user state folder].")
@click.option("--restart", is_flag=True, help="Forget any earlier attempt; send every part.")
@click.option("--wait", is_flag=True, help="After confirming, wait for the review's outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--emulator", "use_emulator", is_flag=True,
              help="Upload to a local emulator started for this command (implies --wait).")
def upload(video: Path, job_id: str | None, name: str | None, parts: int | None,
           part_size: int | None, concurrency: int, state_dir: Path | None, restart: bool,
           wait: bool, as_json: bool, quiet: bool, use_emulator: bool) -> None:
    """Upload VIDEO to a training job, resuming any earlier attempt, and confirm it."""
    if (job_id is None) == (name is None):
        raise click.UsageError("give exactly one of --job-id or --name")
    bar = _Bar() if not quiet and not as_json and sys.stderr.isatty() else None
    options: dict[str, Any] = dict(
        job_id=job_id, name=name, parts=parts, part_size=part_size, concurrency=concurrency,
        state_dir=state_dir, restart=restart, wait=wait or use_emulator,
        progress=bar.show if bar else None)

    async def run() -> UploadResult:
        if not use_emulator:
            return await upload_video(video, settings=_settings(), **options)
        from uploader.emulator import EmulatorConfig, start_emulator

        # The emulator lives for this command only: so do its data (a copy of the video).
        with tempfile.TemporaryDirectory(prefix="metastudio-emulator-") as folder:
            running = await start_emulator(
                EmulatorConfig(data_dir=Path(folder), review_delay=0.2))
            if not quiet and not as_json:
                click.echo(f"using a local MetaStudio emulator at {running.url}", err=True)
            try:
                return await upload_video(
                    video, settings=Settings.from_env(running.client_env()), **options)
            finally:
                await running.stop()

    try:
        result = asyncio.run(run())
    except UploaderError as error:
        _fail(error)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the parts sent so far are kept; run the same command "
                   "again to resume.", err=True)
        sys.exit(130)
    finally:
        if bar:
            bar.close()
    if as_json:
        _print_json(result.to_json())
    elif not quiet:
        _echo_summary(video, result)


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


class _Bar:
    """A tqdm bar of bytes that can wind back when a part is retried."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
                         leave=False)

    def show(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.reset(total=total)
        self._bar.n = done
        if done in (0, total):
            self._bar.refresh()
        else:
            self._bar.update(0)  # redraws at most every mininterval

    def close(self) -> None:
        self._bar.close()


def _echo_summary(video: Path, result: UploadResult) -> None:
    rate = result.bytes_uploaded / result.seconds if result.seconds else 0.0
    click.echo(f"{video}: job {result.job_id}: {result.parts_uploaded} of {result.parts_total}"
               f" parts sent ({result.parts_skipped} already there), "
               f"{_human(result.bytes_uploaded)} in {result.seconds:.1f} s "
               f"({_human(rate)}/s)")
    click.echo(f"state: {result.state}: {result.state_meaning}")
    if result.review_error_code:
        click.echo(f"review error {result.review_error_code}: "
                   f"{result.review_error_meaning or 'no explanation known'}")
