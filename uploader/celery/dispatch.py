"""Send a batch's rows to the workers as tasks, and follow them to their results.

Each batch declares its own durable queue (`uploader.batch.<id>`, gone a week after its last
use). Its tasks carry that name and report there (`report.Reporter`): progress, then the
row's `RowResult`. The same queue is bound to the dead-letter exchange by the batch's id, so
a row that RabbitMQ gave up on (it ended its worker more often than the delivery limit)
comes back here too, and is reported failed. Everything survives a broker restart: the
queue and its messages are durable, and the follower reconnects and goes on.

A follower stopped early (Ctrl-C) revokes the rows not yet started; rows running end on
their workers. Sent again, a row that was done is `skipped`, one that was cut short resumes.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from kombu.entity import Queue
from kombu.exceptions import OperationalError

from uploader._errors import BrokerError
from uploader._log import logger
from uploader._progress import Progress
from uploader._retry import Backoff
from uploader.batch import Row, RowError, RowResult
from uploader.celery.app import DEAD_LETTERS, app
from uploader.celery.report import KIND
from uploader.celery.task import upload_row

__all__ = ["BATCH_HEADER", "send_batch"]

log = logger()

#: The header naming the batch a task belongs to; its dead letter is routed by it.
BATCH_HEADER = "uploader-batch"
#: A batch's queue is deleted by the broker after a week unused (a follower killed -9).
_EXPIRES_MS = 7 * 24 * 3600 * 1000
#: Waits between reconnections to a broker that went away: up to 2 s apart, for ever
#: (the follower only waits; Ctrl-C stops it).
_RECONNECT = Backoff(base=0.5, cap=2.0)
#: Seconds without a word from any row before the batch asks whether workers are running.
SILENCE = 30


def send_batch(rows: Iterable[Row | RowError], *, submit: bool = False,
               broker: str | None = None, progress: Progress | None = None,
               silence: float = SILENCE) -> Iterator[RowResult]:
    """Send every row to the workers (`broker`: default UPLOADER_BROKER_URL) and yield each
    row's result as it ends; an invalid row is yielded at once. `progress.on_bytes` follows
    the bytes of every row, as the workers tell them; after `silence` seconds
    without a word from any row, a warning asks whether workers are running. BrokerError
    if the broker cannot be reached to send the rows. Closing the generator early revokes
    the rows not started."""
    if broker is not None:
        app.conf.broker_url = broker
    batch = _Batch(progress, submit=submit, silence=silence)
    try:
        yield from batch.send(rows)
        yield from batch.follow()
    finally:
        batch.close()


class _Batch:
    def __init__(self, progress: Progress | None, *, submit: bool,
                 silence: float) -> None:
        self.id = uuid.uuid4().hex
        self.queue = Queue(f"uploader.batch.{self.id}", exchange=DEAD_LETTERS, routing_key="",
                           durable=True, auto_delete=False,
                           queue_arguments={"x-expires": _EXPIRES_MS},
                           binding_arguments={"x-match": "all", BATCH_HEADER: self.id})
        self.declared = False
        self.started = time.monotonic()
        self.heard = False  # from any task of the batch, or warned that nothing was
        self.silence = silence
        self.pending: dict[str, Row] = {}
        self.sent: dict[str, int] = {}
        self.done = 0
        self.ready: deque[RowResult] = deque()
        self._progress = progress or Progress()
        self._submit = submit

    def send(self, rows: Iterable[Row | RowError]) -> Iterator[RowResult]:
        connection = app.connection_for_write()
        try:
            with connection:
                connection.ensure_connection(max_retries=3, interval_start=0.5,
                                             interval_step=0.5, interval_max=1.0)
                self.queue(connection.default_channel).declare()
                self.declared = True
                with app.producer_or_acquire() as producer:
                    for row in rows:
                        if isinstance(row, RowError):
                            yield RowResult.invalid(row)
                            continue
                        task_id = str(uuid.uuid4())
                        upload_row.apply_async(
                            kwargs={"row": row.to_json(), "line": row.line,
                                    "reply_to": self.queue.name, "submit": self._submit},
                            task_id=task_id, headers={BATCH_HEADER: self.id},
                            producer=producer)
                        self.pending[task_id] = row
        except (OperationalError, *connection.connection_errors) as exc:
            raise BrokerError(f"cannot send the rows to the broker at {_where()}: {exc}; "
                              "is RabbitMQ running there?") from None
        except connection.channel_errors as exc:  # e.g. the queue declared otherwise
            raise BrokerError(f"the broker at {_where()} refused the batch: {exc}; a queue "
                              "keeps the settings it was declared with (use the same "
                              "UPLOADER_DELIVERY_LIMIT, or another UPLOADER_QUEUE)") from None

    def follow(self) -> Iterator[RowResult]:
        failures = 0
        while self.pending:
            connection = app.connection_for_read(heartbeat=10)
            try:
                with connection, connection.Consumer(self.queue, callbacks=[self._heard],
                                                     accept=["json"]):
                    if failures:
                        log.warning("the broker is back: following the batch again")
                    failures = 0
                    while self.pending:
                        yield from self._drain(connection)
            except (OperationalError, *connection.connection_errors) as exc:
                failures += 1
                if failures == 1:
                    log.warning("lost the broker at %s (%s): reconnecting", _where(), exc)
                time.sleep(_RECONNECT.delay(failures))
        while self.ready:
            yield self.ready.popleft()

    def _drain(self, connection: Any) -> Iterator[RowResult]:
        with contextlib.suppress(TimeoutError):  # nothing for a second
            connection.drain_events(timeout=1.0)
        connection.heartbeat_check()  # keeps the connection alive; rate-limited by kombu
        if not self.heard and time.monotonic() - self.started > self.silence:
            self.heard = True  # said once
            log.warning("no worker has told anything of this batch's rows for %g s: is a "
                        "worker (of uploader.celery) running against this broker, with the same "
                        "UPLOADER_QUEUE (%s)?", self.silence, app.conf.task_default_queue)
        while self.ready:
            yield self.ready.popleft()

    def _heard(self, body: Any, message: Any) -> None:
        self.heard = True
        headers = message.headers or {}
        kind = headers.get(KIND)
        task = body.get("task") if isinstance(body, dict) else headers.get("id")
        if kind == "progress" and task in self.pending:
            self._moved(task, body["sent"])
        elif kind == "result" and task in self.pending:
            self._moved(task, body.get("sent", self.sent.get(task, 0)))
            self.sent.pop(task)  # its bytes stay in `done`
            self.pending.pop(task)
            self.ready.append(RowResult(**body["result"]))
        elif kind is None and task in self.pending:  # a dead letter: see the module's doc
            row = self.pending.pop(task)
            self.ready.append(_given_up(row, str(headers.get("x-first-death-reason"))))
        message.ack()

    def _moved(self, task: str, sent: int) -> None:
        delta = sent - self.sent.get(task, 0)
        self.done += delta
        self.sent[task] = sent
        self._progress.on_bytes(delta)

    def close(self) -> None:
        """Revoke the rows not ended, and delete the batch's queue (best effort: the broker
        may be gone; the queue expires anyway)."""
        if not self.declared:
            return
        try:
            if self.pending:
                app.control.revoke(list(self.pending))
            with app.connection_for_write() as connection:
                self.queue(connection.default_channel).delete()
        except Exception as exc:
            log.warning("could not clean up after the batch on the broker: %s", exc)


def _given_up(row: Row, reason: str) -> RowResult:
    """The result of a row RabbitMQ dead-lettered, for `reason` (x-first-death-reason)."""
    if reason == "delivery_limit":
        return RowResult(row.line, str(row.path), "failed", error="DeliveryLimitReached",
                         message="its worker ended while running it, on every delivery the "
                                 "queue's delivery limit allows: see the workers' logs, then "
                                 "run again")
    return RowResult(row.line, str(row.path), "failed", error="DeadLettered",
                     message=f"the broker dropped its task ({reason}); run again")


def _where() -> str:
    return str(app.connection_for_write().as_uri())  # the password masked
