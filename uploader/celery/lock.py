"""One copy of a row at a time, on any machine: an exclusive queue on the broker is the lock.

At-least-once delivery means a row's task may run twice, even at once (a worker that lost
the broker still running it while the broker hands it to another; the same row sent by two
batches). RabbitMQ lets only one connection declare an exclusive queue, and deletes the queue
when that connection closes: the broker already shared by every worker is the lock, released
at once when its holder dies (the kernel closes the socket), with no expiry to guess and no
second server. A second copy waits for the lock, then runs: it finds the row's job by its
content tag with every file stored, and ends `skipped` having sent nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from celery import Celery
from kombu.entity import Queue

from uploader._errors import BrokerError
from uploader._journal import FileIdentity
from uploader._log import logger
from uploader._retry import Backoff
from uploader._voice_job import VoiceJob
from uploader.api.settings import Settings
from uploader.batch import Row
from uploader.workflow.job import content_tag

__all__ = ["RowLock", "row_key"]

log = logger()

#: Waits between tries for a held lock: 0.5 s doubling to 2 s, jittered (a try is one
#: queue declaration: cheap for the broker).
_WAITS = Backoff(base=0.5, cap=2.0)


def row_key(settings: Settings, row: Row) -> str:
    """What makes two rows the same upload: the service, and the job (its id, or the
    content tag that finds the job made for this name and video on any machine)."""
    given = row.job
    if isinstance(given, VoiceJob):  # a voice job is found again by its name
        job = f"voice:{given.name}"
    elif given.job_id is not None:
        job = f"job:{given.job_id}"
    else:
        job = content_tag(given.name or "", FileIdentity.of(given.video))
    text = "\0".join((settings.endpoint, settings.project_id, job))
    return hashlib.sha256(text.encode(), usedforsecurity=False).hexdigest()[:32]


class RowLock:
    """Held from `__enter__` (which waits for it) to `__exit__`, on a connection of its own.

    The connection sends no heartbeats (nothing would service them during an upload): it
    ends when this process ends or the broker goes; in the latter case Celery stops the
    task too (`worker_cancel_long_running_tasks_on_connection_loss`)."""

    def __init__(self, app: Celery, key: str, *,
                 on_wait: Callable[[], None] | None = None) -> None:
        self._app = app
        self._queue = Queue(f"uploader.lock.{key}", exclusive=True, auto_delete=True,
                            durable=False)
        self._on_wait = on_wait or (lambda: None)
        self._connection: Any = None

    def __enter__(self) -> RowLock:
        self._connection = self._app.connection_for_write(heartbeat=0)
        try:
            self._acquire()
        except BaseException:
            self._connection.release()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._connection.release()  # the broker deletes the exclusive queue

    def _acquire(self) -> None:
        connection = self._connection
        waits = 0
        while True:
            try:
                connection.ensure_connection(max_retries=3)
                self._queue(connection.channel()).declare()
                return
            except connection.channel_errors:  # RESOURCE_LOCKED: another copy holds it
                pass
            except connection.connection_errors as exc:
                raise BrokerError(f"cannot lock the row on the broker: {exc}") from None
            waits += 1
            if waits == 1:
                log.info("another copy of this row is running: waiting for it to end")
                self._on_wait()
            time.sleep(_WAITS.delay(waits))
