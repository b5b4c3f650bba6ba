"""The one helper for servers that a synchronous test talks to: an event loop in a thread of
its own, on 127.0.0.1, stopped (with every server it runs) when the block ends."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopThread:
    """`with LoopThread() as servers:` then `servers.serve(handler)` (an aiohttp server
    answering every path with `handler`: its URL) or `servers.run(coroutine)` (anything
    else on the loop, e.g. `asyncio.start_server`). Closing stops them all."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="test-servers")
        self._runners: list[web.AppRunner] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        async def stop() -> None:
            for cleanup in reversed(self._cleanups):
                await cleanup()
            for runner in self._runners:
                await runner.cleanup()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run `coroutine` on the thread's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def on_close(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Await `cleanup()` on the loop when the block ends (before the servers stop)."""
        self._cleanups.append(cleanup)

    def serve(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> str:
        """Start a server answering every method and path with `handler`; its URL."""
        async def start() -> str:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
            self._runners.append(runner)
            scheme = "https" if ssl_context is not None else "http"
            return f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"

        return self.run(start())
