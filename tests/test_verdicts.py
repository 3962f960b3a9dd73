"""benchmark.verdicts: every branch of the verdict scheme on synthetic intervals, estimates, and the permutation null."""

import math

import numpy as np
import pytest
from scipy import stats

from benchmark import claims, paper
from benchmark.verdicts import (
    HELD,
    MIN_N,
    Estimate,
    classify,
    from_values,
    judge_interval,
    max_gain_null,
    null_summary,
    supplied,
)

DELTA = 0.3


def est(low, high, low90=None, high90=None, n=5, sd=0.4):
    """An estimate with the given 95 % (and 90 %, default: 90 % of the half-widths) intervals."""
    mean = (low + high) / 2
    low90 = mean - 0.8 * (mean - low) if low90 is None else low90
    high90 = mean + 0.8 * (high - mean) if high90 is None else high90
    return Estimate(mean, low, high, n, sd, low90, high90)


@pytest.mark.parametrize(
    "interval, reference, expected",
    [
        ((-2.0, -0.5), 1.2, "contradicted"),  # entirely below 0
        ((-0.2, -0.05), 1.2, "contradicted"),  # also inside ±Δ: contradicted is checked first
        ((-0.1, 0.2), 1.2, "negligible"),  # 90 % interval inside ±Δ
        ((0.05, 0.2), 1.2, "held-smaller"),  # above 0 and surely below Δ: held (the order), not negligible
        ((1.5, 2.5), 1.2, "held-larger"),  # L > P scaled
        ((0.5, 1.5), 1.2, "consistent"),  # L > 0, P scaled inside
        ((0.5, 0.9), 1.2, "held-smaller"),  # L > 0, U < P scaled (and not inside ±Δ)
        ((-0.2, 0.6), 1.2, "no-effect-of-size"),  # straddles 0, U < P scaled
        ((-0.2, 1.5), 1.2, "inconclusive"),  # straddles 0, P scaled inside
        ((0.5, 0.9), None, "held-larger"),  # no paper figure: Δ stands in (0.5 > 0.3)
        ((0.2, 0.9), None, "consistent"),  # Δ inside
        ((-0.5, 0.25), None, "no-effect-of-size"),  # U < Δ, but L90 below −Δ: not negligible
        ((-0.5, 0.9), None, "inconclusive"),
    ],
)
def test_every_effect_branch(interval, reference, expected):
    assert classify(est(*interval), DELTA, reference) == expected


def test_equivalence_branches():
    margin = math.log(1.05)
    assert classify(est(-0.04, 0.045, -0.03, 0.04), margin, test="equivalence") == "held"
    assert classify(est(0.06, 0.3), margin, test="equivalence") == "contradicted"  # entirely above +Δ
    assert classify(est(-0.3, -0.06), margin, test="equivalence") == "contradicted"  # entirely below −Δ
    assert classify(est(-0.1, 0.1), margin, test="equivalence") == "inconclusive"
    assert classify(est(0.01, 0.3), margin, test="equivalence") == "inconclusive"  # an effect, not shown outside


def test_fewer_than_three_seeds_get_no_verdict():
    assert MIN_N == 3
    for values in ([1.0], [1.0, 1.2], []):
        v = judge_interval(from_values(values), DELTA, 1.2)
        assert v["verdict"] == "too-few-seeds" and "no verdict" in v["verdict_text"]
    # Two seeds with a clear interval would otherwise be held.
    assert classify(Estimate(5.0, 4.0, 6.0, 2, 0.1, 4.5, 5.5), DELTA, 1.2) == "too-few-seeds"
    assert judge_interval(from_values([1.0, 1.1, 1.2]), DELTA, 1.2)["verdict"] != "too-few-seeds"


def test_texts_carry_the_bound_and_the_sizing():
    v = judge_interval(est(-0.2, 0.6), DELTA, 1.2)
    assert v["verdict_label"] == "no effect of the paper's size" and "at most +0.60" in v["verdict_text"]
    v = judge_interval(est(-0.2, 1.5), DELTA, 1.2)
    assert v["verdict"] == "inconclusive"
    assert f"MDE {v['mde']:.2f} at n = 5, {v['n_needed']} seeds for 80 % power at Δ" in v["verdict_text"]
    assert judge_interval(est(0.5, 0.9), DELTA, None)["verdict_label"] == "held, larger than Δ"
    assert judge_interval(est(0.5, 1.5), DELTA, 1.2)["verdict_label"] == "consistent with the paper"


