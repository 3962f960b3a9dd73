"""Where the top-1 noise is: search-to-search against retrain-to-retrain, and the design that narrows it per hour.

    python -m benchmark.variance results/proxy --json /tmp/variance.json

A run's top-1 varies because its pipeline seed finds another architecture (search-to-search) and because the
found architecture's retraining is itself noisy (retrain-to-retrain). With each run's architecture retrained
under several seeds (`retrain.seeds`, kept in final.json), a one-way random-effects model per label,
    top1[run, k] = mu[label] + a[run] + e[run, k],   var(a) = s2_search,  var(e) = s2_retrain,
pooled over labels (each label its own mean), gives both components from the usual mean squares; the
retraining component's interval is the chi-square one, the search component's a generalised pivotal interval
(Weerahandi 1993), which stays inside [0, inf) where the mean-squares estimate can go negative.

The design that follows: n pipeline seeds of a label, each retrained k times, give the label's mean a variance
s2_search / n + s2_retrain / (n k) at a cost n (c_pipeline + (k - 1) c_retrain); the variance x cost product,
which a fixed budget turns into the interval width, is smallest at k* = sqrt(c_first / c_retrain x s2_retrain /
s2_search) with c_first = c_pipeline - c_retrain (the classic two-stage optimum), rounded to the better integer.

A FLOPs-adjusted top-1 is given too (secondary): methods find architectures of different cost, and on the ground
truth accuracy rises with FLOPs, so each run's top-1 is moved along the ground truth's least-squares line to the
ground truth's median FLOPs before differences are taken.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.results import LABELS, ReportError, Results, load

LEVEL = 0.95
GPQ_DRAWS = 100_000  # generalised pivotal draws for the search component's interval (seeded: byte-stable)


def retrain_table(res: Results) -> pd.DataFrame:
    """One row per (complete run, retraining seed): label, space, seed, index, top1, mflops and the run's costs."""
    rows = []
    for run in res.runs[res.runs["status"] == "ok"].itertuples():
        final = res.final(run.folder)
        # a run made before retraining seeds were recorded has its own retraining only
        own = {"index": 0, "top1": final["top1"], "retrain_device_s": final.get("retrain_device_s", math.nan)}
        seeds = final.get("retrain_seeds") or [own]
        for s in seeds:
            rows.append(
                {
                    "label": run.label,
                    "space": run.space,
                    "seed": run.seed,
                    "index": int(s["index"]),
                    "top1": float(s["top1"]),
                    "mflops": float(run.mflops),
                    "retrain_s": float(s.get("retrain_device_s", math.nan)),
                    "first_s": float(final.get("supernet_device_s", math.nan))
                    + float(final.get("search_device_s", math.nan)),
                }
            )
    return pd.DataFrame(rows, columns=["label", "space", "seed", "index", "top1", "mflops", "retrain_s", "first_s"])


