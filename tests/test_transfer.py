"""The part body's own contract: bytes, hash and buffer reuse, against a connection that holds
unsent data by reference, as asyncio's socket transport does since Python 3.12.

End-to-end behaviour (real sockets, the emulator) is in test_upload.py and test_faults.py;
these tests pin down what those cannot show on the Python that runs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from uploader._errors import FileChangedError
from uploader._hashing import Digest, LaneHasher, update_lanes
from uploader._plan import Part, Piece
from uploader._transfer import PartBody, piece_md5, pieces_md5


def _piece(path: Path, part: Part) -> Piece:
    return Piece("training_video", part.number, path, part.offset, part.size,
                 "application/octet-stream", f"part {part.number}")

CHUNK = 64 * 1024


class HoldingTransport:
    """Queues each write by reference and "sends" all but the newest `hold` bytes, like a
    socket whose buffer is full; what is sent is copied out at once, as the kernel would."""

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.queued: list[memoryview] = []
        self.received = bytearray()

    def get_write_buffer_size(self) -> int:
        return sum(len(v) for v in self.queued)

    def write(self, data: memoryview) -> None:
        self.queued.append(data)
        excess = self.get_write_buffer_size() - self.hold
        while excess > 0:
            sent = self.queued[0][:excess]
            self.received += sent
            self.queued[0] = self.queued[0][len(sent):]
            if not self.queued[0]:
                self.queued.pop(0)
            excess -= len(sent)

    def flush(self) -> bytes:
        for view in self.queued:
            self.received += view
        self.queued.clear()
        return bytes(self.received)


class Writer:
    """Just the part of aiohttp's stream writer a payload uses: write() and .transport."""

    def __init__(self, transport: HoldingTransport) -> None:
        self.transport = transport

    async def write(self, chunk: memoryview) -> None:
        self.transport.write(chunk)


def file_of(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("hold", [0, 1000, CHUNK // 2, CHUNK, CHUNK + 1, 3 * CHUNK])
async def test_a_buffer_still_queued_by_the_connection_is_never_refilled(tmp_path, hold):
    path = file_of(tmp_path, 10 * CHUNK + 123)
    part = Part(number=2, offset=CHUNK + 5, size=7 * CHUNK + 17)
    body = PartBody(_piece(path, part), chunk_size=CHUNK, hasher=LaneHasher(),
                    on_chunk=lambda n: None)
    transport = HoldingTransport(hold)
    await body.write(Writer(transport))  # type: ignore[arg-type]
    expected = path.read_bytes()[part.offset:part.offset + part.size]
    assert transport.flush() == expected
    assert await body.md5_hex() == hashlib.md5(expected).hexdigest()


def slow_kernel(digests: Sequence[Digest], chunks: Sequence[memoryview]) -> None:
    time.sleep(0.01)  # hashing lags behind sending: buffers must wait for it
    update_lanes(digests, chunks)


@pytest.mark.parametrize("hold", [0, 3 * CHUNK])
async def test_a_buffer_is_never_refilled_before_it_is_hashed(tmp_path, hold):
    path = file_of(tmp_path, 9 * CHUNK)
    part = Part(number=1, offset=0, size=9 * CHUNK)
    body = PartBody(_piece(path, part), chunk_size=CHUNK, hasher=LaneHasher(kernel=slow_kernel),
                    on_chunk=lambda n: None)
    transport = HoldingTransport(hold)
    await body.write(Writer(transport))  # type: ignore[arg-type]
    assert transport.flush() == path.read_bytes()
    assert await body.md5_hex() == hashlib.md5(path.read_bytes()).hexdigest()


async def test_the_md5_counts_every_chunk_even_when_aiohttp_cancels_the_body_early(tmp_path):
    # Once the storage answers, aiohttp cancels the body's task: the last chunks may have
    # been sent but not yet hashed.
    path = file_of(tmp_path, 4 * CHUNK)
    body = PartBody(_piece(path, Part(1, 0, 4 * CHUNK)), chunk_size=CHUNK,
                    hasher=LaneHasher(kernel=slow_kernel), on_chunk=lambda n: None)
    transport = HoldingTransport(0)
    sending = asyncio.create_task(body.write(Writer(transport)))  # type: ignore[arg-type]
    while len(transport.received) < 4 * CHUNK:
        await asyncio.sleep(0.001)
    sending.cancel()
    assert await body.md5_hex() == hashlib.md5(path.read_bytes()).hexdigest()


async def test_progress_is_reported_chunk_by_chunk(tmp_path):
    path = file_of(tmp_path, 3 * CHUNK)
    seen: list[int] = []
    body = PartBody(_piece(path, Part(1, 0, 3 * CHUNK - 10)), chunk_size=CHUNK, hasher=LaneHasher(),
                    on_chunk=seen.append)
    await body.write(Writer(HoldingTransport(0)))  # type: ignore[arg-type]
    assert seen == [CHUNK, CHUNK, CHUNK - 10]


async def test_a_body_is_sent_once(tmp_path):
    path = file_of(tmp_path, CHUNK)
    body = PartBody(_piece(path, Part(1, 0, CHUNK)), chunk_size=CHUNK, hasher=LaneHasher(),
                    on_chunk=lambda n: None)
    await body.write(Writer(HoldingTransport(0)))  # type: ignore[arg-type]
    assert body.consumed
    with pytest.raises(RuntimeError, match="sent once"):
        await body.write(Writer(HoldingTransport(0)))  # type: ignore[arg-type]


async def test_a_file_cut_short_while_sending_is_a_clear_error(tmp_path):
    path = file_of(tmp_path, 2 * CHUNK)
    body = PartBody(_piece(path, Part(1, 0, 4 * CHUNK)), chunk_size=CHUNK, hasher=LaneHasher(),
                    on_chunk=lambda n: None)
    with pytest.raises(FileChangedError, match="became shorter"):
        await body.write(Writer(HoldingTransport(0)))  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [4096, CHUNK, 10 * CHUNK])
async def test_part_md5_is_the_md5_of_the_byte_range(tmp_path, chunk):
    path = file_of(tmp_path, 5 * CHUNK + 3)
    part = Part(3, 2 * CHUNK - 1, 2 * CHUNK + 2)
    data = path.read_bytes()[part.offset:part.offset + part.size]
    assert await piece_md5(_piece(path, part), chunk) == hashlib.md5(data).hexdigest()


async def test_parts_md5_hashes_many_parts_at_once(tmp_path):
    path = file_of(tmp_path, 20 * CHUNK + 5)
    data = path.read_bytes()
    parts = [Part(n + 1, n * 2 * CHUNK, min(2 * CHUNK, len(data) - n * 2 * CHUNK))
             for n in range(11)]
    found = await pieces_md5([_piece(path, p) for p in parts], chunk_size=CHUNK,
                             concurrency=4)
    assert found == {("training_video", p.number):
                     hashlib.md5(data[p.offset:p.offset + p.size]).hexdigest() for p in parts}


async def test_parts_md5_of_a_file_cut_short_is_a_clear_error(tmp_path):
    path = file_of(tmp_path, 3 * CHUNK)
    parts = [Part(1, 0, 2 * CHUNK), Part(2, 2 * CHUNK, 2 * CHUNK)]
    with pytest.raises(FileChangedError, match="became shorter"):
        await pieces_md5([_piece(path, p) for p in parts], chunk_size=CHUNK, concurrency=2)
