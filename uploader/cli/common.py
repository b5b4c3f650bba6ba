"""Shared by the commands: settings, running a client, printing, and failing with the
documented exit code."""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from uploader._errors import (
    ApiError,
    BrokerError,
    ConfirmError,
    CredentialsError,
    JobStateError,
    JournalError,
    LocalFileError,
    MissingFilesError,
    PreflightError,
    Remedy,
    SettingsError,
    TransferError,
    UnreachableError,
    UploaderError,
    UsageError,
)
from uploader._files import TRAINING_VIDEO, FileKind, kind
from uploader._redact import redact, without_queries
from uploader.api.settings import Settings

if TYPE_CHECKING:
    from uploader._client import AsyncClient
    from uploader._limits import Limits
    from uploader.preflight import Report

__all__ = ["EXIT_CODES", "INTERRUPTED", "READ_WINDOW", "TERMINATED", "Terminated", "celery",
           "concurrency_option", "echo_problems", "echo_warnings", "escaped", "exit_code",
           "fail", "flag_of", "interrupted", "limits_of", "on_signals", "option_of",
           "print_json", "retry_window_option", "run", "settings", "sigterm_raises",
           "size_value", "stop_signals", "transfer_options", "with_client"]

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
    return "VIDEO" if kind_name == TRAINING_VIDEO.name else option_of(kind(kind_name))


def option_of(file: FileKind) -> str:
    """The option that gives a file of this kind: `--id-card-front`."""
    return "--" + file.name.replace("_", "-")


#: The exit status of each kind of error (README, "exit"): the most specific class wins.
#: Every class of the tree has a row of its own or an ancestor's below the root (a test
#: walks the tree); the root's 1 is for an error nobody foresaw.
EXIT_CODES: dict[type[UploaderError], int] = {
    UploaderError: 1,
    UsageError: 2,
    PreflightError: 3,
    SettingsError: 4,  # settings come from the environment, not the command's arguments
    ApiError: 4,
    UnreachableError: 4,  # "cannot reach": the API or a stored file's link
    ConfirmError: 5,  # a confirm or the submit refused: run the same command to resume
    CredentialsError: 4,  # authentication, as an API call refused with 401 is
    BrokerError: 4,
    JobStateError: 4,
    JournalError: 4,
    TransferError: 5,
    LocalFileError: 5,  # restore the file and run the same command: it resumes
}


def exit_code(error: UploaderError) -> int:
    """The exit status for `error`."""
    return next(EXIT_CODES[c] for c in type(error).__mro__ if c in EXIT_CODES)


#: What the CLI adds to an error that carries a remedy: the library's remedy in flags and
#: commands (a `{job_id}` filled in).
_REMEDIES = {
    Remedy.RESTART: "To start over, run the same command with --restart.",
    Remedy.ALLOW_HTTP: "Or pass --allow-http.",
    Remedy.STATE_DIR: "Choose another state folder with --state-dir DIR (or XDG_STATE_HOME).",
    Remedy.UPLOAD_FILES: "Give them with: uploader upload VIDEO --job-id {job_id} "
                         "--id-card-front IMG --id-card-back IMG ... --submit",
    Remedy.LARGER_PARTS: "Running the same command again would be refused again: start over "
                         "with larger parts, e.g. the same command with --restart --part-size "
                         "5MiB (or fewer --parts).",
}


def fail(error: UploaderError, *, as_json: bool = False) -> NoReturn:
    """Print what went wrong and what to do, then exit with the error's code; with
    `as_json`, also one JSON object on stdout (error, message, exit_code, job_id)."""
    if as_json:
        print_json({"error": type(error).__name__, "message": redact(str(error)),
                    "exit_code": exit_code(error), "job_id": error.job_id})
    if isinstance(error, PreflightError):
        done = "nothing was sent" if error.job_id is None else "nothing was confirmed"
        for report in error.reports:
            click.echo(f"error: {report.path} ({_title(report.kind)}) would be refused "
                       f"by review; {done}", err=True)
            echo_problems(report, err=True)
        if error.job_id is not None:
            click.echo(_kept(error), err=True)
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
    if error.remedy is not None:
        click.echo(_REMEDIES[error.remedy].format(job_id=error.job_id), err=True)
    if (isinstance(error, TransferError | LocalFileError | ConfirmError)
            and error.remedy not in (Remedy.RESTART, Remedy.LARGER_PARTS)):
        click.echo("What was sent so far is kept: run the same command again to resume.",
                   err=True)
    sys.exit(exit_code(error))


