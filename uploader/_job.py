"""`Job`: a frozen description of what goes into one training job.

The video, every other file by its kind (the table in `_files`: a new kind needs no change
here), the job (`name` for a new one, `job_id` for an existing one), what a job created for
it carries (tags, batch name, contact), and how the video is cut (`parts` or `part_size`).
Every value is checked when the description is made: UsageError, naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from uploader import _checks as checks
from uploader import _files
from uploader._errors import UsageError
from uploader._files import TRAINING_VIDEO, FileKind
from uploader.transfer.plan import MAX_PARTS

__all__ = ["Job"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, kw_only=True)
class Job:
    """What goes into one training job. `files` holds the job's other files by kind
    (`id_card_front`, `id_card_back`, `grant_file`, `cover`, `action_video`, `audio`);
    `Job.of(video, name=..., id_card_front=...)` takes them as keywords too."""

    video: Path
    name: str | None = None
    job_id: str | None = None
    files: Mapping[str, Path] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    batch_name: str | None = None
    contact: str | None = None
    parts: int | None = None
    part_size: int | None = None

    def __post_init__(self) -> None:
        if (self.job_id is None) == (self.name is None):
            raise UsageError("give exactly one of job_id (an existing job) or name (a new job)")
        known = {k.name for k in _files.other_kinds()}
        if not isinstance(self.files, Mapping) or set(self.files) - known:
            unknown = set(self.files) - known if isinstance(self.files, Mapping) else self.files
            raise UsageError(f"files are given by kind ({', '.join(sorted(known))}), not "
                             f"{unknown!r}")
        self._set("video", checks.path(self.video, "the video's path"))
        self._set("files", MappingProxyType({
            k.name: checks.path(self.files[k.name], f"{k.name}'s path")
            for k in _files.other_kinds() if self.files.get(k.name) is not None}))
        if self.job_id is not None:
            self._set("job_id", checks.job_id(self.job_id))
        if self.name is not None:
            self._set("name", checks.name(self.name))
        self._set("tags", _tags(self.tags))
        for key in ("batch_name", "contact"):
            value = getattr(self, key)
            if value is not None:
                checks.text(value, key, longest=checks.MAX_NAME)
        if self.parts is not None:
            checks.whole(self.parts, "the number of parts", low=1, high=MAX_PARTS)
        if self.part_size is not None:
            checks.whole(self.part_size, "the part size (bytes)", low=1)

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def of(cls, video: PathLike, **values: Any) -> Job:
        """A job from keywords: the fields above, and each other file by its kind's name."""
        kinds = {k.name for k in _files.other_kinds()}
        files = {k: v for k, v in values.items() if k in kinds}
        rest = {k: v for k, v in values.items() if k not in kinds}
        unknown = set(rest) - {f for f in cls.__dataclass_fields__ if f != "files"}
        if unknown:
            raise UsageError(f"unknown keyword(s): {', '.join(sorted(unknown))}")
        if "tags" in rest and rest["tags"] is not None:
            rest["tags"] = _tags(rest["tags"])
        return cls(video=checks.path(video, "the video's path"), files=files,
                   **{k: v for k, v in rest.items() if v is not None})

    @property
    def paths(self) -> dict[FileKind, Path]:
        """Every file of the job by kind, the training video first, in the table's order."""
        return {TRAINING_VIDEO: self.video} | {
            k: self.files[k.name] for k in _files.other_kinds() if k.name in self.files}

    @property
    def explicit_plan(self) -> bool:
        """Whether the caller chose how the video is cut."""
        return self.parts is not None or self.part_size is not None

    @property
    def labels(self) -> dict[str, Any]:
        """What a job created for this one carries besides its content tag."""
        labels: dict[str, Any] = {"tags": list(self.tags)} if self.tags else {}
        for key in ("batch_name", "contact"):
            if getattr(self, key) is not None:
                labels[key] = getattr(self, key)
        return labels

    def to_json(self) -> dict[str, Any]:
        """The job as a manifest's JSON line, its paths made absolute."""
        values: dict[str, Any] = {
            "path": str(self.video.absolute()), "name": self.name, "job_id": self.job_id,
            "parts": self.parts, "part_size": self.part_size, "tags": list(self.tags),
            "batch_name": self.batch_name, "contact": self.contact,
            **{k: str(p.absolute()) for k, p in self.files.items()}}
        return {k: v for k, v in values.items() if v not in (None, [])}


def _tags(tags: object) -> tuple[str, ...]:
    if (isinstance(tags, str) or not isinstance(tags, list | tuple)
            or not all(isinstance(t, str) and t for t in tags)):
        raise UsageError(f"tags must be a list of non-empty texts, not {tags!r}")
    return tuple(tags)
