"""The batch manifest: CSV with a header row, or JSON Lines, read one row at a time.

Columns: `path` (required; relative paths are relative to the manifest's folder), `name` or
`job_id`, and optionally `parts`, `part_size`, one per other file of the job (the table of
file kinds: `id_card_front`, `id_card_back`, `grant_file`, `cover`, `action_video`,
`audio`), `tags` (`;`-separated in CSV, a list in JSON), `batch_name`, `contact`. A row that
cannot be used is a `RowError` with its line number; it does not stop the others.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader import _files
from uploader._errors import UploaderError, UsageError
from uploader._job import Job, JobOptions
from uploader._voice_job import VoiceJob
from uploader.transfer.plan import parse_size

__all__ = ["Row", "RowError", "manifest_columns", "read_manifest", "row_from_json"]

_FIELDS = ("path", "name", "job_id", "parts", "part_size", "tags", "batch_name", "contact",
           "background_replacement", "model_version", "edition", "service", "human_only",
           "voice_tag", "voice_sex", "voice_language", "ignore", "content_checks", "kind")


def manifest_columns() -> tuple[str, ...]:
    """Every column a manifest may have: the job's fields, then one per other file."""
    return (*_FIELDS, *(k.name for k in _files.other_kinds()))


@dataclass(frozen=True)
class Row:
    """One job of the batch, with its line in the manifest: a training video's (`Job`), or,
    in a row of `kind` voice, a voice training job's (`VoiceJob`)."""

    line: int
    job: Job | VoiceJob

    @property
    def path(self) -> Path:
        """The row's `path`: the video, or the voice job's recordings."""
        return self.job.video if isinstance(self.job, Job) else self.job.recordings

    def to_json(self) -> dict[str, Any]:
        """The row as a manifest's JSON line, its paths made absolute (see `row_from_json`)."""
        return self.job.to_json()


@dataclass(frozen=True)
class RowError:
    """A row that cannot be used, and why."""

    line: int
    path: str
    message: str


def read_manifest(manifest: str, *, base: Path | None = None) -> Iterator[Row | RowError]:
    """The rows of `manifest` (a .csv, .jsonl or .ndjson file; "-": CSV on stdin), read
    lazily; relative paths are relative to `base` (default: the manifest's folder, or the
    current one for stdin). UsageError if the manifest itself cannot be read."""
    if manifest == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig",
                                 errors="surrogateescape", newline="")
        yield from _csv_rows(stdin, base or Path.cwd())
        return
    path = Path(manifest)
    if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise UsageError(f"{manifest}: a manifest is .csv, .jsonl or .ndjson")
    try:
        # Bytes that are not UTF-8 are kept (as surrogates) to be refused row by row.
        handle = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise UsageError(f"cannot read the manifest {manifest}: {exc.strerror}") from None
    with handle:
        if path.suffix.lower() == ".csv":
            yield from _csv_rows(handle, base or path.parent)
        else:
            yield from _json_rows(handle, base or path.parent)


def row_from_json(line: int, values: dict[str, Any]) -> Row | RowError:
    """The row that `Row.to_json` gave, checked again as a manifest line is."""
    return _known_row(line, values, Path.cwd())


def _csv_rows(handle: io.TextIOBase | Any, base: Path) -> Iterator[Row | RowError]:
    lines = _csv_lines(handle)
    first = next(lines, None)
    columns = manifest_columns()
    names = first[1] if first is not None and isinstance(first[1], list) else []
    unknown = set(names) - set(columns)
    if "path" not in names or unknown:
        raise UsageError("the manifest's header row must name a `path` column, and only "
                         f"known columns ({', '.join(columns)}); unknown: "
                         f"{', '.join(sorted(unknown)) or 'none'}")
    for line, cells in lines:
        if isinstance(cells, RowError):
            yield cells
        elif len(cells) != len(names):
            yield RowError(line, cells[0] if names[0] == "path" else "",
                           f"{len(cells)} cells where the header names {len(names)} columns "
                           "(a value holding a comma must be quoted)")
        else:
            values: dict[str, Any] = dict(zip(names, cells, strict=True))
            for listed in ("tags", "ignore"):  # `;`-separated in CSV
                items = (values.get(listed) or "").split(";")
                values[listed] = [t.strip() for t in items if t.strip()]
            yield _row(line, values, base)


def _csv_lines(handle: io.TextIOBase | Any) -> Iterator[tuple[int, list[str] | RowError]]:
    """Each line's cells, with its line number; a line that does not read as a row of its
    own (a quote that does not close, a NUL byte, a field over the CSV module's limit, bytes
    that are not UTF-8, a control character) as a RowError; blank lines skipped. A row is
    one line: a quoted cell never runs on into the next (a stray quote would swallow the
    rows after it), so a cell cannot hold a line break."""
    for number, text in enumerate(handle, start=1):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            cells = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            why = "a quote that does not close" if "end of data" in str(exc) else str(exc)
            yield number, RowError(number, "", f"cannot be read as CSV: {why} (a row is one "
                                               "line)")
            continue
        if any(_not_text(cell) for cell in cells):
            yield number, RowError(number, "", "not UTF-8 text, or it holds a NUL byte")
        elif any(_control(cell) for cell in cells):
            yield number, RowError(number, "", "a cell holds a control character (a tab, an "
                                               "escape...): cells are printable text")
        else:
            yield number, cells


