"""The Celery app: broker, queue and the settings chosen for long uploads."""

from __future__ import annotations

import os

from celery import Celery
from kombu.entity import Exchange, Queue

from uploader._errors import SettingsError

__all__ = ["BROKER", "DEAD_LETTERS", "DEFAULT_BROKER", "DELIVERY_LIMIT", "PART_CONCURRENCY",
           "QUEUE", "RESULT_BACKEND", "TIME_LIMIT", "app", "part_concurrency"]

BROKER = "UPLOADER_BROKER_URL"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
RESULT_BACKEND = "UPLOADER_RESULT_BACKEND"
#: Deliveries of one row before RabbitMQ gives up on it (fixed when the queue is first
#: declared; a RabbitMQ policy with `delivery-limit` can change it later).
DELIVERY_LIMIT = "UPLOADER_DELIVERY_LIMIT"
#: Seconds a row may take before its upload is stopped (reported failed, resumable).
TIME_LIMIT = "UPLOADER_TASK_TIME_LIMIT"
#: Part PUTs in flight at once for each row a worker process uploads (default 8).
PART_CONCURRENCY = "UPLOADER_PART_CONCURRENCY"
#: The queue the rows go through (default "uploader"): one per pipeline or environment.
QUEUE = "UPLOADER_QUEUE"


def _whole(variable: str, default: int, least: int) -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < least:
        raise SettingsError(f"{variable} must be a whole number of at least {least}, not "
                            f"{text!r}", variable=variable)
    return int(text)


def delivery_limit() -> int:
    return _whole(DELIVERY_LIMIT, 5, 1)


def time_limit() -> int:
    return _whole(TIME_LIMIT, 6 * 3600, 10)


def part_concurrency() -> int:
    return _whole(PART_CONCURRENCY, 8, 1)


_queue = os.environ.get(QUEUE) or "uploader"


#: Where RabbitMQ sends a task message once it has been delivered more often than the
#: delivery limit allows: a headers exchange, so that each batch gets its own rows' dead
#: letters on its own queue (bound by the `uploader-batch` header its tasks carry).
DEAD_LETTERS = Exchange("uploader.dead", type="headers", durable=True)

app = Celery("uploader", broker=os.environ.get(BROKER) or DEFAULT_BROKER,
             backend=os.environ.get(RESULT_BACKEND) or None)
app.conf.update(
    task_queues=[Queue(_queue, Exchange(_queue, type="topic"), routing_key=_queue, durable=True,
                       queue_arguments={
                           # A quorum queue counts the deliveries of each message (a requeue
                           # after a lost worker included, which a classic queue does not)...
                           "x-queue-type": "quorum",
                           # ...so a row that kills its worker every time is delivered a
                           # bounded number of times, then dead-lettered, not looped forever.
                           "x-delivery-limit": delivery_limit(),
                           "x-dead-letter-exchange": DEAD_LETTERS.name})],
    task_default_queue=_queue,
    task_default_exchange=_queue,
    task_default_routing_key=_queue,
    # Acknowledge a row when its upload has ended, not when it starts: a worker killed
    # mid-upload leaves its row unacknowledged, and the broker gives it to another worker,
    # which resumes from the parts the service holds.
    task_acks_late=True,
    # The same when the pool process running the row dies (killed, out of memory) while the
    # worker lives: requeue the row instead of marking it failed.
    task_reject_on_worker_lost=True,
    # One row at a time per process: an upload runs for minutes, and a row prefetched behind
    # it would wait there while other workers idle (and be redelivered if this one dies).
    worker_prefetch_multiplier=1,
    # A row still unacknowledged when the worker loses the broker cannot be acknowledged any
    # more: the broker has requeued it, and another worker may take it. Stop it here rather
    # than finish it beside that copy; the copy resumes from what the service holds.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # Above the longest upload (UPLOADER_TASK_TIME_LIMIT, default 6 h: 4 GiB at 2 Mbit/s):
    # the soft limit ends the upload cleanly (the row is reported failed, resumable), the
    # hard one ends a process that did not stop. RabbitMQ's consumer_timeout must be longer
    # still, or it closes the worker's channel under a long upload (README).
    task_soft_time_limit=time_limit(),
    task_time_limit=time_limit() + 300,
    # A row that ends in an exception (its result could not be told) or hits the hard limit
    # is not acknowledged as if done: it is rejected, and so either runs again (the hard
    # limit: requeued, counted against the delivery limit) or is dead-lettered to its batch
    # (an exception): either way its batch hears of it instead of waiting for ever.
    task_acks_on_failure_or_timeout=False,
    # A task published while the broker is busy or restarting must not be lost silently:
    # the publisher waits for the broker's confirm (quorum queues need it to be safe).
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # The batch hears of each row on its own queue; a backend stores results only if set.
    task_ignore_result=not os.environ.get(RESULT_BACKEND),
    result_extended=True,
    # Rows at once per machine (`uploader worker --concurrency`): an upload is I/O, and its
    # own event loop sends the row's parts concurrently (UPLOADER_PART_CONCURRENCY).
    worker_concurrency=2,
)

