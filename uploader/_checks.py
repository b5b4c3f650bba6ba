"""The checks of a caller's values, made before any file is read or any API call is sent.

Library callers get a `UsageError` naming the keyword and the value; the CLI maps it to exit
2. Messages name what is wrong, never a command-line flag: the library has no flags.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from uploader._errors import UsageError

__all__ = ["MAX_CONCURRENCY", "MAX_JOB_ID", "MAX_NAME", "job_id", "name", "number", "path",
           "text", "whole"]

#: A job's name: 1 to 64 characters (the service's limit).
MAX_NAME = 64
#: Job ids are UUIDs (36 characters); anything longer is not one.
MAX_JOB_ID = 64
#: Pieces in flight at once, at most.
MAX_CONCURRENCY = 64
#: Unicode categories refused in names and labels: control characters, line and paragraph
#: separators.
_CONTROL = frozenset({"Cc", "Zl", "Zp"})


def whole(value: object, what: str, *, low: int, high: int | None = None) -> int:
    """`value` as an int from `low` to `high`, else UsageError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{what} must be {bound}, not {value}")
    return value


def number(value: object, what: str) -> float:
    """`value` as a positive number of seconds, else UsageError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise UsageError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def text(value: object, what: str, *, longest: int) -> str:
    """`value` as text of 1 to `longest` characters, not all blank, without a control
    character (a line break, a tab, an escape sequence), else UsageError."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text, not {type(value).__name__}")
    if not value.strip():
        raise UsageError(f"{what} is empty")
    control = next((c for c in value if unicodedata.category(c) in _CONTROL), None)
    if control is not None:
        raise UsageError(f"{what} {value!r} holds a control character ({control!r}): names "
                         "and labels are one line of printable text")
    if len(value) > longest:
        raise UsageError(f"{what} is {len(value)} characters long; at most {longest} are "
                         "allowed")
    return value


def name(value: object) -> str:
    """A job name: 1 to 64 characters, not all blank."""
    return text(value, "the job name", longest=MAX_NAME)


def job_id(value: object) -> str:
    """A job id: not empty, no blanks or slashes."""
    checked = text(value, "the job id", longest=MAX_JOB_ID)
    if any(c.isspace() or c in "/?#%" for c in checked):
        raise UsageError(f"the job id {checked!r} is not a job id (it holds a blank, '/', "
                         "'?', '#' or '%')")
    return checked


def path(value: object, what: str) -> Path:
    """A path given as str or os.PathLike, else UsageError."""
    if isinstance(value, str | os.PathLike) and str(value):
        return Path(value)
    raise UsageError(f"{what} must be a path (str or os.PathLike), not {value!r}")