def _json_rows(handle: io.TextIOBase | Any, base: Path) -> Iterator[Row | RowError]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            values = json.loads(text)
        except ValueError:
            yield RowError(number, "", "not a JSON object")
            continue
        if not isinstance(values, dict):
            yield RowError(number, "", "not a JSON object")
            continue
        yield _known_row(number, values, base)


def _control(value: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)


def _not_text(value: Any) -> bool:
    """Whether a value holds bytes that were not UTF-8 (kept as surrogates) or a NUL."""
    return isinstance(value, str) and ("\x00" in value or any(
        "\udc80" <= c <= "\udcff" for c in value))


def _known_row(line: int, values: dict[str, Any], base: Path) -> Row | RowError:
    if any(_not_text(v) or _not_text(k) for k, v in values.items()):
        return RowError(line, "", "not UTF-8 text, or it holds a NUL byte")
    unknown = set(values) - set(manifest_columns())
    if unknown:
        return RowError(line, str(values.get("path", "")),
                        f"unknown column(s): {', '.join(sorted(unknown))}")
    return _row(line, values, base)


def _row(line: int, values: dict[str, Any], base: Path) -> Row | RowError:
    given = {k: v for k, v in values.items() if v not in (None, "", [])}
    path = str(given.get("path", ""))
    try:
        if not path:
            raise UsageError("no path")
        kind = given.get("kind", "video")
        if kind not in ("video", "voice"):
            raise UsageError(f"kind is video or voice, not {kind!r}")
        if kind == "voice":
            return Row(line, _voice_job(given, base / path, base))
        if ("name" in given) == ("job_id" in given):
            raise UsageError("give exactly one of name and job_id")
        tags = given.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UsageError("tags must be a list of text")
        return Row(line, Job(
            video=base / path, name=_text(given.get("name")),
            job_id=_text(given.get("job_id")), parts=_count(given.get("parts")),
            part_size=_size(given.get("part_size")),
            files={k.name: base / str(given[k.name])
                   for k in _files.other_kinds() if k.name in given},
            tags=tuple(tags), batch_name=_text(given.get("batch_name")),
            contact=_text(given.get("contact")), options=_options(given),
            ignore=_codes(given.get("ignore", [])),
            content_checks=_flag(given.get("content_checks"), "content_checks")))
    except UploaderError as exc:
        return RowError(line, path, exc.message)


def _voice_job(given: dict[str, Any], recordings: Path, base: Path) -> VoiceJob:
    """A voice row's job: `path` the recordings (a folder or a zip), `name` the voice's,
    `edition` basic|middle|advance|third-party, the voice_* columns its sex, language and
    tag, `grant_file` the letter."""
    needed = [k for k in ("name", "edition", "voice_sex", "voice_language", "grant_file")
              if k not in given]
    if needed:
        raise UsageError(f"a voice row needs {', '.join(needed)}")
    video_only = sorted(set(given) & {"job_id", "parts", "part_size", "tags", "contact",
                                      "background_replacement", "model_version", "service",
                                      "human_only", "content_checks"})
    if video_only:
        raise UsageError(f"a voice row takes no {', '.join(video_only)}")
    return VoiceJob(recordings=recordings, name=str(given["name"]),
                    edition=str(given["edition"]), sex=str(given["voice_sex"]),
                    language=str(given["voice_language"]),
                    tag=str(given.get("voice_tag", "ECOMMERCE")),
                    grant_file=base / str(given["grant_file"]),
                    batch_name=_text(given.get("batch_name")),
                    ignore=_codes(given.get("ignore", [])))


def _codes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [c.strip() for c in value.split(";") if c.strip()]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise UsageError(f"ignore must be a list of problem codes, not {value!r}")
    return tuple(value)


def _options(given: dict[str, Any]) -> JobOptions:
    services = given.get("service", [])
    if isinstance(services, str):
        services = [s.strip() for s in services.split(";") if s.strip()]
    return JobOptions(
        background_replacement=_flag(given.get("background_replacement"),
                                     "background_replacement"),
        model_version=_text(given.get("model_version")), edition=_text(given.get("edition")),
        services=tuple(services) if isinstance(services, list) else services,
        human_only=_flag(given.get("human_only"), "human_only"),
        voice_tag=_text(given.get("voice_tag")), voice_sex=_text(given.get("voice_sex")),
        voice_language=_text(given.get("voice_language")))


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise UsageError(f"{what} must be true or false, not {value!r}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise UsageError(f"parts must be a whole number, not {value!r}")


def _size(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return parse_size(str(value))
