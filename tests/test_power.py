"""benchmark.power: MDE and n needed against independent computations, TOST power by simulation, the CLI."""

import math

import numpy as np
import pytest
from scipy import stats
from test_report import make_suite

from benchmark import power


def power_by_hand(effect, sd, n):
    """Two-sided one-sample t test at α 0.05: P(|T| > t crit) with T noncentral t, written out here."""
    crit = stats.t.ppf(0.975, n - 1)
    nc = effect * math.sqrt(n) / sd
    return stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)


@pytest.mark.parametrize("sd, n", [(0.21, 3), (1.0, 5), (0.05, 12)])
def test_mde_solves_power_080(sd, n):
    m = power.mde(sd, n)
    # independently: the first effect on a fine grid where the hand-written power reaches 0.8
    grid = np.linspace(0, 6 * sd, 60_001)
    first = grid[np.argmax(power_by_hand(grid, sd, n) >= 0.8)]
    assert m == pytest.approx(first, abs=6 * sd / 60_000 * 1.5)
    assert power_by_hand(m, sd, n) == pytest.approx(0.8, abs=1e-6)


def test_mde_by_simulation():
    """At the MDE, 80 % of simulated paired studies reject at 5 %."""
    sd, n = 1.0, 5
    m = power.mde(sd, n)
    x = np.random.default_rng(0).normal(m, sd, size=(40_000, n))
    p = stats.ttest_1samp(x, 0.0, axis=1).pvalue
    assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.01)


def test_n_needed_is_the_first_n_with_80_percent():
    for delta, sd in ((0.3, 0.21), (0.05, 0.029), (1.0, 1.032)):
        n = power.n_needed(delta, sd)
        assert power_by_hand(delta, sd, n) >= 0.8 and (n == 2 or power_by_hand(delta, sd, n - 1) < 0.8)
    assert power.n_needed(0.3, 0.0001, n_min=3) == 3  # a floor: no verdict below 3 seeds
    assert power.n_needed(0.3, math.nan) is None


def test_power_survives_huge_noncentrality():
    assert power.t_power(1.0, 0.01, 30) == 1.0  # scipy's lower tail is NaN here; it is below 1e-20
    assert power.t_power(-1.0, 0.5, 5) == pytest.approx(power.t_power(1.0, 0.5, 5))


def test_tost_power_by_simulation():
    sd, n, margin = 1.0, 10, 0.9
    x = np.random.default_rng(1).normal(0.0, sd, size=(40_000, n))
    half = stats.t.ppf(0.95, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    inside = (x.mean(1) - half > -margin) & (x.mean(1) + half < margin)
    assert power.tost_power(margin, sd, n) == pytest.approx(inside.mean(), abs=0.01)
    m = power.tost_mde(sd, n)
    assert power.tost_power(m, sd, n) == pytest.approx(0.8, abs=1e-6)
    k = power.tost_n_needed(margin, sd)
    assert power.tost_power(margin, sd, k) >= 0.8 > power.tost_power(margin, sd, k - 1)


def test_cli_plans_a_study(tmp_path, capsys):
    make_suite(tmp_path)
    assert power.main([str(tmp_path), "--n", "5", "10"]) == 0
    out = capsys.readouterr().out
    assert "| MDE at n=5 | power at n=5 | MDE at n=10 | power at n=10 |" in out
    rows = {line.split(" | ")[0][2:]: line for line in out.splitlines() if line.startswith("| ")}
    assert rows["cost_vs_spos"].split(" | ")[2] == "TOST" and rows["top1_avg"].split(" | ")[2] == "t"
    assert {"top1_avg", "ds_diversity", "tau_ennas_vs_spos"} <= set(rows)


@pytest.mark.parametrize("args, message", [(["--n", "1"], "at least 2"), (["nope"], "is not a folder")])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    make_suite(tmp_path)
    argv = [str(tmp_path / args[0])] if args[0] == "nope" else [str(tmp_path), *args]
    assert power.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


# --- the largest gain against its label-permutation null -------------------------------------------------
def test_max_gain_power_by_exact_permutation_tests(monkeypatch):
    """The simulated power equals the share of studies that the report's own test (verdicts.max_gain_null,
    enumerated exactly, p < 0.05) holds, on independently drawn studies; and about 5 % with no gain at all."""
    from benchmark.verdicts import max_gain_null, null_summary

    monkeypatch.setattr(power, "SIM_STUDIES", 4000)
    n, labels, sd = 4, 4, 1.0
    rng = np.random.default_rng(11)
    for gain in (0.0, 1.0):
        rejected = []
        for _ in range(1500):
            x = rng.normal(0.0, sd, size=(n, labels))
            x[:, 0] += gain
            observed = float(np.mean(x[:, 0] - x[:, 1:].min(axis=1)))
            rejected.append(null_summary(max_gain_null([[list(row)] for row in x]), observed)["p"] < 0.05)
        assert power.max_gain_power(gain, sd, n, labels) == pytest.approx(np.mean(rejected), abs=0.035), gain
    assert power.max_gain_power(0.0, sd, 8, 5) == pytest.approx(0.05, abs=0.012)


def test_max_gain_plan_mde_and_n_needed_reach_80_percent():
    sd, delta, n = 0.2, 0.3, 8
    p = power.max_gain_plan(sd, delta, n, 5)
    assert power.max_gain_power(p["mde"], sd, n, 5) >= 0.8 > power.max_gain_power(0.98 * p["mde"], sd, n, 5)
    assert p["power"] == power.max_gain_power(delta, sd, n, 5) > 0.8
    k = p["n_needed"]
    assert power.max_gain_power(delta, sd, k, 5) >= 0.8 and (k == 2 or power.max_gain_power(delta, sd, k - 1, 5) < 0.8)
    # the max's bias is not an effect: against 0 a t test would call a smaller gain detectable than the null does
    assert p["mde"] > 0.5 * power.mde(sd * math.sqrt(2), n)


def test_max_gain_plan_when_the_null_cannot_reject(monkeypatch):
    """Two labels and three seeds give 8 relabellings: the smallest p is 1/8, so nothing is detectable there;
    the n needed is where it first can be and has the power."""
    p = power.max_gain_plan(0.2, 0.3, 3, 2, n_min=3)
    assert math.isnan(p["mde"]) and p["power"] == 0.0
    assert p["n_needed"] >= 5 and power.max_gain_power(0.3, 0.2, p["n_needed"], 2) >= 0.8
    monkeypatch.setattr(power, "SIM_N_MAX", 16)
    assert power.max_gain_plan(50.0, 0.3, 8, 5)["n_needed"] is None  # beyond SIM_N_MAX seeds: unknown
