"""How a run tells its caller what it is doing: one interface for the CLI's bar, a batch and
a Celery task alike (s3transfer's subscribers are the model).

Subclass `Progress` and override what you need; every method does nothing by default. Bytes
come as deltas: a piece that must be sent again winds its bytes back (a negative delta).
"""

from __future__ import annotations

import enum

__all__ = ["Progress", "Step"]


class Step(enum.StrEnum):
    """Where an upload is, in order: after CONFIRMED an interruption loses nothing."""

    SENDING = "sending"  #: the job is known; its files go out
    CONFIRMING = "confirming"  #: every file is sent; the confirms go out
    CONFIRMED = "confirmed"  #: every file is the job's
    SUBMITTED = "submitted"  #: the job is under review
    WAITING = "waiting"  #: following the review (a batch gives the row's place away)


class Progress:
    """Told how an upload goes. Called on the event loop of the upload: keep it quick."""

    def on_total(self, total: int) -> None:
        """The bytes this upload counts: the size of every file it was given."""

    def on_bytes(self, delta: int) -> None:
        """Bytes done moved by `delta`: sent, found stored already, or (negative) wound
        back for a piece that must be sent again."""

    def on_stored(self, size: int) -> None:
        """`size` bytes were found stored already (an earlier run sent them): done at once,
        without being sent. By default, told as `on_bytes`."""
        self.on_bytes(size)

    def on_step(self, step: Step, job_id: str) -> None:
        """The upload to job `job_id` reached `step`."""
