"""Every job state of the official SDK's enum (API.md §3): what it means, and what it says
of the automatic review (`outcome`). A state not in the table is reported as the service
wrote it, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCEPTS_VIDEO", "DELETABLE", "FAILED", "PASSED", "PENDING", "REVIEW_FAILED", "STATES",
           "UNDER_REVIEW", "explain_error_code", "explain_state", "outcome"]

#: What a state says of the review: passed, failed, or not decided yet.
PASSED, FAILED, PENDING = "passed", "failed", "pending"

#: States in which update can issue upload links (API.md §6).
ACCEPTS_VIDEO = frozenset({"WAIT_FILE_UPLOAD", "AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED"})
#: States in which a job may be deleted (API.md §2).
DELETABLE = frozenset({
    "WAIT_FILE_UPLOAD", "AUTO_VERIFY_FAILED", "MANUAL_VERIFYING", "MANUAL_VERIFY_FAILED",
    "TRAINING_DATA_PREPROCESS_FAILED", "TRAIN_FAILED", "INFERENCE_DATA_PREPROCESS_FAILED",
    "JOB_SUCCESS", "WAIT_USER_CONFIRM", "JOB_REJECT", "JOB_FINISH"})
#: States after a failed review: an update, new files and a new submit are due.
REVIEW_FAILED = frozenset({"AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED"})


@dataclass(frozen=True)
class State:
    """One state: its console group, its meaning, and the review outcome it shows."""

    group: str
    meaning: str
    outcome: str


def _training(meaning: str) -> State:
    return State("training", f"{meaning} (the review passed; only administrators act here)",
                 PASSED)


_FAILED_LATER = "the review passed, but {} failed: see the job's operation log, or ask support"

STATES: dict[str, State] = {
    "WAIT_FILE_UPLOAD": State("waiting", "waiting for the job's files, then for it to be "
                              "submitted for review", PENDING),
    "AUTO_VERIFYING": State("reviewing", "submitted, and under automatic review", PENDING),
    "VIDEO_ANALYZE_PROCESSING": State("reviewing", "submitted: the training video is being "
                                      "analysed", PENDING),
    "MANUAL_VERIFYING": State("reviewing", "the automatic review passed; the job awaits "
                              "manual review", PASSED),
    "AUTO_VERIFY_FAILED": State("review failed", "automatic review refused the job: upload "
                                "corrected files (and the ID card images again) and resubmit",
                                FAILED),
    "MANUAL_VERIFY_FAILED": State("review failed", "manual review refused the job: upload "
                                  "corrected files and resubmit", FAILED),
    "VIDEO_ANALYZE_FAILED": State("review failed", "the training video's check refused it: "
                                  "record the video again by the rules", FAILED),
    "VIDEO_ANALYZE_SUCCESS": State("reviewing", "the training video's check passed", PASSED),
    "MANUAL_VERIFY_SUCCESS": _training("manual review passed; training comes next"),
    "WAIT_TRAINING_DATA_PREPROCESS": _training("waiting to prepare the training data"),
    "TRAINING_DATA_PREPROCESSING": _training("preparing the training data"),
    "TRAINING_DATA_PREPROCESS_FAILED": State(
        "training", _FAILED_LATER.format("preparing the training data"), PASSED),
    "TRAINING_DATA_PREPROCESS_SUCCESS": _training("the training data is ready"),
    "TRAINING": _training("the model is being trained"),
    "TRAIN_FAILED": State("training", _FAILED_LATER.format("training"), PASSED),
    "TRAIN_SUCCESS": _training("the model is trained"),
    "INFERENCE_DATA_PREPROCESSING": _training("preparing the inference data"),
    "INFERENCE_DATA_PREPROCESS_FAILED": State(
        "training", _FAILED_LATER.format("preparing the inference data"), PASSED),
    "WAIT_MAIN_FILE_UPLOAD": _training("waiting for the main file"),
    "MANUAL_STOP_INFERENCE_DATA_PREPROCESS": _training("inference data preparation stopped "
                                                       "by an administrator"),
    "MANUAL_STOP_TRAIN": _training("training stopped by an administrator"),
    "MANUAL_STOP_TRAINING_DATA_PREPROCESS": _training("training data preparation stopped by "
                                                      "an administrator"),
    "WAIT_ADMIN_CONFIRM": _training("waiting for an administrator to confirm"),
    "WAIT_COMPILE": _training("waiting to compile the model"),
    "COMPILING": _training("compiling the model"),
    "COMPILE_FAILED": State("training", _FAILED_LATER.format("compiling the model"), PASSED),
    "WAIT_GENERATE_ACTION": _training("waiting to generate the actions"),
    "WAIT_ARRANGE": _training("waiting to be scheduled"),
    "ACTION_GENERATE_DATA_PROCESSING": _training("generating action data"),
    "MANUAL_STOP_ACTION_GENERATE_DATA_PROCESSING": _training("action data generation stopped "
                                                             "by an administrator"),
    "MANUAL_STOP_ACTION_GENERATE_ORI_PROCESSING": _training("action generation stopped by an "
                                                            "administrator"),
    "ACTION_GENERATE_ORI_PROCESSING": _training("generating the actions"),
    "ACTION_GENERATE_DATA_FAILED": State("training", _FAILED_LATER.format(
        "generating action data"), PASSED),
    "ACTION_GENERATE_ORI_FAILED": State("training", _FAILED_LATER.format(
        "generating the actions"), PASSED),
    "ACTION_GENERATE_ORI_SUCCESS": _training("the actions are generated"),
    "GENERATE_ACTION_PREPROCESS_FAILED": State("training", _FAILED_LATER.format(
        "preparing the action generation"), PASSED),
    "WAIT_ADMIN_CALIBRATION": _training("waiting for an administrator's calibration"),
    "WAIT_ASSET_SYNC": _training("waiting for the model's asset to be synchronised"),
    "WAIT_GENERATE_ACTION_MARK": _training("waiting to mark the actions"),
    "ACTION_MARKING": _training("marking the actions"),
    "ACTION_MARK_SUCCESS": _training("the actions are marked"),
    "ACTION_MARK_FAILED": State("training", _FAILED_LATER.format("marking the actions"),
                                PASSED),
    "ACTION_MARK_UPLOADED": _training("the action marks are uploaded"),
    "MANUL_STOP_ACTION_MARK": _training("action marking stopped by an administrator"),
    "WAIT_TEST_VIDEO_CHECK": _training("waiting for the test video's quality check"),
    "TEST_VIDEO_CHECK_PROCESSING": _training("checking a test video's quality"),
    "TEST_VIDEO_CHECK_SUCCESS": _training("the test video's quality check passed"),
    "TEST_VIDEO_CHECK_FAILED": State("training", _FAILED_LATER.format(
        "the test video's quality check"), PASSED),
    "WAIT_USER_CONFIRM": State("to accept", "trained: waiting for you to accept the model "
                               "(NA whitelist)", PASSED),
    "JOB_REJECT": State("rejected", "the job was rejected", FAILED),
    "JOB_PENDING": State("suspended", "the job is suspended", PASSED),
    "JOB_SUCCESS": State("done", "done: the model is trained and can be used", PASSED),
    "JOB_FINISH": State("done", "done: the job is finished", PASSED),
}
#: States a submitted job passes through before the automatic review has its outcome.
UNDER_REVIEW = frozenset(s for s, v in STATES.items() if v.outcome == PENDING)

_ERROR_CODES = {
    "44005901": "the video's resolution is not accepted: only 1920x1080, 1080x1920, "
    "3840x2160 or 2160x3840",
    "44005902": "the video's duration is not accepted: it must last 3 to 10 minutes "
    "(this code is the emulator's; the documented service only names 44005901)",
    "44005903": "the file is not an mp4 video the review can read "
    "(this code is the emulator's; the documented service only names 44005901)",
    "44005904": "an ID card image is missing: give both sides again and resubmit "
    "(this code is the emulator's; the documented service only names 44005901)",
    "44005905": "the authorization letter is missing: upload it and resubmit "
    "(this code is the emulator's; the documented service only names 44005901)",
}


def explain_state(state: str) -> str:
    """A sentence saying what `state` means for the person uploading."""
    known = STATES.get(state)
    if known is not None:
        return known.meaning
    return f"{state}, as the service wrote it: a state this tool does not know yet"


def outcome(state: str) -> str | None:
    """What `state` says of the automatic review: PASSED, FAILED, PENDING, or None for a
    state this tool does not know."""
    known = STATES.get(state)
    return known.outcome if known is not None else None


def explain_error_code(code: str | None) -> str | None:
    """What an operation-log error code means, or None when it is unknown or absent."""
    return _ERROR_CODES.get(code) if code else None
