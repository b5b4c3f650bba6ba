"""Every error the library raises, under one root.

    UploaderError
    ├── UsageError            a value that cannot be used as given
    │   ├── PlanError         an impossible part plan
    │   ├── MissingFilesError a submit without a file the review requires (`kinds`)
    │   └── SettingsError     a missing, malformed or contradictory setting (`variable`)
    ├── PreflightError        a file would fail review; nothing was sent (`reports`)
    ├── LocalFileError        a file on this machine cannot be read (`path`)
    ├── UnreachableError      no answer came from a host, the API's or the storage's: it
    │                         could not be reached, or the connection broke (`may_have_arrived`)
    ├── ApiError              MetaStudio answered, but not with success (`status`,
    │   │                     `error_code`, `request_id`)
    │   ├── RefusedError      MetaStudio answered with an error
    │   │   └── ConfirmError  a confirm command or the submit answered EXCUTE_FAILED
    │   └── MalformedAnswerError  MetaStudio's answer is not what the API documents
    ├── CredentialsError      temporary keys or a token could not be had (`source`)
    ├── BrokerError           the task broker (RabbitMQ) could not be reached or refused
    ├── JobStateError         the job's state does not allow this (`state`)
    ├── JournalError          the local journal forbids going on
    │   ├── JobLockedError    another run is uploading to the same job
    │   └── FileChangedError  the file differs from the one partly uploaded
    └── TransferError         the pieces did not all arrive (`part_number`)

Every error carries the facts a caller needs to act: the job id where there is one, and the
fields named above. None knows of a command line: the CLI alone maps them to exit codes.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uploader.preflight import Report

__all__ = [
    "ApiError",
    "BrokerError",
    "ConfirmError",
    "CredentialsError",
    "FileChangedError",
    "JobLockedError",
    "JobStateError",
    "JournalError",
    "LocalFileError",
    "MalformedAnswerError",
    "MissingFilesError",
    "PlanError",
    "PreflightError",
    "RefusedError",
    "Remedy",
    "SettingsError",
    "TransferError",
    "UnreachableError",
    "UploaderError",
    "UsageError",
]


class Remedy(enum.Enum):
    """What gets past an error, as data: the library says it in its own words (keywords and
    methods), a command line in its flags and commands."""

    #: Start the upload over, sending every file again: `restart=True`.
    RESTART = "restart"
    #: Keep the journals in another folder: `state_dir=`.
    STATE_DIR = "state_dir"
    #: Accept a plain http endpoint beyond loopback: `Settings(allow_http=True)`.
    ALLOW_HTTP = "allow_http"
    #: Upload the job's corrected files to it, then submit: `upload(Job(job_id=..., ...),
    #: submit=True)`.
    UPLOAD_FILES = "upload_files"
    #: Start over with larger parts (the storage refused parts this small): `restart=True`
    #: with a larger `part_size` or fewer `parts`.
    LARGER_PARTS = "larger_parts"


class UploaderError(Exception):
    """Root of every error the library raises. `remedy`, when set, is what gets past it (a
    `Remedy`)."""

    remedy: Remedy | None = None

    def __init__(self, message: str, *, job_id: str | None = None,
                 remedy: Remedy | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id
        self.remedy = remedy


class UsageError(UploaderError):
    """The request cannot be carried out as asked."""



class PlanError(UsageError):
    """No part plan satisfies the requested parts or part size."""


class MissingFilesError(UsageError):
    """Submitting needs files that were neither given nor are stored on the job; `kinds`
    names them (the keywords of `upload_video`)."""

    def __init__(self, message: str, *, kinds: tuple[str, ...], job_id: str | None = None
                 ) -> None:
        super().__init__(message, job_id=job_id)
        self.kinds = kinds


class PreflightError(UploaderError):
    """A file would be refused by review. `reports` holds the verdict on each file refused
    (`report` is the first). Found by the header rules, before any job exists: nothing was
    sent (`job_id` None). Found by the content rules, which run beside the transfer: nothing
    was confirmed, and the job `job_id` keeps what was stored, for a re-run with the option
    fixed or the finding ignored."""


    def __init__(self, report: Report, *more: Report, job_id: str | None = None) -> None:
        self.reports = (report, *more)
        said = "; ".join(f"{r.path}: " + "; ".join(problem.message for problem in r.problems)
                         for r in self.reports)
        if job_id is not None:
            said += (f" (nothing was confirmed; job {job_id} keeps the parts stored: a re-run "
                     "sends only what is missing)")
        super().__init__(said, job_id=job_id)
        self.report = report


class SettingsError(UsageError):
    """A setting is missing, malformed, or contradicts another; `variable` names it."""


    def __init__(self, message: str, *, variable: str | None = None,
                 remedy: Remedy | None = None) -> None:
        super().__init__(message, remedy=remedy)
        self.variable = variable


class LocalFileError(UploaderError):
    """A file on this machine cannot be read (gone, no permission, an I/O error); `path`
    names it. What was sent of it so far is kept."""

    def __init__(self, message: str, *, path: str, job_id: str | None = None) -> None:
        super().__init__(message, job_id=job_id)
        self.path = path


class ApiError(UploaderError):
    """An API call failed: one of the three subclasses says how. `status` is None when no
    answer came; `retry_after` is the wait (seconds) the service asked for, if any."""


    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        details = [f"HTTP {status}" if status is not None else None, error_code,
                   f"request id {request_id}" if request_id else None]
        shown = ", ".join(d for d in details if d)
        super().__init__(f"{message} ({shown})" if shown else message, job_id=job_id)
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        self.retry_after: float | None = None


class UnreachableError(UploaderError):
    """No answer came from a host, whatever it serves (the API, the storage, a stored file's
    link): a transport error. `may_have_arrived` is False when the request cannot have
    reached it (the connection was refused or never made, the host name did not resolve);
    `lasting` when trying again cannot help (the host name does not exist)."""

    #: No answer, so no status: as an ApiError's `status` reads where no answer came.
    status: int | None = None

    def __init__(self, message: str, *, may_have_arrived: bool, lasting: bool = False,
                 job_id: str | None = None) -> None:
        super().__init__(message, job_id=job_id)
        self.may_have_arrived = may_have_arrived
        self.lasting = lasting


class RefusedError(ApiError):
    """MetaStudio answered with an error status (4xx, 5xx)."""


class MalformedAnswerError(ApiError):
    """MetaStudio answered, but not as the API documents (not JSON, fields missing...)."""


class CredentialsError(UploaderError):
    """Keys or a token could not be had from where the settings say (the ECS metadata
    service, a token file); `source` names it."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


