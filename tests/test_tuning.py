"""Concurrency that tunes itself (issue 22, item 3): the tuner on modelled links (pure), and
a real budget shared by uploads on the emulator, which never lets more pieces fly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import emulator_config
from tests.uploads import assembled, video_of
from uploader import AsyncClient, Job, Settings, TransferBudget
from uploader.emulator import RunningEmulator, start_emulator
from uploader.transfer.budget import CHUNK_MEMORY
from uploader.transfer.tuning import Tuner

MiB = 1024 * 1024


def _drive(tuner: Tuner, link: Callable[[int], float], seconds: float = 30.0,
           step: float = 0.05, part_seconds: float = 4.0) -> list[int]:
    """Feed the tuner what `link` carries with the pieces in flight (bytes a second); the
    limits seen. As on a real link, more pieces start at once when the limit rises, but
    when it falls those in flight go on until they end (parts of `part_seconds`)."""
    seen, now, in_flight, ending = [], 0.0, tuner.limit, 0.0
    while now < seconds:
        now += step
        if in_flight < tuner.limit:
            in_flight = tuner.limit
        elif in_flight > tuner.limit:
            ending += step * in_flight / part_seconds  # parts end, and are not replaced
            while ending >= 1 and in_flight > tuner.limit:
                in_flight, ending = in_flight - 1, ending - 1
        tuner.observe(int(link(in_flight) * step), now, in_flight)
        seen.append(tuner.limit)
    return seen


def test_slow_connections_and_no_cap_climb_to_the_most():
    seen = _drive(Tuner(high=64), lambda n: n * 2 * MiB, seconds=60)  # 2 MiB/s each
    assert max(seen) == 64
    # From 16: two doublings, each measured on the window after the one that settles.
    assert seen.index(64) * 0.05 <= 1.2, "it took over 1.2 s to get there"
    # Probing a quarter fewer never sticks (the pieces that end make the loss plain), and is
    # tried less and less often.
    after = seen[seen.index(64):]
    assert min(after) >= 48 and after.count(64) / len(after) >= 0.8, "fewer than pay"


def test_a_narrow_link_is_kept_full_with_fewer_connections_over_time():
    link = lambda n: min(n * 16 * MiB, 32 * MiB)  # noqa: E731 16 each, 32 in all
    seen = _drive(Tuner(high=64), link, seconds=90)
    assert max(seen) <= 40  # a doubling past what pays, held, then a probe
    assert min(seen) >= 1 and link(seen[-1]) == 32 * MiB  # never fewer than fill it
    # A quarter fewer at a time (every 12 s at first), while it carries as much.
    assert 2 <= seen[-1] <= 24 and seen[-1] < max(seen), seen[-40:]


def test_a_link_that_gets_better_is_followed_up():
    cap = [16 * MiB]
    tuner = Tuner(high=64)
    _drive(tuner, lambda n: min(n * 2 * MiB, cap[0]))
    assert 8 <= tuner.limit <= 32  # 8 fill it; the surplus is shed slowly
    cap[0] = 128 * MiB  # the link widens: the probes find it
    _drive(tuner, lambda n: min(n * 2 * MiB, cap[0]), seconds=60)
    assert tuner.limit >= 48



def test_a_first_report_starts_the_first_window_without_counting_in_it():
    # What the first report says went out before it: counted, it would make the first
    # level look faster than it is, and the next doubling look as though it did not pay.
    tuner = Tuner(high=64)
    assert tuner.observe(64 * MiB, 0.0, 16) is None  # megabytes handed before the start
    assert tuner.observe(int(0.15 * 32 * MiB), 0.15, 16) == 32
    assert tuner.history == [(0.15, 16, pytest.approx(32 * MiB, rel=0.01))]


@pytest.mark.parametrize(("round_trip", "first_decision"), [
    (None, 0.15),     # not known: the climbing window
    (0.0001, 0.05),   # loopback: eight round trips are less than the shortest window
    (0.1, 0.8),       # a far link: eight round trips, so new connections leave slow start
])
def test_climbing_windows_last_eight_round_trips_where_they_are_known(
        round_trip: float | None, first_decision: float):
    tuner = Tuner(high=64, shortest=0.05)
    now, step = 0.0, 0.01
    tuner.observe(0, now, 16, round_trip)
    while tuner.limit == 16:
        now += step
        tuner.observe(int(16 * 2 * MiB * step), now, 16, round_trip)
        assert now < 5
    assert now == pytest.approx(first_decision, abs=step / 2)

def test_one_window_that_does_not_pay_does_not_stop_the_climb():
    # A window right after a doubling where the link or the machine paused: asked again,
    # the doubling pays, and the climb goes on.
    tuner = Tuner(high=64)
    now, windows = 0.0, {16: [1.0], 32: [0.2, 2.0], 64: [4.0]}
    tuner.observe(0, now, 16)
    for limit in (16, 32, 64):
        for gibs in windows[limit]:
            assert tuner.limit == limit
            now += 0.2
            tuner.observe(int(gibs * 1024 * MiB * 0.2), now, limit)
    assert [limit for _, limit, _ in tuner.history] == [16, 32, 32, 64]
    # Twice in a row, it is held, at the better of the two windows.
    tuner = Tuner(high=64)
    tuner.observe(0, 0.0, 16)
    for now, gibs in ((0.2, 1.0), (0.4, 0.2), (0.6, 0.9)):
        tuner.observe(int(gibs * 1024 * MiB * 0.2), now, tuner.limit)
    assert tuner.limit == 32 and [limit for _, limit, _ in tuner.history] == [16, 32, 32]


@pytest.mark.parametrize("high", [1, 3, 64])
def test_it_never_leaves_its_bounds(high: int):
    import random

    rng = random.Random(high)
    tuner = Tuner(high=high, start=min(8, high))
    seen = _drive(tuner, lambda n: rng.uniform(0.2, 3.0) * n * MiB, seconds=60)
    assert min(seen) >= 1 and max(seen) <= high


@pytest.mark.slow
async def test_auto_stays_within_a_shared_budget(tmp_path: Path):
    """Connections of 1 MiB/s each: the tuner wants many; a budget of 5 shared by two
    uploads lets at most 5 fly (the emulator counts them), and still tunes within it."""
    async with _slow_link_emulator(tmp_path, 1 * MiB) as emulator:
        await _within_a_shared_budget(emulator, tmp_path)


async def _within_a_shared_budget(emulator: RunningEmulator, tmp_path: Path) -> None:
    settings = Settings.from_env(emulator.client_env())
    budget = TransferBudget(concurrency=5, auto=True)
    videos = [video_of(tmp_path, 24 * 200 * 1024, f"v{n}.mp4") for n in range(2)]
    async with AsyncClient(settings, budget=budget,
                           state_dir=tmp_path / "state") as client:
        results = await asyncio.gather(*(
            client.upload(Job.of(video, name=f"tuned {n}", parts=24))
            for n, video in enumerate(videos)))
    assert budget.most_in_flight <= 5 and emulator.emulator.faults.most_in_flight <= 5
    assert budget.tuner is not None and budget.tuner.history  # it measured and decided
    assert all(1 <= limit <= 5 for _, limit, _ in budget.tuner.history)
    for video, result in zip(videos, results, strict=True):
        assert await assembled(settings, result.job_id) == video.read_bytes()


def test_chunks_shrink_as_more_pieces_may_fly():
    # Memory stays flat: the chunks of the pieces in flight share CHUNK_MEMORY, near enough.
    wanted = 1024 * 1024
    assert TransferBudget(concurrency=4).chunk_size(wanted) == wanted
    assert TransferBudget(concurrency=8).chunk_size(wanted) == wanted
    assert TransferBudget(concurrency=16).chunk_size(wanted) == wanted // 2
    assert TransferBudget(concurrency=64).chunk_size(wanted) == wanted // 8
    assert TransferBudget(concurrency=256).chunk_size(wanted) == 64 * 1024  # the least
    tuned = TransferBudget(concurrency=64, auto=True)
    assert tuned.chunk_size(wanted) == CHUNK_MEMORY // tuned.limit
    assert TransferBudget(concurrency=64).chunk_size(100_000) == 100_000  # less: as asked


async def test_a_budget_applies_and_logs_each_change_of_its_tuner(caplog):
    # -vv shows how auto decides: each change, with the throughput it measured.
    budget = TransferBudget(concurrency=64, auto=True)
    held = asyncio.Event()

    async def piece() -> None:
        async with budget.slot():
            await held.wait()

    pieces = [asyncio.create_task(piece()) for _ in range(16)]
    await asyncio.sleep(0)
    assert budget.in_flight == 16
    with caplog.at_level("DEBUG", logger="uploader.transfer"):
        for _ in range(40):  # a first window of 0.15 s at 16 pieces: the climb starts
            budget.sent(1024 * 1024)
            await asyncio.sleep(0.01)
            if budget.limit != 16:
                break
    assert budget.limit == 32
    more = [asyncio.create_task(piece()) for _ in range(16)]
    await asyncio.sleep(0)
    assert budget.in_flight == 32  # the places the new limit gave
    held.set()
    await asyncio.gather(*pieces, *more)
    changes = [r.getMessage() for r in caplog.records if "pieces in flight" in r.getMessage()]
    assert len(changes) == 1 and changes[0].startswith("pieces in flight: 16 -> 32 (")


# ---- issue 33, item 1: the tuner's signal is what the network acknowledged ----------------

def _slow_reader(rate: float, seconds: float) -> tuple[tuple[str, int], list[int]]:
    """A server on loopback that reads `rate` bytes a second for `seconds` through a small
    receive buffer; its address, and a list that holds the bytes it read so far."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning
    server.bind(("127.0.0.1", 0))
    server.listen()
    read = [0]

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                read[0] += len(conn.recv(int(rate / 100)))
                time.sleep(0.01)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname(), read


