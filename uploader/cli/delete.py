"""`uploader delete JOB_ID`: a job and its files, gone (a trial, a duplicate)."""

from __future__ import annotations

import sys

import click

from uploader.cli.common import READ_WINDOW, print_json, retry_window_option, with_client

__all__ = ["delete"]


@click.command(epilog="Exit codes: 0 deleted, or not deleted as answered at the prompt; 2 not "
               "confirmed (--yes where there is no "
               "terminal); 4 API or settings, or a job whose state does not allow it (under "
               "review or in training); 130 interrupted.")
@click.argument("job_id")
@click.option("--yes", is_flag=True, help="Do not ask: delete.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@retry_window_option(f"{READ_WINDOW:g} for the first answer, then 180")
def delete(job_id: str, yes: bool, as_json: bool, retry_window: float | None) -> None:
    """Delete JOB_ID and its files. A job can be deleted while it waits for its files,
    after a failed review, in manual review, or once done; not while the automatic review
    or training runs."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("deleting cannot be undone: pass --yes to confirm")
        if not click.confirm(f"Delete job {job_id} and its files? This cannot be undone"):
            click.echo(f"job {job_id}: not deleted")
            return
    with_client(lambda client: client.delete(job_id), as_json=as_json,
                retry_window=retry_window, reads_only=False)
    if as_json:
        print_json({"job_id": job_id, "deleted": True})
    else:
        click.echo(f"job {job_id}: deleted")
