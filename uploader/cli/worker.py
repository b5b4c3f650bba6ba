"""`uploader worker`: a Celery worker that uploads the rows sent by `batch --broker`."""

from __future__ import annotations

import os

import click

from uploader._errors import UploaderError
from uploader.cli.common import celery, fail

__all__ = ["worker"]


@click.command(epilog="The same as: celery -A uploader.celery worker. The broker is "
               "UPLOADER_BROKER_URL (default amqp://guest:guest@127.0.0.1:5672//), the queue "
               "UPLOADER_QUEUE (default uploader); MetaStudio's settings come from this "
               "machine's environment, as for upload. It uploads only files under "
               "UPLOADER_WORKER_ROOTS (folders separated by ':'; default: the folder it is "
               "started in): anyone who can publish to the queue chooses the paths.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Rows uploaded at once on this machine (one process each).")
@click.option("--part-concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Part PUTs in flight at once for each row.")
@click.option("--hostname", metavar="NAME",
              help="This worker's name among the others (default uploader-PID@HOST: two "
                   "workers on one machine never clash).")
@click.option("--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                              case_sensitive=False),
              default="INFO", show_default=True)
def worker(concurrency: int, part_concurrency: int, hostname: str | None,
           loglevel: str) -> None:
    """Take rows from the broker and upload them, until stopped (Ctrl-C or SIGTERM: the rows
    running end first; a second Ctrl-C or kill -9: they go back to the queue and resume
    elsewhere)."""
    try:
        module = celery()
        roots = module.worker_roots()
    except UploaderError as error:  # a malformed UPLOADER_* setting
        fail(error)
    # The pool's processes read the same roots, whatever folder they find themselves in.
    os.environ[module.ROOTS] = ":".join(map(str, roots))
    click.echo(f"uploading only files under {os.environ[module.ROOTS]} ({module.ROOTS})",
               err=True)
    os.environ[module.PART_CONCURRENCY] = str(part_concurrency)  # read by the pool's processes
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}",
            f"--queues={module.app.conf.task_default_queue}"]
    # Celery's default, celery@HOST, is the same for two workers on one machine: the second
    # cannot declare its control queue (RESOURCE_LOCKED) and fails.
    argv.append(f"--hostname={hostname or f'uploader-{os.getpid()}@%h'}")
    module.app.worker_main(argv)
