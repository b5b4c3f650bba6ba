"""What a preflight check finds: the facts of a file and every problem with it."""

from __future__ import annotations

import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Facts", "FileFacts", "Problem", "Report", "refuse_as_a_file"]


@dataclass(frozen=True)
class Problem:
    """Why review would refuse the file; `code` is part of the interface."""

    code: str
    message: str


@dataclass(frozen=True)
class Facts:
    """What a video is, as far as mediainfo could tell."""

    size_bytes: int
    container: str | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    orientation: str | None = None
    duration_seconds: float | None = None
    video_codec: str | None = None
    frame_rate: float | None = None


@dataclass(frozen=True)
class FileFacts:
    """What an image, letter or zip of recordings is: its format, pixels, entries."""

    size_bytes: int
    format: str | None = None
    width: int | None = None
    height: int | None = None
    entries: int | None = None


@dataclass(frozen=True)
class Report:
    """The verdict on one file: its facts and every problem found."""

    path: Path
    facts: Facts | FileFacts | None
    problems: tuple[Problem, ...] = field(default=())
    kind: str = "training_video"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "kind": self.kind, "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
            "facts": None if self.facts is None else asdict(self.facts),
        }


def refuse_as_a_file(path: Path) -> Problem | None:
    """A problem if `path` is no regular, readable, non-empty file; else None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return Problem("not_found", f"no such file: {path}")
    except OSError as exc:
        return Problem("unreadable", f"cannot look at the file: {exc.strerror}")
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        return Problem("not_a_file", f"{path} is {kind}, not a file to upload")
    try:
        with path.open("rb") as handle:
            first = handle.read(1)
    except OSError as exc:
        return Problem("unreadable", f"cannot read the file: {exc.strerror}")
    if not first:
        return Problem("empty", "the file is empty (0 bytes)")
    return None
