"""The `uploader` command: parse, call the library, print, exit with the documented code.

`read` holds the commands that only look (check, jobs, status, voices), `upload` those that
send (upload, submit), `batch` many videos (here or on workers), `worker` a Celery worker,
`emulator` the local MetaStudio; `common` what they share.
"""

from __future__ import annotations

import logging

import click

from uploader._redact import RedactingFilter
from uploader.cli.batch import batch
from uploader.cli.emulator import emulator
from uploader.cli.read import check, jobs, status, voices
from uploader.cli.upload import submit, upload
from uploader.cli.worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Log everything (same as -vv).")
@click.option("--allow-http", is_flag=True,
              help="Allow a plain http:// endpoint that is not on loopback (unsafe).")
@click.version_option(package_name="uploader")
def main(verbose: int, debug: bool, allow_http: bool) -> None:
    """Upload training videos to Huawei Cloud MetaStudio digital-human training jobs.

    Settings come from the environment: METASTUDIO_ENDPOINT (or METASTUDIO_REGION),
    METASTUDIO_PROJECT_ID, and CLOUD_SDK_AK + CLOUD_SDK_SK or METASTUDIO_AUTH_TOKEN.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(2 if debug else verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())



for _command in (upload, batch, submit, check, jobs, status, voices, emulator, worker):
    main.add_command(_command)
