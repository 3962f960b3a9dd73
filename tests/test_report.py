"""benchmark.report and its results/claims/figures modules on fixture run folders: verdicts, runs, bytes, figures."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import preset_config

from benchmark import claims, figures, paper, report
from benchmark.results import collect_runs, load
from benchmark.verdicts import HELD

REPO = Path(__file__).resolve().parent.parent
JITTER = (0.0, 0.3, -0.2, 0.1)  # per-seed offsets: small seed-to-seed noise, so intervals are narrow but real
KD = ("cream", "ennas-wo-ds", "ennas", "ennas-beta0")


def make_run(root, label, space, seed, *, top1=80.0, last=None, supernet_s=300.0, epochs=3, se=True, cuda=None):
    """One run folder: config.json, a supernet + retrain train_log.jsonl, final.json.

    `last` holds the last supernet epoch's teacher_acc / student_acc / diversity; earlier epochs ramp up to it.
    """
    folder = root / f"{label}-{space}-seed{seed}"
    folder.mkdir(parents=True)
    method = "ennas" if label == "ennas-beta0" else label
    env = {"torch": "2.14.1", "world_size": 1, "cuda": cuda}
    cfg = {"method": method, "space": space, "seed": seed, "scale": "proxy", "data": {"dataset": "fashion-mnist"}}
    cfg |= {"ennas": {"beta": 0.0 if label == "ennas-beta0" else 2.0}, "supernet": {"epochs": epochs}}
    (folder / "config.json").write_text(json.dumps({**cfg, "environment": env}))
    records = []
    for e in range(epochs):
        r = {"method": method, "space": space, "seed": seed, "stage": "supernet", "epoch": e, "loss": 1.0}
        r |= {"train_acc": 50.0, "lr": 0.1, "wall_s": supernet_s / epochs, "device_s": supernet_s / epochs}
        r |= {"world_size": 1}
        if last:
            ramp = (e + 1) / epochs
            r |= {k: v * ramp for k, v in last.items()}
            if "teacher_acc" in last:
                r["gap"] = r["teacher_acc"] - r["student_acc"]
                r["probe_sets"] = 5
                if se:
                    r |= {"teacher_acc_se": 0.4, "student_acc_se": 0.3, "gap_se": 0.2, "probe_device_s": 1.0}
        records.append(r)
    records.append({"method": method, "space": space, "seed": seed, "stage": "retrain", "epoch": 0, "device_s": 50.0})
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    final = {"method": method, "space": space, "scale": "proxy", "dataset": "fashion-mnist", "seed": seed}
    final |= {"arch": "0-1-2", "arch_readable": "k3e1 k3e3 k3e6", "flops": 5.5e6, "mflops": 5.5, "params": 120_000}
    final |= {"top1": top1, "top5": 99.5, "supervised": method == "dna", "search_score": 30.0}
    final |= {"supernet_device_s": supernet_s, "search_device_s": 100.0, "retrain_device_s": 50.0}
    final |= {"search_cost_device_hours": (supernet_s + 100) / 3600, "device": "cpu", "world_size": 1, "extras": {}}
    (folder / "final.json").write_text(json.dumps(final))
    return folder


def make_suite(root, seeds=(0, 1, 2), ennas_wins=True, space="s1", **kw):
    """All five methods plus the beta = 0 control; EnNAS clearly ahead (or clearly behind) on every claim."""
    sign = 1 if ennas_wins else -1
    for seed in seeds:
        j = JITTER[seed % len(JITTER)]
        for label, top1 in (("spos", 82), ("cream", 82.5), ("dna", 82.2), ("ennas-wo-ds", 82.4), ("ennas", 82.3)):
            top1 = top1 + (3 * sign if label == "ennas" else 0) + j
            last = {
                "cream": {"teacher_acc": 35.0 - 5 * sign + j, "student_acc": 33.0 - 5 * sign + j},
                "ennas-wo-ds": {"teacher_acc": 33.0 - 2 * sign + j, "student_acc": 30.0 + j, "diversity": 2.0 + j},
                "ennas": {"teacher_acc": 35.0 + 5 * sign + j, "student_acc": 29.0 + j, "diversity": 2.0 + sign + j},
            }.get(label)
            make_run(root, label, space, seed, top1=top1, last=last, **kw)
        control = {"teacher_acc": 34.0 + j, "student_acc": 29.0 + j, "diversity": 2.0 + 0.5 * sign + j}
        make_run(root, "ennas-beta0", space, seed, top1=82.0 + j, last=control, **kw)
    return root


def report_text(root) -> str:
    """REPORT.md's text for the runs in `root`, without drawing the figures."""
    res = load(root)
    return report.report_md(res, "", claims.judge_all(res), {})


