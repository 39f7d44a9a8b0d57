"""Paired significance of leaderboard differences, from per-sample robust flags on the same samples.

- :func:`exact_mcnemar`: two models in one cell (same protocol, same samples). Only the *discordant* samples
  (robust for one model, broken for the other) carry information; under "no difference" each is equally likely
  to go either way, so the count of one kind is Binomial(discordant, 1/2). Two-sided exact p-value.
- :func:`paired_counts` over several cells and :func:`exact_sign_flip`: two rows' means over the same cells.
  Every cell of a protocol has the same samples, so the difference of the two means is proportional to the
  pooled difference of discordant counts over the union of (cell, sample) pairs; the exact sign-flip test of
  that sum (each discordant pair's sign flips with probability 1/2 under the null) is the binomial test on the
  pooled counts, i.e. McNemar on the union.
- :func:`holm_reject` and :func:`rank_groups`: a ranking turned into groups. Rows sorted by mean are compared
  with the row above; the family of these adjacent tests is corrected by Holm at ``ALPHA``; a row whose
  difference from the row above is not significant shares its rank. Pairs that cannot be tested (a row
  without per-sample data, e.g. published-only numbers) keep the plain rule: equal displayed means share a
  rank, others do not.

Pure functions of numpy arrays; nothing here reads files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA = 0.05


@dataclass(frozen=True)
class PairedCounts:
    """Discordant samples of two models (or two rows, summed over their cells): ``first_only`` robust for the
    first and broken for the second, ``second_only`` the other way round."""

    first_only: int
    second_only: int

    def __add__(self, other: "PairedCounts") -> "PairedCounts":
        return PairedCounts(self.first_only + other.first_only, self.second_only + other.second_only)

    @property
    def discordant(self) -> int:
        return self.first_only + self.second_only


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of *k* successes in *n* trials with probability 1/2: ``2 P(X <= min(k, n - k))``,
    at most 1 (what ``scipy.stats.binomtest(k, n, 0.5)`` gives; the distribution is symmetric)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k = {k}, n = {n}")
    low = min(k, n - k)
    if 2 * low == n:
        return 1.0
    logs = _log_pmf(np.arange(low + 1, dtype=np.float64), n)  # i = 0 .. low
    top = float(np.max(logs))
    tail = math.exp(top) * float(np.sum(np.exp(logs - top)))
    return min(1.0, 2.0 * tail)


def _log_pmf(k: np.ndarray, n: int) -> np.ndarray:
    """log of Binomial(n, 1/2)'s probability at each of *k* (float array), by cumulative log ratios, which stay
    exact to rounding where ``lgamma`` differences of large numbers would not."""
    ratios = np.log((n - k[:-1]) / (k[:-1] + 1.0))  # C(n, i+1) / C(n, i)
    return np.concatenate(([-n * math.log(2.0)], -n * math.log(2.0) + np.cumsum(ratios)))


def mcnemar_p(counts: PairedCounts) -> float:
    """Exact McNemar p-value of discordant *counts* (two-sided)."""
    return binomial_two_sided(counts.first_only, counts.discordant)


def discordant(first: np.ndarray, second: np.ndarray) -> PairedCounts:
    """Discordant counts of two boolean robust-flag arrays over the same samples, in the same order."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired flags must cover the same samples, got shapes {first.shape} and {second.shape}")
    return PairedCounts(int(np.count_nonzero(first & ~second)), int(np.count_nonzero(second & ~first)))


def packed_discordant(first: bytes, second: bytes) -> PairedCounts:
    """:func:`discordant` of flags stored bit-packed (``np.packbits``; pad bits are zero in both, so they never
    count)."""
    if len(first) != len(second):
        raise ValueError(f"paired flags must cover the same samples, got {len(first)} and {len(second)} bytes")
    a = np.frombuffer(first, dtype=np.uint8)
    b = np.frombuffer(second, dtype=np.uint8)
    return PairedCounts(int(np.bitwise_count(a & ~b).sum()), int(np.bitwise_count(b & ~a).sum()))


def exact_mcnemar(first: np.ndarray, second: np.ndarray) -> tuple[PairedCounts, float]:
    """Discordant counts and the exact two-sided McNemar p-value of two models' robust flags in one cell."""
    counts = discordant(first, second)
    return counts, mcnemar_p(counts)


def exact_sign_flip(cells: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[PairedCounts, float]:
    """Two rows' paired test over the union of their cells' samples: *cells* holds, per cell, the two rows' flags
    (same samples, same number of samples in every cell). Exact sign-flip test of the summed difference."""
    sizes = {np.shape(first) for first, _ in cells}
    if len(sizes) > 1:
        raise ValueError(f"every cell must hold the same samples, got shapes {sorted(sizes)}")
    total = PairedCounts(0, 0)
    for first, second in cells:
        total += discordant(first, second)
    return total, mcnemar_p(total)


def holm_reject(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down correction: which of *p_values* are rejected with the family-wise error at *alpha*."""
    order = sorted(range(len(p_values)), key=lambda i: (p_values[i], i))
    rejected = [False] * len(p_values)
    m = len(p_values)
    for step, index in enumerate(order):
        if p_values[index] > alpha / (m - step):
            break
        rejected[index] = True
    return rejected


def rank_groups(displayed_means: Sequence[str], p_values: Sequence[float | None],
                alpha: float = ALPHA) -> list[int]:
    """Competition ranks (1, 1, 3, ...) of rows already sorted best first. ``p_values[i]`` is the paired test of
    row *i + 1* against row *i* (None: not testable). A row shares the rank of the row above when the test is
    not significant after Holm's correction over the testable pairs, or, untested, when both show the same
    mean."""
    if len(p_values) != max(0, len(displayed_means) - 1):
        raise ValueError("one p-value per adjacent pair of rows")
    tested = [i for i, p in enumerate(p_values) if p is not None]
    rejected = dict(zip(tested, holm_reject([p_values[i] for i in tested], alpha)))  # type: ignore[misc]
    ranks: list[int] = []
    for position, mean in enumerate(displayed_means):
        if position == 0:
            ranks.append(1)
            continue
        pair = position - 1
        same = (not rejected[pair]) if pair in rejected else mean == displayed_means[pair]
        ranks.append(ranks[-1] if same else position + 1)
    return ranks
