"""Part planning: how a file is cut into byte ranges. Pure functions, no I/O."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from uploader._errors import PlanError

__all__ = ["AT_RISK_FLOOR", "DEFAULT_PART_SIZE", "MOST_IN_FLIGHT", "Part", "PartPlan", "Piece",
           "at_risk", "default_part_size", "parse_size", "plan_parts", "plans_of_count"]

KIB, MIB, GIB = 1024, 1024**2, 1024**3
MIN_PART = 100 * KIB      # OBS: every part but the last is at least 100 KB
MAX_PART = 5 * GIB        # OBS: no part is larger than 5 GB
MAX_PARTS = 1000          # MetaStudio: video_multipart_count is 1 to 1000
#: The largest default part. Smaller ones are chosen so that an interruption costs little
#: (`default_part_size`).
DEFAULT_PART_SIZE = 32 * MIB
#: The most bytes an interruption may cost, at least (`at_risk`): a part not stored when a
#: run is killed, or cut by an outage, is sent again whole.
AT_RISK_FLOOR = 64 * MIB
#: The most pieces `concurrency="auto"` may put in flight (uploader._checks.MAX_CONCURRENCY).
MOST_IN_FLIGHT = 64

_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
          "g": GIB, "gb": GIB, "gib": GIB}


@dataclass(frozen=True)
class Part:
    """One byte range of the file: part `number` (1-based) is `size` bytes from `offset`."""

    number: int
    offset: int
    size: int


@dataclass(frozen=True)
class Piece:
    """One PUT of the transfer: bytes `offset` to `offset + size` of `path`, sent to the
    link of (`kind`, `number`) with `content_type`. A single file is one piece, number 1."""

    kind: str
    number: int
    path: Path
    offset: int
    size: int
    content_type: str
    label: str  #: how messages name it: "part 3 of the training video", "the cover image"

    @property
    def key(self) -> tuple[str, int]:
        return self.kind, self.number


@dataclass(frozen=True)
class PartPlan:
    """The parts of a file, in order; `sizes[i]` is the size of part i+1."""

    file_size: int
    sizes: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def parts(self) -> list[Part]:
        found, offset = [], 0
        for number, size in enumerate(self.sizes, start=1):
            found.append(Part(number, offset, size))
            offset += size
        return found


def parse_size(text: str) -> int:
    """Bytes in a size such as `32MiB`, `8M`, `100k` or `1048576` (units are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match[2].lower() if match else None
    if match is None or unit not in _UNITS:
        raise PlanError(f"not a size: {text!r} (try 32MiB, 8M or 100k)")
    size = float(match[1]) * _UNITS[unit]
    if size != int(size):
        raise PlanError(f"not a whole number of bytes: {text!r}")
    return int(size)


def plan_parts(
    file_size: int, *, parts: int | None = None, part_size: int | None = None
) -> PartPlan:
    """Cut `file_size` bytes into `parts` near-equal parts, or parts of `part_size`, or the
    default: parts near `default_part_size` (1 MiB up to 640 MiB, a 640th of the file
    above), at most 1000. Raises PlanError when no plan satisfies the
    limits (1 to 1000 parts, each at most 5 GiB, each but the last at least 100 KiB)."""
    if file_size < 1:
        raise PlanError("the file is empty: there is nothing to upload")
    if parts is not None and part_size is not None:
        raise PlanError("give the number of parts or the part size, not both")
    if parts is not None:
        return _equal_parts(file_size, parts)
    if part_size is not None:
        return _fixed_size(file_size, part_size)
    count = min(MAX_PARTS, math.ceil(file_size / default_part_size(file_size)))
    return _fixed_size(file_size, math.ceil(file_size / count))


def at_risk(file_size: int) -> int:
    """The most bytes of a file's unfinished parts that may be in flight at once: what an
    interruption (a kill, an outage that cuts the connections) may cost at most. The larger
    of AT_RISK_FLOOR and a tenth of the file; the default plan and `concurrency="auto"`
    keep to it together."""
    return max(AT_RISK_FLOOR, file_size // 10)


def default_part_size(file_size: int) -> int:
    """The default plan's part size, before it is evened out: small enough that the most
    pieces auto may fly (MOST_IN_FLIGHT) hold no more than `at_risk` bytes, so that a link
    whose connections are each slow can still be filled; at most DEFAULT_PART_SIZE. A kill
    or an outage then costs at most a tenth of the file (64 MiB for one under 640 MiB) where
    parts of 32 MiB, 40 at once, had cost the whole of what was in flight (1.25 GiB)."""
    return max(MIN_PART, min(DEFAULT_PART_SIZE, at_risk(file_size) // MOST_IN_FLIGHT))


def _equal_parts(file_size: int, count: int) -> PartPlan:
    if not 1 <= count <= MAX_PARTS:
        raise PlanError(f"the number of parts must be from 1 to {MAX_PARTS}, not {count}")
    base, extra = divmod(file_size, count)
    if count > 1 and base < MIN_PART:
        most = max(1, file_size // MIN_PART)
        raise PlanError(f"{file_size} bytes cannot be cut into {count} parts of at least "
                        f"100 KiB: use at most {most} parts")
    if base + (extra > 0) > MAX_PART:
        raise PlanError(f"{count} parts of {file_size} bytes would exceed 5 GiB each: "
                        f"use at least {math.ceil(file_size / MAX_PART)} parts")
    return PartPlan(file_size, tuple(base + 1 if i < extra else base for i in range(count)))


def _fixed_size(file_size: int, part_size: int) -> PartPlan:
    if part_size > MAX_PART:
        raise PlanError(f"a part size of {part_size} bytes exceeds the 5 GiB limit")
    count = math.ceil(file_size / part_size)
    if count > 1 and part_size < MIN_PART:
        raise PlanError(f"a part size of {part_size} bytes is under the 100 KiB minimum")
    if count > MAX_PARTS:
        raise PlanError(f"parts of {part_size} bytes would make {count} parts, over the "
                        f"limit of {MAX_PARTS}: use at least {math.ceil(file_size / MAX_PARTS)}"
                        " bytes a part")
    last = file_size - part_size * (count - 1)
    return PartPlan(file_size, (part_size,) * (count - 1) + (last,))


#: Part sizes people and tools commonly choose (MiB), tried when only the count is known.
_COMMON_MIB = (5, 8, 10, 15, 16, 20, 25, 32, 50, 64, 100, 128, 256, 512, 1024)


def plans_of_count(file_size: int, count: int) -> list[PartPlan]:
    """The plans that could have cut `file_size` bytes into `count` parts: `count` equal
    parts (`parts=count`), the default's way (parts of ceil(size / count)), and common part
    sizes. An object assembled from parts carries only their count in its ETag; plans are
    deterministic, so these are the ones to try when recognising a file sent under another
    plan."""
    found: dict[tuple[int, ...], PartPlan] = {}
    sizes = [math.ceil(file_size / count), *(mib * MIB for mib in _COMMON_MIB)]
    for make, value in [(_equal_parts, count), *((_fixed_size, size) for size in sizes)]:
        try:
            plan = make(file_size, value)
        except PlanError:
            continue
        if plan.count == count:
            found.setdefault(plan.sizes, plan)
    return list(found.values())
