"""What a preflight check finds: the facts of a file and every problem with it."""

from __future__ import annotations

import stat
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["Facts", "FileFacts", "Problem", "Report", "ReviewRules", "refuse_as_a_file"]


@dataclass(frozen=True)
class Problem:
    """A finding: why review would refuse the file (a problem), or what Huawei's recording
    guide advises against (a warning). `code` is part of the interface; `measured` says what
    was found (a value, where), `rule` the source's rule in English, `todo` what to do."""

    code: str
    message: str
    measured: str | None = None
    rule: str | None = None
    todo: str | None = None


@dataclass(frozen=True)
class ReviewRules:
    """What the review's rules depend on: the job's options, and the codes a caller chose to
    have reported as warnings rather than refusals (`ignore`: a heuristic must never lock a
    user out). The defaults are the service's: background replacement on, the voice trained
    from the video, the standard edition."""

    background_replacement: bool = True
    human_only: bool = False
    edition: str = "standard"
    ignore: frozenset[str] = frozenset()

    @property
    def flexus(self) -> bool:
        return self.edition in ("flexus", "fast-flexus")


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
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def judged(self, rules: ReviewRules) -> Report:
        """This report with the problems `rules` ignore reported as warnings instead."""
        ignored = [p for p in self.problems if p.code in rules.ignore]
        if not ignored:
            return self
        said = [replace(p, message=f"{p.message} (ignored as asked: a warning for this run)")
                for p in ignored]
        return replace(self, problems=tuple(p for p in self.problems if p not in ignored),
                       warnings=(*self.warnings, *said))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "kind": self.kind, "ok": self.ok,
            "problems": [_finding(p) for p in self.problems],
            "warnings": [_finding(p) for p in self.warnings],
            "facts": None if self.facts is None else asdict(self.facts),
        }


def _finding(problem: Problem) -> dict[str, Any]:
    return {k: v for k, v in asdict(problem).items() if v is not None}


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
