"""MD5 for the parts in flight, hashed together.

Every part needs its own MD5 (the storage's ETag is checked against it), and MD5 is serial
within a part: one core hashes about 0.6 GiB/s. The parts in flight are independent, though,
so `LaneHasher` gathers the chunks they have just sent and hashes eight parts in one call,
one part per SIMD lane (`uploader/transfer/_md5lanes.c`, about 4.5 times hashlib's speed on
AVX2). Where that extension was not built (or `UPLOADER_NO_EXTENSIONS` is set), hashlib does
the same work chunk by chunk; so does it where the extension measures no faster (it is timed
against hashlib once, at the first hash: a few milliseconds).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

__all__ = ["Digest", "Hashed", "LaneHasher", "Source", "kernel_name", "lane_count", "new_md5",
           "update_lanes"]


class Digest(Protocol):
    """An MD5 in progress: hashlib's, or the lanes extension's."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class Source(Protocol):
    """Where a chunk is read from: an open file (its position is where the read starts)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


Kernel = Callable[[Sequence[Digest], Sequence[memoryview]], None]


class _Chunk:
    """A chunk for a digest: given (`source` None), or to be read from `source` (at its
    position) into `data` first. `got` is what was read (or given), `error` why a read
    failed."""

    __slots__ = ("data", "digest", "done", "error", "got", "source")

    def __init__(self, digest: Digest, data: memoryview, done: asyncio.Future[int],
                 source: Source | None = None) -> None:
        self.digest, self.data, self.done, self.source = digest, data, done, source
        self.got = len(data) if source is None else 0
        self.error: OSError | None = None


def _update_each(digests: Sequence[Digest], buffers: Sequence[memoryview]) -> None:
    for digest, data in zip(digests, buffers, strict=True):
        digest.update(data)


def _hashlib_md5() -> Digest:
    return hashlib.md5(usedforsecurity=False)


def _pick() -> tuple[str, Callable[[], Digest], Kernel]:
    """The extension where it is built and measures faster than hashlib here, else hashlib."""
    plain: tuple[str, Callable[[], Digest], Kernel] = ("hashlib", _hashlib_md5, _update_each)
    if os.environ.get("UPLOADER_NO_EXTENSIONS"):
        return plain
    try:
        from uploader.transfer import _md5lanes
    except ImportError:
        return plain
    lanes: tuple[str, Callable[[], Digest], Kernel] = (
        _md5lanes.KERNEL, _md5lanes.MD5, _md5lanes.update_lanes)  # type: ignore[assignment]
    return lanes if _seconds(lanes) < _seconds(plain) else plain


def _seconds(choice: tuple[str, Callable[[], Digest], Kernel]) -> float:
    """How long `choice` takes to hash eight 256 KiB chunks, one per digest (best of 3)."""
    _, new, kernel = choice
    data = [memoryview(bytes(256 * 1024))] * 8
    best = float("inf")
    for _ in range(3):
        digests = [new() for _ in data]
        started = time.perf_counter()
        kernel(digests, data)
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def _choice() -> tuple[str, Callable[[], Digest], Kernel]:
    """The MD5 in use, picked at the first hash (not at import: the extension's load and
    timing cost nothing to a command that hashes nothing)."""
    return _pick()


def kernel_name() -> str:
    """Which MD5 runs: "avx2x8" (eight lanes), "scalar" (the extension without AVX2),
    "hashlib"."""
    return _choice()[0]


def lane_count() -> int:
    """How many parts one kernel call hashes for the price of one."""
    return 8 if kernel_name() == "avx2x8" else 1


def new_md5() -> Digest:
    """A new MD5 digest of the kernel in use."""
    return _choice()[1]()


def update_lanes(digests: Sequence[Digest], buffers: Sequence[memoryview]) -> None:
    """Hash `buffers[i]` into `digests[i]`, every lane at once where the kernel can."""
    _choice()[2](digests, buffers)


class LaneHasher:
    """Hashes the chunks that parts hand it, chunks of different parts together.

    A part calls `open` before its first chunk and `close` after its last. `add` queues a
    chunk for a digest and returns a `Hashed`; awaiting it returns once the chunk is hashed,
    and until then the caller keeps the chunk's buffer unchanged. `read` queues a chunk to
    be read from a file first, in the same worker-thread step as the hashing: one thread
    hop for the chunks of every part, rather than one per chunk for its read. Chunks of one
    digest are hashed in the order they were queued.

    Hashing starts when every open part has a chunk waiting (or `lanes` parts do): one
    worker-thread step then hashes every waiting chunk, a chunk per part per kernel call,
    while the next batch gathers. A part that needs a chunk hashed before that waits at most
    `grace` seconds (its connection still has the chunk after it to send meanwhile).
    """

    def __init__(self, *, kernel: Kernel | None = None, lanes: int | None = None,
                 grace: float = 0.005) -> None:
        self._kernel = kernel or update_lanes
        self._lanes = lanes or lane_count()
        self._grace = grace
        self._parts = 0
        self._waiting: list[_Chunk] = []
        self._wanted: set[asyncio.Future[int]] = set()  # chunks a part waits for
        self._overdue = False
        self._timer: asyncio.TimerHandle | None = None
        self._step: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._parts += 1

    def close(self) -> None:
        self._parts -= 1
        self._wake()

    def add(self, digest: Digest, data: memoryview) -> Hashed:
        """Hash `data` into `digest`; awaiting the answer gives len(data)."""
        return self._queue(_Chunk(digest, data, self._future()))

    def read(self, digest: Digest, source: Source, into: memoryview) -> Hashed:
        """Fill `into` from `source` (from its position on), then hash what was read into
        `digest`. Awaiting the answer gives the bytes read: fewer than len(into) only where
        the file ends; an OSError if the read failed (then nothing is hashed, and no later
        chunk of that digest either). The caller keeps `source` open, and reads nothing
        else from it, until then."""
        return self._queue(_Chunk(digest, into, self._future(), source))

    @staticmethod
    def _future() -> asyncio.Future[int]:
        return asyncio.get_running_loop().create_future()

    def _queue(self, chunk: _Chunk) -> Hashed:
        self._waiting.append(chunk)
        self._wake()
        return Hashed(self, chunk.done)

    async def _wait(self, done: asyncio.Future[int]) -> int:
        self._wanted.add(done)
        try:
            self._wake()
            return await done
        finally:
            self._wanted.discard(done)

    def _wake(self) -> None:
        """Start a step if one is due, else make sure a waiting part is not kept long."""
        if self._step is not None or not self._waiting:
            return
        wanted = any(not done.done() for done in self._wanted)
        self._overdue &= wanted  # a grace that ran out for no one owes no one a step
        parts = len({id(chunk.digest) for chunk in self._waiting})
        if parts >= min(self._lanes, max(self._parts, 1)) or self._overdue:
            self._overdue = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._step = asyncio.create_task(self._run())
        elif wanted and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._grace, self._grace_over)

    def _grace_over(self) -> None:
        self._timer = None
        self._overdue = True
        self._wake()

    async def _run(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            await asyncio.to_thread(_read_and_hash, self._kernel, batch)
        except asyncio.CancelledError:
            # The loop is closing. The step stays taken: none other may start while the
            # thread could still be reading or hashing these chunks.
            for chunk in batch:
                chunk.done.cancel()
            raise
        except Exception as exc:  # a kernel bug: the parts of this batch fail with it
            for chunk in batch:
                if not chunk.done.done():
                    chunk.done.set_exception(exc)
        else:
            for chunk in batch:
                if chunk.done.done():
                    continue
                if chunk.error is not None:
                    chunk.done.set_exception(chunk.error)
                else:
                    chunk.done.set_result(chunk.got)
        self._step = None
        self._wake()


class Hashed:
    """A chunk handed to a `LaneHasher`: awaiting it asks for it to be hashed now, and gives
    the bytes hashed."""

    __slots__ = ("_done", "_hasher")

    def __init__(self, hasher: LaneHasher, done: asyncio.Future[int]) -> None:
        self._hasher = hasher
        self._done = done

    def __await__(self) -> Generator[Any, None, int]:
        return self._hasher._wait(self._done).__await__()


def _read_and_hash(kernel: Kernel, batch: list[_Chunk]) -> None:
    """Read the chunks that are to be read, then hash the batch in rounds, in queued order
    per digest: each kernel call takes the oldest chunk left of every digest. A digest whose
    read failed takes no more chunks."""
    failed: dict[int, OSError] = {}
    for chunk in batch:
        if chunk.source is not None and id(chunk.digest) not in failed:
            try:
                chunk.got = _fill(chunk.source, chunk.data)
            except OSError as exc:
                failed[id(chunk.digest)] = exc
    for chunk in batch:
        chunk.error = failed.get(id(chunk.digest))
    batch = [chunk for chunk in batch if chunk.error is None]
    while batch:
        now: list[_Chunk] = []
        later: list[_Chunk] = []
        seen: set[int] = set()
        for chunk in batch:
            (later if id(chunk.digest) in seen else now).append(chunk)
            seen.add(id(chunk.digest))
        kernel([chunk.digest for chunk in now], [chunk.data[:chunk.got] for chunk in now])
        batch = later


def _fill(source: Source, into: memoryview) -> int:
    """Read into `into` until it is full or the file ends (a read may return less than
    asked); the bytes read."""
    got = 0
    while got < len(into):
        count = source.readinto(into[got:])
        if not count:
            break
        got += count
    return got
