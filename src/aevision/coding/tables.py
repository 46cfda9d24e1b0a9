"""Discrete distributions over integers, one per table, with escape symbols for the tails.

Table ``t`` covers the integers ``lo[t] .. hi[t]`` and two escape symbols: "below ``lo``" and
"above ``hi``". A value outside the range is coded as its escape symbol followed by the distance
to the range (:mod:`aevision.coding.rangecoder`), so every integer can be coded and nothing is
clipped, while the tables stay as short as the distribution's bulk. ``probs[t]`` are float64
weights in symbol order ``[below, lo, ..., hi, above]``; the coder quantizes them to fixed point
deterministically, so encoder and decoder only need bit-identical float64 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbabilityTables:
    """``lo``: (T,) int64 lowest in-range value of each table; ``probs``: T float64 arrays."""

    lo: np.ndarray
    probs: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if len(self.lo) != len(self.probs):
            raise ValueError(f"{len(self.lo)} offsets for {len(self.probs)} tables")
        for t, p in enumerate(self.probs):
            if p.ndim != 1 or len(p) < 3 or p.dtype != np.float64:
                raise ValueError(f"table {t}: expected a float64 vector of length >= 3")

    def __len__(self) -> int:
        return len(self.probs)

    def hi(self, t: int) -> int:
        """Highest in-range value of table ``t``."""
        return int(self.lo[t]) + len(self.probs[t]) - 3


def from_cdf(lo: np.ndarray, cdf_at_halves: list[np.ndarray]) -> ProbabilityTables:
    """Tables from a CDF evaluated at ``lo - 1/2, lo + 1/2, ..., hi + 1/2`` (float64 each).

    P(v) = F(v + 1/2) - F(v - 1/2) in range; the escapes take the two tails F(lo - 1/2) and
    1 - F(hi + 1/2).
    """
    probs = []
    for c in cdf_at_halves:
        c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
        inner = np.diff(c)
        probs.append(np.concatenate([[c[0]], np.maximum(inner, 0.0), [1.0 - c[-1]]]))
    return ProbabilityTables(np.asarray(lo, dtype=np.int64), tuple(probs))
