"""Ranking fidelity: how well supernet scores rank architectures like a stand-alone ground truth does.

Kendall τ-b, Spearman ρ and top-k overlap with BCa bootstrap 95 % intervals (`scipy.stats.bootstrap`, items
resampled in pairs), beside the FLOPs-only and params-only rankings a supernet must beat (with a paired
bootstrap of τ(supernet) − τ(FLOPs)) and two ceilings: the τ a noise-free ranker reaches against the k-seed
ground-truth mean (the comparison rankers are scored in) and the old τ between two single ground-truth seeds.
Larger is better everywhere: higher score, more FLOPs, more params all predict higher accuracy.
"""

from __future__ import annotations

import csv
import functools
import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

REQUIRED_COLUMNS = ("arch", "seed", "test_top1", "mflops", "params")
N_BOOT = 10_000  # bootstrap resamples per interval
BATCH = 500  # resamples evaluated at once: (BATCH, n(n-1)/2) pair arrays stay small
_TOPK = re.compile(r"top(\d+)_overlap")


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length 1-D float arrays of finite values, or a ValueError."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"need two 1-D sequences of equal length, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("rankings must be finite (no NaN or inf)")
    return x, y


def tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall τ-b along `axis`, vectorised over the other axes (bootstrap resamples); NaN where a side is constant.

    Over the n(n−1)/2 pairs: τ-b = Σ sign(Δx)·sign(Δy) / √(pairs untied in x · pairs untied in y). A bootstrap
    resample repeats items, and a repeated item is a tie on both sides, as scipy counts it.
    """
    x, y = np.moveaxis(np.asarray(x, dtype=float), axis, -1), np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    i, j = np.triu_indices(x.shape[-1], 1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    untied = np.count_nonzero(sx, axis=-1) * np.count_nonzero(sy, axis=-1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("...k,...k->...", sx, sy) / np.sqrt(untied)


def rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman ρ (average ranks for ties) along `axis`, vectorised; NaN where a side is constant."""
    a = stats.rankdata(x, axis=axis)
    b = stats.rankdata(y, axis=axis)
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall τ-b (corrects for ties on either side), as scipy.stats.kendalltau; NaN where a side is all equal."""
    x, y = _pair(x, y)
    return float(tau_b(x, y)) if len(x) >= 2 else math.nan


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman ρ on average ranks (ties share their mean rank), as scipy.stats.spearmanr; NaN where undefined."""
    x, y = _pair(x, y)
    return float(rho(x, y)) if len(x) >= 2 else math.nan