def test_the_meter_counts_what_the_peer_acknowledged_not_what_the_socket_took():
    """A slow reader behind a small receive window: the socket's send buffer takes
    megabytes at once, the meter counts what got across (the reader's bytes and its
    window), as the tuner must."""
    import socket
    import time

    from uploader.transfer.acked import AckedBytes

    meter = AckedBytes()
    if not meter.available:
        pytest.skip("this kernel does not count acknowledged bytes (TCP_INFO)")
    address, read = _slow_reader(rate=1 * MiB, seconds=3.0)
    sock = meter.socket_factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                 "", address))
    with sock:
        sock.connect(address)
        sock.setblocking(False)
        handed, block = 0, memoryview(bytes(64 * 1024))
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            try:
                handed += sock.send(block)
            except BlockingIOError:
                time.sleep(0.005)
        acked = meter.take()
        got = read[0]
    assert handed >= acked + 512 * 1024, (handed, acked)  # the send buffer held the rest
    assert got <= acked <= got + 512 * 1024, (got, acked)  # the reader's, and its window
    assert meter.take() <= 512 * 1024  # counted once


async def test_an_auto_budget_tunes_on_acknowledged_bytes_where_the_kernel_counts_them():
    """Bytes handed to a connection that the network has not taken measure nothing: the
    tuner does not see the megabytes handed (without the meter, it would)."""
    import contextlib
    import socket

    from uploader.transfer.budget import TransferBudget

    metered, handed_only = (TransferBudget(concurrency=8, auto=True) for _ in range(2))
    assert metered.acked is not None
    if not metered.acked.available:
        pytest.skip("this kernel does not count acknowledged bytes (TCP_INFO)")
    unsent = metered.acked.socket_factory((socket.AF_INET, socket.SOCK_STREAM,
                                           socket.IPPROTO_TCP, "", ("127.0.0.1", 0)))
    with unsent:
        async with contextlib.AsyncExitStack() as places:
            for budget in (metered, handed_only):
                for _ in range(budget.limit):  # every piece in flight: windows count
                    await places.enter_async_context(budget.slot())
            for _ in range(8):  # 8 MiB handed over 0.4 s, nothing acknowledged
                metered.sent(MiB)
                handed_only.sent(MiB)
                await asyncio.sleep(0.05)
    assert metered.tuner is not None and handed_only.tuner is not None
    assert handed_only.tuner.history
    assert all(rate > MiB for _, _, rate in handed_only.tuner.history)
    # No connection carried anything: no level was measured at all (neither as the
    # megabytes handed, nor as nothing: its connections had not begun).
    assert metered.tuner.history == [] and metered.limit == 8