def verdicts(root):
    """{claim id: verdict} for one-space fixtures."""
    return {c["id"]: c["verdict"] for c in claims.claim_results(root)}


def test_claims_held_over_three_seeds(tmp_path):
    results = [c for c in claims.claim_results(make_suite(tmp_path)) if c["group"] in ("claim", "check")]
    v = {c["id"]: c["verdict"] for c in results}
    assert set(v) == {c.id for c in paper.CLAIMS + paper.CHECKS}
    assert v.pop("cost_vs_spos") == "held"  # the same cost everywhere: equivalent within ±5 %
    assert all(verdict in HELD for verdict in v.values()), v
    assert all(c["n"] == 3 and c["seeds"] == [0, 1, 2] for c in results)
    gap = next(c for c in results if c["id"] == "gap_vs_cream")
    # ennas gap 11 (teacher 40 − students 29), cream gap 2 (30 − 28), the same jitter on both: exactly 9
    assert gap["ours_mean"] == pytest.approx(9.0) and gap["low"] == pytest.approx(9.0)
    assert gap["verdict"] == "held-larger" and gap["paper_scaled"] == pytest.approx(3.7)
    top1_max = next(c for c in results if c["id"] == "top1_max")
    assert top1_max["ours_mean"] == pytest.approx(85.3 - 82.0)  # ennas − spos
    # ennas is the best label on every seed: 1 of the 5³ relabellings is as extreme
    assert top1_max["null"]["p"] == pytest.approx(1 / 125)
    # P scaled: SPOS's largest relative error reduction in Table 1 (s2: 3.3 / 24.9) × our SPOS error (18)
    assert top1_max["paper_scaled"] == pytest.approx(3.3 / 24.9 * (100 - 82.0 - (0.3 - 0.2) / 3))
    assert "paper +3.30 (scaled to ours +2.38)" in top1_max["message"]
    assert "→ held, larger than the paper" in top1_max["message"]
    vs_spos = next(c for c in results if c["id"] == "top1_vs_spos")
    assert vs_spos["paper"] == pytest.approx(3.2) and vs_spos["paper_scaled"] == pytest.approx(
        3.2 / 25.3 * 17.967, rel=1e-3
    )


def test_claims_contradicted_when_ennas_is_behind(tmp_path):
    v = verdicts(make_suite(tmp_path, ennas_wins=False, supernet_s=300.0))
    for cid in ("top1_avg", "top1_max", "gap_vs_cream", "teacher_vs_cream", "ds_teacher", "ds_diversity"):
        assert v[cid] == "contradicted", cid
    assert v["control_repeats"] == "contradicted" and v["control_zeta"] == "contradicted"
    assert v["cost_vs_spos"] == "held"


