"""The seed statistics against cases with a known answer: t quantiles from tables, intervals that
cover the true mean at their nominal rate, a constant difference, the metric's direction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from multimodel.experiments.statistics import (
    bootstrap_interval,
    paired_difference,
    seeds_to_establish,
    t_cdf,
    t_interval,
    t_quantile,
)


@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 10, 2.228139),
    (0.95, 5, 2.015048), (0.995, 30, 2.749996), (0.975, 1000, 1.962339), (0.5, 3, 0.0),
])
def test_t_quantile_matches_published_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)
    assert t_cdf(expected, df) == pytest.approx(p, abs=1e-6)  # the table rounds to 6 decimals
    scipy_stats = pytest.importorskip("scipy.stats")
    assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), abs=1e-9)


def test_t_interval_covers_the_true_mean_at_the_nominal_rate():
    """Per-seed differences drawn from N(1.5, 2²): over 4,000 draws of 3 seeds the 95 % t-interval
    covers 1.5 in 95 % of them (binomial sd 0.34 %); the bootstrap, which cannot reach beyond
    the three values, covers it in at most 75 %."""
    rng = np.random.default_rng(7)
    draws, n, true_mean = 4000, 3, 1.5
    t_hits = boot_hits = 0
    for _ in range(draws):
        d = rng.normal(true_mean, 2.0, size=n)
        lo, hi = t_interval(d)
        t_hits += lo <= true_mean <= hi
        lo, hi = bootstrap_interval(d, resamples=400)
        boot_hits += lo <= true_mean <= hi
    assert abs(t_hits / draws - 0.95) < 0.015
    assert boot_hits / draws < 0.78


def test_t_interval_coverage_with_more_seeds_and_a_skewed_distribution():
    """Ten seeds of a moderately skewed (gamma, shape 4) difference: coverage still near 95 %."""
    rng = np.random.default_rng(11)
    draws, hits = 3000, 0
    for _ in range(draws):
        d = rng.gamma(4.0, 1.0, size=10) - 4.0 + 0.3  # true mean 0.3
        lo, hi = t_interval(d)
        hits += lo <= 0.3 <= hi
    assert abs(hits / draws - 0.95) < 0.02


def test_a_constant_difference_gives_a_zero_width_interval_at_its_value():
    a = {0: 80.0, 1: 75.5, 2: 90.25}
    b = {s: v - 2.5 for s, v in a.items()}
    d = paired_difference(a, b, "accuracy")
    assert d.values == [2.5, 2.5, 2.5]
    assert (d.mean, d.std) == (2.5, 0.0)
    assert d.t_low == d.t_high == 2.5
    assert d.boot_low == pytest.approx(2.5) and d.boot_high == pytest.approx(2.5)
    assert d.established and d.verdict == "better" and d.same_sign
    assert d.seeds_needed is None


def test_direction_of_lower_is_better_metrics_and_unpaired_seeds():
    joint = {0: 70.0, 1: 72.0, 2: 71.0, 3: 50.0}
    single = {0: 80.0, 1: 81.0, 2: 80.5}  # seed 3 missing: left out, not paired
    wer = paired_difference(joint, single, "wer")
    assert wer.seeds == [0, 1, 2]
    assert wer.mean == pytest.approx(-9.5)
    assert wer.established and wer.verdict == "better"  # lower WER
    assert paired_difference(joint, single, "bleu").verdict == "worse"


def test_differences_within_noise_are_not_established_and_say_how_many_seeds_would_be():
    d = paired_difference({0: 1.0, 1: -0.5, 2: 2.0}, {0: 0.0, 1: 0.0, 2: 0.0}, "accuracy")
    assert not d.established and d.verdict == "no established difference"
    assert d.t_low < 0 < d.t_high
    assert not d.same_sign
    # mean 0.833, std 1.258: t_{n-1} * 1.258 / sqrt(n) < 0.833 first at n = 12.
    assert d.seeds_needed == 12 == seeds_to_establish(d.mean, d.std)
    one = paired_difference({0: 1.0}, {0: 0.0}, "accuracy")
    assert one.verdict == "one seed" and math.isnan(one.t_low)


def test_what_would_change_groups_the_differences_that_are_not_established():
    from multimodel.experiments.report import what_would_change

    zero = {0: 0.0, 1: 0.0, 2: 0.0}
    noisy = paired_difference({0: 1.0, 1: -0.5, 2: 2.0}, zero, "accuracy")  # needs 12 seeds
    clear = paired_difference({0: 5.0, 1: 5.1, 2: 4.9}, zero, "accuracy")  # established: left out
    same = paired_difference({0: 3.0, 1: 3.0, 2: 3.0}, {0: 3.0, 1: 3.0, 2: 3.0}, "accuracy")
    one = paired_difference({0: 1.0}, {0: 0.0}, "accuracy")
    lines = what_would_change([("a", noisy), ("b", clear), ("c", same), ("d", one), ("e", one)])
    assert lines == [
        "One seed, so no interval, for d, e: at least 3 seeds are needed to say anything.",
        "Identical in every seed, so no number of seeds would separate the arms: c.",
        "Seeds that would establish each remaining difference if its seed-to-seed spread stayed as observed:"
        " a (Δ +0.83, std 1.26): about 12.",
    ]
    assert what_would_change([("b", clear)]) == []
