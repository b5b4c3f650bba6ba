"""A local MetaStudio: the training-job API, its object storage, and injectable faults.

Start it in a running event loop with `start_emulator`, or in a thread of its own with
`EmulatorThread` (for synchronous callers and CLI tests). The library never imports this
package; the CLI does, lazily, for `uploader emulator` and `--emulator`.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from uploader.emulator._app import EMULATOR, Emulator, EmulatorConfig, build_app

__all__ = ["Emulator", "EmulatorConfig", "EmulatorThread", "RunningEmulator", "start_emulator"]


@dataclass
class RunningEmulator:
    """An emulator serving on a socket; `stop()` it when done."""

    url: str
    config: EmulatorConfig
    emulator: Emulator
    runner: web.AppRunner

    def client_env(self) -> dict[str, str]:
        """The environment that points `uploader` (or the official SDK) at this emulator."""
        return {
            "METASTUDIO_ENDPOINT": self.url,
            "METASTUDIO_PROJECT_ID": self.config.project_id,
            "CLOUD_SDK_AK": self.config.ak,
            "CLOUD_SDK_SK": self.config.sk,
        }

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0
) -> RunningEmulator:
    """Serve an emulator on `host:port` (0 picks a free port) in the running loop."""
    app = build_app(config)
    # Requests in flight when it stops are cancelled after at most a second: uploads are
    # cut as a crash would cut them (what is stored stays stored), and it stops at once.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return RunningEmulator(f"http://{shown}:{bound[1]}", config, app[EMULATOR], runner)


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
