"""The voice training job's calls (API.md §7) and what they answer.

`VoiceCalls` is a part of `MetaStudioClient`: every call goes through its one signed,
paced, retried `_call`. Create, confirm and commit are not idempotent: a lost answer is
settled by asking the service (the job found by name, the sentence among the confirmed, the
state moved on), never by sending the call again blindly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from uploader.api.models import Json

__all__ = ["ShortJob", "VoiceCalls", "VoiceDetail", "VoiceLinks", "VoiceSegment"]

_VOICE = "/voice-training-manage/user"
#: The create path of each edition.
CREATE_PATHS = {"basic": "basic-jobs", "middle": "middle-jobs", "advance": "advance-jobs",
                "third-party": "third-party-jobs"}


@dataclass(frozen=True)
class VoiceLinks:
    """A voice job's upload links: the zip's (PACKAGE), or one WAV and one text link per
    sentence (SEGMENT, in index order), and the letter's."""

    package: str | None
    audio: tuple[str, ...]
    text: tuple[str, ...]
    letter: str | None

    @classmethod
    def from_json(cls, data: Json) -> VoiceLinks:
        """Create's answer, or uploading-address-url's (`package_url`, `segment_url`)."""
        package = data.get("package_url") or data
        segment = data.get("segment_url") or data.get("segment_uploading_url") or {}
        return cls(package=_text(package.get("training_data_uploading_url")),
                   audio=tuple(segment.get("audio_uploading_url") or ()),
                   text=tuple(segment.get("txt_uploading_url") or ()),
                   letter=_text(data.get("authorization_letter_uploading_url")))


@dataclass(frozen=True)
class VoiceDetail:
    """One voice job as show answers it."""

    job_id: str
    voice_name: str | None
    state: str | None
    job_type: str | None
    create_type: str | None
    asset_id: str | None
    failed_code: str | None
    failed_reason: str | None
    package_stored: bool  #: the zip is stored (show's training_input_source_url)
    letter_stored: bool  #: the letter is stored (show's voice_authorization_url)
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, data: Json) -> VoiceDetail:
        return cls(job_id=str(data.get("job_id") or ""), voice_name=_text(data.get("voice_name")),
                   state=_text(data.get("state")), job_type=_text(data.get("job_type")),
                   create_type=_text(data.get("create_type")),
                   asset_id=_text(data.get("asset_id")),
                   failed_code=_text(data.get("job_failed_code")),
                   failed_reason=_text(data.get("job_failed_reason")),
                   package_stored=bool(data.get("training_input_source_url")),
                   letter_stored=bool(data.get("voice_authorization_url")), raw=data)


@dataclass(frozen=True)
class VoiceSegment:
    """A sentence's confirm: whether the service took it, and the indexes whose text does not
    match the speech."""

    confirmed: bool
    unmatched: tuple[int, ...]


@dataclass(frozen=True)
class ShortJob:
    """A quality check (VOICE_ASSESS): its state and measures."""

    job_id: str
    state: str | None
    assess_result: dict[str, Any]


class _Caller(Protocol):
    async def _call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                    body: dict[str, Any] | None = None, idempotent: bool = True,
                    job_id: str | None = None, settle: Any = None, what: str | None = None,
                    api: str = "show") -> dict[str, Any]: ...


