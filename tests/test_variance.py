"""benchmark.variance: the two variance components, their intervals, the design they choose, the FLOPs line."""

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.variance import components, design, flops_slope


def simulated(s2_search: float, s2_retrain: float, runs: int, k: int, labels: int, seed: int) -> pd.DataFrame:
    """Retraining-seed rows of `labels` labels x `runs` runs x `k` seeds from the random-effects model."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(labels):
        for run in range(runs):
            a = rng.normal(0, math.sqrt(s2_search))
            for index in range(k):
                y = 90 + label + a + rng.normal(0, math.sqrt(s2_retrain))
                rows.append({"label": f"m{label}", "space": "s1", "seed": run, "index": index, "top1": y})
    return pd.DataFrame(rows)


def test_components_recover_known_variances():
    comp = components(simulated(0.04, 0.09, runs=40, k=3, labels=6, seed=1))
    assert comp["s2_search"] == pytest.approx(0.04, abs=0.015)
    assert comp["s2_retrain"] == pytest.approx(0.09, rel=0.12)
    assert comp["df_within"] == 6 * 40 * 2 and comp["df_between"] == 6 * 39
    for key in ("s2_search", "s2_retrain"):
        low, high = comp[f"{key}_ci"]
        assert low <= comp[key] <= high


def test_intervals_cover_the_truth_about_95_percent():
    hits = {"s2_search": 0, "s2_retrain": 0}
    for seed in range(60):
        comp = components(simulated(0.05, 0.05, runs=3, k=3, labels=6, seed=seed), seed=seed)
        hits["s2_search"] += comp["s2_search_ci"][0] <= 0.05 <= comp["s2_search_ci"][1]
        hits["s2_retrain"] += comp["s2_retrain_ci"][0] <= 0.05 <= comp["s2_retrain_ci"][1]
    assert all(h >= 52 for h in hits.values()), hits  # 95 % of 60 is 57; a binomial 2.5 % tail is about 53


def test_one_retraining_seed_gives_no_decomposition():
    comp = components(simulated(0.05, 0.05, runs=3, k=1, labels=2, seed=0))
    assert "s2_search" not in comp and "note" in comp


def test_design_retrains_more_when_retraining_noise_dominates_and_retraining_is_cheap():
    noisy = design({"s2_search": 0.01, "s2_retrain": 0.2}, c_first=600, c_retrain=100)
    quiet = design({"s2_search": 0.2, "s2_retrain": 0.01}, c_first=600, c_retrain=100)
    assert noisy["k_star"] == pytest.approx(math.sqrt(6 * 20))
    assert noisy["best_k"] == 5 and quiet["best_k"] == 1  # k* = 11 lies past the range tried; 0.39 rounds to 1
    row = noisy["rows"][0]
    assert row["cpu_hours"] == pytest.approx(2 * 8 * 700 / 3600)


def test_flops_slope_is_the_least_squares_line_of_architecture_means(tmp_path):
    gt = pd.DataFrame(
        {
            "arch": ["a", "a", "b", "b", "c", "c"],
            "seed": [0, 1] * 3,
            "test_top1": [90.0, 90.2, 91.0, 91.2, 92.0, 92.2],
            "mflops": [2.0, 2.0, 4.0, 4.0, 6.0, 6.0],
        }
    )
    gt.to_csv(tmp_path / "gt.csv", index=False)
    fit = flops_slope(tmp_path / "gt.csv")
    assert fit["slope"] == pytest.approx(0.5) and fit["median_mflops"] == 4.0 and fit["architectures"] == 3


def test_the_readme_command_runs_on_the_committed_runs(capsys):
    from pathlib import Path

    from benchmark.variance import main

    root = Path(__file__).resolve().parent.parent / "results" / "proxy"
    assert main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "Where the top-1 noise is" in out or "one retraining seed per run" in out
    assert main([str(root / "missing")]) == 2
