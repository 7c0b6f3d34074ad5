"""Small, exact statistics for eval results (used by reports, compare and the gate).

- wilson(k, n): the Wilson score 95% interval of a pass rate k/n;
- mcnemar_exact(b, c): the exact two-sided McNemar p-value from the discordant pairs
  (b = passed only in A, c = passed only in B): a binomial test of b against Binomial(b + c, 1/2);
- min_discordant(alpha): the fewest discordant pairs with which that test can reach alpha at all;
- paired_bootstrap(a, b): the delta mean(b) - mean(a) of paired pass/fail outcomes with a percentile
  bootstrap 95% interval (resampling pairs, so the pairing is kept);
- compare(base, cand): the gate's figures for two paired pass/fail vectors, in percent and points.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 0.5), capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def min_discordant(alpha: float) -> int:
    """Smallest n with 2 * 0.5**n < alpha: fewer paired items can never be significant."""
    return math.floor(math.log2(2 / alpha)) + 1


def discordant(a, b) -> tuple[int, int]:
    """(b, c) of McNemar's table: pairs that passed only in A, and only in B."""
    import numpy as np
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return int((a & ~b).sum()), int((~a & b).sum())


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(delta, low, high): delta = mean(b) - mean(a) over pairs; the interval resamples pairs."""
    import numpy as np
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    if len(a) == 0:
        return 0.0, 0.0, 0.0
    diff = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(diff.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def compare(base, cand, iters: int = 2000) -> dict:
    """Paired comparison of two pass/fail vectors over the same items: rates in %, delta and its bootstrap
    interval in points, fixes (passed only by cand), breaks (passed only by base) and the McNemar p."""
    import numpy as np
    base, cand = np.asarray(base, bool), np.asarray(cand, bool)
    n = len(base)
    breaks, fixes = discordant(base, cand)
    b_rate = 100 * base.mean() if n else 0.0
    c_rate = 100 * cand.mean() if n else 0.0
    _, lo, hi = paired_bootstrap(base, cand, n_boot=iters)
    return {"n": n, "base_pass": int(base.sum()), "cand_pass": int(cand.sum()),
            "base_rate": round(float(b_rate), 2), "cand_rate": round(float(c_rate), 2),
            "delta": round(float(c_rate - b_rate), 2), "fixes": fixes, "breaks": breaks,
            "p": mcnemar_exact(fixes, breaks), "ci": [round(100 * lo, 2), round(100 * hi, 2)]}
