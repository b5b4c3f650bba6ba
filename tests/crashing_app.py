"""A worker app that ends its own pool process on every row named "crash...": a task that
kills its worker every time (issue 14). Started as `celery -A tests.crashing_app worker`."""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.signals import task_prerun

from uploader.celery import app

__all__ = ["app"]


@task_prerun.connect
def _crash(task_id: str, kwargs: dict[str, Any], **_: Any) -> None:
    if str(kwargs.get("row", {}).get("name", "")).startswith("crash"):
        print(f"crashing on {task_id}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
