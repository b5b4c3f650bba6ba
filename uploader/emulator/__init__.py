"""A local MetaStudio: the training-job API, its object storage, and injectable faults.

Start it in a running event loop with `start_emulator`, or in a thread of its own with
`EmulatorThread` (for synchronous callers and CLI tests). The library never imports this
package; the CLI does, lazily, for `uploader emulator` and `--emulator`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from uploader.emulator._app import (
    EMULATOR,
    Emulator,
    EmulatorConfig,
    build_app,
    build_metadata_app,
)
from uploader.emulator._scratch import scratch_folder

__all__ = ["Emulator", "EmulatorConfig", "EmulatorThread", "RunningEmulator", "is_loopback",
           "scratch_folder", "start_emulator"]


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost).
    Anything else ("", 0.0.0.0, a LAN address) lets other machines reach an emulator whose
    keys are printed in its help: its caller warns. A name is resolved (no packet is sent
    for localhost or an address; a name that cannot be resolved counts as not loopback)."""
    if host in ("", "*"):
        return False  # aiohttp binds every interface
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback
                               for info in found)


@dataclass
class RunningEmulator:
    """An emulator serving on a socket; `stop()` it when done. `metadata_url` is its copy of
    the ECS metadata service (with `credential_ttl`), on a port of its own."""

    url: str
    config: EmulatorConfig
    emulator: Emulator
    runner: web.AppRunner
    metadata_runner: web.AppRunner | None = None
    metadata_url: str | None = None

    def client_env(self) -> dict[str, str]:
        """The environment that points `uploader` (or the official SDK) at this emulator."""
        return {
            "METASTUDIO_ENDPOINT": self.url,
            "METASTUDIO_PROJECT_ID": self.config.project_id,
            "CLOUD_SDK_AK": self.config.ak,
            "CLOUD_SDK_SK": self.config.sk,
        }

    def ecs_env(self) -> dict[str, str]:
        """The environment of an ECS with an agency: keys from the metadata service."""
        assert self.metadata_url is not None, "start the emulator with credential_ttl"
        return {
            "METASTUDIO_ENDPOINT": self.url,
            "METASTUDIO_PROJECT_ID": self.config.project_id,
            "METASTUDIO_CREDENTIALS": "ecs",
            "METASTUDIO_METADATA_URL": self.metadata_url,
        }

    async def stop(self) -> None:
        if self.metadata_runner is not None:
            await self.metadata_runner.cleanup()
        await self.runner.cleanup()


async def start_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> RunningEmulator:
    """Serve an emulator on `host:port` (0 picks a free port) in the running loop; https
    with `config.tls_cert`; its metadata service on a free port with `credential_ttl`."""
    app = build_app(config)
    context = None
    if config.tls_cert is not None and config.tls_key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls_cert, config.tls_key)
    # Requests in flight when it stops are cancelled after at most a second: uploads are
    # cut as a crash would cut them (what is stored stays stored), and it stops at once.
    shaped = config.link_rate is not None or config.total_rate is not None
    runner = await _serve(app, host, port, context, shaped=shaped)
    running = RunningEmulator(_url(runner, "https" if context else "http"), config,
                              app[EMULATOR], runner)
    if config.credential_ttl is not None:
        try:
            running.metadata_runner = await _serve(
                build_metadata_app(running.emulator), host, 0, None)
        except BaseException:
            await runner.cleanup()
            raise
        running.metadata_url = _url(running.metadata_runner, "http")
    return running


async def _serve(app: web.Application, host: str, port: int,
                 context: ssl.SSLContext | None, *, shaped: bool = False) -> web.AppRunner:
    """Serve `app`; `shaped` (a link rate set at start) with small receive windows."""
    options: dict[str, Any] = {"read_bufsize": SHAPED_BUFFER} if shaped else {}
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0, **options)
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.SockSite(runner, _small_window_socket(host, port), ssl_context=context)
            if shaped else web.TCPSite(runner, host, port, ssl_context=context))
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


#: The receive buffers of an emulator started with a link rate: the kernel's (doubled by it
#: for its bookkeeping) and aiohttp's (it stops reading a connection at twice this; by
#: default it reads half a MiB ahead, and a paced body's acknowledgements came in bursts).
SHAPED_BUFFER = 16 * 1024
#: The largest segment on a shaped link: an Ethernet path's, not loopback's 64 KiB (which a
#: window this small could not hold, so that a sender would wait on probes).
PATH_SEGMENT = 1460


def _small_window_socket(host: str, port: int) -> socket.socket:
    """A listening socket whose connections get small receive windows from their first
    packet on, so that a paced link throttles its sender through the window, as a slow path
    does. The emulator paces a link by reading slowly, and a kernel acknowledges what lands
    in its buffer: with the megabytes loopback gives each connection, a client's count of
    acknowledged bytes (what `--concurrency auto` tunes on) ran ahead of the link by
    seconds (a first window at 16 connections of 2 MiB/s read 87 MiB/s). With these
    buffers it reads 37-45 MiB/s (the link carries 32; the rest is the new connections' first
    buffers); the link's rate is the same."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":  # as asyncio does (on Windows it would share the port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SHAPED_BUFFER)
        if hasattr(socket, "TCP_MAXSEG"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, PATH_SEGMENT)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(runner: web.AppRunner, scheme: str) -> str:
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return f"{scheme}://{shown}:{bound[1]}"


class EmulatorThread:
    """An emulator running in a background thread with its own event loop."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self._config, self._host, self._port = config, host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.running: RunningEmulator | None = None

    def start(self) -> RunningEmulator:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_emulator(self._config, self._host, self._port), self._loop
        )
        self.running = future.result(timeout=30)
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result(timeout=30)
            self.running = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> RunningEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
