"""`VoiceJob`: a frozen description of one voice training job (API.md §7).

The recordings are a folder of `0.wav, 0.txt, 1.wav, 1.txt, ...` or a zip of them (advance
and third-party editions: one long WAV). SEGMENT sends each sentence's WAV and text to its
own link and confirms it; PACKAGE sends one zip (built from a folder in a streamed temporary
file). Every value is checked when the description is made: UsageError, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader import _checks as checks
from uploader._errors import UsageError

__all__ = ["VOICE_EDITIONS", "VOICE_TAGS", "VoiceJob"]

VOICE_EDITIONS = ("basic", "middle", "advance", "third-party")
#: The sentences a SEGMENT job (or a zip's WAV/text pairs) holds, per edition.
SENTENCES = {"basic": 20, "middle": 100}
VOICE_TAGS = ("ECOMMERCE", "NEWS", "MARKETING", "LIVE", "EDUCATION", "CUSTOMER",
              "STORYTELLING")


@dataclass(frozen=True, kw_only=True)
class VoiceJob:
    """One voice training job: the recordings (a folder or a zip), the voice's name,
    edition, sex, language and tag, the signed authorization letter, and how the recordings
    go (`create_type` SEGMENT or PACKAGE; by default SEGMENT for a folder of a basic or
    middle edition, PACKAGE otherwise). `link_2d` names the 2D training job this voice
    belongs to; `ignore` turns preflight problems into warnings for one run."""

    recordings: Path
    name: str
    edition: str
    sex: str
    language: str
    tag: str
    grant_file: Path
    create_type: str | None = None
    link_2d: str | None = None
    batch_name: str | None = None
    description: str | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._set("recordings", checks.path(self.recordings, "the recordings' path"))
        self._set("grant_file", checks.path(self.grant_file, "the authorization letter's path"))
        self._set("name", checks.text(self.name, "the voice's name", longest=256))
        for key, allowed in (("edition", VOICE_EDITIONS), ("sex", ("FEMALE", "MALE")),
                             ("language", ("CN", "EN")), ("tag", VOICE_TAGS)):
            self._set(key, _one_of(getattr(self, key), key, allowed, lower=key == "edition"))
        self._set("create_type", _create_type(self.create_type, self.recordings, self.edition))
        if self.link_2d is not None:
            self._set("link_2d", checks.job_id(self.link_2d))
        for key in ("batch_name", "description"):
            if getattr(self, key) is not None:
                checks.text(getattr(self, key), key, longest=checks.MAX_NAME)
        if isinstance(self.ignore, str) or not all(isinstance(c, str) for c in self.ignore):
            raise UsageError(f"ignore must be a list of problem codes, not {self.ignore!r}")
        self._set("ignore", tuple(self.ignore))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def to_json(self) -> dict[str, Any]:
        """The job as a manifest's JSON line (`kind` voice), its paths made absolute."""
        values: dict[str, Any] = {
            "kind": "voice", "path": str(self.recordings.absolute()), "name": self.name,
            "edition": self.edition, "voice_sex": self.sex, "voice_language": self.language,
            "voice_tag": self.tag, "grant_file": str(self.grant_file.absolute()),
            "batch_name": self.batch_name, "ignore": list(self.ignore)}
        return {k: v for k, v in values.items() if v not in (None, [])}

    @property
    def sentences(self) -> int | None:
        """The sentences the edition takes (None: one long recording)."""
        return SENTENCES.get(self.edition)

    @property
    def create_fields(self) -> dict[str, object]:
        """The create request's body."""
        fields: dict[str, object] = {
            "voice_name": self.name, "sex": self.sex, "language": self.language,
            "tag": self.tag, "create_type": self.create_type}
        for key, value in (("dhtms_job_id", self.link_2d), ("batch_name", self.batch_name),
                           ("description", self.description)):
            if value is not None:
                fields[key] = value
        return fields


def _one_of(value: object, key: str, allowed: tuple[str, ...], *, lower: bool) -> str:
    """`value` as written in `allowed` (any case), else UsageError naming `key`."""
    if isinstance(value, str):
        value = value.lower() if lower else value.upper()
    if value not in allowed:
        raise UsageError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _create_type(given: object, recordings: Path, edition: str) -> str:
    """SEGMENT or PACKAGE: as given, else SEGMENT for a folder of a sentences edition."""
    zipped = recordings.suffix.lower() == ".zip"
    kind = given
    if kind is None:
        kind = "SEGMENT" if not zipped and edition in SENTENCES else "PACKAGE"
    kind = kind.upper() if isinstance(kind, str) else kind
    if kind not in ("SEGMENT", "PACKAGE"):
        raise UsageError(f"create_type must be SEGMENT or PACKAGE, not {kind!r}")
    if kind == "SEGMENT" and edition not in SENTENCES:
        raise UsageError(f"the {edition} edition takes one long recording in a zip "
                         "(PACKAGE), not sentences")
    if kind == "SEGMENT" and zipped:
        raise UsageError("sentences (SEGMENT) are sent from a folder of 0.wav, 0.txt, ...; "
                         "a zip goes as a PACKAGE")
    return str(kind)
