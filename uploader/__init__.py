"""Upload a training video and its job's files to Huawei Cloud MetaStudio, and submit the job.

    async with uploader.AsyncClient() as client:            # or: with uploader.Client() ...
        result = await client.upload(uploader.Job.of("talk.mp4", name="Alice", ...))

Each name is imported when first used (PEP 562): `import uploader` costs milliseconds, and the
command line starts without aiohttp, Pillow or the hashing extension until it needs them.
"""

import importlib
import sys
import typing

if "logging" in sys.modules:
    # A host that uses logging gets the library's NullHandler at once (every module that
    # logs sets it too, through `_log`); the command line starts without logging.
    import uploader._log  # noqa: F401

if typing.TYPE_CHECKING:
    from uploader._client import (
        AsyncClient,
        Client,
        submit_job,
        submit_job_sync,
        upload_video,
        upload_video_sync,
    )
    from uploader._errors import (
        ApiError,
        BrokerError,
        ConfirmError,
        CredentialsError,
        FileChangedError,
        JobLockedError,
        JobStateError,
        JournalError,
        LocalFileError,
        MalformedAnswerError,
        MissingFilesError,
        PlanError,
        PreflightError,
        RefusedError,
        Remedy,
        SettingsError,
        TransferError,
        UnreachableError,
        UploaderError,
        UsageError,
    )
    from uploader._files import FileKind
    from uploader._job import Job, JobOptions
    from uploader._limits import Limits
    from uploader._progress import Progress, Step
    from uploader._retry import Backoff
    from uploader._voice_job import VoiceJob
    from uploader.api.client import MetaStudioClient
    from uploader.api.models import (
        CommandResult,
        JobDetail,
        JobList,
        JobSummary,
        JobUrls,
        OperationLog,
        UploadedPart,
        VoiceJobInfo,
        VoiceJobList,
    )
    from uploader.api.settings import Settings
    from uploader.api.voice import ShortJob, VoiceDetail
    from uploader.preflight import Facts, FileFacts, Problem, Report, check_video, check_video_async
    from uploader.transfer.budget import TransferBudget
    from uploader.transfer.engine import TransferConfig
    from uploader.workflow.result import FileResult, SubmitResult, UploadResult
    from uploader.workflow.voice import VoiceResult

#: Where each public name lives.
_WHERE = {
    "ApiError": "uploader._errors",
    "AsyncClient": "uploader._client",
    "Backoff": "uploader._retry",
    "BrokerError": "uploader._errors",
    "Client": "uploader._client",
    "CommandResult": "uploader.api.models",
    "ConfirmError": "uploader._errors",
    "CredentialsError": "uploader._errors",
    "Facts": "uploader.preflight",
    "FileChangedError": "uploader._errors",
    "FileFacts": "uploader.preflight",
    "FileKind": "uploader._files",
    "FileResult": "uploader.workflow.result",
    "Job": "uploader._job",
    "JobDetail": "uploader.api.models",
    "JobList": "uploader.api.models",
    "JobLockedError": "uploader._errors",
    "JobOptions": "uploader._job",
    "JobStateError": "uploader._errors",
    "JobSummary": "uploader.api.models",
    "JobUrls": "uploader.api.models",
    "JournalError": "uploader._errors",
    "Limits": "uploader._limits",
    "LocalFileError": "uploader._errors",
    "MalformedAnswerError": "uploader._errors",
    "MetaStudioClient": "uploader.api.client",
    "MissingFilesError": "uploader._errors",
    "OperationLog": "uploader.api.models",
    "PlanError": "uploader._errors",
    "PreflightError": "uploader._errors",
    "Problem": "uploader.preflight",
    "Progress": "uploader._progress",
    "RefusedError": "uploader._errors",
    "Remedy": "uploader._errors",
    "Report": "uploader.preflight",
    "Settings": "uploader.api.settings",
    "SettingsError": "uploader._errors",
    "Step": "uploader._progress",
    "SubmitResult": "uploader.workflow.result",
    "TransferBudget": "uploader.transfer.budget",
    "TransferConfig": "uploader.transfer.engine",
    "TransferError": "uploader._errors",
    "UnreachableError": "uploader._errors",
    "UploadResult": "uploader.workflow.result",
    "UploadedPart": "uploader.api.models",
    "UploaderError": "uploader._errors",
    "UsageError": "uploader._errors",
    "VoiceJob": "uploader._voice_job",
    "VoiceJobInfo": "uploader.api.models",
    "VoiceJobList": "uploader.api.models",
    "VoiceDetail": "uploader.api.voice",
    "VoiceResult": "uploader.workflow.voice",
    "ShortJob": "uploader.api.voice",
    "check_video": "uploader.preflight",
    "check_video_async": "uploader.preflight",
    "submit_job": "uploader._client",
    "submit_job_sync": "uploader._client",
    "upload_video": "uploader._client",
    "upload_video_sync": "uploader._client",
}

__all__ = [
    "ApiError",
    "AsyncClient",
    "Backoff",
    "BrokerError",
    "Client",
    "CommandResult",
    "ConfirmError",
    "CredentialsError",
    "Facts",
    "FileChangedError",
    "FileFacts",
    "FileKind",
    "FileResult",
    "Job",
    "JobDetail",
    "JobList",
    "JobLockedError",
    "JobOptions",
    "JobStateError",
    "JobSummary",
    "JobUrls",
    "JournalError",
    "Limits",
    "LocalFileError",
    "MalformedAnswerError",
    "MetaStudioClient",
    "MissingFilesError",
    "OperationLog",
    "PlanError",
    "PreflightError",
    "Problem",
    "Progress",
    "RefusedError",
    "Remedy",
    "Report",
    "Settings",
    "SettingsError",
    "ShortJob",
    "Step",
    "SubmitResult",
    "TransferBudget",
    "TransferConfig",
    "TransferError",
    "UnreachableError",
    "UploadResult",
    "UploadedPart",
    "UploaderError",
    "UsageError",
    "VoiceDetail",
    "VoiceJob",
    "VoiceJobInfo",
    "VoiceJobList",
    "VoiceResult",
    "check_video",
    "check_video_async",
    "submit_job",
    "submit_job_sync",
    "upload_video",
    "upload_video_sync",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'uploader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
