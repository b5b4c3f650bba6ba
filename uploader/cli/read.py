"""The commands that read: check files, list jobs, show a job, list voice jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from uploader.api.states import explain_error_code, explain_state, outcome
from uploader.cli.common import (
    READ_WINDOW,
    echo_problems,
    echo_warnings,
    escaped,
    print_json,
    retry_window_option,
    with_client,
)

if TYPE_CHECKING:
    from uploader.preflight import Report

__all__ = ["check", "jobs", "status", "voices"]


@click.command()
@click.argument("videos", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=True, exists=False,
                                readable=False))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object a file.")
@click.option("--background-replacement/--no-background-replacement", default=True,
              help="The job replaces the background (the service's default) or keeps the "
                   "real scene (--no-...).")
@click.option("--human-only", is_flag=True,
              help="The job trains the figure, not the voice (Flexus editions): no sound "
                   "track needed.")
@click.option("--edition", type=click.Choice(["standard", "flexus", "fast-flexus"]),
              default="standard", show_default=True, help="The job's edition.")
@click.option("--ignore", "ignored", multiple=True, metavar="CODE",
              help="Report this problem as a warning for this run (repeat it).")
@click.option("--id-card-front", type=click.Path(path_type=Path, dir_okay=True,
                                                 readable=False),
              help="Check this ID card image (portrait side) too: a face, no glare.")
@click.option("--content-checks/--no-content-checks", default=None,
              help="Judge what the video shows and sounds like (face, green screen, "
                   "orientation, light, sound), or its headers only. Default: on, unless "
                   "UPLOADER_CONTENT_CHECKS=0.")
def check(videos: tuple[Path, ...], as_json: bool, background_replacement: bool,
          human_only: bool, edition: str, ignored: tuple[str, ...],
          id_card_front: Path | None, content_checks: bool | None) -> None:
    """Check videos against MetaStudio's review rules for a job of these options; exit 3 if
    any would be refused. Warnings (the recording guide's advice) do not refuse."""
    from uploader._files import TRAINING_VIDEO, kind
    from uploader.preflight import check_file, content_wanted
    from uploader.preflight.report import ReviewRules

    rules = ReviewRules(background_replacement=background_replacement, human_only=human_only,
                        edition=edition, ignore=frozenset(ignored))
    content = content_wanted(content_checks)
    reports = [check_file(TRAINING_VIDEO, video, rules, content=content) for video in videos]
    if id_card_front is not None:
        reports.append(check_file(kind("id_card_front"), id_card_front, rules,
                                  content=content))
    if as_json:
        print_json([report.to_json() for report in reports])
    else:
        for report in reports:
            _echo_verdict(report)
    if not all(report.ok for report in reports):
        sys.exit(3)


def _echo_verdict(report: Report) -> None:
    from uploader.preflight.report import Facts

    facts = report.facts
    if report.ok and isinstance(facts, Facts):
        click.echo(f"{report.path}: passes ({facts.width}x{facts.height} {facts.orientation}, "
                   f"{facts.duration_seconds:.3f} s, {facts.video_codec})")
    elif report.ok:
        click.echo(f"{report.path}: passes")
    else:
        click.echo(f"{report.path}: would be refused")
        echo_problems(report, err=False)
    echo_warnings(report, err=False)



def _states(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Every state named must be one the service has (API.md §3)."""
    from uploader.api.states import STATES

    unknown = [s for s in (value or "").split(",") if s.strip() and s.strip() not in STATES]
    if unknown:
        raise click.BadParameter(f"no such state: {', '.join(unknown)} (states are written "
                                 "as the service does, e.g. WAIT_FILE_UPLOAD, AUTO_VERIFY_FAILED)")
    return value


@click.command()
@click.option("--state", callback=_states,
              help="Only jobs in these states (comma-separated).")
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@retry_window_option(f"{READ_WINDOW:g}")
def jobs(state: str | None, limit: int, offset: int, as_json: bool,
         retry_window: float | None) -> None:
    """List training jobs."""
    page = with_client(lambda c: c.jobs(state=state, limit=limit, offset=offset),
                       as_json=as_json, retry_window=retry_window)
    if as_json:
        print_json({"count": page.count, "jobs": [job.raw for job in page.jobs]})
        return
    rows = [("JOB ID", "STATE", "CREATED", "NAME")]
    rows += [(j.job_id, j.state, j.create_time or "", escaped(j.name or ""))
             for j in page.jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
                   + "  " + row[3])
    click.echo(f"{len(page.jobs)} shown of {page.count}")


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@retry_window_option(f"{READ_WINDOW:g}")
def status(job_id: str, as_json: bool, retry_window: float | None) -> None:
    """Show a job's state, what it means, and its latest log entry."""
    job = with_client(lambda c: c.status(job_id), as_json=as_json, retry_window=retry_window)
    latest = job.operation_logs[-1] if job.operation_logs else None
    if as_json:
        print_json({
            "job_id": job.job_id, "name": job.name, "state": job.state,
            "meaning": explain_state(job.state), "review_outcome": outcome(job.state),
            "latest_log": None if latest is None else {
                "operate_time": latest.operate_time, "log_type": latest.log_type,
                "log_description": latest.log_description, "error_code": latest.error_code,
                "error_meaning": explain_error_code(latest.error_code),
            },
        })
        return
    click.echo(f"{job.job_id}  {escaped(job.name or '')}")
    click.echo(f"state: {job.state}: {explain_state(job.state)}")
    if latest is not None:
        line = f"latest: {latest.operate_time} {latest.log_type}"
        if latest.log_description:
            line += f": {escaped(latest.log_description)}"
        click.echo(line)
        if latest.error_code:
            meaning = explain_error_code(latest.error_code) or "no explanation known"
            click.echo(f"error code {latest.error_code}: {meaning}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@retry_window_option(f"{READ_WINDOW:g}")
def voices(as_json: bool, retry_window: float | None) -> None:
    """List voice training jobs."""
    page = with_client(lambda c: c.voices(), as_json=as_json, retry_window=retry_window)
    if as_json:
        print_json({"count": page.count, "jobs": [job.raw for job in page.jobs]})
        return
    for job in page.jobs:
        click.echo(f"{job.job_id}  {job.state or '':<16}  {escaped(job.voice_name or '')}")
    click.echo(f"{len(page.jobs)} shown of {page.count}")

