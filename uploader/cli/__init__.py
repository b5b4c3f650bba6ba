"""The `uploader` command: parse, call the library, print, exit with the documented code.

`read` holds the commands that only look (check, jobs, status, voices), `upload` those that
send (upload, submit), `delete` the one that removes a job, `batch` many videos (here or
on workers), `worker` a Celery worker, `emulator` the local MetaStudio, `state` the
state folder's journals; `common` what they share.
"""

from __future__ import annotations

import importlib
import io
import sys

import click

from uploader._version import VERSION

__all__ = ["COMMANDS", "main"]

#: Each command: its module, and its line in `uploader --help` (its `short_help`). A
#: command's module is imported only when it runs or its own help is asked for: `uploader
#: --help` imports none of them (nor aiohttp, nor anything they need).
COMMANDS: dict[str, tuple[str, str]] = {
    "upload": ("upload", "Upload a video and its job's other files (resuming); --submit."),
    "batch": ("batch", "Upload every video of a manifest (CSV or JSON Lines)."),
    "submit": ("upload", "Submit a job whose files are all uploaded for review."),
    "delete": ("delete", "Delete a job and its files."),
    "check": ("read", "Check files against the review's rules, sending nothing."),
    "jobs": ("read", "List training jobs."),
    "status": ("read", "Show a job's state, what it means, and its latest log entry."),
    "voices": ("read", "List voice training jobs (as `voice list`)."),
    "voice": ("voice", "A voice training job: upload recordings (resuming), status, assess."),
    "emulator": ("emulator", "Run a local MetaStudio emulator until interrupted."),
    "state": ("state", "List or clean the resume journals of the state folder."),
    "worker": ("worker", "Upload the rows of batch --broker: a Celery worker."),
}
#: Commands that log through the library's handler, and take -v/--debug after their name.
_VERBOSE = ("upload", "batch", "submit", "delete", "check", "jobs", "status", "voices",
            "voice", "emulator")


class _LazyGroup(click.Group):
    """A group whose commands are imported when used (click's documented lazy-loading
    pattern: `get_command` and `list_commands`); its listing comes from `COMMANDS`, so
    that `uploader --help` needs none of them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"uploader.cli.{COMMANDS[cmd_name][0]}")
        command: click.Command = getattr(module, cmd_name)
        command.short_help = COMMANDS[cmd_name][1]
        if cmd_name in _VERBOSE and not any(p.name == "debug" for p in command.params):
            from uploader.cli.logs import more_verbose

            command.params += [
                click.Option(["-v", "--verbose"], count=True, expose_value=False,
                             callback=more_verbose, help="Log more (-v info, -vv debug)."),
                click.Option(["--debug"], is_flag=True, expose_value=False,
                             callback=more_verbose, help="Log everything (same as -vv)."),
            ]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Log everything (same as -vv).")
@click.option("--allow-http", is_flag=True,
              help="Allow a plain http:// endpoint that is not on loopback (unsafe).")
@click.version_option(VERSION, package_name="uploader")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool, allow_http: bool) -> None:
    """Upload training videos to Huawei Cloud MetaStudio digital-human training jobs.

    Settings come from the environment: METASTUDIO_ENDPOINT (or METASTUDIO_REGION),
    METASTUDIO_PROJECT_ID, and CLOUD_SDK_AK + CLOUD_SDK_SK or METASTUDIO_AUTH_TOKEN.
    """
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (GBK, from a zip) is written as its own bytes, as
        # `ls` writes it, rather than failing the command.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    if ctx.invoked_subcommand != "worker":  # a Celery worker sets up its own logging
        from uploader.cli.logs import log_to_stderr

        log_to_stderr(ctx, 2 if debug else verbose)