def test_cost_claim_fails_when_ennas_supernet_costs_double(tmp_path):
    make_suite(tmp_path)
    for seed in (0, 1, 2):
        final = tmp_path / f"ennas-s1-seed{seed}" / "final.json"
        data = json.loads(final.read_text())
        final.write_text(json.dumps({**data, "supernet_device_s": 600.0 + seed}))
    cost = next(c for c in claims.claim_results(tmp_path) if c["id"] == "cost_vs_spos")
    # judged on the log of the paired ratio, net of the logged probe seconds (3 epochs × 1 s): (600 + s − 3) / 300
    assert cost["ours_mean"] == pytest.approx(sum(math.log((597 + s) / 300) for s in (0, 1, 2)) / 3)
    assert cost["shown"]["mean"] == f"{math.exp(cost['ours_mean']):.3f}"  # shown back as a ratio
    assert cost["verdict"] == "contradicted" and cost["test"] == "equivalence"


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_fewer_than_three_seeds_get_no_verdict(tmp_path, seeds):
    results = claims.claim_results(make_suite(tmp_path, seeds=seeds))
    assert {c["verdict"] for c in results} == {"too-few-seeds"}
    results = [c for c in results if c["group"] != "ranking"]  # no ranking.csv here: those have n = 0
    assert all(c["n"] == len(seeds) for c in results)
    assert all(f"too few seeds (n = {len(seeds)} < 3): no verdict" in c["message"] for c in results)


def test_inconclusive_claim_reports_its_sizing(tmp_path):
    """Noisy seeds: the verdict says how far the data are from deciding (MDE now, seeds needed at Δ)."""
    make_suite(tmp_path)
    for seed, top1 in zip((0, 1, 2), (80.0, 84.0, 82.0)):
        final = tmp_path / f"ennas-s1-seed{seed}" / "final.json"
        final.write_text(json.dumps({**json.loads(final.read_text()), "top1": top1}))
    row = next(c for c in claims.claim_results(tmp_path) if c["id"] == "top1_vs_spos")
    assert row["verdict"] == "inconclusive" and row["n_needed"] > 3 and row["mde"] > 2.0
    assert f"MDE {row['mde']:.2f} at n = 3, {row['n_needed']} seeds for 80 % power at Δ" in row["message"]


def test_paired_interval_matches_a_hand_computed_t_interval():
    a = {0: 1.0, 1: 2.0, 2: 4.0, 7: 9.0}  # seed 7 has no partner: left out
    b = {0: 0.0, 1: 0.0, 2: 1.0, 5: 3.0}
    out = claims.paired_interval(a, b)
    # differences 1, 2, 3: mean 2, sd 1, n 3; t(0.975, df 2) = 4.302652729749462
    half = 4.302652729749462 * 1.0 / math.sqrt(3)
    assert out["seeds"] == [0, 1, 2] and out["n"] == 3
    assert out["mean"] == pytest.approx(2.0)
    assert (out["low"], out["high"]) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    one = claims.paired_interval({0: 1.0}, {0: 0.5, 1: 2.0})
    assert one["n"] == 1 and one["mean"] == pytest.approx(0.5) and math.isnan(one["low"])


def test_paper_table_gives_the_papers_own_gains():
    values = {(r.space, r.label): {0: r.top1} for r in paper.TABLE1}
    assert claims.gains(values, "ennas", paper.BASELINES, "mean_gain")[0] == pytest.approx(1.175)  # "1.2 %"
    assert claims.gains(values, "ennas", paper.BASELINES, "max_gain")[0] == pytest.approx(3.3)  # s2, vs SPOS
    assert paper.table1_row("s2", "dna").supervised and paper.table1_row("s1", "spos").top5 is None
    assert paper.table1_row("spos", "ennas") is None


def test_scaled_figures_from_table1():
    """P scaled = Table 1's relative error reduction × our baselines' error (benchmark/paper.py)."""
    assert paper.error_reduction("spos", "s1") == pytest.approx((25.3 - 22.1) / 25.3)  # 12.6 %
    assert paper.error_reduction("spos", None, "max") == pytest.approx(3.3 / 24.9)  # s2
    cream = ((22.4 - 22.1) / 22.4 + (22.7 - 21.6) / 22.7 + (21.3 - 20.9) / 21.3) / 3
    assert paper.error_reduction("cream") == pytest.approx(cream)
    avg = next(c for c in paper.CLAIMS if c.id == "top1_avg")
    errors = {("s1", b): 10.0 for b in paper.BASELINES} | {("s2", "spos"): 20.0}
    # averaged over baselines within a space, then over spaces
    s1 = sum(paper.error_reduction(b) * 10.0 for b in paper.BASELINES) / 4
    assert paper.scaled_top1(avg, errors) == pytest.approx((s1 + paper.error_reduction("spos") * 20.0) / 2)
    vs = next(c for c in paper.CHECKS if c.id == "top1_vs_spos")
    assert paper.paper_figure(vs, "s2") == pytest.approx(3.3) and paper.paper_figure(vs, "spos") == pytest.approx(3.2)