def bootstrap_intervals(
    stat: Callable[..., np.ndarray],
    *samples: Sequence[float],
    levels: Sequence[float] = (0.95,),
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[list[tuple[float, float]], float]:
    """BCa intervals of a vectorised `stat(*samples, axis)` at each level, items resampled in pairs, and the
    bootstrap standard error. The same seed draws the same resamples for every call on n items, so intervals of
    predictors scored on the same architectures are paired. A statistic constant over the resamples where it
    is defined gives that point; one undefined on some resamples (tiny n) gives NaN, as BCa is then undefined.
    """
    data = tuple(np.asarray(s, dtype=float) for s in samples)
    nan = [(math.nan, math.nan)] * len(levels)
    if len(data[0]) < 2 or not np.isfinite(stat(*data, axis=-1)):
        return nan, math.nan
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate distributions: handled below
        kw = {"paired": True, "vectorized": True, "method": "BCa", "batch": BATCH}
        res = stats.bootstrap(data, stat, n_resamples=n_boot, confidence_level=levels[0], rng=seed, **kw)
        dist = res.bootstrap_distribution
        finite = dist[np.isfinite(dist)]
        if finite.size and np.ptp(finite) == 0:
            return [(float(finite[0]), float(finite[0]))] * len(levels), 0.0
        if finite.size < dist.size:
            return nan, math.nan
        for i, level in enumerate(levels):
            if i:  # the same resamples at another level: only the interval is recomputed
                res = stats.bootstrap(data, stat, n_resamples=0, bootstrap_result=res, confidence_level=level, **kw)
            out.append((float(res.confidence_interval.low), float(res.confidence_interval.high)))
    return out, float(np.std(dist, ddof=1))


def bootstrap_interval(
    stat: Callable[..., np.ndarray],
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """BCa interval of a vectorised `stat(x, y, axis)` over pair resamples (see `bootstrap_intervals`)."""
    x, y = _pair(x, y)
    return bootstrap_intervals(stat, x, y, levels=(level,), n_boot=n_boot, seed=seed)[0][0]


def _tau_gain(s: np.ndarray, f: np.ndarray, truth: np.ndarray, axis: int = -1) -> np.ndarray:
    """τ(s, truth) − τ(f, truth): how much better one predictor ranks than another, on the same items."""
    return tau_b(s, truth, axis) - tau_b(f, truth, axis)


def top_indices(values: Sequence[float], k: int) -> np.ndarray:
    """Indices of the k largest values; ties go to the earlier index (stable sort), so the choice is deterministic."""
    return np.argsort(-np.asarray(values, dtype=float), kind="stable")[:k]


def topk_overlap(pred: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Fraction of the truth's top-k items that are also in the predicted top-k (ties: earlier index wins)."""
    pred, truth = _pair(pred, truth)
    if not 1 <= k <= len(pred):
        raise ValueError(f"k must be in 1..{len(pred)}, got {k}")
    return len(set(top_indices(pred, k).tolist()) & set(top_indices(truth, k).tolist())) / k


def _check_columns(df: pd.DataFrame) -> None:
    """A one-line ValueError naming the ground-truth columns that are missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"ground truth is missing columns: {', '.join(missing)}")


def load_groundtruth(path: str | Path) -> pd.DataFrame:
    """The ground-truth CSV (one row per architecture and seed), with its columns checked."""
    # `arch` as text: a one-layer architecture like "4" must not become an integer.
    df = pd.read_csv(path, dtype={"arch": str})
    _check_columns(df)
    duplicated = df.duplicated(["arch", "seed"])
    if duplicated.any():
        first = df.loc[duplicated, ["arch", "seed"]].iloc[0]
        raise ValueError(f"ground truth has {int(duplicated.sum())} duplicate (arch, seed) rows, e.g. {tuple(first)}")
    return df


def groundtruth_means(df: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture, sorted by arch: mean test_top1 over seeds, n_seeds, mflops, params."""
    _check_columns(df)
    grouped = df.groupby("arch", sort=True)
    return pd.DataFrame(
        {
            "test_top1": grouped["test_top1"].mean(),
            "n_seeds": grouped["test_top1"].count(),
            "mflops": grouped["mflops"].first(),
            "params": grouped["params"].first(),
        }
    ).reset_index()


def seed_ceiling(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """τ between the two smallest seeds' test_top1 (with BCa interval) and the pooled seed-to-seed sd.

    This compares one noisy seed with another, a harder test than rankers face (they are scored against the
    mean over seeds): `mean_ceiling` gives the matching ceiling; this one is kept, labelled, beside it.
    """
    _check_columns(df)
    wide = df.pivot(index="arch", columns="seed", values="test_top1").sort_index()
    seeds = sorted(wide.columns)[:2]
    # Pooled over every architecture with at least two seeds, not only the first two seeds.
    variances = df.groupby("arch")["test_top1"].var(ddof=1).dropna()
    out = {
        "seeds": tuple(int(s) for s in seeds),
        "n": 0,
        "kendall_tau": math.nan,
        "tau_low": math.nan,
        "tau_high": math.nan,
        "pooled_sd": math.sqrt(variances.mean()) if len(variances) else math.nan,
    }
    if len(seeds) < 2:
        return out
    both = wide[seeds].dropna()
    a, b = both[seeds[0]].to_numpy(), both[seeds[1]].to_numpy()
    out["n"] = len(both)
    if len(both) >= 3:
        out["kendall_tau"] = kendall_tau(a, b)
        out["tau_low"], out["tau_high"] = bootstrap_interval(tau_b, a, b, n_boot=n_boot, seed=seed)
    return out


def _ceiling_tau(*seed_columns: np.ndarray, axis: int = -1) -> np.ndarray:
    """τ a noise-free ranker reaches against the per-architecture mean, from an (arch × seed) table given as one
    array per seed (NaN where missing; vectorised over resamples of the architectures), via `_components`."""
    return _components(np.stack([np.moveaxis(c, axis, -1) for c in seed_columns], axis=-1))[2]


def _components(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(one seed's reliability R1, the seeds averaged k, τ of a noise-free ranker against the k-seed mean) from
    an (..., arch, seed) table, NaN where missing.

    One-way random-effects variance components by the method of moments: the seed noise σ²_w is the pooled
    within-architecture variance; the spread of true accuracies σ²_b is the variance of the architecture means
    less the noise they still carry, σ²_w · mean(1 / n_i) (clipped at 0). An architecture's k-seed mean
    (1 / k = mean(1 / n_i)) then has reliability R_k = σ²_b / (σ²_b + σ²_w / k), its correlation with the true
    value is √R_k, and under normality Kendall's τ is (2/π)·arcsin(√R_k) (Greiner's relation). Two single seeds
    correlate by R1 = σ²_b / (σ²_b + σ²_w), i.e. τ = (2/π)·arcsin(R1), the old ceiling's expectation.
    """
    seen = np.isfinite(table)
    n_i = seen.sum(-1)
    x = np.where(seen, table, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = x.sum(-1) / n_i
        within = (((x - means[..., None]) ** 2) * seen).sum((-2, -1)) / np.maximum(n_i - 1, 0).sum(-1)
        inv_k = (1.0 / n_i).mean(-1)
        between = np.maximum(np.var(means, axis=-1, ddof=1) - within * inv_k, 0.0)
        r1 = between / (between + within)
        rk = between / (between + within * inv_k)
    return r1, 1.0 / inv_k, 2.0 / np.pi * np.arcsin(np.sqrt(rk))


def mean_ceiling(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The attainable τ against the ground truth's per-architecture means: a noise-free ranker's τ (with a BCa
    interval over architectures), one seed's reliability and the seeds averaged (see `_components`)."""
    _check_columns(df)
    wide = df.pivot(index="arch", columns="seed", values="test_top1").sort_index().to_numpy(dtype=float)
    out = {"ceiling_mean_tau": math.nan, "ceiling_mean_low": math.nan, "ceiling_mean_high": math.nan}
    out |= {"seed_reliability": math.nan, "gt_seeds": math.nan}
    if wide.shape[0] < 3 or wide.shape[1] < 2 or (np.isfinite(wide).sum(1) >= 2).sum() == 0:
        return out
    r1, k, tau = (float(v) for v in _components(wide))
    out |= {"ceiling_mean_tau": tau, "seed_reliability": r1, "gt_seeds": k}
    [(low, high)], _ = bootstrap_intervals(_ceiling_tau, *wide.T, n_boot=n_boot, seed=seed)
    return out | {"ceiling_mean_low": low, "ceiling_mean_high": high}


@functools.lru_cache(maxsize=8)
def _ceiling_row(records: tuple, n_boot: int, seed: int) -> dict:
    """The ceiling row from (arch, seed, test_top1) records: the same for every epoch and run, so computed once."""
    df = pd.DataFrame(list(records), columns=["arch", "seed", "test_top1"]).assign(mflops=0.0, params=0.0)
    ceiling = seed_ceiling(df, n_boot=n_boot, seed=seed)
    row = {"predictor": "ceiling", "n": ceiling["n"], **{k: ceiling[k] for k in ("kendall_tau", "tau_low", "tau_high")}}
    return row | mean_ceiling(df, n_boot=n_boot, seed=seed)


@functools.lru_cache(maxsize=32)
def _reference(name: str, pred: tuple, truth: tuple, ks: tuple, n_boot: int, seed: int) -> dict:
    """A FLOPs- or params-only row: the same for every epoch and run of a ground truth, so computed once."""
    return _row(name, np.array(pred), np.array(truth), ks, n_boot, seed)


def _row(name: str, pred: np.ndarray, truth: np.ndarray, ks: Sequence[int], n_boot: int, seed: int) -> dict:
    """One predictor's fidelity row; a top-k overlap with k larger than n is NaN."""
    row = {"predictor": name, "n": len(pred), "kendall_tau": kendall_tau(pred, truth)}
    row["tau_low"], row["tau_high"] = bootstrap_interval(tau_b, pred, truth, n_boot=n_boot, seed=seed)
    row["spearman"] = spearman_rho(pred, truth)
    row["rho_low"], row["rho_high"] = bootstrap_interval(rho, pred, truth, n_boot=n_boot, seed=seed)
    for k in ks:
        row[f"top{k}_overlap"] = topk_overlap(pred, truth, k) if k <= len(pred) else math.nan
    return row


def fidelity(
    scores: dict[str, float], truth: pd.DataFrame, *, ks: Sequence[int] = (5, 10), n_boot: int = N_BOOT, seed: int = 0
) -> list[dict]:
    """Rows for the supernet, FLOPs-only and params-only predictors and the ceilings, on common architectures.

    The supernet row also holds τ(supernet) − τ(FLOPs) with its paired BCa 95 % and 90 % intervals and bootstrap
    standard error (`flops_diff*`); the ceiling row the single-seed τ (`kendall_tau`) and the noise-free
    ranker's τ against the k-seed mean (`ceiling_mean_*`). Every row has every column (NaN where it has none).
    """
    means = groundtruth_means(truth).set_index("arch")
    common = sorted(set(scores) & set(means.index))
    if len(common) < 3:
        raise ValueError(f"fidelity needs at least 3 architectures in both scores and ground truth, got {len(common)}")
    means = means.loc[common]
    target = means["test_top1"].to_numpy()
    supernet = np.array([scores[a] for a in common], dtype=float)
    rows = [_row("supernet", supernet, target, ks, n_boot, seed)]
    key = (tuple(target), tuple(ks), n_boot, seed)
    rows += [dict(_reference(p, tuple(means[col].to_numpy(dtype=float)), *key)) for p, col in PREDICTORS]
    # The supernet's mean score on these architectures: for a path-accuracy scorer, the mean held-out accuracy
    # (BN recalibrated) of architectures drawn uniformly in the band, i.e. how well its paths are trained.
    rows[0]["mean_score"] = float(supernet.mean())
    flops = means["mflops"].to_numpy(dtype=float)
    diff, se = bootstrap_intervals(_tau_gain, supernet, flops, target, levels=(0.95, 0.90), n_boot=n_boot, seed=seed)
    rows[0]["flops_diff"] = float(_tau_gain(supernet, flops, target))
    rows[0]["flops_diff_low"], rows[0]["flops_diff_high"] = diff[0]
    rows[0]["flops_diff_low90"], rows[0]["flops_diff_high90"] = diff[1]
    rows[0]["flops_diff_se"] = se
    # The ceilings on the same architectures: τ depends on how spread out the set's accuracies are.
    on_common = truth[truth["arch"].isin(common)][["arch", "seed", "test_top1"]]
    rows.append(dict(_ceiling_row(tuple(on_common.itertuples(index=False, name=None)), n_boot, seed)))
    columns = dict.fromkeys(c for r in rows for c in r)
    return [{c: r.get(c, math.nan) for c in columns} for r in rows]


PREDICTORS = (("flops", "mflops"), ("params", "params"))  # the complexity-only rankings a supernet must beat


def _fmt(value: object) -> str:
    """Fixed text for a CSV cell, so the same rows always give the same bytes."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{float(value):.6f}"
    return str(value)


def write_ranking_csv(rows: Sequence[dict], path: str | Path, **extra_columns: object) -> None:
    """Write fidelity rows as CSV, extra columns (e.g. epoch=3) first and repeated on every row, in row order."""
    # Union of keys in first-seen order: rows of several epochs or ks can share one file; gaps are nan.
    columns = list(dict.fromkeys([*extra_columns, *(c for row in rows for c in row)]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            merged = {**row, **extra_columns}
            writer.writerow([_fmt(merged.get(c, math.nan)) for c in columns])


def _cell(value: float, low: float = math.nan, high: float = math.nan) -> str:
    """A markdown cell: the value to 3 decimals, its interval where there is one, a dash where undefined."""
    if math.isnan(value):
        return "—"
    if math.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def ranking_table(rows: Sequence[dict]) -> str:
    """A markdown table of fidelity rows: predictor, n, τ and ρ with 95 % intervals, top-k overlaps."""
    ks = [int(m.group(1)) for c in rows[0] if (m := _TOPK.fullmatch(c))]
    header = ["predictor", "n", "Kendall τ [95 %]", "Spearman ρ [95 %]"] + [f"top-{k}" for k in ks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            str(r["predictor"]),
            str(r["n"]),
            _cell(r["kendall_tau"], r["tau_low"], r["tau_high"]),
            _cell(r["spearman"], r["rho_low"], r["rho_high"]),
        ]
        cells += [_cell(r[f"top{k}_overlap"]) for k in ks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
