"""Typed views of MetaStudio's answers; each keeps the whole answer in `raw`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uploader._errors import MalformedAnswerError

__all__ = [
    "CommandResult",
    "JobDetail",
    "JobList",
    "JobSummary",
    "JobUrls",
    "OperationLog",
    "UploadedPart",
    "VoiceJobInfo",
    "VoiceJobList",
]

Json = dict[str, Any]


def _malformed(what: str) -> MalformedAnswerError:
    return MalformedAnswerError(f"MetaStudio sent a malformed answer: {what}")


def _str(data: Json, key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _malformed(f"no {key!r}")
        return None
    if not isinstance(value, str):
        raise _malformed(f"{key!r} is not a string")
    return value


def _list(data: Json, key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise _malformed(f"{key!r} is not a list")
    return value


@dataclass(frozen=True)
class JobUrls:
    """The answer of create and update: the job id and one upload URL per part."""

    job_id: str
    training_video_upload_url: list[str]
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, data: Json, *, job_id: str | None = None) -> JobUrls:
        urls = _list(data, "training_video_upload_url")
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise _malformed("no 'training_video_upload_url' list of URLs")
        found = _str(data, "job_id", required=job_id is None) or job_id
        assert found is not None
        return cls(job_id=found, training_video_upload_url=urls, raw=data)


@dataclass(frozen=True)
class JobSummary:
    """One job as list jobs shows it."""

    job_id: str
    name: str | None
    state: str
    create_time: str | None
    last_update_time: str | None
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, data: Json) -> JobSummary:
        return cls(**_summary_fields(data), raw=data)


def _summary_fields(data: Json) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _malformed("a job is not an object")
    return {
        "job_id": _str(data, "job_id", required=True),
        "name": _str(data, "name"),
        "state": _str(data, "state", required=True),
        "create_time": _str(data, "create_time"),
        "last_update_time": _str(data, "last_update_time"),
    }


@dataclass(frozen=True)
class JobList:
    """A page of jobs and the total count."""

    count: int
    jobs: list[JobSummary]

    @classmethod
    def from_json(cls, data: Json) -> JobList:
        jobs = [JobSummary.from_json(job) for job in _list(data, "jobs")]
        return cls(count=int(data.get("count") or 0), jobs=jobs)


@dataclass(frozen=True)
class OperationLog:
    """One entry of a job's operation log."""

    operate_time: str | None
    log_type: str | None
    log_description: str | None
    operate_user: str | None
    error_code: str | None

    @classmethod
    def from_json(cls, data: Json) -> OperationLog:
        keys = ("operate_time", "log_type", "log_description", "operate_user", "error_code")
        return cls(**{key: _str(data, key) for key in keys})


@dataclass(frozen=True)
class JobDetail:
    """One job as show job tells it."""

    job_id: str
    name: str | None
    state: str
    create_time: str | None
    last_update_time: str | None
    training_video_download_url: str | None
    operation_logs: list[OperationLog]
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, data: Json) -> JobDetail:
        return cls(
            **_summary_fields(data),
            training_video_download_url=_str(data, "training_video_download_url"),
            operation_logs=[OperationLog.from_json(e) for e in _list(data, "operation_logs")],
            raw=data,
        )


@dataclass(frozen=True)
class UploadedPart:
    """A part the server holds: its number (1-based) and ETag."""

    part_number: int
    etag: str


@dataclass(frozen=True)
class CommandResult:
    """The answer of a job command."""

    succeeded: bool
    multipart_data: list[UploadedPart]
    excute_failed_msg: str | None
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, data: Json) -> CommandResult:
        result = _str(data, "commond_result", required=True)
        if result not in ("EXCUTE_SUCCESS", "EXCUTE_FAILED"):
            raise _malformed(f"'commond_result' is {result!r}")
        return cls(
            succeeded=result == "EXCUTE_SUCCESS",
            multipart_data=sorted(
                (_part(item) for item in _list(data, "multipart_data")),
                key=lambda part: part.part_number,
            ),
            excute_failed_msg=_str(data, "excute_failed_msg"),
            raw=data,
        )


def _part(item: Any) -> UploadedPart:
    if not isinstance(item, dict):
        raise _malformed("a 'multipart_data' entry is not an object")
    number = str(item.get("part_number", ""))
    if not number.isdigit():
        raise _malformed(f"'part_number' {number!r} is not a number")
    etag = item.get("etag")
    if not isinstance(etag, str):
        raise _malformed(f"part {number} has no etag")
    return UploadedPart(part_number=int(number), etag=etag)


@dataclass(frozen=True)
class VoiceJobInfo:
    """One voice training job, as the list answers it."""

    job_id: str
    voice_name: str | None
    state: str | None
    create_time: int | None
    raw: Json = field(repr=False)

    @classmethod
    def from_json(cls, data: Json) -> VoiceJobInfo:
        if not isinstance(data, dict):
            raise _malformed("a voice job is not an object")
        created = data.get("create_time")
        return cls(
            job_id=_str(data, "job_id", required=True) or "",
            voice_name=_str(data, "voice_name"),
            state=_str(data, "state"),
            create_time=created if isinstance(created, int) else None,
            raw=data,
        )


@dataclass(frozen=True)
class VoiceJobList:
    """A page of voice training jobs and the total count."""

    count: int
    jobs: list[VoiceJobInfo]

    @classmethod
    def from_json(cls, data: Json) -> VoiceJobList:
        jobs = [VoiceJobInfo.from_json(job) for job in _list(data, "jobs")]
        return cls(count=int(data.get("count") or 0), jobs=jobs)