def test_missing_and_failed_runs_are_listed(tmp_path):
    make_suite(tmp_path, seeds=(0, 1))
    failed = tmp_path / "cream-s1-seed2"
    failed.mkdir()
    error = {"error": "ValueError: batch size 128 exceeds the 64 training images\nTraceback ...", "folder": str(failed)}
    (failed / "error.json").write_text(json.dumps(error))
    runs = [{"label": "ennas", "method": "ennas", "space": "s1", "seed": 2, "overrides": {}}]
    runs += [{"label": "cream", "method": "cream", "space": "s1", "seed": 2, "overrides": {}}]
    runs += [{"label": "dna", "method": "dna", "space": "s1", "seed": 2, "overrides": {}}]
    (tmp_path / "dna-s1-seed2").mkdir()  # planned, started, no result yet
    (tmp_path / "dna-s1-seed2" / "config.json").write_text(json.dumps({"method": "dna", "space": "s1", "seed": 2}))
    (tmp_path / "spos-s1-seed9").mkdir()  # not planned, no result: incomplete
    (tmp_path / "plan.json").write_text(json.dumps({"preset": "proxy", "runs": runs}))
    table = collect_runs(tmp_path).set_index("folder")
    assert table.loc["ennas-s1-seed2", "status"] == "missing"
    assert table.loc["cream-s1-seed2", "status"] == "failed"
    assert table.loc["dna-s1-seed2", "status"] == "missing" and table.loc["spos-s1-seed9", "status"] == "incomplete"
    assert table.loc["spos-s1-seed0", "status"] == "ok" and table.loc["spos-s1-seed0", "top1"] == pytest.approx(82.0)
    # beta is read from the `ennas` config section (`--set ennas.beta=0`)
    assert table.loc["ennas-beta0-s1-seed0", "beta"] == 0.0 and table.loc["ennas-s1-seed0", "beta"] == 2.0
    report.build_report(tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "preset: proxy" in text and "1 failed, 2 missing, 1 incomplete" in text
    assert (
        "| `cream-s1-seed2` | cream | s1 | 2 | failed | ValueError: batch size 128 exceeds the 64 training images |"
        in text
    )
    assert "Traceback" not in text  # the error's first line only
    assert "| `ennas-s1-seed2` | ennas | s1 | 2 | missing | planned; no final.json or error.json |" in text
    t1 = pd.read_csv(tmp_path / "table1.csv").set_index("label")
    assert t1.loc["cream", "n"] == 2 and t1.loc["cream", "seeds"] == "0 1"  # the failed seed is not averaged in


def test_table1_has_mean_std_n_and_the_papers_numbers(tmp_path):
    report.build_report(make_suite(tmp_path, cuda="NVIDIA H200"))
    t1 = pd.read_csv(tmp_path / "table1.csv").set_index("label")
    assert t1.loc["ennas", "top1_mean"] == pytest.approx(85.3 + (0.3 - 0.2) / 3, abs=1e-4)
    assert t1.loc["ennas", "top1_std"] == pytest.approx(pd.Series([0.0, 0.3, -0.2]).std(), abs=1e-4)
    assert t1.loc["ennas", "paper_top1"] == 77.9 and t1.loc["dna", "paper_supervised"] == "Y"
    assert t1.loc["dna", "supervised"] == "Y" and t1.loc["ennas", "supervised"] == "N"
    assert t1.loc["spos", "supernet_device_h"] == pytest.approx(300 / 3600, abs=1e-4)
    assert t1.loc["spos", "gpu_days"] == pytest.approx(300 / 86400, abs=1e-4)
    assert math.isnan(t1.loc["ennas-beta0", "paper_top1"])
    md = (tmp_path / "table1.md").read_text()
    assert "| s1 | ennas | 3 | 85.33 ± 0.25 | 99.50 ± 0.00 |" in md and "| 77.9 | 93.6 | 330 | N | 12 |" in md


def test_output_is_byte_for_byte_reproducible(tmp_path):
    first = make_suite(tmp_path / "a" / "runs")
    report.build_report(first)
    second = tmp_path / "b" / "runs"  # same files elsewhere: no absolute path may leak into the outputs
    shutil.copytree(first, second)
    report.build_report(second)
    report.build_report(first)  # again in place, over its own outputs
    for name in ("table1.csv", "table1.md", "REPORT.md", "teacher_student_gap.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    gap = pd.read_csv(first / "teacher_student_gap.csv")
    assert list(gap.columns[:7]) == ["label", "space", "seed", "epoch", "teacher_acc", "student_acc", "gap"]
    assert set(gap["label"]) == set(KD) and len(gap) == 4 * 3 * 3  # KD labels × seeds × epochs
    assert gap["teacher_acc_se"].eq(0.4).all()


def test_figures_written_and_fig3_skipped_without_ranking(tmp_path):
    out = report.build_report(make_suite(tmp_path))
    for name in ("fig1_teacher_accuracy.png", "fig2_diversity.png"):
        assert (tmp_path / name).stat().st_size > 10_000 and out["paths"][name] == tmp_path / name
    assert not (tmp_path / "fig3_ranking.png").exists() and "fig3_ranking.png" in out["skipped"]
    text = (tmp_path / "REPORT.md").read_text()
    assert "](fig1_teacher_accuracy.png)" in text and "](fig2_diversity.png)" in text  # shown inline
    assert (
        "Fig. 3: ranking fidelity (Kendall τ against the ground truth) over supernet training\n\nskipped: no run has a ranking.csv"
        in text
    )
    assert (
        not (tmp_path / "ranking.csv").exists()
        and "`ranking.csv`: skipped: no run has" in (tmp_path / "REPORT.md").read_text()
    )


@pytest.mark.parametrize("form", ["long", "wide"])
def test_fig3_drawn_from_ranking_csv(tmp_path, form):
    make_suite(tmp_path, seeds=(0, 1))
    for label in ("spos", "ennas"):
        for seed in (0, 1):
            rows = []
            for epoch in (1, 3):
                tau = 0.1 * epoch + 0.01 * seed
                if form == "long":
                    rows += [{"epoch": epoch, "predictor": "supernet", "kendall_tau": tau, "tau_low": tau - 0.1}]
                    rows += [{"epoch": epoch, "predictor": "flops", "kendall_tau": 0.2, "tau_low": 0.1}]
                    rows += [{"epoch": epoch, "predictor": "ceiling", "kendall_tau": 0.8, "tau_low": 0.7}]
                else:
                    rows += [{"epoch": epoch, "kendall_tau": tau, "tau_low": tau - 0.1, "tau_high": tau + 0.1}]
                    rows[-1] |= {"spearman": tau, "flops_tau": 0.2, "ceiling_tau": 0.8}
            pd.DataFrame(rows).to_csv(tmp_path / f"{label}-s1-seed{seed}" / "ranking.csv", index=False)
    curves, refs = figures.ranking_curves(load(tmp_path).ranking)
    assert len(curves) == 8 and sorted(set(refs["ref"])) == ["ceiling", "flops"]
    out = report.build_report(tmp_path)
    assert (tmp_path / "fig3_ranking.png").stat().st_size > 10_000 and "fig3_ranking.png" not in out["skipped"]
    assert "](fig3_ranking.png)" in (tmp_path / "REPORT.md").read_text()  # shown inline
    combined = pd.read_csv(tmp_path / "ranking.csv")
    assert list(combined.columns[:4]) == ["label", "space", "seed", "epoch"]
    assert len(combined) == 2 * 2 * 2 * (3 if form == "long" else 1)  # labels × seeds × epochs (× predictors)
    assert list(dict.fromkeys(combined["label"])) == ["spos", "ennas"], "in the report's label order"
    first = (tmp_path / "ranking.csv").read_bytes()
    report.build_report(tmp_path)
    assert (tmp_path / "ranking.csv").read_bytes() == first, "the same runs give the same bytes"


def test_old_logs_and_a_space_without_some_methods(tmp_path):
    make_suite(tmp_path, se=False)
    make_run(tmp_path, "spos", "s2", 0, top1=70.0)
    ennas_s2 = {"teacher_acc": 30.0, "student_acc": 25.0, "diversity": 2.0}
    make_run(tmp_path, "ennas", "s2", 0, top1=71.0, last=ennas_s2, se=False)
    wo_ds_s3 = {"teacher_acc": 30.0, "student_acc": 25.0, "diversity": 2.0}  # s3: only the random-sampling ablation
    make_run(tmp_path, "ennas-wo-ds", "s3", 0, top1=75.0, last=wo_ds_s3, se=False)
    out = report.build_report(tmp_path)
    gap = pd.read_csv(tmp_path / "teacher_student_gap.csv")
    assert gap["teacher_acc_se"].isna().all() and gap["gap_se"].isna().all()
    rows = {(c["id"], c["space"]): c for c in out["claims"]}
    assert rows[("teacher_vs_cream", "s1")]["verdict"] in HELD
    s2 = rows[("teacher_vs_cream", "s2")]
    assert s2["n"] == 0 and s2["verdict"] == "too-few-seeds"
    assert "no paired seeds (seeds per label: ennas: 1, cream: 0)" in s2["message"]
    assert rows[("gap_positive", "s2")]["n"] == 1
    assert "- **s3**: ennas-beta0 is undecided" in (tmp_path / "REPORT.md").read_text()
    # the pooled gain averages what each space has: s1 gives 85.3 − 82.275 on every seed, s2 (seed 0 only) 71 − 70
    g = 85.3 - (82 + 82.5 + 82.2 + 82.4) / 4
    assert rows[("top1_avg", "all")]["ours_mean"] == pytest.approx(((g + 1.0) / 2 + g + g) / 3)


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2  # an empty folder: no runs
    err = capsys.readouterr().err
    assert err.startswith("error: no runs in") and err.count("\n") == 1
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.report", str(missing)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and proc.stderr == f"error: {missing} is not a folder\n"


def test_smoke_runs_get_a_pipeline_check_banner(tmp_path):
    make_suite(tmp_path / "smoke")
    smoke = preset_config("smoke", method="spos", space="s1", seed=0).to_dict()
    (tmp_path / "smoke" / "spos-s1-seed0" / "config.json").write_text(json.dumps(smoke))  # one run made by smoke
    assert report_text(tmp_path / "smoke").splitlines()[2].startswith("> **Pipeline check, not a result.**")
    proxy = preset_config("proxy", method="spos", space="s1", seed=0).to_dict()
    make_suite(tmp_path / "proxy")
    (tmp_path / "proxy" / "spos-s1-seed0" / "config.json").write_text(json.dumps(proxy))
    (tmp_path / "proxy" / "plan.json").write_text(json.dumps({"preset": "proxy", "runs": []}))
    assert "Pipeline check" not in report_text(tmp_path / "proxy")
    (tmp_path / "proxy" / "plan.json").write_text(json.dumps({"preset": "smoke", "runs": []}))  # by the plan alone
    assert "> **Pipeline check, not a result.**" in report_text(tmp_path / "proxy")


def test_claim_rows_show_p_scaled_delta_interval_verdict_mde_and_n(tmp_path):
    text = report_text(make_suite(tmp_path))
    assert "| id | space | paper P | P scaled | Δ | ours | 95 % interval | n | verdict | MDE | n for Δ |" in text
    row = next(line for line in text.splitlines() if line.startswith("| gap_vs_cream |"))
    assert row.startswith("| gap_vs_cream | s1 | +3.70 | +3.70 | 1.00 | +9.00 | [+9.00, +9.00] | 3 |")
    assert "**held, larger than the paper**" in row
    # net of the logged probe seconds: 297 / 300, the same on every seed
    assert (
        "| cost_vs_spos | s1 | 1.000 | 1.000 | ±5 % | 0.990 | [0.990, 0.990] | 3 | **held (the same within ±Δ)** |"
        in text
    )
    assert "Δ = 0.30 (1.4 × the stand-alone seed sd (0.21)" in text  # each claim's Δ with its reason
    assert "## Power" in text and "| claim | space | test | paired sd | n | Δ | MDE at n |" in text


def test_sections_are_a_list(tmp_path, monkeypatch):
    make_suite(tmp_path)
    titles = [line for line in report.report_md(load(tmp_path), "", [], {}).splitlines() if line.startswith("## ")]
    assert titles == [
        "## Table 1",
        "## Claims",
        "## Qualitative checks",
        "## Diversity headroom",  # the fixture's ennas runs log their headroom
        "## Ranking",
        "## Power",
        "## Cost",
        "## Figures",
    ]
    monkeypatch.setattr(report, "SECTIONS", (*report.SECTIONS, lambda x: ["## Extra", "", "more"]))
    assert report.report_md(load(tmp_path), "", [], {}).rstrip().endswith("## Extra\n\nmore")


def test_ranking_section_judges_tau_differences_and_supernet_against_flops(tmp_path):
    from benchmark.ranking import fidelity, write_ranking_csv

    make_suite(tmp_path)
    rng = np.random.default_rng(0)
    true = np.linspace(90, 92, 12)
    truth = pd.DataFrame(
        [
            (f"a{i:02d}", s, true[i] + rng.normal(0, 0.2), 80.0, 5.0 + (i % 5), 1e5, 1.0)
            for i in range(12)
            for s in (0, 1)
        ],
        columns=["arch", "seed", "test_top1", "search_top1", "mflops", "params", "seconds"],
    )
    noise = {"spos": 0.8, "ennas": 0.2, "cream": 0.8}  # ennas' supernet ranks best
    for label, sd in noise.items():
        for seed in (0, 1, 2):
            scores = {f"a{i:02d}": true[i] + rng.normal(0, sd) for i in range(12)}
            rows = [{"epoch": 2, **r} for r in fidelity(scores, truth, n_boot=200)]
            write_ranking_csv(rows, tmp_path / f"{label}-s1-seed{seed}" / "ranking.csv")
    res = load(tmp_path)
    found = claims.judge_all(res)
    text = report.report_md(res, "", found, {})
    rows = {(c["id"], c["space"]): c for c in found}
    assert rows[("tau_ennas_vs_spos", "s1")]["n"] == 3 and rows[("tau_cream_vs_spos", "s1")]["n"] == 3
    assert rows[("tau_ennas_vs_wo_ds", "s1")]["verdict"] == "too-few-seeds"  # ennas-wo-ds has no ranking.csv
    flops = [c for c in found if c["group"] == "flops"]
    assert len(flops) == 9 and all(c["n"] == 12 and c["low"] <= c["ours_mean"] <= c["high"] for c in flops)
    assert "### Supernet against FLOPs alone, per run" in text and "| s1 | ennas | 2 | 2 |" in text
    assert "a noise-free ranker reaches τ" in text and "τ between two single ground-truth seeds" in text
    assert "| s1 | *flops alone* | — |" in text


def test_figure_means_use_the_epochs_every_seed_probed():
    """Seeds probed every epoch beside seeds probed every third: a mean per epoch over all of them would jump
    where the schedules meet, so only the shared epochs are drawn, each a mean over every seed."""
    every = [{"seed": s, "epoch": e, "teacher_acc": 80.0 + e} for s in (0, 1) for e in range(6)]
    third = [{"seed": 2, "epoch": e, "teacher_acc": 70.0 + e} for e in (0, 3, 5)]
    df = pd.DataFrame(every + third + [{"seed": 2, "epoch": 1, "teacher_acc": math.nan}])
    kept = figures.common_epochs(df, "teacher_acc")
    assert sorted(set(kept["epoch"])) == [0, 3, 5]
    assert kept.groupby("epoch")["seed"].nunique().tolist() == [3, 3, 3]
    assert kept.groupby("epoch")["teacher_acc"].mean().tolist() == pytest.approx([230 / 3, 239 / 3, 245 / 3])


def test_the_answer_table_gives_each_claim_in_plain_words_with_its_verdict(tmp_path):
    from benchmark.answer import PLAIN, answer_md

    make_suite(tmp_path)
    out = report.build_report(tmp_path)
    table = (tmp_path / "answer.md").read_text()
    assert table == answer_md(out["claims"]) and out["paths"]["answer.md"] == tmp_path / "answer.md"
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [r[0].lstrip("| ") for r in rows] == list(PLAIN.values())  # every claim, in order, one space
    by_claim = dict(zip(PLAIN, rows))
    assert by_claim["gap_vs_cream"][1:] == ["+3.70", "+9.00 [+9.00, +9.00]", "held, larger than the paper |"]
    assert by_claim["ds_diversity"][1] == "(no figure)" and by_claim["cost_vs_spos"][1] == "ratio 1.000"
    assert "## The answer\n" in (tmp_path / "REPORT.md").read_text()
    assert table in (tmp_path / "REPORT.md").read_text()


def test_an_inconclusive_answer_says_what_it_could_have_seen():
    from benchmark.answer import answer_rows

    c = {"id": "ds_diversity", "group": "check", "space": "s1", "test": "effect", "paper": None, "seeds": [0, 1, 2]}
    c |= {"verdict": "inconclusive", "verdict_label": "inconclusive", "n": 3, "n_needed": 5}
    c["shown"] = {"paper": "—", "scaled": "—", "mean": "+0.029", "interval": "[-0.042, +0.101]", "mde": "0.094"}
    ((claim, paper_fig, ours, verdict),) = answer_rows([c, c | {"group": "cost-coscheduled"}])
    assert (paper_fig, ours) == ("(no figure)", "+0.029 [-0.042, +0.101]")
    assert verdict == "inconclusive: MDE 0.094 at n = 3, 5 seeds for Δ"
    # a held gain that its permutation null turned inconclusive says so: more seeds are not what it lacks
    c |= {"id": "top1_max", "group": "claim", "space": "all", "held_below_null": True, "null": {"p": 0.612}}
    ((_, _, _, verdict),) = answer_rows([c])
    assert verdict == "inconclusive: not above the label-permutation null (p = 0.61); MDE 0.094 at n = 3, 5 seeds for Δ"


def test_a_loaded_dna_teacher_is_a_one_time_cost_of_its_own_in_the_report(tmp_path):
    make_suite(tmp_path)
    for seed in (0, 1, 2):
        path = tmp_path / f"dna-s1-seed{seed}" / "final.json"
        final = json.loads(path.read_text())
        final["extras"] = {"teacher_kind": "committed", "teacher_source": "results/proxy/dna_teacher/fashion-mnist.pt"}
        final["extras"] |= {
            "teacher_fingerprint": "abc123",
            "teacher_test_top1": 93.5,
            "teacher_train_device_s": 2520.0,
        }
        path.write_text(json.dumps(final))
    cost = report_text(tmp_path).split("## Cost", 1)[1]
    line = "- DNA's teacher `results/proxy/dna_teacher/fashion-mnist.pt` (fingerprint abc123): test top-1 93.50 %, "
    assert line + "trained once in 0.700 device-h, loaded by 3 run(s)" in cost
