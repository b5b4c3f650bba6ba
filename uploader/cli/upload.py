"""The commands that send: `upload` (the whole job) and `submit` (a job already uploaded)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from uploader import _files
from uploader._errors import UploaderError
from uploader._job import (
    EDITIONS,
    MODEL_VERSIONS,
    SERVICES,
    VOICE_LANGUAGES,
    VOICE_SEXES,
    VOICE_TAGS,
    Job,
)
from uploader._progress import Progress, Step
from uploader.api.settings import Settings
from uploader.cli.common import (
    INTERRUPTED,
    READ_WINDOW,
    TERMINATED,
    Terminated,
    fail,
    interrupted,
    limits_of,
    option_of,
    print_json,
    retry_window_option,
    settings,
    size_value,
    transfer_options,
)
from uploader.cli.common import run as run_stoppable

if TYPE_CHECKING:
    from uploader.workflow.result import SubmitResult, UploadResult

__all__ = ["submit", "upload"]

T = TypeVar("T")

_EXIT_CODES = ("Exit codes: 0 done; 2 usage, or --submit without a file the review needs; 3 a "
               "file would be refused (nothing sent); 4 API, settings, job state, changed file "
               "or a run already going; 5 the transfer, a confirm or the submit did not "
               "complete (run the same command to resume); 130 interrupted (Ctrl-C); 143 "
               "stopped by SIGTERM (as Ctrl-C).")


def _file_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per file kind of the job other than the training video (the table in
    uploader._files): `--id-card-front IMG`, ..."""
    for file in reversed(_files.other_kinds()):
        command = click.option(option_of(file), file.name,
                               type=click.Path(path_type=Path, readable=False),
                               help=file.description)(command)
    return command


