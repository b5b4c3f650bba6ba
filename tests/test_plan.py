"""The part plan, a pure function: limits, shapes, and the public names of the package."""

from __future__ import annotations

import itertools

import pytest

from uploader import PlanError
from uploader.transfer.plan import DEFAULT_PART_SIZE, MAX_PART, MIN_PART, parse_size, plan_parts

MIB, GIB = 1024**2, 1024**3


@pytest.mark.parametrize("size", [1, 100, MIN_PART, 33 * MIB, 10 * GIB, 40 * GIB, 4999 * GIB])
def test_default_plan_covers_the_file_within_the_limits(size):
    plan = plan_parts(size)
    assert sum(plan.sizes) == size and 1 <= plan.count <= 1000
    assert all(s <= MAX_PART for s in plan.sizes)
    assert all(s >= MIN_PART for s in plan.sizes[:-1])
    assert plan.sizes[0] <= max(DEFAULT_PART_SIZE, -(-size // 1000))


def test_parts_are_contiguous_byte_ranges():
    parts = plan_parts(10 * MIB + 7, parts=3).parts
    assert [p.number for p in parts] == [1, 2, 3]
    assert parts[0].offset == 0
    assert all(a.offset + a.size == b.offset for a, b in itertools.pairwise(parts))
    assert parts[-1].offset + parts[-1].size == 10 * MIB + 7


def test_equal_parts_differ_by_at_most_one_byte():
    plan = plan_parts(1_000_003, parts=7)
    assert plan.count == 7 and max(plan.sizes) - min(plan.sizes) <= 1


def test_fixed_part_size_leaves_a_smaller_last_part():
    assert plan_parts(1_000_000, part_size=300 * 1024).sizes == (307200, 307200, 307200, 78400)


@pytest.mark.parametrize(("size", "options", "text"), [
    (0, {}, "empty"),
    (MIB, {"parts": 11}, "at most 10 parts"),
    (MIB, {"parts": 0}, "from 1 to 1000"),
    (MIB, {"parts": 1001}, "from 1 to 1000"),
    (MIB, {"part_size": 50 * 1024}, "under the 100 KiB minimum"),
    (6 * GIB, {"part_size": 6 * GIB}, "exceeds the 5 GiB limit"),
    (11 * GIB, {"parts": 2}, "at least 3 parts"),
    (GIB, {"part_size": 1024 * 1024 // 2}, "over the limit of 1000"),
    (MIB, {"parts": 2, "part_size": MIB}, "not both"),
])
def test_impossible_plans_say_why(size, options, text):
    with pytest.raises(PlanError, match=text):
        plan_parts(size, **options)


@pytest.mark.parametrize(("text", "size"), [
    ("32MiB", 32 * MIB), ("8M", 8 * MIB), ("100k", 100 * 1024), ("1048576", MIB),
    ("1.5G", int(1.5 * GIB)), (" 2 mb ", 2 * MIB),
])
def test_sizes_parse(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12 parsecs", "-5M", "1e9"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(PlanError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("size", [350 * 1024, 12 * 1024 * 1024 + 7, 3 * 1024**3 + 12345])
def test_every_plan_a_run_makes_is_among_those_of_its_part_count(size: int):
    from uploader.transfer.plan import plans_of_count

    made = [plan_parts(size)] + [plan_parts(size, parts=n) for n in (1, 2, 3)] + [
        plan_parts(size, part_size=mib * 1024 * 1024) for mib in (5, 8, 16, 64)
        if size > mib * 1024 * 1024]
    for plan in made:
        candidates = plans_of_count(size, plan.count)
        assert plan.sizes in [c.sizes for c in candidates], plan
        assert all(c.count == plan.count and sum(c.sizes) == size for c in candidates)
