"""What a run did: the results `upload_video` and `submit_job` return."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from uploader.api.models import JobDetail
from uploader.api.states import FAILED, explain_error_code, explain_state, outcome

__all__ = ["UNKNOWN_STATE", "FileResult", "JobOutcome", "SubmitResult", "UploadResult",
           "outcome_of"]

#: The state reported when the files are confirmed but the job's state cannot be read.
UNKNOWN_STATE = "UNKNOWN"


@dataclass(frozen=True)
class FileResult:
    """One file of the run: `outcome` is "sent" (some or all of it went out this run) or
    "skipped" (the service held all of it already); `verified` is False when some piece of
    it was not proved by the storage's ETag (an encrypted bucket's ETags are not MD5s)."""

    kind: str
    path: str
    outcome: str
    size_bytes: int
    bytes_uploaded: int
    verified: bool = True
    #: The preflight's warnings on the file ({code, message, ...}): the recording guide's
    #: advice, and problems a caller chose to have ignored. They refused nothing.
    warnings: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class JobOutcome:
    """Where the job stands: its state, what it means, what it says of the automatic review
    (`review_outcome`: "passed", "failed", "pending", or None for a state this tool does not
    know), and any review error."""

    state: str
    state_meaning: str
    review_error_code: str | None = None
    review_error_meaning: str | None = None
    review_outcome: str | None = None


def outcome_of(job: JobDetail | None) -> JobOutcome:
    """The outcome shown by `job` (None: its state could not be read)."""
    if job is None:
        return JobOutcome(UNKNOWN_STATE, "the files are confirmed, but the job's state could "
                          "not be read")
    verdict = outcome(job.state)
    code = next((e.error_code for e in reversed(job.operation_logs) if e.error_code), None)
    code = code if verdict == FAILED else None
    return JobOutcome(job.state, explain_state(job.state), code, explain_error_code(code),
                      verdict)


@dataclass(frozen=True)
class UploadResult:
    """What an upload did; `to_json()` is its JSON (the command line prints it). The `parts_*`
    counts are the training video's; `bytes_uploaded` counts every file; `seconds` is the
    time the transfer took (not the confirms, the submit or the review wait)."""

    job_id: str
    parts_total: int
    parts_skipped: int
    parts_uploaded: int
    bytes_uploaded: int
    bytes_sent: int
    seconds: float
    state: str
    state_meaning: str
    review_error_code: str | None = None
    review_error_meaning: str | None = None
    review_outcome: str | None = None
    submitted: bool = False
    files: list[FileResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SubmitResult:
    """What `submit_job` did; `to_json()` is its JSON (the command line prints it)."""

    job_id: str
    submitted: bool
    state: str
    state_meaning: str
    review_error_code: str | None = None
    review_error_meaning: str | None = None
    review_outcome: str | None = None
    already: bool = False  #: submitted before this call: reported as it stands

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
