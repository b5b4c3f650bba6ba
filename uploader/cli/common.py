"""Shared by the commands: settings, running a client, printing, and failing with the
documented exit code."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from uploader._errors import (
    ApiError,
    BrokerError,
    JobStateError,
    JournalError,
    LocalFileError,
    MissingFilesError,
    PreflightError,
    SettingsError,
    TransferError,
    UploaderError,
    UsageError,
)
from uploader._files import TRAINING_VIDEO, kind
from uploader._redact import redact, without_queries
from uploader.api.settings import Settings

if TYPE_CHECKING:
    from uploader._client import AsyncClient
    from uploader.preflight import Report

__all__ = ["EXIT_CODES", "celery", "concurrency_option", "echo_problems", "exit_code", "fail",
           "flag_of", "interrupted", "print_json", "settings", "with_client"]

T = TypeVar("T")


def celery() -> types.ModuleType:
    """`uploader.celery`, imported only by the commands that need it (an optional extra).
    A malformed UPLOADER_* setting raises its SettingsError, for the command to `fail` with."""
    try:
        import uploader.celery as module
    except ImportError as exc:
        raise click.UsageError(f"{exc}: install the Celery extra: "
                               "pip install 'uploader[celery]'") from None
    return module


def flag_of(kind_name: str) -> str:
    """The command-line flag that gives a file of this kind."""
    return "VIDEO" if kind_name == TRAINING_VIDEO.name else kind(kind_name).flag


#: The exit status of each kind of error (README, "exit"): the most specific class wins.
EXIT_CODES: dict[type[UploaderError], int] = {
    UploaderError: 1,
    UsageError: 2,
    PreflightError: 3,
    SettingsError: 4,  # settings come from the environment, not the command's arguments
    ApiError: 4,
    BrokerError: 4,
    JobStateError: 4,
    JournalError: 4,
    TransferError: 5,
    LocalFileError: 5,  # restore the file and run the same command: it resumes
}


def exit_code(error: UploaderError) -> int:
    """The exit status for `error`."""
    return next(EXIT_CODES[c] for c in type(error).__mro__ if c in EXIT_CODES)


#: What the CLI adds to an error whose `remedy` names an option.
_REMEDIES = {"restart": "To start over, run the same command with --restart.",
             "allow_http": "Or pass --allow-http."}


def fail(error: UploaderError, *, as_json: bool = False) -> NoReturn:
    """Print what went wrong and what to do, then exit with the error's code; with
    `as_json`, also one JSON object on stdout (error, message, exit_code, job_id)."""
    if as_json:
        print_json({"error": type(error).__name__, "message": redact(str(error)),
                    "exit_code": exit_code(error), "job_id": error.job_id})
    if isinstance(error, PreflightError):
        for report in error.reports:
            click.echo(f"error: {report.path} ({kind(report.kind).title}) would be refused "
                       "by review; nothing was sent", err=True)
            echo_problems(report, err=True)
    elif isinstance(error, MissingFilesError):
        flags = ", ".join(flag_of(name) for name in error.kinds)
        click.echo(redact(f"error: {error}"), err=True)
        command = click.get_current_context(silent=True)
        if command is not None and command.info_name == "submit" and error.job_id:
            given = " ".join(f"{flag_of(name)} FILE" for name in error.kinds
                             if name != TRAINING_VIDEO.name)  # VIDEO comes first anyway
            click.echo(f"Give them with: uploader upload VIDEO --job-id {error.job_id} {given} "
                       "--submit", err=True)
        else:
            click.echo(f"To submit, give {flags} (or upload without --submit).", err=True)
    else:
        click.echo(redact(f"error: {error}"), err=True)
    if error.remedy in _REMEDIES:
        click.echo(_REMEDIES[error.remedy], err=True)
    if isinstance(error, TransferError | LocalFileError):
        click.echo("What was sent so far is kept: run the same command again to resume.",
                   err=True)
    sys.exit(exit_code(error))


def interrupted(message: str, *, as_json: bool, job_id: str | None) -> NoReturn:
    """Say what an interruption (Ctrl-C) left behind, then exit 130."""
    if as_json:
        print_json({"error": "Interrupted", "message": message, "exit_code": 130,
                    "job_id": job_id})
    click.echo(f"\ninterrupted: {message}", err=True)
    sys.exit(130)


def with_client(call: Callable[[AsyncClient], Awaitable[T]], *, as_json: bool = False) -> T:
    """Run `call` with a client of the configured service; fail as documented."""
    import asyncio

    from uploader._client import AsyncClient

    async def run() -> T:
        async with AsyncClient(settings()) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except UploaderError as error:
        fail(error, as_json=as_json)


def settings() -> Settings:
    """Settings from the environment, with the command line's --allow-http."""
    allow = click.get_current_context().find_root().params.get("allow_http")
    return Settings.from_env(allow_http=True if allow else None)


def print_json(value: Any) -> None:
    """Print `value` as JSON, every link in it without its query (the service's answers,
    as `jobs --json` prints them, carry signed download links)."""
    click.echo(json.dumps(without_queries(value), ensure_ascii=False, indent=2))


def echo_problems(report: Report, *, err: bool) -> None:
    """One line per problem with a file, under its verdict."""
    for problem in report.problems:
        click.echo(f"  - {problem.code}: {problem.message}", err=err)



def concurrency_option(high: int) -> Callable[[click.Context, click.Parameter, str], int | str]:
    """A click callback: `auto`, or a whole number from 1 to `high`."""
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit() or not 1 <= int(text) <= high:
            raise click.BadParameter(f"{value!r} is neither 'auto' nor a whole number from 1 "
                                     f"to {high}")
        return int(text)
    return convert
