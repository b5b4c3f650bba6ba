"""The part body's own contract: bytes, hash, memory, progress, and its errors.

End-to-end behaviour (real sockets, the emulator) is in test_upload.py and test_faults.py;
these tests pin down what those cannot show on the Python that runs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from uploader._errors import FileChangedError, LocalFileError
from uploader.transfer import reading
from uploader.transfer.hashing import Digest, LaneHasher, update_lanes
from uploader.transfer.plan import Part, Piece
from uploader.transfer.reading import PartBody, piece_md5, pieces_md5


def _piece(path: Path, part: Part) -> Piece:
    return Piece("training_video", part.number, path, part.offset, part.size,
                 "application/octet-stream", f"part {part.number}")

CHUNK = 64 * 1024


def file_of(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(os.urandom(size))
    return path


def body_of(path: Path, part: Part, **options: Any) -> PartBody:
    return PartBody(_piece(path, part), chunk_size=CHUNK,
                    **{"hasher": LaneHasher(), "on_chunk": lambda n: None, **options})


async def test_every_chunk_stays_as_read_for_as_long_as_it_is_held(tmp_path):
    # A connection may queue what it was given by reference (asyncio's transport does on
    # Python 3.12): nothing refills a chunk, however long it is held.
    path = file_of(tmp_path, 10 * CHUNK + 123)
    part = Part(number=2, offset=CHUNK + 5, size=7 * CHUNK + 17)
    body = body_of(path, part)
    held = [chunk async for chunk in body]
    expected = path.read_bytes()[part.offset:part.offset + part.size]
    assert [len(chunk) for chunk in held] == [CHUNK] * 7 + [17]
    assert b"".join(held) == expected
    assert body.md5_hex() == hashlib.md5(expected).hexdigest()


async def test_a_slice_of_a_chunk_held_across_reads_stays_as_read(tmp_path):
    # asyncio's transport on Python 3.12+ queues a memoryview slice of what it could not
    # send yet (the rest of a chunk), not the chunk: such a slice, held while the reader
    # goes on, must keep its bytes. CI runs this on 3.11, 3.12 and 3.13.
    path = file_of(tmp_path, 12 * CHUNK)
    data = path.read_bytes()
    body = body_of(path, Part(1, 0, 12 * CHUNK))
    held: list[tuple[int, memoryview]] = []
    offset = 0
    async for chunk in body:
        held.append((offset + 1000, chunk[1000:CHUNK - 7]))  # the chunk itself let go
        offset += len(chunk)
        del chunk
    assert all(bytes(piece) == data[start:start + len(piece)] for start, piece in held)
    assert body.md5_hex() == hashlib.md5(data).hexdigest()


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="reuse needs refcounts")
async def test_a_chunk_nobody_holds_any_more_is_read_into_again(tmp_path, monkeypatch):
    # Fresh memory for every chunk costs page faults (0.3 s of CPU a GiB): the buffers of
    # chunks let go are reused, so a part of any length takes a few.
    made: list[int] = []

    def counted(size: int) -> bytearray:
        made.append(size)
        return bytearray(size)

    monkeypatch.setattr(reading, "bytearray", counted, raising=False)
    path = file_of(tmp_path, 20 * CHUNK)
    body = body_of(path, Part(1, 0, 20 * CHUNK))
    digest = hashlib.md5()
    async for chunk in body:
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.md5(path.read_bytes()).hexdigest()
    assert body.md5_hex() == digest.hexdigest()
    assert len(made) <= 3


def slow_kernel(digests: Sequence[Digest], chunks: Sequence[memoryview]) -> None:
    time.sleep(0.01)  # hashing lags behind sending
    update_lanes(digests, chunks)


async def test_each_chunk_is_hashed_before_it_is_handed_out_and_one_at_most_is_read_ahead(
        tmp_path):
    # Read and hashed in one worker-thread step: a chunk handed out is hashed already, and
    # the next one is read (and hashed) while it is sent, no further: memory, two chunks.
    path = file_of(tmp_path, 9 * CHUNK)
    hashed: list[int] = []

    def kernel(digests: Sequence[Digest], chunks: Sequence[memoryview]) -> None:
        slow_kernel(digests, chunks)
        hashed.extend(len(c) for c in chunks)

    body = body_of(path, Part(1, 0, 9 * CHUNK), hasher=LaneHasher(kernel=kernel))
    read = 0
    async for chunk in body:
        read += len(chunk)
        await asyncio.sleep(0.03)  # the chunk is being sent: the next one is read meanwhile
        assert read <= sum(hashed) <= read + CHUNK
    assert body.md5_hex() == hashlib.md5(path.read_bytes()).hexdigest()


async def test_the_md5_counts_every_chunk_even_when_aiohttp_stops_the_body_early(tmp_path):
    # Once the storage answers, aiohttp may stop iterating the body after its last chunk.
    path = file_of(tmp_path, 4 * CHUNK)
    body = body_of(path, Part(1, 0, 4 * CHUNK), hasher=LaneHasher(kernel=slow_kernel))
    chunks = aiter(body)
    for _ in range(4):
        await anext(chunks)
    assert body.md5_hex() == hashlib.md5(path.read_bytes()).hexdigest()


async def test_a_body_not_sent_to_its_end_has_no_md5(tmp_path):
    # The next chunk is read (and hashed) ahead: an MD5 of a body cut short would count it.
    path = file_of(tmp_path, 4 * CHUNK)
    body = body_of(path, Part(1, 0, 4 * CHUNK))
    chunks = aiter(body)
    for _ in range(3):
        await anext(chunks)
    assert body.md5_hex() is None
    await chunks.aclose()  # type: ignore[attr-defined]


async def test_progress_is_reported_chunk_by_chunk(tmp_path):
    path = file_of(tmp_path, 3 * CHUNK)
    seen: list[int] = []
    body = body_of(path, Part(1, 0, 3 * CHUNK - 10), on_chunk=seen.append)
    assert len([chunk async for chunk in body]) == 3
    assert seen == [CHUNK, CHUNK, CHUNK - 10]


async def test_a_body_is_sent_once(tmp_path):
    path = file_of(tmp_path, CHUNK)
    body = body_of(path, Part(1, 0, CHUNK))
    assert [chunk async for chunk in body]
    with pytest.raises(RuntimeError, match="sent once"):
        aiter(body)


async def test_a_file_cut_short_while_sending_is_a_clear_error(tmp_path):
    path = file_of(tmp_path, 2 * CHUNK)
    body = body_of(path, Part(1, 0, 4 * CHUNK))
    with pytest.raises(FileChangedError, match="became shorter"):
        [chunk async for chunk in body]
    assert isinstance(body.failure, FileChangedError)


async def test_a_file_that_cannot_be_read_is_a_local_file_error(tmp_path):
    path = tmp_path / "gone.mp4"
    body = body_of(path, Part(1, 0, CHUNK))
    with pytest.raises(LocalFileError, match="cannot read") as caught:
        [chunk async for chunk in body]
    assert caught.value.path == str(path)


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


async def test_a_storage_that_answers_before_the_body_is_all_sent_is_not_believed(tmp_path):
    """The MD5 of a part is known once its body was handed out to its end: a storage that
    answers 200 before that (a proxy that answers for it, a broken server) gets the part
    sent again, never confirmed with a guessed MD5."""
    from aiohttp import web

    from uploader.transfer.engine import PartFailure, TransferConfig, put_part

    async def hasty(request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"ETag": '"' + "0" * 32 + '"'})

    app = web.Application()
    app.router.add_put("/{key}", hasty)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    path = file_of(tmp_path, 64 * CHUNK)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(PartFailure, match="before the part was sent whole") as early:
                await put_part(session, f"http://127.0.0.1:{port}/part",
                               _piece(path, Part(1, 0, 64 * CHUNK)), config=TransferConfig(),
                               hasher=LaneHasher(), on_bytes=lambda n: None)
        assert early.value.retryable
    finally:
        await runner.cleanup()
