"""benchmark.ranking: rank statistics on cases with hand-computed answers, BCa intervals, ceilings and output."""

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.ranking import (
    BATCH,
    bootstrap_interval,
    bootstrap_intervals,
    fidelity,
    groundtruth_means,
    kendall_tau,
    load_groundtruth,
    mean_ceiling,
    ranking_table,
    rho,
    seed_ceiling,
    spearman_rho,
    tau_b,
    top_indices,
    topk_overlap,
    write_ranking_csv,
)


def test_identical_order_is_perfect():
    x = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    y = [30.0, 10.0, 40.0, 15.0, 90.0, 26.0]
    assert kendall_tau(x, y) == pytest.approx(1.0)
    assert spearman_rho(x, y) == pytest.approx(1.0)
    assert topk_overlap(x, y, 3) == 1.0


def test_reversed_order():
    x = np.arange(8.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    assert spearman_rho(x, -x) == pytest.approx(-1.0)
    assert topk_overlap(x, -x, 4) == 0.0


def test_one_adjacent_swap_in_five():
    # 10 pairs, 1 discordant: τ = (9 - 1) / 10; Σd² = 2: ρ = 1 - 6·2 / (5·24).
    x, y = [1, 2, 3, 4, 5], [2, 1, 3, 4, 5]
    assert kendall_tau(x, y) == pytest.approx(0.8)
    assert spearman_rho(x, y) == pytest.approx(0.9)


def test_tau_b_with_ties_matches_hand_computation():
    # Pairs of x=[1,2,2,3], y=[2,1,3,4]: (0,1) discordant, (1,2) tied in x, four concordant.
    # τ-b = (4 - 1) / sqrt((6 - 1)(6 - 0)); τ-a would give 3 / 6.
    assert kendall_tau([1, 2, 2, 3], [2, 1, 3, 4]) == pytest.approx(3 / math.sqrt(30))
    # Tied on both sides, one pair each: 4 concordant, τ-b = 4 / sqrt(5 · 5).
    assert kendall_tau([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(0.8)


@pytest.mark.parametrize("seed", range(5))
def test_tau_and_rho_agree_with_scipy_on_tied_data(seed):
    # The module computes both in numpy for bootstrap speed; scipy is the reference.
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 5, size=25).astype(float), rng.integers(0, 5, size=25).astype(float)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_vectorised_tau_and_rho_row_by_row():
    """Each row of a batch (a bootstrap's resamples) gives the same as scipy on that row, along either axis."""
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 6, size=(7, 30)).astype(float), rng.normal(size=(7, 30)).round(1)
    taus, rhos = tau_b(x, y), rho(x, y)
    for i in range(7):
        assert taus[i] == pytest.approx(stats.kendalltau(x[i], y[i]).statistic, abs=1e-12)
        assert rhos[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic, abs=1e-12)
    assert tau_b(x.T, y.T, axis=0) == pytest.approx(taus)
    assert math.isnan(tau_b(np.ones((2, 5)), y[:2, :5])[0])


def test_constant_side_is_undefined():
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman_rho([1, 2, 3], [5, 5, 5]))


def test_topk_overlap_constructed_case():
    truth = [10, 9, 8, 7, 6, 5]  # top-2: items 0, 1; top-3: 0, 1, 2
    pred = [9, 10, 1, 2, 3, 4]  # top-2: items 1, 0; top-3: 1, 0, 5
    assert topk_overlap(pred, truth, 2) == 1.0
    assert topk_overlap(pred, truth, 3) == pytest.approx(2 / 3)
    assert topk_overlap(pred, truth, 6) == 1.0


def test_top_indices_largest_first_ties_to_the_earlier_index():
    assert top_indices([1, 5, 5, 3, 5], 2).tolist() == [1, 2]
    assert top_indices([1, 5, 5, 3, 5], 4).tolist() == [1, 2, 4, 3]


def test_topk_ties_go_to_the_earlier_index():
    # pred ties items 0, 1, 2; the earlier two win, so pred's top-2 is {0, 1} and the truth's is {3, 2}.
    assert topk_overlap([5, 5, 5, 0], [0, 1, 2, 3], 2) == 0.0
    assert topk_overlap([5, 5, 5, 0], [3, 2, 1, 0], 2) == 1.0


def test_topk_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="k must be"):
        topk_overlap([1, 2, 3], [1, 2, 3], 4)