def balanced(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of the first k retraining seeds, k the fewest any run has (the mean squares assume balance)."""
    if table.empty:
        return table, 0
    k = int(table.groupby(["label", "space", "seed"])["index"].nunique().min())
    return table[table["index"] < k], k


def components(table: pd.DataFrame, seed: int = 0) -> dict:
    """Both variance components (points²) with 95 % intervals, pooled over labels and spaces; needs k >= 2."""
    rows, k = balanced(table)
    runs = rows.groupby(["label", "space", "seed"])["top1"]
    run_means, n_runs = runs.mean(), runs.ngroups
    groups = run_means.groupby(level=["label", "space"])
    df_within, df_between = n_runs * (k - 1), n_runs - groups.ngroups
    out = {"runs": n_runs, "retrain_seeds": k, "groups": groups.ngroups, "df_within": df_within}
    out["df_between"] = df_between
    if k < 2 or df_between < 1:
        return out | {"note": "needs at least 2 retraining seeds per run and 2 runs of a label"}
    ss_within = float(((rows["top1"] - runs.transform("mean")) ** 2).sum())
    ss_between = k * float(((run_means - groups.transform("mean")) ** 2).sum())
    ms_w, ms_b = ss_within / df_within, ss_between / df_between
    a = (1 - LEVEL) / 2
    retrain_ci = (ss_within / stats.chi2.ppf(1 - a, df_within), ss_within / stats.chi2.ppf(a, df_within))
    rng = np.random.default_rng(seed)
    pivot = (ss_between / rng.chisquare(df_between, GPQ_DRAWS) - ss_within / rng.chisquare(df_within, GPQ_DRAWS)) / k
    pivot = np.maximum(pivot, 0.0)
    return out | {
        "s2_retrain": ms_w,
        "s2_retrain_ci": [float(retrain_ci[0]), float(retrain_ci[1])],
        "s2_search": max((ms_b - ms_w) / k, 0.0),
        "s2_search_ci": [float(np.quantile(pivot, a)), float(np.quantile(pivot, 1 - a))],
        "ms_within": ms_w,
        "ms_between": ms_b,
    }


def design(comp: dict, c_first: float, c_retrain: float, n: int = 8, ks: range = range(1, 6)) -> dict:
    """Paired-difference interval half-width and CPU-hours per label pair at n pipeline seeds for each k; the best k.

    A paired difference of two labels over n seeds has variance 2 (s2_search + s2_retrain / k) / n (the paired sd
    measured on the reference runs equals the unpaired one: pairing by seed removes nothing).
    """
    s2s, s2r = comp["s2_search"], comp["s2_retrain"]
    rows = []
    for k in ks:
        sd = math.sqrt(2 * (s2s + s2r / k))
        half = float(stats.t.ppf((1 + LEVEL) / 2, n - 1)) * sd / math.sqrt(n)
        hours = 2 * n * (c_first + k * c_retrain) / 3600
        rows.append({"k": k, "half_width": half, "cpu_hours": hours, "width_x_sqrt_hours": half * math.sqrt(hours)})
    best = min(rows, key=lambda r: r["width_x_sqrt_hours"])
    k_star = math.sqrt(c_first / c_retrain * s2r / s2s) if s2s > 0 else math.inf
    return {"n": n, "c_first_s": c_first, "c_retrain_s": c_retrain, "k_star": k_star, "best_k": best["k"], "rows": rows}


def flops_slope(groundtruth: Path) -> dict:
    """Least-squares slope of ground-truth top-1 (mean over its seeds) on MFLOPs, with its 95 % interval."""
    gt = pd.read_csv(groundtruth).groupby("arch").agg(top1=("test_top1", "mean"), mflops=("mflops", "first"))
    fit = stats.linregress(gt["mflops"], gt["top1"])
    half = float(stats.t.ppf((1 + LEVEL) / 2, len(gt) - 2)) * fit.stderr
    return {
        "slope": float(fit.slope),
        "slope_ci": [float(fit.slope - half), float(fit.slope + half)],
        "r": float(fit.rvalue),
        "median_mflops": float(gt["mflops"].median()),
        "architectures": len(gt),
    }


def flops_adjusted(res: Results, slope: dict) -> pd.DataFrame:
    """Each complete run's top-1 moved along the ground truth's line to its median FLOPs."""
    ok = res.runs[res.runs["status"] == "ok"][["label", "space", "seed", "top1", "mflops"]].copy()
    ok["top1_adjusted"] = ok["top1"] - slope["slope"] * (ok["mflops"] - slope["median_mflops"])
    return ok


def paired(df: pd.DataFrame, a: str, b: str, column: str) -> dict:
    """Mean and 95 % t-interval of a − b in `column` over the seeds and spaces both labels have."""
    x = df[df["label"] == a].set_index(["space", "seed"])[column]
    y = df[df["label"] == b].set_index(["space", "seed"])[column]
    d = (x - y).dropna()
    if len(d) < 2:
        return {"mean": float(d.mean()) if len(d) else math.nan, "low": math.nan, "high": math.nan, "n": len(d)}
    half = float(stats.t.ppf((1 + LEVEL) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half), "n": len(d)}


def analyse(run_dir: str | Path, groundtruth: str | Path | None = None) -> dict:
    """The decomposition, the chosen design and the FLOPs-adjusted differences of EnNAS against each label."""
    return analyse_results(load(run_dir), groundtruth)


def analyse_results(res: Results, groundtruth: str | Path | None = None) -> dict:
    """`analyse` on loaded results (the report's entry point); the ground truth defaults to the folder's own."""
    table = retrain_table(res)
    comp = components(table)
    out: dict = {"components": comp}
    if "s2_search" in comp:
        first = float(table.groupby(["label", "space", "seed"])["first_s"].first().mean())
        # the runs' own retraining (index 0) ran beside their supernet and search; further seeds were added later,
        # under other load, so their times would not compare with c_first
        retrain = float(table[table["index"] == 0]["retrain_s"].mean())
        out["design"] = design(comp, first, retrain)
    gt = Path(groundtruth) if groundtruth else res.root / f"groundtruth_{(res.spaces or ['s1'])[0]}.csv"
    if gt.is_file():
        slope = flops_slope(gt)
        adjusted = flops_adjusted(res, slope)
        others = [label for label in LABELS if label != "ennas" and label in set(adjusted["label"])]
        out["flops_adjustment"] = slope | {
            f"ennas_minus_{b}": {
                "raw": paired(adjusted, "ennas", b, "top1"),
                "adjusted": paired(adjusted, "ennas", b, "top1_adjusted"),
            }
            for b in others
        }
    return out


def _ci(pair: list[float], digits: int = 3) -> str:
    return f"[{pair[0]:.{digits}f}, {pair[1]:.{digits}f}]"


def variance_lines(analysis: dict) -> list[str]:
    """REPORT.md's section on the noise and the design (empty when the runs have one retraining seed)."""
    comp = analysis["components"]
    if "s2_search" not in comp:
        return []
    d = analysis["design"]
    lines = [
        "## Where the top-1 noise is",
        "",
        f"{comp['runs']} runs, each retrained with {comp['retrain_seeds']} seeds (one-way random effects per label, "
        f"pooled): search-to-search variance {comp['s2_search']:.4f} points² (sd {math.sqrt(comp['s2_search']):.3f}) "
        f"{_ci(comp['s2_search_ci'], 4)}, retrain-to-retrain {comp['s2_retrain']:.4f} points² "
        f"(sd {math.sqrt(comp['s2_retrain']):.3f}) {_ci(comp['s2_retrain_ci'], 4)} (95 % intervals; generalised "
        "pivotal and chi-square).",
        "",
        f"Design at n = {d['n']} pipeline seeds per label: a pipeline costs {d['c_first_s'] / 60:.1f} device-min before "
        f"retraining and a retraining {d['c_retrain_s'] / 60:.1f}; the two-stage optimum is k* = {d['k_star']:.2f} "
        f"retraining seeds per run, best integer k = {d['best_k']}.",
        "",
        "| k | 95 % half-width of a paired top-1 difference | CPU-hours per label pair | half-width x sqrt(hours) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['k']} | {r['half_width']:.3f} | {r['cpu_hours']:.2f} | {r['width_x_sqrt_hours']:.3f} |"
        for r in d["rows"]
    ]
    adj = analysis.get("flops_adjustment")
    if adj:
        lines += [
            "",
            f"FLOPs-adjusted top-1 (secondary): the ground truth's {adj['architectures']} architectures gain "
            f"{adj['slope']:.3f} points per MFLOP {_ci(adj['slope_ci'])} (r = {adj['r']:.2f}); each run's top-1 is "
            f"moved along that line to {adj['median_mflops']:.2f} MFLOPs.",
            "",
            "| EnNAS − | raw top-1 difference | FLOPs-adjusted |",
            "|---|---|---|",
        ]
        for key, v in adj.items():
            if key.startswith("ennas_minus_") and v["raw"]["n"]:
                raw, a = v["raw"], v["adjusted"]
                lines.append(
                    f"| {key.removeprefix('ennas_minus_')} | {raw['mean']:+.2f} [{raw['low']:+.2f}, {raw['high']:+.2f}] "
                    f"| {a['mean']:+.2f} [{a['low']:+.2f}, {a['high']:+.2f}] (n={a['n']}) |"
                )
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    """Print the decomposition and design of a results folder; exit 2 on bad input."""
    p = argparse.ArgumentParser(prog="python -m benchmark.variance", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a results folder (as for benchmark.report)")
    p.add_argument(
        "--groundtruth", help="ground-truth CSV for the FLOPs adjustment (default RUN_DIR/groundtruth_*.csv)"
    )
    p.add_argument("--json", help="also write the analysis to this file")
    args = p.parse_args(argv)
    try:
        analysis = analyse(args.run_dir, args.groundtruth)
    except (ReportError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(variance_lines(analysis)) or "one retraining seed per run: no decomposition (set retrain.seeds)")
    if args.json:
        Path(args.json).write_text(json.dumps(analysis, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
