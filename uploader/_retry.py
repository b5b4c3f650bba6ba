"""Bounded exponential backoff with full jitter, shared by the API client and the transfer."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How often and how patiently to retry a failed request.

    `attempts` counts every try, the first included: 6 tries span about 15 s of waiting with
    the defaults, enough to ride out a gateway restart without hiding a real outage.
    `base` is the first wait and doubles each time up to `cap`; each wait is drawn uniformly
    below that bound ("full jitter"), so that many parts failing together do not retry in step.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < self.base:
            raise ValueError("Backoff needs attempts >= 1 and 0 <= base <= cap")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failures`-th consecutive failure (1-based)."""
        bound = min(self.cap, self.base * 2 ** (failures - 1))
        return (rng or random).uniform(0, bound)
