"""MD5 of several parts at once: the lanes extension and the hasher that feeds it.

Every digest is checked against hashlib's, over lengths that cross the 64-byte block edges,
more streams than lanes, and updates split across calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.uploads import assembled, cli_env, json_out, run_cli, until, video_of
from uploader import Settings
from uploader.emulator import RunningEmulator
from uploader.transfer import hashing as _hashing
from uploader.transfer.hashing import Digest, LaneHasher

try:
    from uploader.transfer import _md5lanes
except ImportError:  # not built: the tests of the extension itself say so below
    _md5lanes = None  # type: ignore[assignment]

EDGES = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 4095, 4096, 65536 + 7]


def kernels() -> list[tuple[str, Callable[[], Digest], _hashing.Kernel]]:
    found = [("hashlib", hashlib.md5, _hashing._update_each)]
    if _md5lanes is not None:
        found.append(("lanes", _md5lanes.MD5, _md5lanes.update_lanes))  # type: ignore[arg-type]
    return found


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler here: the extension could not have been built")
def test_the_lanes_extension_is_built_where_a_compiler_is():
    assert _md5lanes is not None, "pip install -e . should have built transfer/_md5lanes.c"
    assert _md5lanes.KERNEL in ("avx2x8", "scalar")


@pytest.mark.parametrize(("name", "new", "kernel"), kernels(),
                         ids=[name for name, _, _ in kernels()])
def test_every_stream_gets_its_own_md5(name, new, kernel):
    rnd = random.Random(6)
    for _ in range(60):
        count = rnd.randint(1, 19)  # fewer and more streams than lanes
        ours, theirs = [new() for _ in range(count)], [hashlib.md5() for _ in range(count)]
        for _ in range(rnd.randint(1, 3)):  # a tail left by one call is carried to the next
            chunks = [os.urandom(rnd.choice(EDGES)) for _ in range(count)]
            kernel(ours, [memoryview(c) for c in chunks])
            for digest, chunk in zip(theirs, chunks, strict=True):
                digest.update(chunk)
        assert [d.hexdigest() for d in ours] == [d.hexdigest() for d in theirs]


@pytest.mark.skipif(_md5lanes is None, reason="the lanes extension is not built")
def test_the_extension_matches_hashlib_on_large_unequal_chunks():
    sizes = [1 << 20, (1 << 20) + 3, 5 << 20, 64, 0, 777_777, 1 << 20, 2 << 20, 9, 3 << 20]
    chunks = [os.urandom(size) for size in sizes]
    digests = [_md5lanes.MD5() for _ in sizes]
    _md5lanes.update_lanes(digests, chunks)
    single = _md5lanes.MD5()
    single.update(chunks[2])
    assert [d.hexdigest() for d in digests] == [hashlib.md5(c).hexdigest() for c in chunks]
    assert [d.digest() for d in digests] == [hashlib.md5(c).digest() for c in chunks]
    assert single.hexdigest() == hashlib.md5(chunks[2]).hexdigest()


@pytest.mark.skipif(_md5lanes is None, reason="the lanes extension is not built")
def test_the_extension_refuses_one_digest_twice_in_a_call():
    digest, other = _md5lanes.MD5(), _md5lanes.MD5()
    with pytest.raises(ValueError, match="already being updated"):
        _md5lanes.update_lanes([digest, other, digest], [b"a", b"b", b"c"])
    with pytest.raises(ValueError, match="as many buffers"):
        _md5lanes.update_lanes([digest], [])
    with pytest.raises(TypeError):
        _md5lanes.update_lanes([hashlib.md5()], [b"a"])  # type: ignore[list-item]
    _md5lanes.update_lanes([digest, other], [b"a", b"b"])  # nothing left claimed
    assert digest.hexdigest() == hashlib.md5(b"a").hexdigest()


class Recording:
    """A kernel that notes how many chunks each step hashed together."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, digests: Sequence[Digest], chunks: Sequence[memoryview]) -> None:
        assert len({id(d) for d in digests}) == len(digests), "a digest twice in one step"
        self.batches.append(len(digests))
        _hashing.update_lanes(digests, chunks)


async def test_the_hasher_keeps_each_parts_order_and_batches_parts_together():
    kernel = Recording()
    hasher = LaneHasher(kernel=kernel, lanes=8)
    rnd = random.Random(7)
    streams = [[os.urandom(rnd.choice(EDGES)) for _ in range(12)] for _ in range(8)]
    digests = [_hashing.new_md5() for _ in streams]

    async def feed(digest: Digest, chunks: list[bytes]) -> None:
        hasher.open()
        for chunk in chunks:  # several chunks queued before the first is hashed
            hasher.add(digest, memoryview(chunk))
            await asyncio.sleep(0)
        await hasher.add(digest, memoryview(b""))
        hasher.close()

    await asyncio.gather(*(feed(d, s) for d, s in zip(digests, streams, strict=True)))
    assert [d.hexdigest() for d in digests] == [
        hashlib.md5(b"".join(s)).hexdigest() for s in streams]
    assert max(kernel.batches) == 8


