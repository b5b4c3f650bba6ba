"""`uploader state list|clean`: the resume journals and locks of the state folder."""

from __future__ import annotations

import time
from pathlib import Path

import click

from uploader.cli.common import print_json

__all__ = ["state"]

_FOLDER = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    help="The state folder [default: the user's, e.g. ~/.local/state/uploader].")


def _folder(state_dir: Path | None) -> Path:
    from uploader._journal import default_state_dir

    return state_dir if state_dir is not None else default_state_dir()


@click.group()
def state() -> None:
    """The state folder: one journal per video being uploaded (what was sent, so that a
    re-run resumes) and one lock per job in use. Removing a journal loses nothing: a run
    without one resumes from what the service holds, checking more."""


@state.command("list")
@_FOLDER
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_(state_dir: Path | None, as_json: bool) -> None:
    """Show the journals and locks, oldest first, and whether a run holds each now."""
    from uploader._statefolder import entries

    folder = _folder(state_dir)
    found = entries(folder)
    if as_json:
        print_json({"state_dir": str(folder), "entries": [
            {"path": str(e.path), "kind": e.kind, "held": e.held, "bytes": e.size,
             "age_days": round(e.age_days(), 3), "job_id": e.job_id, "endpoint": e.endpoint,
             "video": e.video} for e in found]})
        return
    click.echo(f"{folder}: {len(found)} journal(s) and lock(s)")
    now = time.time()
    for e in found:
        what = " ".join(f"{k} {v}" for k, v in (("job", e.job_id), ("video", e.video),
                                                 ("at", e.endpoint)) if v)
        click.echo(f"  {e.path.name}  {'in use' if e.held else 'free':6}  "
                   f"{e.age_days(now):6.1f} days  {e.size:>8} B  {e.kind:7}  {what}".rstrip())


@state.command()
@_FOLDER
@click.option("--older-than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Only those last written at least DAYS ago.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def clean(state_dir: Path | None, older_than: float | None, as_json: bool) -> None:
    """Remove the journals and locks no run holds (a run in progress keeps its own)."""
    from uploader._statefolder import clean as remove

    folder = _folder(state_dir)
    removed = remove(folder, older_than_days=older_than)
    total = sum(e.size for e in removed)
    if as_json:
        print_json({"state_dir": str(folder), "removed": [str(e.path) for e in removed],
                    "bytes": total})
        return
    for e in removed:
        click.echo(f"removed {e.path}" + (f" (job {e.job_id})" if e.job_id else ""))
    click.echo(f"{folder}: {len(removed)} file(s) removed, {total} B freed")