def _model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of the model a new job trains (`uploader.JobOptions`)."""
    for option in reversed([
        click.option("--background-replacement/--no-background-replacement",
                     "background_replacement", default=None,
                     help="A green-screen video whose background the model replaces (the "
                          "service's default), or a real-scene video (--no-...)."),
        click.option("--model-version", metavar="VERSION",
                     help=f"The model: {' or '.join(MODEL_VERSIONS)} [service default: V3.2]."),
        click.option("--edition", metavar="EDITION",
                     help=f"{', '.join(EDITIONS)} (fast-flexus trains V3.3) [service "
                          "default: standard]."),
        click.option("--service", "services", multiple=True, metavar="NAME",
                     help=f"A service the model serves: {', '.join(SERVICES)} (repeat it; "
                          "Flexus editions: VIDEO_2D only)."),
        click.option("--human-only", is_flag=True, default=None,
                     help="Train the figure, not the voice (Flexus editions only)."),
        click.option("--voice-tag", metavar="TAG",
                     help=f"The voice's use: {', '.join(VOICE_TAGS)}."),
        click.option("--voice-sex", metavar="SEX", help=f"{', '.join(VOICE_SEXES)}."),
        click.option("--voice-language", metavar="LANG", help=f"{', '.join(VOICE_LANGUAGES)}."),
    ]):
        command = option(command)
    return command


@click.command(epilog=_EXIT_CODES)
# readable=False: a file that cannot be read is the preflight's `unreadable` (exit 3).
@click.argument("video", type=click.Path(path_type=Path, readable=False))
@click.option("--job-id", help="Upload to this existing job.")
@click.option("--name", help="Create a job with this name and upload to it.")
@_file_options
@_model_options
@click.option("--submit", "submit_review", is_flag=True,
              help="After the files are confirmed, submit the job for review.")
@click.option("--parts", type=click.IntRange(1, 1000), help="Cut the video into N parts.")
@click.option("--part-size", callback=size_value,
              help="Cut the video into parts of SIZE (32MiB, 8M).")
@transfer_options(most=64, over="")
@click.option("--ignore", multiple=True, metavar="CODE",
              help="Report this preflight problem as a warning for this run (repeat it): "
                   "a heuristic must never lock you out.")
@click.option("--content-checks/--no-content-checks", default=None,
              help="Judge what the video shows and sounds like (face, green screen, "
                   "orientation, sound) beside the transfer, before the confirm; or its "
                   "headers only. Default: on, unless UPLOADER_CONTENT_CHECKS=0.")
@click.option("--restart", is_flag=True, help="Forget any earlier attempt; send every file.")
@click.option("--verify", type=click.Choice(["etag", "download"]), default="etag",
              show_default=True,
              help="download: also read every stored file back and compare it before the "
                   "submit (the proof on a storage whose ETags are not MD5s).")
@click.option("--wait", is_flag=True,
              help="With --submit: wait for the automatic review's outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--emulator", "use_emulator", is_flag=True,
              help="Upload to a local emulator started for this command (implies --wait).")
def upload(video: Path, wait: bool, as_json: bool, quiet: bool, use_emulator: bool,
           submit_review: bool, **options: Any) -> None:
    """Upload VIDEO and the job's other files to a training job, resuming any earlier
    attempt, confirm them and (with --submit) submit the job for review."""
    if (options["job_id"] is None) == (options["name"] is None):
        raise click.UsageError("give exactly one of --job-id or --name")
    bar = _Bar(video.name) if not quiet and not as_json and sys.stderr.isatty() else None
    shown = _Shown(bar)
    wait = wait or use_emulator
    limits = limits_of(options)
    state_dir = options.pop("state_dir")
    restart, verify = options.pop("restart"), options.pop("verify")
    try:
        job = Job.of(video, **options)
    except UploaderError as error:
        fail(_in_flags(error), as_json=as_json)

    async def call(env: Settings) -> UploadResult:
        from uploader._client import AsyncClient

        async with AsyncClient(env, limits=limits, state_dir=state_dir) as client:
            return await client.upload(job, submit=submit_review, wait=wait, restart=restart,
                                       progress=shown, verify=verify)

    try:
        result = run_call(call,
                      use_emulator=use_emulator, quiet=quiet or as_json, as_json=as_json,
                      interrupted_at=shown.interruption, bar=bar)
    finally:
        if bar:
            bar.close()
    if as_json:
        print_json(result.to_json())
    elif not quiet:
        _echo_upload(video, result, waited=wait, emulated=use_emulator)


@click.command(epilog="Exit codes: 0 submitted; 2 the job lacks a file the review needs; 4 "
               "API or settings, or a job whose state does not allow a submit (as for upload);"
               " 5 the submit did not get through; 130 interrupted; 143 stopped by SIGTERM.")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait for the automatic review's outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@retry_window_option(f"{READ_WINDOW:g} for the first answer, then 180")
def submit(job_id: str, wait: bool, as_json: bool, retry_window: float | None) -> None:
    """Submit JOB_ID, whose files are all uploaded, for review."""
    def interruption() -> tuple[str, str | None]:
        return (f"the submit of job {job_id} may or may not have reached the service; see: "
                f"uploader status {job_id}"), job_id

    async def call(env: Settings) -> SubmitResult:
        from uploader._client import AsyncClient
        from uploader._limits import Limits

        limits = Limits(retry_window=retry_window,
                        first_contact_window=retry_window or READ_WINDOW)
        async with AsyncClient(env, limits=limits) as client:
            return await client.submit(job_id, wait=wait)

    result = run_call(call, use_emulator=False, quiet=True, as_json=as_json,
                  interrupted_at=interruption)
    if as_json:
        print_json(result.to_json())
    else:
        done = "was submitted already" if result.already else "submitted for review"
        click.echo(f"job {result.job_id}: {done}")
        _echo_outcome(result)


def _in_flags(error: UploaderError) -> UploaderError:
    """`error`, the keywords its message names (`human_only`, `voice_tag`) written as this
    command's flags (`--human-only`, `--voice-tag`)."""
    import re

    ctx = click.get_current_context()
    flags = {p.name: p.opts[0] for p in ctx.command.params
             if isinstance(p, click.Option) and p.name and "_" in p.name}
    error.message = re.sub(r"\b[a-z]+(?:_[a-z0-9]+)+\b", lambda m: flags.get(m[0], m[0]),
                           str(error))
    error.args = (error.message,)
    return error


