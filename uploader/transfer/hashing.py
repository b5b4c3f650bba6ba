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

__all__ = ["Digest", "Hashed", "LaneHasher", "kernel_name", "lane_count", "new_md5",
           "update_lanes"]


class Digest(Protocol):
    """An MD5 in progress: hashlib's, or the lanes extension's."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


Kernel = Callable[[Sequence[Digest], Sequence[memoryview]], None]
_Chunk = tuple[Digest, memoryview, "asyncio.Future[None]"]


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
    and until then the caller keeps the chunk's buffer unchanged. Chunks of one digest are
    hashed in the order they were added.

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
        self._wanted: set[asyncio.Future[None]] = set()  # chunks a part waits for
        self._overdue = False
        self._timer: asyncio.TimerHandle | None = None
        self._step: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._parts += 1

    def close(self) -> None:
        self._parts -= 1
        self._wake()

    def add(self, digest: Digest, data: memoryview) -> Hashed:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((digest, data, done))
        self._wake()
        return Hashed(self, done)

    async def _wait(self, done: asyncio.Future[None]) -> None:
        self._wanted.add(done)
        try:
            self._wake()
            await done
        finally:
            self._wanted.discard(done)

    def _wake(self) -> None:
        """Start a step if one is due, else make sure a waiting part is not kept long."""
        if self._step is not None or not self._waiting:
            return
        wanted = any(not done.done() for done in self._wanted)
        self._overdue &= wanted  # a grace that ran out for no one owes no one a step
        parts = len({id(digest) for digest, _, _ in self._waiting})
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
            await asyncio.to_thread(_in_rounds, self._kernel, batch)
        except asyncio.CancelledError:
            # The loop is closing. The step stays taken: none other may start while the
            # thread could still be hashing these digests.
            for _, _, done in batch:
                done.cancel()
            raise
        except Exception as exc:  # a kernel bug: the parts of this batch fail with it
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)
        self._step = None
        self._wake()


class Hashed:
    """A chunk handed to a `LaneHasher`: awaiting it asks for it to be hashed now."""

    __slots__ = ("_done", "_hasher")

    def __init__(self, hasher: LaneHasher, done: asyncio.Future[None]) -> None:
        self._hasher = hasher
        self._done = done

    def __await__(self) -> Generator[Any, None, None]:
        return self._hasher._wait(self._done).__await__()


def _in_rounds(kernel: Kernel, batch: list[_Chunk]) -> None:
    """Hash `batch` in arrival order per digest: each kernel call takes the oldest chunk
    left of every digest."""
    while batch:
        now: list[_Chunk] = []
        later: list[_Chunk] = []
        seen: set[int] = set()
        for chunk in batch:
            (later if id(chunk[0]) in seen else now).append(chunk)
            seen.add(id(chunk[0]))
        kernel([digest for digest, _, _ in now], [data for _, data, _ in now])
        batch = later