#: The exit status after Ctrl-C (128 + SIGINT) and after SIGTERM (128 + SIGTERM), as a
#: shell reports a process those signals ended.
INTERRUPTED, TERMINATED = 130, 143


class Terminated(Exception):
    """SIGTERM (`timeout`, systemd, Kubernetes) stopped the run, as Ctrl-C would have."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where SIGTERM stops the run as Ctrl-C does: the main task is
    cancelled, so that every cleanup runs (the journal is left consistent, the parts in
    flight wound back), then Terminated is raised."""
    import asyncio

    async def stoppable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signalled = False

        def stop() -> None:
            nonlocal signalled
            signalled = True
            task.cancel()

        restore = on_signals(loop, stop)
        try:
            return await main
        except asyncio.CancelledError:
            if signalled:
                raise Terminated from None
            raise
        finally:
            restore()

    return asyncio.run(stoppable())


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a run as Ctrl-C does: SIGTERM (`timeout`, systemd, Kubernetes,
    `kill`), and Ctrl-Break where there is one (Windows)."""
    import signal

    return (signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []))


def on_signals(loop: Any, stop: Callable[[], None],
               signals: tuple[int, ...] | None = None) -> Callable[[], None]:
    """Call `stop` in `loop` on any of `signals` (`stop_signals()` by default); the function
    that undoes it. The loop's own handler where it has one; elsewhere (Windows, whose loops
    have none) `signal.signal` with a thread-safe call into the loop; nothing off the main
    thread (a library caller's, whose signals are its own)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = stop_signals() if signals is None else signals
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop)
    except NotImplementedError:
        before = {sig: signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop))
                  for sig in signals}

        def restore() -> None:
            for sig, handler in before.items():
                signal.signal(sig, handler)
        return restore

    def remove() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return remove


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within it, SIGTERM raises Terminated in the main thread (code that runs no event
    loop), as Ctrl-C raises KeyboardInterrupt."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise Terminated

    before = {sig: signal.signal(sig, stop) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def interrupted(message: str, *, as_json: bool, job_id: str | None,
                code: int = INTERRUPTED) -> NoReturn:
    """Say what an interruption (Ctrl-C, or SIGTERM with `code` TERMINATED) left behind,
    then exit with `code`."""
    what = "interrupted" if code == INTERRUPTED else "stopped (SIGTERM)"
    if as_json:
        print_json({"error": "Interrupted" if code == INTERRUPTED else "Terminated",
                    "message": message, "exit_code": code, "job_id": job_id})
    click.echo(f"\n{what}: {message}", err=True)
    sys.exit(code)


#: Seconds a command that only looks (or one whose first call fails) keeps retrying a
#: service that does not answer: a wrong port fails in seconds, not in the transfer's 180.
READ_WINDOW = 10.0


def retry_window_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--retry-window SECONDS`, for the commands that do not transfer."""
    return click.option(
        "--retry-window", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
        help=f"Keep retrying a call that fails for this long [default: {default}].")


def with_client(call: Callable[[AsyncClient], Awaitable[T]], *, as_json: bool = False,
                retry_window: float | None = None, reads_only: bool = True) -> T:
    """Run `call` with a client of the configured service; fail as documented. A call is
    retried for `retry_window` seconds (READ_WINDOW by default); one that writes
    (`reads_only` False) waits READ_WINDOW for the service's first answer, and the
    transfer's window once it has had one."""
    from uploader._client import AsyncClient
    from uploader._limits import Limits

    window = retry_window or READ_WINDOW if reads_only else retry_window

    async def main() -> T:
        limits = Limits(retry_window=window, first_contact_window=retry_window or READ_WINDOW)
        async with AsyncClient(settings(), limits=limits) as client:
            return await call(client)

    try:
        return run(main())
    except UploaderError as error:
        fail(error, as_json=as_json)
    except Terminated:
        interrupted("nothing was left half-done", as_json=as_json, job_id=None,
                    code=TERMINATED)


def settings() -> Settings:
    """Settings from the environment, with the command line's --allow-http."""
    allow = click.get_current_context().find_root().params.get("allow_http")
    return Settings.from_env(allow_http=True if allow else None)


def print_json(value: Any) -> None:
    """Print `value` as JSON, every link in it without its query (the service's answers,
    as `jobs --json` prints them, carry signed download links)."""
    click.echo(json.dumps(without_queries(value), ensure_ascii=False, indent=2))


def escaped(text: str) -> str:
    """`text` as it may be printed on a terminal: control characters (a line break, an
    escape sequence) shown as their escapes, never carried out."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode()
                   for c in text)


def echo_problems(report: Report, *, err: bool) -> None:
    """One line per problem with a file, under its verdict, and what to do where known."""
    for problem in report.problems:
        click.echo(f"  - {problem.code}: {problem.message}", err=err)
        if problem.todo:
            click.echo(f"    to do: {problem.todo}", err=err)


def _title(name: str) -> str:
    """How a report's kind is said: a job file's title, else the kind itself ("sentence 3")."""
    try:
        return kind(name).title
    except (KeyError, ValueError, UsageError):
        return name


#: Problems no option or re-run mends: the recording itself must change.
_NEW_RECORDING = frozenset({"no_face", "sideways"})


def _kept(error: PreflightError) -> str:
    """What a run stopped by the content rules kept, and how to go on."""
    codes = [p.code for r in error.reports for p in r.problems]
    ignore = " ".join(f"--ignore {code}" for code in codes)
    said = (f"Job {error.job_id} keeps the parts stored: the same command with the option "
            f"fixed, or with {ignore} to upload anyway, sends only what is missing.")
    if set(codes) & _NEW_RECORDING:
        said += (" A new or rotated recording is a new file: upload it with --restart (a new "
                 "job for the name) or --job-id " + str(error.job_id) + " --restart.")
    return said


def echo_warnings(report: Report, *, err: bool) -> None:
    """One line per warning (advice; it refuses nothing), under the verdict."""
    for warning in report.warnings:
        click.echo(f"  ~ warning {warning.code}: {warning.message}", err=err)



def size_value(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A click callback: bytes in a size such as 32MiB, 8M or 100k (powers of 1024)."""
    from uploader.transfer.plan import parse_size

    try:
        return None if value is None else parse_size(value)
    except UploaderError as error:
        raise click.BadParameter(error.message) from None


def transfer_options(*, most: int, over: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of the commands that transfer (upload, batch): pieces in flight (up to
    `most`, `over` what), bandwidth, retries, the state folder."""
    options = [
        click.option("--concurrency", callback=concurrency_option(most), default="auto",
                     metavar="auto|N", show_default=True,
                     help=f"Pieces in flight at once{over}; auto: tuned from the throughput "
                          "measured, 16 up to 64."),
        click.option("--bwlimit", callback=size_value, metavar="RATE",
                     help=f"At most RATE bytes a second on the wire{over} (40M, 512k: powers "
                          "of 1024)."),
        click.option("--retries", type=click.IntRange(0), metavar="N",
                     help="Try a failed request at most N times more [default: as often as "
                          "--retry-window allows]."),
        click.option("--retry-window", type=click.FloatRange(min=0, min_open=True),
                     metavar="SECONDS", help="Keep retrying a failing request (a part, an "
                     "API call) for this long: an outage shorter than it is ridden out "
                     "[default: 180]."),
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where the resume journals are kept [default: the user state "
                          "folder]."),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def limits_of(values: dict[str, Any]) -> Limits:
    """The `Limits` of the transfer options' values (taken out of `values`)."""
    from uploader._limits import Limits

    concurrency = values.pop("concurrency")
    return Limits(concurrency="auto" if concurrency == "auto" else int(concurrency),
                  bwlimit=values.pop("bwlimit"), retries=values.pop("retries"),
                  retry_window=values.pop("retry_window"))


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