class _Shown(Progress):
    """What the upload tells (the library's Progress): bytes and steps on the bar, and the
    step reached when the run is interrupted, so that the advice fits (after the confirm,
    nothing is to resend)."""

    def __init__(self, bar: _Bar | None) -> None:
        self.bar = bar
        self.last: Step | None = None
        self.job_id: str | None = None

    def on_total(self, total: int) -> None:
        if self.bar is not None:
            self.bar.total(total)

    def on_bytes(self, delta: int) -> None:
        if self.bar is not None:
            self.bar.advance(delta)

    def on_stored(self, size: int) -> None:
        if self.bar is not None:
            self.bar.stored(size)

    def on_step(self, step: Step, job_id: str) -> None:
        self.last, self.job_id = step, job_id
        if self.bar is not None and step in (Step.CONFIRMING, Step.WAITING):
            self.bar.say("confirming" if step is Step.CONFIRMING else "waiting for the review")

    def interruption(self) -> tuple[str, str | None]:
        job = self.job_id
        if self.last in (None, Step.SENDING, Step.CONFIRMING):
            where = f"job {job}: " if job else ""
            return (f"{where}what was sent so far is kept; run the same command again to "
                    "resume.", job)
        if self.last in (Step.SUBMITTED, Step.WAITING):
            return (f"job {job}: every file is uploaded and confirmed, and the job is "
                    "submitted for review; nothing needs sending again. Follow it with: "
                    f"uploader status {job}", job)
        return (f"job {job}: every file is uploaded and confirmed; nothing needs sending "
                f"again. See where it stands with: uploader status {job} (if it still waits "
                f"for its files, submit it with: uploader submit {job})", job)


def run_call(call: Callable[[Settings], Awaitable[T]], *, use_emulator: bool, quiet: bool,
         as_json: bool, interrupted_at: Callable[[], tuple[str, str | None]],
         bar: _Bar | None = None) -> T:
    """Run `call` against the configured service, or an emulator of its own; exit as
    documented when it fails or is interrupted (the bar, if any, taken off first: no
    message is printed on its line)."""
    async def main() -> T:
        if not use_emulator:
            return await call(settings())
        from uploader.emulator import EmulatorConfig, scratch_folder, start_emulator

        # The emulator lives for this command only: so do its data (copies of the files);
        # those of a run that was killed go at the next.
        with scratch_folder() as folder:
            running = await start_emulator(EmulatorConfig(data_dir=folder, review_delay=0.2))
            if not quiet:
                click.echo(f"using a local MetaStudio emulator at {running.url}", err=True)
            try:
                return await call(Settings.from_env(running.client_env()))
            finally:
                await running.stop()

    try:
        return run_stoppable(main())
    except UploaderError as error:
        if bar is not None:
            bar.close()
        fail(_in_flags(error), as_json=as_json)
    except (KeyboardInterrupt, Terminated) as stop:
        if bar is not None:
            bar.close()
        message, job_id = interrupted_at()
        interrupted(message, as_json=as_json, job_id=job_id,
                    code=TERMINATED if isinstance(stop, Terminated) else INTERRUPTED)


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


#: The bar's line: sizes and rate in KiB, MiB, GiB (tqdm's own scaling writes kiB).
_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {done_iec}/{total_iec} "
           "[{elapsed}<{remaining}, {rate_iec}]")


