"""Upload a training video to a Huawei Cloud MetaStudio digital-human training job."""

from uploader._api import MetaStudioClient
from uploader._errors import (
    ApiError,
    ConfirmError,
    FileChangedError,
    JobLockedError,
    JobStateError,
    JournalError,
    PlanError,
    PreflightError,
    SettingsError,
    TransferError,
    UploaderError,
    UsageError,
)
from uploader._models import (
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
from uploader._preflight import Facts, Problem, Report, check_video, check_video_async
from uploader._retry import Backoff
from uploader._settings import Settings
from uploader._transfer import TransferConfig
from uploader._upload import UploadResult, upload_video, upload_video_sync

__all__ = [
    "ApiError",
    "Backoff",
    "CommandResult",
    "ConfirmError",
    "Facts",
    "FileChangedError",
    "JobDetail",
    "JobList",
    "JobLockedError",
    "JobStateError",
    "JobSummary",
    "JobUrls",
    "JournalError",
    "MetaStudioClient",
    "OperationLog",
    "PlanError",
    "PreflightError",
    "Problem",
    "Report",
    "Settings",
    "SettingsError",
    "TransferConfig",
    "TransferError",
    "UploadResult",
    "UploadedPart",
    "UploaderError",
    "UsageError",
    "VoiceJob",
    "VoiceJobList",
    "check_video",
    "check_video_async",
    "upload_video",
    "upload_video_sync",
]
