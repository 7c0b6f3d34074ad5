"""Wilson intervals, exact McNemar and the paired bootstrap against hand-computed values."""

import pytest

from evals.stats import discordant, mcnemar_exact, paired_bootstrap, wilson


def test_wilson_hand_computed():
    # k=8, n=10, z=1.96: centre = (0.8 + 0.19208) / 1.38416 = 0.716737; half = 1.96*sqrt(0.016+0.009604)/1.38416
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4901624, abs=1e-6)
    assert hi == pytest.approx(0.9433178, abs=1e-6)


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611252, abs=1e-6)  # z^2/(n+z^2) = 3.8415/23.8415
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.1611252, abs=1e-6)


def test_mcnemar_exact_hand_computed():
    # b=1, c=9: n=10; P(X<=1) = (1 + 10) / 1024; two-sided = 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    # b=0, c=5: 2 * 1/32
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # b=2, c=12: 2 * (1 + 14 + 91) / 16384
    assert mcnemar_exact(2, 12) == pytest.approx(2 * (1 + 14 + 91) / 2 ** 14)


def test_discordant_and_bootstrap():
    a = [1, 1, 0, 0, 0, 0, 1, 0]
    b = [1, 0, 1, 1, 1, 0, 1, 1]
    assert discordant(a, b) == (1, 4)
    delta, lo, hi = paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert delta == pytest.approx(3 / 8)
    assert lo < delta < hi and -1 <= lo and hi <= 1
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap([1], [1, 0])