def _iec_bar() -> type:
    """A tqdm bar whose `format_dict` (tqdm's public read-only view of the bar, handed to
    its `bar_format`) also holds the sizes and the rate in powers of 1024."""
    from tqdm import tqdm

    class IecBar(tqdm):  # type: ignore[misc]
        @property
        def format_dict(self) -> dict[str, Any]:
            shown = dict(super().format_dict)
            elapsed, done = shown["elapsed"], shown["n"] - shown["initial"]
            rate = shown["rate"] or (done / elapsed if elapsed else None)
            shown["done_iec"] = _human(shown["n"])
            shown["total_iec"] = "?" if shown["total"] is None else _human(shown["total"])
            shown["rate_iec"] = "?/s" if rate is None else f"{_human(rate)}/s"
            return shown

    return IecBar


class _Bar:
    """A tqdm bar of bytes (KiB, MiB, GiB: powers of 1024, as everywhere in uploader) that
    names the file and can wind back when a piece is retried."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._bar = self._new(total=None, initial=0)

    def _new(self, *, total: int | None, initial: int) -> Any:
        # miniters=1: a jump of bytes (found stored) does not hold the bar for seconds, as
        # tqdm's dynamic miniters does.
        return _iec_bar()(desc=self._name, total=total, initial=initial, unit="B",
                          dynamic_ncols=True, leave=False, miniters=1, bar_format=_FORMAT)

    def stored(self, size: int) -> None:
        """`size` bytes found stored: the bar starts again from there, so that its rate
        counts only what this run sends."""
        total, done = self._bar.total, self._bar.n + size
        self._bar.close()
        self._bar = self._new(total=total, initial=done)

    def say(self, what: str) -> None:
        """Show what the run is doing besides sending (waiting for the review...)."""
        self._bar.set_description(f"{self._name}: {what}")

    def total(self, total: int) -> None:
        self._bar.reset(total=total)
        self._bar.refresh()

    def advance(self, delta: int) -> None:
        self._bar.n += delta
        if self._bar.n in (0, self._bar.total):
            self._bar.refresh()
        else:
            self._bar.update(0)  # redraws at most every mininterval

    def close(self) -> None:
        self._bar.close()


def _echo_upload(video: Path, result: UploadResult, *, waited: bool, emulated: bool) -> None:
    # `seconds` is the transfer's: confirming, submitting and the review wait are not in it.
    rate = result.bytes_uploaded / result.seconds if result.seconds else 0.0
    took = f"{result.seconds:.2f}" if result.seconds < 10 else f"{result.seconds:.1f}"
    click.echo(f"{video}: job {result.job_id}: {result.parts_uploaded} of {result.parts_total}"
               f" parts sent ({result.parts_skipped} already there), "
               f"{_human(result.bytes_uploaded)} in {took} s "
               f"({_human(rate)}/s)")
    for file in result.files[1:]:
        click.echo(f"  {file.kind}: {file.path}: {file.outcome}")
    for file in result.files:
        for warning in file.warnings:
            click.echo(f"  ~ warning {warning['code']} ({file.kind}): {warning['message']}")
    _echo_outcome(result)
    if emulated:  # the emulator, and the job with it, ended with the command
        tried = "" if result.submitted else "to try the whole flow, add --submit; "
        click.echo(f"the emulator stopped with this command, and its job is gone: {tried}for "
                   "the real service, leave out --emulator")
    elif not result.submitted and result.state == "WAIT_FILE_UPLOAD":
        hint = " (--wait waits only for a submitted job)" if waited else ""
        click.echo(f"not submitted{hint}: to start the review, run: uploader submit "
                   f"{result.job_id} (or upload again with --submit)")


def _echo_outcome(result: UploadResult | SubmitResult) -> None:
    click.echo(f"state: {result.state}: {result.state_meaning}")
    if result.review_error_code:
        click.echo(f"review error {result.review_error_code}: "
                   f"{result.review_error_meaning or 'no explanation known'}")
