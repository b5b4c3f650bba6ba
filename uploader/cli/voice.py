"""`uploader voice`: a voice training job's upload, status, deletion and quality check, and
the list of voice jobs (`uploader voices` is the same listing)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from uploader.cli.common import (
    READ_WINDOW,
    escaped,
    fail,
    print_json,
    retry_window_option,
    with_client,
)
from uploader.cli.read import voices

if TYPE_CHECKING:
    from uploader._client import AsyncClient
    from uploader.api.settings import Settings
    from uploader.workflow.voice import VoiceResult

__all__ = ["voice"]

#: States a review ends in refused: the command exits 3, as for a file refused.
_REFUSED = ("AUDIT_FAILED", "FAILED", "USER_REVIEW_REJECT", "SPLIT_FAILED")


@click.group()
def voice() -> None:
    """Voice training jobs: upload recordings (resuming), follow, delete, pre-check."""


voice.add_command(voices, "list")

_PATH = click.Path(path_type=Path, exists=False, readable=False)


@voice.command(epilog="Exit codes as upload's: 0 done; 2 usage; 3 a recording the review "
               "would refuse (or a sentence the service did not confirm, or a review that "
               "refused the job); 4 API or settings; 5 the transfer did not complete "
               "(run the same command again: it resumes).")
@click.argument("recordings", type=_PATH)
@click.option("--name", required=True, help="The voice's name (voice_name); a re-run finds "
              "the job again by it.")
@click.option("--edition", type=click.Choice(["basic", "middle", "advance", "third-party"]),
              required=True, help="basic: 20 sentences, middle: 100, advance and "
              "third-party: one long recording.")
@click.option("--sex", type=click.Choice(["FEMALE", "MALE"], case_sensitive=False),
              required=True)
@click.option("--language", type=click.Choice(["CN", "EN"], case_sensitive=False),
              required=True, help="The language the texts are in.")
@click.option("--tag", default="ECOMMERCE", show_default=True,
              type=click.Choice(["ECOMMERCE", "NEWS", "MARKETING", "LIVE", "EDUCATION",
                                 "CUSTOMER", "STORYTELLING"], case_sensitive=False))
@click.option("--grant-file", type=_PATH, required=True,
              help="The signed authorization letter (PDF, JPEG or PNG).")
@click.option("--segments", "create_type", flag_value="SEGMENT",
              help="Send each sentence's WAV and text, confirming each (a folder).")
@click.option("--package", "create_type", flag_value="PACKAGE",
              help="Send one zip (built from a folder, or the zip given).")
@click.option("--link-2d", metavar="JOB_ID", help="The 2D training job this voice is for.")
@click.option("--ignore", multiple=True, metavar="CODE",
              help="Report this preflight problem as a warning for this run (repeat it).")
@click.option("--commit", is_flag=True, help="Commit the job once its files are in: the "
              "review starts.")
@click.option("--wait", is_flag=True, help="With --commit: follow the review to its end.")
@click.option("--restart", is_flag=True, help="Forget any earlier attempt: a new job.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--emulator", "use_emulator", is_flag=True,
              help="Upload to a local emulator started for this command (implies --wait).")
def upload(recordings: Path, as_json: bool, use_emulator: bool, commit: bool, wait: bool,
           restart: bool, **options: Any) -> None:
    """Upload a folder (0.wav, 0.txt, 1.wav, ...) or a zip of recordings to a voice training
    job, resuming any earlier attempt; with --commit, commit it for review."""
    from uploader._errors import UploaderError
    from uploader._voice_job import VoiceJob
    from uploader.cli.upload import run_call

    try:
        job = VoiceJob(recordings=recordings, name=options["name"],
                       edition=options["edition"], sex=options["sex"],
                       language=options["language"], tag=options["tag"],
                       grant_file=options["grant_file"], create_type=options["create_type"],
                       link_2d=options["link_2d"], ignore=tuple(options["ignore"]))
    except UploaderError as error:
        fail(error, as_json=as_json)
    wait = wait or use_emulator

    async def call(env: Settings) -> VoiceResult:
        from uploader._client import AsyncClient

        async with AsyncClient(env) as client:
            return await client.voice_upload(job, commit=commit or use_emulator, wait=wait,
                                             restart=restart)

    def interrupted() -> tuple[str, str | None]:
        return ("what was sent and confirmed is kept: run the same command again to "
                "resume"), None

    result = run_call(call, use_emulator=use_emulator, quiet=as_json, as_json=as_json,
                  interrupted_at=interrupted)
    if as_json:
        print_json(result.to_json())
    else:
        _echo(result)
    if result.state in _REFUSED:
        sys.exit(3)


def _echo(result: VoiceResult) -> None:
    for warning in result.warnings:
        click.echo(f"  ~ warning {warning['file']}: {warning['code']}: {warning['message']}",
                   err=True)
    sent = ", ".join(str(i) for i in result.sentences_sent) or "none"
    click.echo(f"voice job {result.job_id}: sentences sent and confirmed: {sent}; files sent: "
               f"{', '.join(result.files_sent) or 'none'} ({result.bytes_uploaded} bytes)")
    click.echo(f"state: {result.state}" + (" (committed)" if result.committed else
                                           " (not committed: add --commit)"))
    _echo_errors(result.audit_errors)


def _echo_errors(errors: Any) -> None:
    for error in errors:
        files = " / ".join(str(n) for n in (error.get("audio_name"), error.get("text_name"))
                           if n) or "the job"
        click.echo(f"  - {escaped(files)}: {error.get('error_code')}: "
                   f"{escaped(str(error.get('error_message') or ''))}")


@voice.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@retry_window_option(f"{READ_WINDOW:g}")
def status(job_id: str, as_json: bool, retry_window: float | None) -> None:
    """Show a voice job's state, and its audit result's errors per file."""
    async def call(client: AsyncClient) -> tuple[Any, Any]:
        return await client.voice_status(job_id), await client.voice_audit(job_id)

    detail, audit = with_client(call, as_json=as_json, retry_window=retry_window)
    errors = (audit.get("system_audit_result") or {}).get("errors") or []
    if as_json:
        print_json({**detail.raw, "audit_result": audit})
        return
    click.echo(f"{detail.job_id}  {detail.state}  {escaped(detail.voice_name or '')} "
               f"({detail.job_type}, {detail.create_type})")
    if detail.asset_id:
        click.echo(f"asset: {detail.asset_id}")
    _echo_errors(errors)


@voice.command()
@click.argument("job_id")
@click.option("--yes", is_flag=True, help="Do not ask.")
def delete(job_id: str, yes: bool) -> None:
    """Delete a voice job (refused while it is reviewed or trained)."""
    if not yes and not click.confirm(f"Delete voice job {job_id}?", default=False):
        return
    with_client(lambda c: c.voice_delete(job_id), reads_only=False)
    click.echo(f"deleted voice job {job_id}")


@voice.command()
@click.argument("recordings", type=_PATH)
@click.option("--language", type=click.Choice(["CN", "EN"], case_sensitive=False),
              required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def assess(recordings: Path, language: str, as_json: bool) -> None:
    """Huawei's quality pre-check (VOICE_ASSESS) of a folder or zip of recordings: each
    measure with its expected value and advice."""
    result = with_client(lambda c: c.voice_assess(recordings, language=language.upper()),
                         as_json=as_json, reads_only=False)
    if as_json:
        print_json({"job_id": result.job_id, "state": result.state,
                    "assess_result": result.assess_result})
        return
    click.echo(f"quality check {result.job_id}: {result.state}")
    for name, measure in result.assess_result.items():
        if isinstance(measure, dict):
            verdict = "advice" if measure.get("suggestion") else "ok"
            line = (f"  {name:<12} {verdict:<6} {measure.get('actual')} "
                    f"(expected {measure.get('expected')})")
            if measure.get("suggestion"):
                line += f": {measure['suggestion']}"
            click.echo(line)
