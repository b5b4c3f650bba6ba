"""`uploader emulator`: run the local MetaStudio until interrupted."""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path
from typing import Any

import click

from uploader.cli.common import on_signals, stop_signals

__all__ = ["emulator"]


def _rates(ctx: click.Context, param: click.Parameter, value: str | None
           ) -> dict[str, float]:
    from uploader.emulator._gateway import API_NAMES

    rates: dict[str, float] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, _, number = item.partition("=")
        try:
            rates[name.strip()] = float(number)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not NAME=N") from None
        if name.strip() not in API_NAMES or not rates[name.strip()] > 0:
            raise click.BadParameter(f"{item!r}: NAME is one of {', '.join(API_NAMES)}, N > 0")
    return rates


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8790, show_default=True,
              help="0 picks a free port.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where jobs and parts are kept [default: a new temporary folder].")
@click.option("--project-id", default="0a1b2c3d4e5f40718293a4b5c6d7e8f9", show_default=True)
@click.option("--ak", default="EMULATORAKEXAMPLE0001", show_default=True)
@click.option("--sk", default="emulator-sk-not-a-secret-0000000000000000", show_default=True)
@click.option("--token", default="emulator-token-not-a-secret", show_default=True)
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of part PUTs answered 500/503 before storing.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of part PUTs stored, then cut off with no response.")
@click.option("--reset-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Share of part PUTs cut off half-way through the body (nothing stored).")
@click.option("--link-rate", type=click.FloatRange(min=1, min_open=False), default=None,
              help="Read each request body no faster than this many bytes a second.")
@click.option("--total-rate", type=click.FloatRange(min=1, min_open=False), default=None,
              metavar="BYTES", help="Read all request bodies together no faster than this "
                                    "many bytes a second (a narrow link; beside --link-rate, "
                                    "which paces each connection).")
@click.option("--url-ttl", type=click.IntRange(1), default=86400, show_default=True,
              help="Seconds an upload URL stays valid.")
@click.option("--min-part-size", type=click.IntRange(1), default=100 * 1024, show_default=True,
              metavar="BYTES", help="The smallest part but the last a confirm assembles "
                                    "(S3's is 5242880): smaller answers EntityTooSmall.")
@click.option("--update-resets-parts", is_flag=True, help="Every update drops stored parts.")
@click.option("--review-delay", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Seconds the automatic review takes.")
@click.option("--seed", type=int, default=None, help="Seed the fault injection.")
@click.option("--credential-ttl", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Serve the ECS metadata service on a port of its own, issuing temporary "
                   "keys (with a security token) that live this many seconds.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Serve https with this certificate (PEM; with --tls-key).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The private key of --tls-cert (PEM).")
@click.option("--link-style", type=click.Choice(["v2", "v2-s3", "v4"]), default="v2",
              show_default=True,
              help="The form of the presigned links: OBS's own V2, the S3-compatible V2 "
                   "(AWSAccessKeyId) or V4; the S3-compatible ones are answered with x-amz-* "
                   "headers, OBS's own with x-obs-*.")
@click.option("--link-security-token", is_flag=True,
              help="Links carry their signer's security token, and need it.")
@click.option("--link-early-expiry", type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Refuse a link this long after its issue, whatever its "
                                      "expiry says (its signer's token expired).")
@click.option("--move-delay", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="A single file reaches its download link this long after its PUT.")
@click.option("--etag-style", type=click.Choice(["md5", "sse"]), default="md5",
              show_default=True, help="sse: ETags of an encrypted bucket (not the MD5).")
@click.option("--review-outcome", metavar="STATE[:ERROR_CODE]",
              help="End every review in STATE (with ERROR_CODE in its log), whatever the files.")
@click.option("--voice-review-outcome", metavar="STATE[:ERROR_CODE]",
              help="End every voice job's review in STATE (AUDIT_FAILED:MSS.20020016, "
                   "FAILED...) unless its audit finds an error first. Durations allowed "
                   "(tenant-duration-cfg): basic 60-600 s, middle 300-3000 s, advance "
                   "600-7200 s.")
@click.option("--api-rate", "api_rates", callback=_rates, metavar="NAME=N[,NAME=N...]",
              help="Answer 429 APIGW.0308 over N calls a second of an API (create, list, "
                   "show, update, command, delete), per tenant, as the gateway does.")
def emulator(host: str, port: int, data_dir: Path | None, **options: Any) -> None:
    """Run a local MetaStudio emulator until interrupted (Ctrl-C or SIGTERM: it stops within
    two seconds, uploads in flight cut, what is stored kept). Without --data-dir its data
    live in a temporary folder, removed when it stops. Exit codes: 0 stopped; 1 it cannot
    listen or cannot use its data folder."""
    import asyncio

    from uploader.emulator import EmulatorConfig, is_loopback, start_emulator

    if not is_loopback(host):
        click.echo(f"warning: --host {host} lets other machines reach this emulator, and its "
                   "keys are the well-known defaults printed by --help (or whatever --ak/--sk "
                   "say): anyone who can reach it can read and change its jobs and files. "
                   "Bind it to 127.0.0.1 unless you mean to share it.", err=True)
    if (options["tls_cert"] is None) != (options["tls_key"] is None):
        raise click.UsageError("--tls-cert and --tls-key go together")

    async def serve(folder: Path) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        restore = on_signals(loop, stop.set, (signal.SIGINT, *stop_signals()))
        try:
            running = await start_emulator(EmulatorConfig(data_dir=folder, **options), host,
                                           port)
        except OSError as exc:
            where = f"{host}:{port}" if exc.errno == errno.EADDRINUSE else str(folder)
            raise click.ClickException(f"cannot serve on {where}: {exc.strerror or exc}"
                                       ) from None
        click.echo(f"MetaStudio emulator serving on {running.url} (data in {folder})")
        exports = " ".join(f"{k}={v}" for k, v in running.client_env().items())
        click.echo(f"export {exports}")
        if running.metadata_url is not None:
            click.echo(f"ECS metadata service on {running.metadata_url} (keys live "
                       f"{options['credential_ttl']:g} s): METASTUDIO_CREDENTIALS=ecs "
                       f"METASTUDIO_METADATA_URL={running.metadata_url}")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            restore()
            await running.stop()

    if data_dir is not None:
        asyncio.run(serve(data_dir))
        return
    from uploader.emulator import scratch_folder

    with scratch_folder() as folder:
        asyncio.run(serve(folder))