def test_mismatched_or_nan_input_is_rejected():
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        spearman_rho([1, 2, math.nan], [1, 2, 3])


def noisy_pair(n: int = 40, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A moderately correlated pair: y is x plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + rng.normal(size=n)


def test_bootstrap_contains_estimate_and_is_reproducible():
    x, y = noisy_pair()
    low, high = bootstrap_interval(tau_b, x, y, n_boot=300, seed=7)
    assert low < kendall_tau(x, y) < high
    assert bootstrap_interval(tau_b, x, y, n_boot=300, seed=7) == (low, high)
    assert bootstrap_interval(tau_b, x, y, n_boot=300, seed=8) != (low, high)
    half_low, half_high = bootstrap_interval(tau_b, x, y, n_boot=300, seed=7, level=0.5)
    assert low < half_low < half_high < high


def test_bca_interval_is_scipys():
    """The interval is scipy.stats.bootstrap's BCa with items resampled in pairs, here against scipy's own τ."""
    x, y = noisy_pair()
    ours = bootstrap_interval(tau_b, x, y, n_boot=2000, seed=11)

    def scipy_tau(a, b):
        return stats.kendalltau(a, b).statistic

    kw = {"paired": True, "vectorized": False, "method": "BCa", "batch": BATCH, "n_resamples": 2000, "rng": 11}
    ref = stats.bootstrap((x, y), scipy_tau, **kw).confidence_interval
    assert ours == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    # the 90 % interval reuses the same resamples and is narrower
    (i95, i90), se = bootstrap_intervals(tau_b, x, y, levels=(0.95, 0.90), n_boot=2000, seed=11)
    assert i95 == ours and i95[0] < i90[0] < i90[1] < i95[1] and 0 < se < 0.2


def test_bootstrap_is_fast_enough():
    """10,000 resamples of τ on 40 architectures: well under a second per interval (vectorised τ)."""
    import time

    x, y = noisy_pair(40)
    t = time.perf_counter()
    bootstrap_interval(tau_b, x, y)
    assert time.perf_counter() - t < 2.0  # ~0.2 s on one free core; slack for a busy machine


def test_bootstrap_of_perfect_ranking_is_a_point():
    x = np.arange(20.0)
    assert bootstrap_interval(tau_b, x, 2 * x, n_boot=200) == pytest.approx((1.0, 1.0))
    assert bootstrap_interval(rho, x, 2 * x, n_boot=200) == pytest.approx((1.0, 1.0))


def test_bootstrap_with_undefined_resamples():
    # Resamples that miss item 3 are all-equal (τ undefined); where defined τ is always 1: the point.
    x = [0.0, 0.0, 0.0, 1.0]
    assert bootstrap_interval(tau_b, x, x, n_boot=200) == pytest.approx((1.0, 1.0))
    low, high = bootstrap_interval(tau_b, [1, 1, 1], [1, 2, 3], n_boot=50)
    assert math.isnan(low) and math.isnan(high)
    # undefined on some resamples and varying on the rest: BCa is undefined, not silently biased
    low, high = bootstrap_interval(tau_b, [0.0, 0.0, 1.0, 2.0], [0.0, 1.0, 0.5, 2.0], n_boot=200)
    assert math.isnan(low) and math.isnan(high)


def synthetic_truth(n_arch: int = 12) -> pd.DataFrame:
    """n_arch architectures × seeds 0 and 1: accuracy rises with the index, mflops with it, params against it."""
    rows = []
    for i in range(n_arch):
        for seed in (0, 1):
            rows.append(
                {
                    "arch": f"a{i:02d}",
                    "seed": seed,
                    "test_top1": 90.0 + 0.5 * i + (0.1 if seed else -0.1),
                    "search_top1": 80.0,
                    "mflops": 5.0 + 0.2 * i,
                    "params": 1e5 - 1e3 * i,
                    "seconds": 60.0,
                }
            )
    return pd.DataFrame(rows)


def supernet_scores() -> dict[str, float]:
    """Scores for a00..a09 only (plus one architecture the truth lacks), with ranks 5 and 6 from the top swapped."""
    scores = {f"a{i:02d}": float(i) for i in range(10)}
    scores["a04"], scores["a05"] = 5.0, 4.0
    scores["zz"] = 100.0
    return scores


def test_fidelity_rows_predictors_and_columns():
    rows = fidelity(supernet_scores(), synthetic_truth(), n_boot=100)
    assert [r["predictor"] for r in rows] == ["supernet", "flops", "params", "ceiling"]
    assert [r["n"] for r in rows] == [10, 10, 10, 10]  # the ceiling too is on the 10 common architectures
    supernet, flops, params, ceiling = rows
    assert supernet["kendall_tau"] == pytest.approx(43 / 45)  # one discordant pair of 45
    assert supernet["top5_overlap"] == pytest.approx(0.8) and supernet["top10_overlap"] == 1.0
    assert supernet["tau_low"] <= supernet["kendall_tau"] <= supernet["tau_high"]
    assert flops["kendall_tau"] == pytest.approx(1.0)  # mflops rises with accuracy
    assert params["kendall_tau"] == pytest.approx(-1.0)  # params falls with it
    assert ceiling["kendall_tau"] == pytest.approx(1.0)
    assert math.isnan(ceiling["spearman"]) and math.isnan(ceiling["top5_overlap"])
    assert all(set(r) == set(ceiling) for r in rows)  # every row has every column
    assert supernet["mean_score"] == pytest.approx(4.5)  # over the 10 common architectures only, not "zz"
    # τ(supernet) − τ(FLOPs) with its paired intervals, on the supernet row only
    assert supernet["flops_diff"] == pytest.approx(43 / 45 - 1.0)
    assert supernet["flops_diff_low"] <= supernet["flops_diff_low90"] <= supernet["flops_diff"]
    assert supernet["flops_diff"] <= supernet["flops_diff_high90"] <= supernet["flops_diff_high"] <= 1e-12
    assert math.isnan(flops["flops_diff"]) and math.isnan(supernet["ceiling_mean_tau"])
    # accuracies 0.5 apart with ±0.1 seed noise: nearly perfectly reliable, both ceilings near 1
    assert ceiling["seed_reliability"] > 0.99 and ceiling["gt_seeds"] == 2 and ceiling["ceiling_mean_tau"] > 0.95


def test_fidelity_topk_beyond_n_is_nan():
    scores = {f"a{i:02d}": float(i) for i in range(6)}
    rows = fidelity(scores, synthetic_truth(), n_boot=20)
    assert rows[0]["top5_overlap"] == 1.0 and math.isnan(rows[0]["top10_overlap"])


def test_fidelity_needs_three_common_architectures():
    with pytest.raises(ValueError, match="at least 3 architectures.*got 2"):
        fidelity({"a00": 1.0, "a01": 2.0, "nope": 3.0}, synthetic_truth(), n_boot=10)


def test_groundtruth_means_one_row_per_arch():
    means = groundtruth_means(synthetic_truth(4))
    assert list(means.columns) == ["arch", "test_top1", "n_seeds", "mflops", "params"]
    assert list(means["arch"]) == ["a00", "a01", "a02", "a03"]
    assert list(means["n_seeds"]) == [2, 2, 2, 2]
    assert means["test_top1"].tolist() == pytest.approx([90.0, 90.5, 91.0, 91.5])


def ceiling_frame() -> pd.DataFrame:
    """Seeds 3 and 5 over archs a..d with one adjacent swap; arch e has seed 3 only."""
    seed3 = {"a": 90.0, "b": 91.0, "c": 92.0, "d": 93.0, "e": 94.0}
    seed5 = {"a": 91.0, "b": 90.0, "c": 92.5, "d": 93.5}
    rows = [(a, 3, v) for a, v in seed3.items()] + [(a, 5, v) for a, v in seed5.items()]
    df = pd.DataFrame(rows, columns=["arch", "seed", "test_top1"])
    return df.assign(mflops=5.0, params=1e5)


def test_seed_ceiling_on_constructed_seeds():
    out = seed_ceiling(ceiling_frame(), n_boot=100)
    assert out["seeds"] == (3, 5) and out["n"] == 4  # e lacks seed 5
    assert out["kendall_tau"] == pytest.approx(2 / 3)  # 6 pairs, 1 discordant
    # 4 architectures: some resamples are all ties (τ undefined) and the BCa interval is undefined with them
    assert math.isnan(out["tau_low"]) and math.isnan(out["tau_high"])
    # Within-arch variances (ddof=1) 0.5, 0.5, 0.125, 0.125; e has one seed and no variance.
    assert out["pooled_sd"] == pytest.approx(math.sqrt(0.3125))


def test_seed_ceiling_uses_the_two_smallest_seeds():
    later = ceiling_frame().query("seed == 3").assign(seed=9, test_top1=lambda d: -d["test_top1"])
    out = seed_ceiling(pd.concat([ceiling_frame(), later]), n_boot=20)
    assert out["seeds"] == (3, 5) and out["kendall_tau"] == pytest.approx(2 / 3)


def test_mean_ceiling_on_synthetic_truth_with_known_reliability():
    """True accuracies N(0, 1), seed noise sd 0.7 (one seed's reliability 1 / 1.49 = 0.671), 2 seeds: the
    estimator recovers the reliability, and its τ is what a noise-free ranker (the true values themselves)
    reaches against the 2-seed means, and Greiner's relation on the true reliability."""
    rng = np.random.default_rng(5)
    true = rng.normal(size=1000)
    rows = [(f"a{i}", s, true[i] + rng.normal(0, 0.7)) for i in range(len(true)) for s in (0, 1)]
    df = pd.DataFrame(rows, columns=["arch", "seed", "test_top1"]).assign(mflops=1.0, params=1.0)
    out = mean_ceiling(df, n_boot=200)
    assert out["seed_reliability"] == pytest.approx(1 / 1.49, abs=0.03) and out["gt_seeds"] == 2
    means = df.groupby("arch", sort=False)["test_top1"].mean().to_numpy()
    empirical = stats.kendalltau(true, means).statistic
    r2 = 1 / (1 + 0.49 / 2)  # the true reliability of a 2-seed mean
    assert out["ceiling_mean_tau"] == pytest.approx(empirical, abs=0.03)
    assert out["ceiling_mean_tau"] == pytest.approx(2 / math.pi * math.asin(math.sqrt(r2)), abs=0.03)
    assert out["ceiling_mean_low"] < out["ceiling_mean_tau"] < out["ceiling_mean_high"]
    # the old ceiling, two single seeds, is lower: it compares one noisy seed with another
    wide = df.pivot(index="arch", columns="seed", values="test_top1")
    single = kendall_tau(wide[0], wide[1])
    assert single == pytest.approx(2 / math.pi * math.asin(1 / 1.49), abs=0.03) and single < out["ceiling_mean_tau"]


def test_seed_ceiling_with_one_seed_is_nan():
    out = seed_ceiling(ceiling_frame().query("seed == 3"), n_boot=20)
    assert out["n"] == 0 and math.isnan(out["kendall_tau"]) and math.isnan(out["pooled_sd"])
    assert math.isnan(mean_ceiling(ceiling_frame().query("seed == 3"), n_boot=20)["ceiling_mean_tau"])


def test_load_groundtruth_names_missing_columns(tmp_path):
    path = tmp_path / "gt.csv"
    synthetic_truth(3).drop(columns=["seed", "mflops"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing columns: seed, mflops$"):
        load_groundtruth(path)


def test_load_groundtruth_round_trips_and_keeps_arch_as_text(tmp_path):
    path = tmp_path / "gt.csv"
    df = synthetic_truth(3).assign(arch=["4-3-0-2-5-9-1-5"] * 2 + ["7"] * 2 + ["0-1"] * 2)
    df.to_csv(path, index=False)
    loaded = load_groundtruth(path)
    assert loaded["arch"].tolist() == df["arch"].tolist()
    pd.testing.assert_frame_equal(loaded, df, check_dtype=False)


def test_load_groundtruth_rejects_duplicate_rows(tmp_path):
    path = tmp_path / "gt.csv"
    df = synthetic_truth(3)
    pd.concat([df, df.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="1 duplicate"):
        load_groundtruth(path)


def test_csv_is_byte_identical_and_readable(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "sub" / "b.csv"
    write_ranking_csv(fidelity(supernet_scores(), synthetic_truth(), n_boot=50), first, epoch=3, method="spos")
    write_ranking_csv(fidelity(supernet_scores(), synthetic_truth(), n_boot=50), second, epoch=3, method="spos")
    assert first.read_bytes() == second.read_bytes()
    assert "\n3,spos,supernet,10,0.955556," in first.read_text()  # fixed 6-decimal floats
    table = pd.read_csv(first)
    assert list(table.columns[:4]) == ["epoch", "method", "predictor", "n"]
    assert table["epoch"].tolist() == [3] * 4
    assert table["kendall_tau"].iloc[0] == pytest.approx(43 / 45, abs=1e-6)
    assert table["n"].tolist() == [10] * 4
    assert math.isnan(table["spearman"].iloc[3])


def test_csv_of_several_epochs_in_one_file(tmp_path):
    # The report reads one ranking.csv per run, with an epoch column, in long form (a predictor column).
    rows = [r | {"epoch": e} for e in (1, 2) for r in fidelity(supernet_scores(), synthetic_truth(), n_boot=20)]
    rows[-1] |= {"note": "last"}
    write_ranking_csv(rows, tmp_path / "ranking.csv", method="spos")
    table = pd.read_csv(tmp_path / "ranking.csv")
    assert list(table.columns[:2]) == ["method", "predictor"] and list(table.columns[-2:]) == ["epoch", "note"]
    assert table["epoch"].tolist() == [1] * 4 + [2] * 4 and table["note"].iloc[-1] == "last"
    assert table["predictor"].tolist()[:4] == ["supernet", "flops", "params", "ceiling"]


def test_ranking_table_lists_every_predictor():
    text = ranking_table(fidelity(supernet_scores(), synthetic_truth(), n_boot=50))
    lines = text.splitlines()
    assert lines[0].startswith("| predictor | n | Kendall τ") and lines[0].endswith("| top-5 | top-10 |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| supernet", "| flops", "| params", "| ceiling"]
    assert "| flops | 10 | 1.000 [1.000, 1.000] |" in text
    assert "—" in lines[-1]  # the ceiling has no ρ or overlaps


REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "results" / "proxy" / "spos-s1-seed0"  # a committed run: config.json, ranking_scores.jsonl, ranking.csv
TRUTH = REPO / "results" / "proxy" / "groundtruth_s1.csv"


def test_ranking_rewritten_from_memoised_scores_alone(tmp_path):
    """No weights: the committed run's scores give back its committed τ, ρ and overlaps, with the new columns."""
    from benchmark.fidelity import main as fidelity_main

    run = tmp_path / "spos-s1-seed0"
    run.mkdir()
    for name in ("config.json", "ranking_scores.jsonl"):
        shutil.copy(RUN / name, run / name)
    assert fidelity_main([str(run), "--groundtruth", str(TRUTH), "--from-scores", "--epochs", "last"]) == 0
    new, old = pd.read_csv(run / "ranking.csv"), pd.read_csv(RUN / "ranking.csv")
    old = old[old["epoch"] == old["epoch"].max()].reset_index(drop=True)
    same = ["epoch", "predictor", "n", "kendall_tau", "spearman", "top5_overlap", "top10_overlap", "mean_score"]
    pd.testing.assert_frame_equal(new[same], old[same], atol=1e-6)
    assert {"flops_diff", "flops_diff_low90", "ceiling_mean_tau", "seed_reliability"} <= set(new.columns)
    assert new.loc[0, "flops_diff"] == pytest.approx(new.loc[0, "kendall_tau"] - new.loc[1, "kendall_tau"], abs=1e-6)


def test_from_scores_refuses_before_any_work(tmp_path, capsys):
    from benchmark.fidelity import main as fidelity_main

    good, bare = tmp_path / "good", tmp_path / "bare"
    good.mkdir(), bare.mkdir()
    shutil.copy(RUN / "config.json", good / "config.json")
    shutil.copy(RUN / "config.json", bare / "config.json")
    # a memo lacking one architecture of the ground truth at its epoch
    lines = (RUN / "ranking_scores.jsonl").read_text().splitlines()
    last = [line for line in lines if line.startswith('{"epoch": 5,')]
    assert len(last) == 40
    (good / "ranking_scores.jsonl").write_text("\n".join(last[1:]) + "\n")
    assert fidelity_main([str(good), str(bare), "--groundtruth", str(TRUTH), "--from-scores"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bare} has no ranking_scores.jsonl to rank from (drop --from-scores)\n"
    assert not (good / "ranking.csv").exists()  # refused before any run was ranked
    assert fidelity_main([str(good), "--groundtruth", str(TRUTH), "--from-scores"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lacks 1 ground-truth architectures at epoch 5" in err and err.count("\n") == 1
