"""What job states and review error codes mean, in plain words."""

from __future__ import annotations

__all__ = ["ACCEPTS_VIDEO", "REVIEW_FAILED", "explain_error_code", "explain_state"]

#: States in which update can issue upload links (API.md §6).
ACCEPTS_VIDEO = frozenset({"WAIT_FILE_UPLOAD", "AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED"})
#: States after a failed review: an update, new files and a new submit are due.
REVIEW_FAILED = frozenset({"AUTO_VERIFY_FAILED", "MANUAL_VERIFY_FAILED"})

_TRAINING_STATES = frozenset({
    "MANUAL_VERIFY_SUCCESS", "WAIT_TRAINING_DATA_PREPROCESS", "TRAINING_DATA_PREPROCESSING",
    "TRAINING_DATA_PREPROCESS_FAILED", "TRAINING_DATA_PREPROCESS_SUCCESS", "TRAINING",
    "TRAIN_SUCCESS", "INFERENCE_DATA_PREPROCESSING", "INFERENCE_DATA_PREPROCESS_FAILED",
    "WAIT_MAIN_FILE_UPLOAD", "MANUAL_STOP_INFERENCE_DATA_PREPROCESS", "MANUAL_STOP_TRAIN",
    "MANUAL_STOP_TRAINING_DATA_PREPROCESS", "WAIT_ADMIN_CONFIRM", "WAIT_COMPILE", "COMPILING",
    "COMPILE_FAILED", "WAIT_GENERATE_ACTION", "WAIT_ARRANGE", "ACTION_GENERATE_DATA_PROCESSING",
    "MANUAL_STOP_ACTION_GENERATE_DATA_PROCESSING", "WAIT_ASSET_SYNC",
})
_MEANINGS = {
    "WAIT_FILE_UPLOAD": "waiting for the job's files, then for it to be submitted for review",
    "AUTO_VERIFYING": "submitted, and under automatic review",
    "MANUAL_VERIFYING": "the video passed automatic review and awaits manual review",
    "AUTO_VERIFY_FAILED": "automatic review refused the video: upload a corrected one",
    "MANUAL_VERIFY_FAILED": "manual review refused the video: upload a corrected one",
    "WAIT_USER_CONFIRM": "waiting for you to confirm the job",
    "JOB_REJECT": "the job was rejected",
    "JOB_PENDING": "the job is on hold",
    "JOB_SUCCESS": "done: the model is trained",
    "JOB_FINISH": "done: the job is finished",
    "TRAIN_FAILED": "training failed",
}

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
    if state in _MEANINGS:
        return _MEANINGS[state]
    if state in _TRAINING_STATES:
        return "the video was accepted and the model is being trained: nothing to do but wait"
    return "a state this tool does not know"


def explain_error_code(code: str | None) -> str | None:
    """What an operation-log error code means, or None when it is unknown or absent."""
    return _ERROR_CODES.get(code) if code else None
