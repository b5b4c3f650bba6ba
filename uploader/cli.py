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
from typing import Any, TypeVar

import click

from uploader._api import MetaStudioClient
from uploader._errors import UploaderError
from uploader._preflight import Report, check_video
from uploader._settings import Settings
from uploader._states import explain_error_code, explain_state

__all__ = ["main"]

T = TypeVar("T")


def _fail(error: UploaderError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


def _with_client(call: Callable[[MetaStudioClient], Awaitable[T]]) -> T:
    async def run() -> T:
        async with MetaStudioClient(Settings.from_env()) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except UploaderError as error:
        _fail(error)
        raise AssertionError("unreachable") from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="uploader")
def main(verbose: int) -> None:
    """Upload training videos to Huawei Cloud MetaStudio digital-human training jobs.

    Settings come from the environment: METASTUDIO_ENDPOINT (or METASTUDIO_REGION),
    METASTUDIO_PROJECT_ID, and CLOUD_SDK_AK + CLOUD_SDK_SK or METASTUDIO_AUTH_TOKEN.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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
    for problem in report.problems:
        click.echo(f"  - {problem.code}: {problem.message}")


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
