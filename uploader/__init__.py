"""Upload a training video and its job's files to Huawei Cloud MetaStudio, and submit the job.

    async with uploader.AsyncClient() as client:            # or: with uploader.Client() ...
        result = await client.upload(uploader.Job.of("talk.mp4", name="Alice", ...))
"""

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
    SettingsError,
    TransferError,
    UnreachableError,
    UploaderError,
    UsageError,
)
from uploader._files import FileKind
from uploader._job import Job, JobOptions
from uploader._progress import Progress, Step
from uploader._retry import Backoff
from uploader.api.client import MetaStudioClient
from uploader.api.models import (
    CommandResult,
    JobDetail,
    JobList,
    JobSummary,
    JobUrls,
    OperationLog,
    UploadedPart,
    VoiceJob,
    VoiceJobList,
)
from uploader.api.settings import Settings
from uploader.preflight import (
    Facts,
    FileFacts,
    Problem,
    Report,
    check_video,
    check_video_async,
)
from uploader.transfer.budget import TransferBudget
from uploader.transfer.engine import TransferConfig
from uploader.workflow.result import FileResult, SubmitResult, UploadResult

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
    "Report",
    "Settings",
    "SettingsError",
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
    "VoiceJob",
    "VoiceJobList",
    "check_video",
    "check_video_async",
    "submit_job",
    "submit_job_sync",
    "upload_video",
    "upload_video_sync",
]
