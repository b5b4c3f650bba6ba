"""The command's log on stderr: the library's log, redacted, never on a progress bar's line,
as verbose as -v/-vv/--debug (before or after the command's name) ask."""

from __future__ import annotations

import logging
import sys

import click

from uploader._redact import RedactingFormatter

__all__ = ["log_to_stderr", "more_verbose"]


def log_to_stderr(ctx: click.Context, verbosity: int) -> None:
    """The library's log, redacted, on stderr for this command (and taken off when it ends,
    so that a host that runs commands in its own process keeps its logging as it was);
    `verbosity` 0 warnings, 1 info, 2 or more debug."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
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


def more_verbose(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """`-v`/`--debug` after the command's name, as before it: the log says more."""
    level = logging.DEBUG if param.name == "debug" and value else (
        {0: None, 1: logging.INFO}.get(int(value), logging.DEBUG))
    logger = logging.getLogger("uploader")
    if level is not None and level < logger.getEffectiveLevel():
        logger.setLevel(level)