def test_permutation_null_gates_the_held_verdicts():
    e = est(0.5, 1.5)
    assert judge_interval(e, DELTA, 1.2, null={"p": 0.01, "q95": 0.4})["verdict"] == "consistent"
    v = judge_interval(e, DELTA, 1.2, null={"p": 0.2, "q95": 1.7})
    assert v["verdict"] == "inconclusive" and "p = 0.20" in v["verdict_text"]
    # the null only guards "held": a contradiction stays one
    assert judge_interval(est(-2, -1), DELTA, 1.2, null={"p": 1.0, "q95": 0.4})["verdict"] == "contradicted"


def test_from_values_is_the_t_interval():
    x = [1.0, 2.0, 4.0]
    e = from_values(x)
    sd = float(np.std(x, ddof=1))
    for q, (low, high) in ((0.975, (e.low, e.high)), (0.95, (e.low90, e.high90))):
        half = stats.t.ppf(q, 2) * sd / math.sqrt(3)
        assert (low, high) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))
    assert e.n == 3 and e.sd == pytest.approx(sd)


def test_supplied_estimate_judged_like_per_seed_values():
    """An interval made elsewhere (timings, a bootstrap) takes the same path as per-seed values."""
    x = [0.01, -0.02, 0.015, 0.0, 0.02, -0.01]
    e = from_values(x)
    s = supplied(e.mean, e.low, e.high, e.n, e.sd)  # its 90 % interval from sd and n
    assert (s.low90, s.high90) == (pytest.approx(e.low90), pytest.approx(e.high90))
    t = supplied(e.mean, e.low, e.high, e.n)  # no sd: the 95 % interval narrowed by the t quantiles' ratio
    assert (t.low90, t.high90) == (pytest.approx(e.low90), pytest.approx(e.high90))
    margin = math.log(1.05)
    assert judge_interval(s, margin, test="equivalence") == judge_interval(e, margin, test="equivalence")
    boot = supplied(0.5, 0.3, 0.7, 40, se=0.1, low90=0.33, high90=0.67)  # n in architectures, sized from se
    v = judge_interval(boot, 0.1, None, units="architectures")
    assert v["verdict"] == "held-larger" and v["mde"] == pytest.approx((1.959964 + 0.841621) * 0.1, rel=1e-5)


def test_max_gain_null_enumerates_relabellings():
    # one seed, one space: each value in turn as EnNAS minus the smallest other
    assert sorted(max_gain_null([[[3.0, 1.0, 2.0]]])) == pytest.approx([-1.0, 1.0, 2.0])
    # two seeds: the mean over seeds of every pair of relabellings, 3 × 3 of them
    null = max_gain_null([[[3.0, 1.0, 2.0]], [[0.0, 0.0, 1.0]]])
    assert len(null) == 9 and sorted(null)[-1] == pytest.approx((2.0 + 1.0) / 2)
    s = null_summary(null, 1.5)
    assert s["p"] == pytest.approx(1 / 9) and s["mean"] == pytest.approx(null.mean())


def test_top1_max_is_held_in_at_most_5_percent_of_null_studies(monkeypatch):
    """Five methods with the same top-1 distribution per seed, 3 seeds: the largest gain is biased upward (its
    interval is above 0 far more often than 5 %), and the permutation null keeps 'held' at 5 % or below."""
    # the verdict is what is tested here; the simulated sizing (about a second a study) is tested in test_power
    monkeypatch.setattr(
        claims.power, "max_gain_plan", lambda *a, **k: {"mde": math.nan, "power": math.nan, "n_needed": None}
    )
    c = next(x for x in paper.CLAIMS if x.id == "top1_max")
    rng = np.random.default_rng(7)
    held = above_zero = 0
    for _ in range(200):
        shift = rng.normal(0.0, 0.3, 3)  # a seed moves every method alike (data split, schedule)
        values = {("s1", label): {s: 90 + shift[s] + rng.normal(0, 0.21) for s in range(3)} for label in c.labels}
        row = claims.pooled(c, values)
        held += row["verdict"] in HELD
        above_zero += row["low"] > 0
    assert held <= 10, held
    assert above_zero > 20, "the null must have something to correct: the max's interval is biased above 0"
