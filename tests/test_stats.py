"""evaluator.record.stats: exact McNemar and the pooled sign-flip test against scipy, Holm by hand, rank groups on
constructed flags where the answer is known."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from evaluator.record.stats import (PairedCounts, binomial_two_sided, discordant, exact_mcnemar, exact_sign_flip,
                             holm_reject, mcnemar_p, packed_discordant, rank_groups)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (3, 10), (7, 10), (5, 10), (0, 25), (12, 25), (100, 250),
                                  (1, 1000), (4990, 10000), (29500, 60000), (0, 60000)])
def test_binomial_two_sided_matches_scipy_binomtest(k: int, n: int) -> None:
    assert binomial_two_sided(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-8, abs=1e-300)


def test_binomial_two_sided_by_hand() -> None:
    assert binomial_two_sided(0, 0) == 1.0  # no discordant sample: nothing to tell apart
    assert binomial_two_sided(0, 5) == pytest.approx(2 / 32)  # 2 * (1/2)^5
    assert binomial_two_sided(1, 5) == pytest.approx(2 * 6 / 32)
    with pytest.raises(ValueError):
        binomial_two_sided(6, 5)


def test_exact_mcnemar_on_constructed_flags() -> None:
    first = np.array([1] * 40 + [1] * 9 + [0] * 1 + [0] * 50, dtype=bool)
    second = np.array([1] * 40 + [0] * 9 + [1] * 1 + [0] * 50, dtype=bool)
    counts, p = exact_mcnemar(first, second)
    assert counts == PairedCounts(9, 1)
    assert p == pytest.approx(binomtest(1, 10, 0.5).pvalue)  # 0.0215
    assert p == pytest.approx(2 * 11 / 1024)


def test_packed_discordant_equals_unpacked() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 10_000):
        a, b = rng.random(n) < 0.4, rng.random(n) < 0.45
        assert packed_discordant(np.packbits(a).tobytes(), np.packbits(b).tobytes()) == discordant(a, b)


def test_exact_sign_flip_is_the_exact_test_of_the_pooled_difference() -> None:
    """Enumerate every sign flip of a small union of discordant pairs: the exact permutation p-value (how often a
    flipped sum is at least as extreme as the observed one) equals the pooled binomial test."""
    cells = [(np.array([1, 1, 0, 1, 0, 0], bool), np.array([0, 1, 0, 0, 1, 0], bool)),
             (np.array([1, 0, 1, 1, 0, 1], bool), np.array([0, 0, 0, 1, 0, 0], bool))]
    counts, p = exact_sign_flip(cells)
    assert counts == PairedCounts(5, 1)
    differences = [int(a) - int(b) for first, second in cells for a, b in zip(first, second) if a != b]
    observed = abs(sum(differences))
    flips = [abs(sum(s * d for s, d in zip(signs, differences)))
             for signs in itertools.product((1, -1), repeat=len(differences))]
    assert p == pytest.approx(sum(f >= observed for f in flips) / len(flips))
    with pytest.raises(ValueError):
        exact_sign_flip([(np.zeros(3, bool), np.zeros(3, bool)), (np.zeros(4, bool), np.zeros(4, bool))])


def test_holm_by_hand() -> None:
    # sorted: 0.01 <= 0.05/4, 0.015 <= 0.05/3, 0.03 > 0.05/2 stops: the last two stay
    assert holm_reject([0.03, 0.01, 0.04, 0.015]) == [False, True, False, True]
    assert holm_reject([0.04]) == [True]
    assert holm_reject([0.04, 0.04]) == [False, False]  # Bonferroni's first step already fails
    assert holm_reject([]) == []


def test_rank_groups() -> None:
    # a, b not different; b, c different; c, d untested with equal means; d, e untested with different means
    assert rank_groups(["50.00", "49.90", "40.00", "40.00", "39.00"], [0.5, 1e-6, None, None]) == [1, 1, 3, 3, 5]
    # Holm: each alone would be significant, together neither is (0.026 > 0.05/2 stops the step-down) ...
    assert rank_groups(["3", "2", "1"], [0.04, 0.026]) == [1, 1, 1]
    # ... while 0.001 <= 0.05/2 and then 0.04 <= 0.05/1 are both rejected
    assert rank_groups(["3", "2", "1"], [0.04, 0.001]) == [1, 2, 3]
    assert rank_groups(["3"], []) == [1]
    with pytest.raises(ValueError):
        rank_groups(["3", "2"], [])


def test_rank_groups_from_constructed_flags() -> None:
    """Four rows over two cells of 1,000 samples: A and B differ by 3 samples (one group), B and C by 200
    (significant), C and D are the same flags (one group)."""
    n = 1000
    base = np.zeros(n, bool)
    base[:500] = True

    def shifted(k: int) -> np.ndarray:
        flags = base.copy()
        flags[500:500 + k] = True
        return flags

    rows = {"A": [shifted(203), shifted(203)], "B": [shifted(200), shifted(200)], "C": [base, base],
            "D": [base, base]}
    order = sorted(rows, key=lambda r: -sum(f.mean() for f in rows[r]))
    means = [f"{50 * sum(f.mean() for f in rows[r]):.2f}" for r in order]
    p_values = [exact_sign_flip(list(zip(rows[a], rows[b])))[1] for a, b in zip(order, order[1:])]
    assert order == ["A", "B", "C", "D"]
    assert rank_groups(means, p_values) == [1, 1, 3, 3]


def test_the_worked_example_of_docs_leaderboard() -> None:
    """docs/leaderboard.md, *Rank groups*: the numbers of its table."""
    p_values = [mcnemar_p(PairedCounts(150, 115)), mcnemar_p(PairedCounts(700, 130)),
                mcnemar_p(PairedCounts(100, 73))]
    assert [round(p, 4) for p in (p_values[0], p_values[2])] == [0.0365, 0.0478] and p_values[1] < 1e-94
    assert holm_reject(p_values) == [False, True, False]
    assert rank_groups(["41.20", "41.14", "40.19", "40.15"], p_values) == [1, 1, 3, 3]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "leaderboard.md").read_text(encoding="utf-8")
    assert "| B | 41.14 | 150 / 115 | 0.0365 |" in docs and "| D | 40.15 | 100 / 73 | 0.0478 |" in docs
