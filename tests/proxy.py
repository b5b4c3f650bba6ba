"""The tests' own HTTP proxy on loopback: forwards absolute-form requests (http://...) and
tunnels CONNECT (https://...), as a corporate proxy does, and notes each request it saw.

It runs in a thread with its own event loop, listens on 127.0.0.1 on a free port, and is
stopped (every connection closed) when the `with` block ends. With `user`/`password` it
answers 407 to requests without that Proxy-Authorization.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from types import TracebackType

from tests.servers import LoopThread


class Proxy:
    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.seen: list[str] = []  #: "PUT /bucket/..." or "CONNECT host:port", in order
        self.refused = 0  #: requests answered 407
        self._auth = (None if user is None else
                      "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        self._servers = LoopThread()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        login = f"{user}:{password}@" if user is not None else ""
        return f"http://{login}127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self._servers.__enter__()
        self._server = self._servers.run(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._servers.on_close(self._stop)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._servers.__exit__(kind, error, trace)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        auth = next((h.split(":", 1)[1].strip() for h in headers
                     if h.lower().startswith("proxy-authorization:")), None)
        if self._auth is not None and auth != self._auth:
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            self.seen.append(f"CONNECT {target}")
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
            return
        # Absolute form: http://host:port/path. Sent on as origin form, one request per
        # connection (Connection: close), so that every request is seen.
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.seen.append(f"{method} /{path.split('?', 1)[0]}")
        kept = [h for h in headers if not h.lower().startswith(
            ("proxy-", "connection:", "keep-alive:"))]
        up_reader, up_writer = await asyncio.open_connection(host, int(port or 80))
        up_writer.write(f"{method} /{path} {version}\r\n".encode("latin-1")
                        + "".join(f"{h}\r\n" for h in kept).encode("latin-1")
                        + b"Connection: close\r\n\r\n")
        await _pipe_both(reader, writer, up_reader, up_writer)


async def _pipe_both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        up_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(256 * 1024):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
