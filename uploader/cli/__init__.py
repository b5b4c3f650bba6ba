"""The `uploader` command: parse, call the library, print, exit with the documented code.

`read` holds the commands that only look (check, jobs, status, voices), `upload` those that
send (upload, submit), `delete` the one that removes a job, `batch` many videos (here or
on workers), `worker` a Celery worker, `emulator` the local MetaStudio, `state` the
state folder's journals; `common` what they share.
"""

from __future__ import annotations

import logging
import sys

import click

from uploader._redact import RedactingFormatter
from uploader.cli.batch import batch
from uploader.cli.delete import delete
from uploader.cli.emulator import emulator
from uploader.cli.read import check, jobs, status, voices
from uploader.cli.state import state
from uploader.cli.upload import submit, upload
from uploader.cli.worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Log everything (same as -vv).")
@click.option("--allow-http", is_flag=True,
              help="Allow a plain http:// endpoint that is not on loopback (unsafe).")
@click.version_option(package_name="uploader")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool, allow_http: bool) -> None:
    """Upload training videos to Huawei Cloud MetaStudio digital-human training jobs.

    Settings come from the environment: METASTUDIO_ENDPOINT (or METASTUDIO_REGION),
    METASTUDIO_PROJECT_ID, and CLOUD_SDK_AK + CLOUD_SDK_SK or METASTUDIO_AUTH_TOKEN.
    """
    if ctx.invoked_subcommand != "worker":  # a Celery worker sets up its own logging
        _log_to_stderr(ctx, {0: logging.WARNING, 1: logging.INFO}.get(
            2 if debug else verbose, logging.DEBUG))


def _log_to_stderr(ctx: click.Context, level: int) -> None:
    """The library's log, redacted, on stderr for this command (and taken off when it ends,
    so that a host that runs commands in its own process keeps its logging as it was)."""
    logger = logging.getLogger("uploader")
    handler = _AboveTheBar(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    ctx.call_on_close(restore)


class _AboveTheBar(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines on stderr that never land on a progress bar's line: written with
    `tqdm.write`, which clears the bars, prints the line, and draws them again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if "tqdm" in sys.modules:  # a bar may be shown: write around it
                from tqdm import tqdm

                tqdm.write(message, file=self.stream)
            else:
                self.stream.write(message + self.terminator)
                self.flush()
        except Exception:
            self.handleError(record)


def _more_verbose(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """`-v`/`--debug` after the command's name, as before it: the log says more."""
    level = logging.DEBUG if param.name == "debug" and value else (
        {0: None, 1: logging.INFO}.get(int(value), logging.DEBUG))
    logger = logging.getLogger("uploader")
    if level is not None and level < logger.getEffectiveLevel():
        logger.setLevel(level)


for _command in (upload, batch, submit, delete, check, jobs, status, voices, emulator):
    _command.params += [
        click.Option(["-v", "--verbose"], count=True, expose_value=False,
                     callback=_more_verbose, help="Log more (-v info, -vv debug)."),
        click.Option(["--debug"], is_flag=True, expose_value=False, callback=_more_verbose,
                     help="Log everything (same as -vv)."),
    ]
    main.add_command(_command)
main.add_command(state)
main.add_command(worker)  # its --loglevel is Celery's