def _metered_budget(concurrency: int) -> TransferBudget:
    """An auto budget told what the network acknowledged (the test is skipped where the
    kernel does not count it)."""
    budget = TransferBudget(concurrency=concurrency, auto=True)
    assert budget.acked is not None and budget.tuner is not None
    if not budget.acked.available:
        pytest.skip("this kernel does not count acknowledged bytes (TCP_INFO)")
    return budget


@contextlib.asynccontextmanager
async def _slow_link_emulator(tmp_path: Path, link: int) -> AsyncIterator[RunningEmulator]:
    """An emulator started with a link rate: its connections throttle through small
    receive windows (a rate set later paces reads, but the kernel's buffers stay large)."""
    running = await start_emulator(emulator_config(tmp_path / "emulator", link_rate=link))
    try:
        yield running
    finally:
        await running.stop()


@pytest.mark.slow
async def test_auto_measures_while_parts_fly_not_only_when_chunks_are_handed(tmp_path: Path):
    """Parts of 2 MiB on connections of 1 MiB/s: each part's two chunks go to its socket at
    once, then nothing is handed for two seconds. The tuner reads what was acknowledged
    meanwhile (every TICK), so it has measured windows before the first part is stored;
    clocked by hand-offs alone it had none until the parts ended (and climbed 1 s late on
    benchmarks/tuning.py's slow link)."""
    async with _slow_link_emulator(tmp_path, 1 * MiB) as emulator:
        await _measures_while_parts_fly(emulator, tmp_path)