class BrokerError(UploaderError):
    """The broker that carries a batch's rows to the workers could not be reached, or
    refused what was asked of it (its address is named without its password)."""



class JobStateError(UploaderError):
    """The job's state does not allow what was asked (taking files, a submit)."""


    def __init__(self, message: str, *, job_id: str, state: str,
                 remedy: Remedy | None = None) -> None:
        super().__init__(message, job_id=job_id, remedy=remedy)
        self.state = state


class JournalError(UploaderError):
    """The local journal forbids going on."""



class JobLockedError(JournalError):
    """Another run holds the journal of this job and video."""


class FileChangedError(JournalError):
    """The file is not the one whose upload the journal or server recorded; restarting
    the upload sends it from the start."""

    remedy = Remedy.RESTART

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message, job_id=job_id, remedy=Remedy.RESTART)


class TransferError(UploaderError):
    """Not every part arrived; running the same command again resumes."""


    def __init__(
        self, message: str, *, job_id: str | None = None, part_number: int | None = None,
        remedy: Remedy | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, remedy=remedy)
        self.part_number = part_number


class ConfirmError(RefusedError):
    """A confirm command (CONFIRM_MULTIPART_UPLOADED, ...) or SUBMITVERIFYING answered
    EXCUTE_FAILED: the service refused it; `command` says which."""

    def __init__(self, message: str, *, job_id: str | None = None, command: str = "",
                 remedy: Remedy | None = None) -> None:
        super().__init__(message, job_id=job_id)
        self.command = command
        self.remedy = remedy
