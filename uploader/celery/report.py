"""A task's word to the batch that sent it: its progress (at most once a second) and its
`RowResult`, as persistent messages on the batch's own queue (`dispatch`).

Progress goes out from a thread of its own, so that a slow broker never stalls the upload's
event loop; a progress message that cannot be sent is dropped (the next one says more). The
result is sent with retries across a broker restart; if it still cannot be sent the task
fails unacknowledged, and the row runs again (and is skipped) once the broker is back.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from celery import Celery

from uploader._log import logger
from uploader._progress import Progress
from uploader.batch import RowResult

__all__ = ["KIND", "Reporter"]

log = logger()

#: The header that tells a task's messages apart from dead letters: "progress" or "result".
KIND = "uploader-kind"
#: Seconds between progress messages.
EVERY = 1.0
#: Retries of the result across a broker restart: up to about two minutes.
_RESULT_RETRY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 1.0,
                 "interval_max": 5.0}


class Reporter(Progress):
    """Publishes to `queue` (nothing at all when it is None) for the task `task_id`; the
    row's upload tells it its bytes (a `Progress`)."""

    def __init__(self, app: Celery, queue: str | None, task_id: str) -> None:
        self._app, self._queue, self._task = app, queue, task_id
        self._sent: int | None = None
        self._told: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tell_progress, daemon=True,
                                        name="uploader-progress")
        self._connection: Any = None

    def __enter__(self) -> Reporter:
        if self._queue is not None:
            self._connection = self._app.connection_for_write(heartbeat=0)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._connection is not None:
            self._thread.join()
            self._connection.release()

    def on_bytes(self, delta: int) -> None:
        """Bytes of the row done so far: told to the batch within EVERY seconds."""
        self._sent = (self._sent or 0) + delta

    def result(self, result: RowResult) -> None:
        """Tell the batch how the row ended, and its bytes done at the end (after the
        progress thread has stopped)."""
        self._stop.set()
        if self._connection is None:
            return
        self._thread.join()
        sent = self._sent if self._sent is not None else result.bytes_uploaded
        self._publish("result", {"task": self._task, "sent": sent,
                                 "result": result.to_json()}, retry=True)

    def _tell_progress(self) -> None:
        while not self._stop.wait(EVERY):
            sent = self._sent
            if sent is not None and sent != self._told:
                try:
                    self._publish("progress", {"task": self._task, "sent": sent},
                                  retry=False)
                    self._told = sent
                except Exception as exc:  # progress is best effort; the result is not
                    log.debug("progress not sent: %s", exc)

    def _publish(self, kind: str, body: dict[str, Any], *, retry: bool) -> None:
        producer = self._connection.Producer()
        producer.publish(body, exchange="", routing_key=self._queue, serializer="json",
                         delivery_mode="persistent", headers={KIND: kind},
                         retry=retry, retry_policy=_RESULT_RETRY if retry else None)
