"""The folders a worker may upload from: the broker is a trust boundary.

Whoever can publish to the queue chooses the paths a worker reads and sends under its
credentials. So a worker uploads only files under its roots: `UPLOADER_WORKER_ROOTS`
(folders separated by `:`), by default the folder the worker was started in. Paths are
compared once every symlink is resolved: a link under a root that points elsewhere is
outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from uploader._errors import SettingsError
from uploader._job import Job
from uploader.batch import Row

__all__ = ["ROOTS", "outside_roots", "worker_roots"]

ROOTS = "UPLOADER_WORKER_ROOTS"

#: The folder the worker was started in (its pool's processes inherit it).
_STARTED_IN = Path.cwd()


def worker_roots() -> list[Path]:
    """This worker's roots, resolved; SettingsError for a root that is not a folder."""
    text = os.environ.get(ROOTS, "")
    named = [part for part in text.split(":") if part.strip()] or [str(_STARTED_IN)]
    roots = []
    for name in named:
        root = Path(name).expanduser()
        if not root.is_absolute():
            raise SettingsError(f"{ROOTS}: {name!r} is not an absolute path", variable=ROOTS)
        resolved = root.resolve()
        if not resolved.is_dir():
            raise SettingsError(f"{ROOTS}: {name} is not a folder", variable=ROOTS)
        roots.append(resolved)
    return roots


def outside_roots(row: Row, roots: list[Path]) -> str | None:
    """Why `row` may not be uploaded by this worker (a file of it outside every root), or
    None when every file is under one."""
    job = row.job
    paths = (job.video, *job.files.values()) if isinstance(job, Job) else (
        job.recordings, job.grant_file)
    for path in paths:
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            shown = ":".join(map(str, roots))
            via = f" (it resolves to {resolved})" if resolved != Path(path) else ""
            return (f"{path}{via} is outside this worker's roots ({shown}): a worker uploads "
                    f"only files under them; set {ROOTS} on the worker to allow more")
    return None
