"""`Job`: a frozen description of what goes into one training job.

The video, every other file by its kind (the table in `_files`: a new kind needs no change
here), the job (`name` for a new one, `job_id` for an existing one), what a job created for
it carries (tags, batch name, contact), and how the video is cut (`parts` or `part_size`).
Every value is checked when the description is made: UsageError, naming the field.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from uploader import _checks as checks
from uploader import _files
from uploader._errors import UsageError
from uploader._files import TRAINING_VIDEO, FileKind
from uploader.transfer.plan import MAX_PARTS

if TYPE_CHECKING:
    from uploader.preflight.report import ReviewRules

__all__ = ["EDITIONS", "MODEL_VERSIONS", "SERVICES", "VOICE_LANGUAGES", "VOICE_SEXES",
           "VOICE_TAGS", "Job", "JobOptions"]

PathLike = str | os.PathLike[str]

#: The model versions a job may ask for (API.md §2; V2 and V3 are withdrawn).
MODEL_VERSIONS = ("V3.2", "V3.3")
#: The editions: standard, the basic Flexus one, the fast Flexus one (model V3.3).
EDITIONS = ("standard", "flexus", "fast-flexus")
SERVICES = ("VIDEO_2D", "LIVE_2D", "CHAT_2D")
VOICE_TAGS = ("ECOMMERCE", "NEWS", "MARKETING")
VOICE_SEXES = ("FEMALE", "MALE")
VOICE_LANGUAGES = ("CN", "EN")


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """The model a new job trains (create's options, API.md §2). None leaves the service's
    default: background replacement on (a green-screen video), model V3.2, the standard
    edition, the services the edition offers, the voice trained with the figure.

    `background_replacement` False for a real-scene video; `edition` "standard", "flexus" or
    "fast-flexus" (model V3.3); `services` of VIDEO_2D, LIVE_2D, CHAT_2D (Flexus: VIDEO_2D
    only); `human_only` (Flexus only) trains the figure, not the voice; `voice_tag`
    (ECOMMERCE, NEWS, MARKETING), `voice_sex` (FEMALE, MALE), `voice_language` (CN, EN)
    describe the voice trained from the video. A contradictory set is a UsageError.
    """

    background_replacement: bool | None = None
    model_version: str | None = None
    edition: str | None = None
    services: tuple[str, ...] = ()
    human_only: bool | None = None
    voice_tag: str | None = None
    voice_sex: str | None = None
    voice_language: str | None = None

    def __post_init__(self) -> None:
        for key in ("background_replacement", "human_only"):
            if getattr(self, key) not in (None, True, False):
                raise UsageError(f"{key} must be true or false, not {getattr(self, key)!r}")
        self._set("model_version", _one_of(self.model_version, "model_version",
                                           MODEL_VERSIONS, withdrawn=("V2", "V3")))
        self._set("edition", _one_of(self.edition, "edition", EDITIONS, lower=True))
        self._set("voice_tag", _one_of(self.voice_tag, "voice_tag", VOICE_TAGS))
        self._set("voice_sex", _one_of(self.voice_sex, "voice_sex", VOICE_SEXES))
        self._set("voice_language", _one_of(self.voice_language, "voice_language",
                                            VOICE_LANGUAGES))
        if isinstance(self.services, str) or not isinstance(self.services, tuple | list):
            raise UsageError(f"services must be a list, not {self.services!r}")
        services = tuple(str(_one_of(s, "a service", SERVICES)) for s in self.services)
        if len(set(services)) != len(services):
            raise UsageError(f"a service is named twice: {', '.join(services)}")
        self._set("services", services)
        self._check_together()

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def _check_together(self) -> None:
        flexus = self.edition in ("flexus", "fast-flexus")
        if self.edition == "fast-flexus" and self.model_version not in (None, "V3.3"):
            raise UsageError(f"the fast Flexus edition trains model V3.3, not "
                             f"{self.model_version}")
        if flexus and set(self.services) - {"VIDEO_2D"}:
            raise UsageError(f"the {self.edition} edition offers VIDEO_2D only, not "
                             f"{', '.join(s for s in self.services if s != 'VIDEO_2D')}")
        if self.human_only and not flexus:
            raise UsageError("human_only (the figure without the voice) is for the flexus "
                             "and fast-flexus editions only")
        if self.human_only and (self.voice_tag or self.voice_sex or self.voice_language):
            raise UsageError("human_only trains no voice: the voice options contradict it")


def _one_of(value: object, what: str, allowed: tuple[str, ...], *, lower: bool = False,
            withdrawn: tuple[str, ...] = ()) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    text = text.lower() if lower else text.upper()
    if text in withdrawn:
        raise UsageError(f"{what} {text} is withdrawn: use one of {', '.join(allowed)}")
    if text not in allowed:
        raise UsageError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return text


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
    options: JobOptions = field(default_factory=JobOptions)
    #: Preflight problems (by code) to report as warnings for this run: a heuristic must
    #: never lock a user out.
    ignore: tuple[str, ...] = ()
    #: Whether the content rules (face, green screen, sound: seconds of decoding beside the
    #: transfer) gate the confirm; None follows the UPLOADER_CONTENT_CHECKS setting (on).
    content_checks: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.options, JobOptions):
            raise UsageError(f"options must be a JobOptions, not {self.options!r}")
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
        if isinstance(self.ignore, str) or not all(isinstance(c, str) and c
                                                   for c in self.ignore):
            raise UsageError(f"ignore must be a list of problem codes, not {self.ignore!r}")
        self._set("ignore", tuple(self.ignore))
        if self.content_checks not in (None, True, False):
            raise UsageError(f"content_checks must be true or false, not "
                             f"{self.content_checks!r}")

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def of(cls, video: PathLike, **values: Any) -> Job:
        """A job from keywords: the fields above, and each other file by its kind's name."""
        files, options, rest = _sorted_out(values)
        if options:
            rest["options"] = JobOptions(**options)
        unknown = set(rest) - {f for f in cls.__dataclass_fields__ if f != "files"}
        if unknown:
            raise UsageError(f"unknown keyword(s): {', '.join(sorted(unknown))}")
        return cls(video=checks.path(video, "the video's path"), files=files,
                   **{k: v for k, v in rest.items() if v is not None})

    @property
    def paths(self) -> dict[FileKind, Path]:
        """Every file of the job by kind, the training video first, in the table's order."""
        return {TRAINING_VIDEO: self.video} | {
            k: self.files[k.name] for k in _files.other_kinds() if k.name in self.files}

    @property
    def rules(self) -> ReviewRules:
        """What the review's rules depend on, for this job: its options and `ignore`."""
        from uploader.preflight.report import ReviewRules  # `uploader --help` loads no asyncio

        options = self.options
        return ReviewRules(background_replacement=options.background_replacement is not False,
                           human_only=bool(options.human_only),
                           edition=options.edition or "standard", ignore=frozenset(self.ignore))

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
            "batch_name": self.batch_name, "contact": self.contact, "ignore": list(self.ignore),
            "content_checks": self.content_checks,
            **{k: str(p.absolute()) for k, p in self.files.items()},
            **{k: v for k, v in dataclasses.asdict(self.options).items()
               if v is not None and v != ()}}
        if "services" in values:  # the manifest's column
            values["service"] = list(values.pop("services"))
        return {k: v for k, v in values.items() if v not in (None, [])}


def _sorted_out(values: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`Job.of`'s keywords as the files (by kind), the options given, and the rest."""
    kinds = {k.name for k in _files.other_kinds()}
    option_keys = set(JobOptions.__dataclass_fields__)
    files = {k: v for k, v in values.items() if k in kinds}
    options = {k: v for k, v in values.items() if k in option_keys and v is not None}
    rest = {k: v for k, v in values.items() if k not in kinds | option_keys}
    return files, options, rest


def _tags(tags: object) -> tuple[str, ...]:
    if (isinstance(tags, str) or not isinstance(tags, list | tuple)
            or not all(isinstance(t, str) and t for t in tags)):
        raise UsageError(f"tags must be a list of non-empty texts, not {tags!r}")
    return tuple(checks.text(t, "a tag", longest=1024) for t in tags)