async def _measures_while_parts_fly(emulator: RunningEmulator, tmp_path: Path) -> None:
    settings = Settings.from_env(emulator.client_env())
    budget = _metered_budget(8)
    video = video_of(tmp_path, 16 * MiB)
    seen: list[int] = []

    async def first_part_stored() -> None:
        ledger = emulator.emulator.faults.ledger
        while not any(happened["stored"] for happened in list(ledger.values())):
            await asyncio.sleep(0.01)
        assert budget.tuner is not None
        seen.append(len(budget.tuner.history))

    async with AsyncClient(settings, budget=budget, state_dir=tmp_path / "state") as client:
        watcher = asyncio.ensure_future(first_part_stored())
        result = await client.upload(Job.of(video, name="ticked", parts=8))
        await watcher
    assert seen and seen[0] >= 2, seen  # windows of 0.05-0.5 s in the first part's 2 s
    assert await assembled(settings, result.job_id) == video.read_bytes()


@pytest.mark.slow
async def test_on_the_emulator_s_slow_links_acknowledgements_track_the_link(tmp_path: Path):
    """An emulator started with a link rate throttles through small receive windows, so
    that what a client's kernel counts as acknowledged is what the link carried, as on a
    slow path: with loopback's megabytes of buffer per connection the tuner's windows read
    2.5x the link (87 MiB/s at 16 connections of 2 MiB/s). The windows the tuner measured
    here (16, 32, then 64 connections of 512 KiB/s) after the first at their level read,
    together, within 1.3x what their connections can carry (1.01-1.02 on a quiet machine;
    one window alone may read 1.5x after a pause of the machine)."""
    link = MiB // 2
    async with _slow_link_emulator(tmp_path, link) as emulator:
        settings = Settings.from_env(emulator.client_env())
        budget = _metered_budget(64)
        video = video_of(tmp_path, 96 * MiB)
        async with AsyncClient(settings, budget=budget,
                               state_dir=tmp_path / "state") as client:
            result = await client.upload(Job.of(video, name="faithful", parts=96))
        assert budget.tuner is not None
        history = budget.tuner.history
        levels = [limit for _, limit, _ in history]
        assert [k for k, _ in itertools.groupby(levels)][:3] == [16, 32, 64], history
        # What the acknowledgements say each level carried after its first window (new
        # connections' first buffers), bytes over time (a pause and its catch-up are one),
        # as a share of what its connections can carry.
        later = [(now - then, limit, rate) for (then, before, _), (now, limit, rate)
                 in itertools.pairwise(history) if limit == before]
        assert len(later) >= 2, history
        share = (sum(span * rate for span, _, rate in later)
                 / sum(span * limit * link for span, limit, _ in later))
        assert share <= 1.3, f"windows read {share:.2f}x what their connections carry: {later}"
        assert await assembled(settings, result.job_id) == video.read_bytes()
