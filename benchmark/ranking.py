"""Ranking fidelity: how well supernet scores rank architectures like a stand-alone ground truth does.

Kendall τ-b, Spearman ρ and top-k overlap with bootstrap 95 % intervals, beside the FLOPs-only and
params-only rankings a supernet must beat and the ground truth's own seed-to-seed τ (the ceiling).
Larger is better everywhere: higher score, more FLOPs, more params all predict higher accuracy.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("arch", "seed", "test_top1", "mflops", "params")
_TOPK = re.compile(r"top(\d+)_overlap")


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length 1-D float arrays of finite values, or a ValueError."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"need two 1-D sequences of equal length, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("rankings must be finite (no NaN or inf)")
    return x, y


def _constant(x: np.ndarray, y: np.ndarray) -> bool:
    """True where a rank correlation is undefined: fewer than two items, or one side all equal."""
    return len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall τ-b (corrects for ties on either side), as scipy.stats.kendalltau; NaN where a side is all equal."""
    x, y = _pair(x, y)
    # Undefined, not an error: bootstrap resamples often draw one value only, and skip these.
    if _constant(x, y):
        return math.nan
    # All pairs at once: ~20x faster than scipy at n ≈ 30, which a 1,000-resample bootstrap feels;
    # O(n²) memory is nothing at ground-truth sizes (tens to hundreds of architectures).
    sx, sy = np.sign(np.subtract.outer(x, x)), np.sign(np.subtract.outer(y, y))
    n = len(x)
    pairs = n * (n - 1)  # ordered pairs; the diagonal's n zeros are not ties
    tied_x, tied_y = np.count_nonzero(sx == 0) - n, np.count_nonzero(sy == 0) - n
    return float((sx * sy).sum() / math.sqrt((pairs - tied_x) * (pairs - tied_y)))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman ρ on average ranks (ties share their mean rank), as scipy.stats.spearmanr; NaN where undefined."""
    x, y = _pair(x, y)
    if _constant(x, y):
        return math.nan
    a, b = _average_ranks(x), _average_ranks(y)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (scipy.stats.rankdata's `average`, without its per-call overhead)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def top_indices(values: Sequence[float], k: int) -> np.ndarray:
    """Indices of the k largest values; ties go to the earlier index (stable sort), so the choice is deterministic."""
    return np.argsort(-np.asarray(values, dtype=float), kind="stable")[:k]


def topk_overlap(pred: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Fraction of the truth's top-k items that are also in the predicted top-k (ties: earlier index wins)."""
    pred, truth = _pair(pred, truth)
    if not 1 <= k <= len(pred):
        raise ValueError(f"k must be in 1..{len(pred)}, got {k}")
    return len(set(top_indices(pred, k).tolist()) & set(top_indices(truth, k).tolist())) / k


def bootstrap_interval(
    stat: Callable[[np.ndarray, np.ndarray], float],
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of `stat` over pair resamples; resamples where it is NaN (e.g. all equal) are skipped."""
    x, y = _pair(x, y)
    rng = np.random.default_rng(seed)
    # One index matrix for all resamples: the same seed gives the same resamples for every predictor,
    # so intervals of predictors scored on the same architectures are paired.
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    values = np.array([stat(x[i], y[i]) for i in idx], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


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


def seed_ceiling(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """τ between the two smallest seeds' test_top1 (with interval) and the pooled seed-to-seed sd."""
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
        out["tau_low"], out["tau_high"] = bootstrap_interval(kendall_tau, a, b, n_boot=n_boot, seed=seed)
    return out


def _row(name: str, pred: np.ndarray, truth: np.ndarray, ks: Sequence[int], n_boot: int, seed: int) -> dict:
    """One predictor's fidelity row; a top-k overlap with k larger than n is NaN."""
    row = {"predictor": name, "n": len(pred), "kendall_tau": kendall_tau(pred, truth)}
    row["tau_low"], row["tau_high"] = bootstrap_interval(kendall_tau, pred, truth, n_boot=n_boot, seed=seed)
    row["spearman"] = spearman_rho(pred, truth)
    row["rho_low"], row["rho_high"] = bootstrap_interval(spearman_rho, pred, truth, n_boot=n_boot, seed=seed)
    for k in ks:
        row[f"top{k}_overlap"] = topk_overlap(pred, truth, k) if k <= len(pred) else math.nan
    return row


def fidelity(
    scores: dict[str, float], truth: pd.DataFrame, *, ks: Sequence[int] = (5, 10), n_boot: int = 1000, seed: int = 0
) -> list[dict]:
    """Rows for the supernet, FLOPs-only and params-only predictors and the seed ceiling, on common architectures."""
    means = groundtruth_means(truth).set_index("arch")
    common = sorted(set(scores) & set(means.index))
    if len(common) < 3:
        raise ValueError(f"fidelity needs at least 3 architectures in both scores and ground truth, got {len(common)}")
    means = means.loc[common]
    target = means["test_top1"].to_numpy()
    predictors = {
        "supernet": np.array([scores[a] for a in common], dtype=float),
        "flops": means["mflops"].to_numpy(dtype=float),
        "params": means["params"].to_numpy(dtype=float),
    }
    rows = [_row(name, pred, target, ks, n_boot, seed) for name, pred in predictors.items()]
    # The supernet's mean score on these architectures: for a path-accuracy scorer, the mean held-out accuracy
    # (BN recalibrated) of architectures drawn uniformly in the band, i.e. how well its paths are trained.
    rows[0]["mean_score"] = float(predictors["supernet"].mean())
    # The ceiling on the same architectures: τ depends on how spread out the set's accuracies are.
    ceiling = seed_ceiling(truth[truth["arch"].isin(common)], n_boot=n_boot, seed=seed)
    row = dict.fromkeys(rows[0], math.nan)
    row.update(predictor="ceiling", n=ceiling["n"], **{k: ceiling[k] for k in ("kendall_tau", "tau_low", "tau_high")})
    return rows + [row]


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