async def test_the_hasher_waits_for_full_lanes_or_for_someone_who_needs_a_chunk():
    kernel = Recording()
    hasher = LaneHasher(kernel=kernel, lanes=8, grace=0.02)
    digests = [_hashing.new_md5() for _ in range(4)]
    for _ in digests:
        hasher.open()
    started = asyncio.get_running_loop().time()
    first = [hasher.add(d, memoryview(b"x" * 100)) for d in digests[:3]]
    await asyncio.sleep(0)
    assert kernel.batches == []  # three of the four parts sending: not all there yet
    await first[1]  # a part needs its buffer back: it waits out the grace
    assert kernel.batches == [3]
    assert asyncio.get_running_loop().time() - started >= 0.015
    later = [hasher.add(d, memoryview(b"y")) for d in digests]
    await until(lambda: kernel.batches == [3, 4])  # every part has a chunk: hashed at once
    hasher.close()
    last = hasher.add(digests[0], memoryview(b"z"))
    for _ in digests[1:]:
        hasher.close()
    await until(lambda: kernel.batches == [3, 4, 1])  # closed: the one left fills the lanes
    for hashed in [*first, *later, last]:
        await hashed
    assert digests[0].hexdigest() == hashlib.md5(b"x" * 100 + b"yz").hexdigest()


async def test_a_failing_step_fails_its_chunks_and_the_hasher_goes_on():
    calls = 0

    def flaky(digests: Sequence[Digest], chunks: Sequence[memoryview]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("no room")
        _hashing.update_lanes(digests, chunks)

    hasher = LaneHasher(kernel=flaky)
    with pytest.raises(MemoryError):
        await hasher.add(_hashing.new_md5(), memoryview(b"abc"))
    digest = _hashing.new_md5()
    await hasher.add(digest, memoryview(b"abc"))
    assert digest.hexdigest() == hashlib.md5(b"abc").hexdigest()


@pytest.mark.parametrize("no_extensions", ["", "1"])
def test_an_upload_with_either_md5(emulator_thread: RunningEmulator, tmp_path: Path,
                                   no_extensions: str):
    env = cli_env(emulator_thread.client_env(), tmp_path / "state")
    env["UPLOADER_NO_EXTENSIONS"] = no_extensions
    kernel = subprocess.run(
        [sys.executable, "-c",
         "from uploader.transfer.hashing import kernel_name; print(kernel_name())"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert (kernel == "hashlib") == bool(no_extensions or _md5lanes is None)
    video = video_of(tmp_path, 3_000_000)
    ran = run_cli("-v", "upload", str(video), "--name", "md5", "--parts", "12", "--json",
                  env=env)
    result = json_out(ran)
    assert (result["parts_uploaded"], result["bytes_uploaded"]) == (12, 3_000_000)
    # A wrong MD5 would show as a refused part, then settled from the server's copy.
    assert "not its MD5" not in ran.stderr and "already holds" not in ran.stderr, ran.stderr
    settings = Settings.from_env(emulator_thread.client_env())
    assert asyncio.run(assembled(settings, str(result["job_id"]))) == video.read_bytes()


async def test_a_failed_read_fails_its_part_alone_and_every_later_chunk_of_it():
    """Chunks are read in the hasher's worker-thread step: a read that fails fails its
    chunk, and the chunks of that part queued after it (none is hashed out of order), while
    the other parts of the batch are read and hashed."""
    import io

    class Failing(io.RawIOBase):
        def readinto(self, buffer: object) -> int:
            raise OSError(5, "Input/output error")

    hasher = LaneHasher(lanes=2)
    broken, sound = _hashing.new_md5(), _hashing.new_md5()
    hasher.open()
    hasher.open()
    first = hasher.read(broken, Failing(), memoryview(bytearray(10)))
    second = hasher.read(broken, io.BytesIO(b"later"), memoryview(bytearray(5)))
    fine = hasher.read(sound, io.BytesIO(b"abc"), memoryview(bytearray(8)))
    for failed in (first, second):
        with pytest.raises(OSError, match="Input/output"):
            await failed
    assert await fine == 3  # the file ended: fewer bytes than asked
    assert sound.hexdigest() == hashlib.md5(b"abc").hexdigest()
    assert broken.hexdigest() == hashlib.md5(b"").hexdigest()  # nothing hashed into it
