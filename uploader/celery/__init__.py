"""Uploads as Celery tasks on RabbitMQ: one task per manifest row, on as many machines as run
a worker (`uploader worker`, or `celery -A uploader.celery worker`).

`app` is the configured Celery app (`app.py` says why each setting); `upload_row` the task,
which runs one row through the library's own `upload_batch`, so that it does what a local
batch does for that row: it finds the row's job again by its content tag, sends only what
the service lacks and ends in a `RowResult`. Each machine keeps its own resume journals;
another machine resumes from what the service holds (`multipart_data`). Two copies of one
row never upload side by side (`lock.py`). A worker reads only files under its roots
(`roots.py`): whoever can publish to the queue must not choose what it reads. `send_batch`
sends rows and follows them (`dispatch.py`): each task reports to the batch's own queue, so
no result backend is needed.
"""

from __future__ import annotations

from uploader._errors import BrokerError
from uploader.celery.app import (
    BROKER,
    DEFAULT_BROKER,
    DELIVERY_LIMIT,
    PART_CONCURRENCY,
    QUEUE,
    RESULT_BACKEND,
    TIME_LIMIT,
    app,
)
from uploader.celery.dispatch import send_batch
from uploader.celery.roots import ROOTS, worker_roots
from uploader.celery.task import upload_row

__all__ = ["BROKER", "DEFAULT_BROKER", "DELIVERY_LIMIT", "PART_CONCURRENCY", "QUEUE",
           "RESULT_BACKEND", "ROOTS", "TIME_LIMIT", "BrokerError", "app", "send_batch",
           "upload_row", "worker_roots"]