class VoiceCalls:
    """The voice calls of `MetaStudioClient`."""

    async def create_voice_job(self: _Caller, edition: str, **fields: Any
                               ) -> tuple[str, VoiceLinks]:
        """Create a voice job of `edition` (basic, middle, advance, third-party) with create's
        fields; its id and links. Not retried after a lost answer (the caller finds the job
        by its name instead)."""
        data = await self._call("POST", f"{_VOICE}/{CREATE_PATHS[edition]}", body=fields,
                                idempotent=False, what="create voice job", api="create")
        return str(data.get("job_id") or ""), VoiceLinks.from_json(data)

    async def voice_links(self: _Caller, job_id: str) -> VoiceLinks:
        """Fresh upload links (uploading-address-url)."""
        data = await self._call("GET", f"{_path(job_id)}/uploading-address-url",
                                job_id=job_id, api="show")
        return VoiceLinks.from_json(data)

    async def show_voice_job(self: _Caller, job_id: str) -> VoiceDetail:
        return VoiceDetail.from_json(await self._call("GET", _path(job_id), job_id=job_id))

    async def confirm_segment(self: _Caller, job_id: str, index: int) -> VoiceSegment:
        """Confirm sentence `index`. A lost answer is settled by the confirmed indexes."""
        async def took_effect() -> bool:
            data = await self._call("GET", f"{_VOICE}/training-segment",
                                    query={"job_id": job_id}, job_id=job_id)
            return index in (data.get("confirmed_index") or [])

        data = await self._call("POST", f"{_VOICE}/training-segment",
                                query={"job_id": job_id, "index": index}, idempotent=False,
                                job_id=job_id, settle=took_effect,
                                what=f"confirm of sentence {index}", api="command")
        if "confirm_result" not in data:  # settled: it took effect
            return VoiceSegment(True, ())
        return VoiceSegment(bool(data.get("confirm_result")),
                            tuple(int(i) for i in data.get("unmatched_index_hit") or ()))

    async def confirmed_segments(self: _Caller, job_id: str) -> set[int]:
        data = await self._call("GET", f"{_VOICE}/training-segment", query={"job_id": job_id},
                                job_id=job_id)
        return {int(i) for i in data.get("confirmed_index") or ()}

    async def commit_voice_job(self: _Caller, job_id: str) -> None:
        """Commit the job (starts the review). A lost answer is settled by its state."""
        async def took_effect() -> bool:
            shown = await self._call("GET", _path(job_id), job_id=job_id)
            return shown.get("state") not in ("UPLOADING", "AUDIT_FAILED")

        await self._call("POST", _path(job_id), body={}, idempotent=False, job_id=job_id,
                         settle=took_effect, what="commit", api="command")

    async def delete_voice_job(self: _Caller, job_id: str) -> None:
        await self._call("DELETE", _path(job_id), job_id=job_id, api="delete")

    async def voice_audit_result(self: _Caller, job_id: str) -> Json:
        return await self._call("GET", f"{_path(job_id)}/audit-result", job_id=job_id)

    async def voice_durations(self: _Caller) -> dict[str, int]:
        """The tenant's allowed durations (seconds): basic_min, basic_max, ..."""
        data = await self._call("GET", f"{_VOICE}/tenant-duration-cfg")
        return {k: int(v) for k, v in data.items() if isinstance(v, int | float)}

    async def find_voice_jobs(self: _Caller, voice_name: str) -> list[Json]:
        """The jobs still UPLOADING named `voice_name` (the list's exact filter)."""
        data = await self._call("GET", f"{_VOICE}/jobs",
                                query={"voice_name": voice_name, "state": "UPLOADING",
                                       "limit": 100}, api="list")
        return [j for j in data.get("jobs") or () if isinstance(j, dict)]

    async def create_assessment(self: _Caller, language: str) -> tuple[str, str]:
        """A VOICE_ASSESS short job: its id and the zip's link."""
        data = await self._call("POST", f"{_VOICE}/short-jobs",
                                body={"job_type": "VOICE_ASSESS", "language": language},
                                idempotent=False, what="create quality check", api="create")
        return str(data.get("job_id") or ""), str(data.get("data_uploading_url") or "")

    async def commit_assessment(self: _Caller, job_id: str) -> None:
        await self._call("POST", f"{_VOICE}/short-jobs/{quote(job_id, safe='')}", body={},
                         idempotent=True, job_id=job_id, what="commit quality check",
                         api="command")

    async def show_assessment(self: _Caller, job_id: str) -> ShortJob:
        data = await self._call("GET", f"{_VOICE}/short-jobs/{quote(job_id, safe='')}",
                                job_id=job_id)
        result = data.get("assess_result")
        return ShortJob(job_id, _text(data.get("state")),
                        result if isinstance(result, dict) else {})


def _path(job_id: str) -> str:
    return f"{_VOICE}/jobs/{quote(job_id, safe='')}"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
