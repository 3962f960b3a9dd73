"""The paper's claims judged on our runs: t-intervals over seeds, paired differences, gains and verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from benchmark import paper
from benchmark.paper import Claim
from benchmark.results import LOG_KEYS, NAN, Results, load


# --- statistics ----------------------------------------------------------------------------------------
def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with a two-sided Student-t interval over the finite values; NaN bounds below n = 2."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return NAN, NAN, NAN, 0
    mean = float(x.mean())
    if len(x) < 2:
        return mean, NAN, NAN, 1
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half, len(x)


def paired_interval(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict:
    """Mean and t-interval of a[s] − b[s] over the seeds both have: {mean, low, high, n, seeds}."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    mean, low, high, n = t_interval([a[s] - b[s] for s in seeds], level)
    return {"mean": mean, "low": low, "high": high, "n": n, "seeds": seeds}


def verdict(low: float, high: float, n: int, direction: str, threshold: float) -> str:
    """'held' (interval on the claimed side), 'not held' (entirely on the other) or 'inconclusive'."""
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if direction == ">":
        return "held" if low > threshold else "not held" if high <= threshold else "inconclusive"
    return "held" if high < threshold else "not held" if low >= threshold else "inconclusive"


def per_seed(res: Results, quantity: str, label: str, space: str) -> dict[int, float]:
    """{seed: value} of one label on one space: a final.json quantity, or its last supernet epoch's log field."""
    df = res.last if quantity in LOG_KEYS else res.runs[res.runs["status"] == "ok"]
    sel = df[(df["label"] == label) & (df["space"] == space)]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[quantity]) if math.isfinite(v)}


def gains(values: dict[tuple[str, str], dict[int, float]], a: str, baselines: Sequence[str], kind: str) -> dict:
    """Per seed, `a` minus each baseline on the same space and seed: averaged over baselines then spaces
    ('mean_gain'), or the largest difference ('max_gain'). `values` maps (space, label) to {seed: value}."""
    out = {}
    for seed in sorted({s for (_, label), v in values.items() if label == a for s in v}):
        diffs = []
        for (space, label), v in sorted(values.items()):
            if label == a and seed in v:
                d = [v[seed] - values[(space, b)][seed] for b in baselines if seed in values.get((space, b), {})]
                diffs += [d] if d else []
        if diffs:
            out[seed] = float(np.mean([np.mean(d) for d in diffs])) if kind == "mean_gain" else max(map(max, diffs))
    return out


# --- claims --------------------------------------------------------------------------------------------
def fmt(x: float, digits: int, signed: bool = True) -> str:
    """Fixed-format number; '—' for NaN."""
    return "—" if not math.isfinite(x) else f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _what(c: Claim) -> str:
    """What our number for claim `c` is, in words."""
    q = {"supernet_train_s": "supernet device time net of logged probe/ζ time"}.get(c.quantity, c.quantity)
    when = " at the last supernet epoch" if c.quantity in LOG_KEYS else ""
    b = ", ".join(c.b)
    if c.kind == "mean_gain":
        return f"{c.a} {q} − mean of ({b}) on the same space and seed, averaged"
    if c.kind == "max_gain":
        return f"largest {c.a} − baseline {q} ({b}) on the same space and seed"
    return {"value": f"{c.a} {q}{when}", "diff": f"{c.a} − {b} {q}{when}", "ratio": f"{c.a} / {b} {q}"}[c.kind]


def judge(c: Claim, group: str, space: str, values: dict[int, float], a: dict, b: dict) -> dict:
    """A claim's result row: t-interval of the per-seed values, verdict and a one-line message with the figures."""
    seeds = sorted(values)
    mean, low, high, n = t_interval([values[s] for s in seeds])
    v = verdict(low, high, n, c.direction, c.threshold)
    signed, d = c.kind != "ratio", c.digits
    eps = 1e-9 * max(1.0, abs(c.paper or 0.0))  # a degenerate interval [x, x] holds x despite rounding
    inside = None if c.paper is None or n < 2 else bool(low - eps <= c.paper <= high + eps)
    where = "all spaces" if space == "all" else space
    paired = "paired " if c.kind in ("diff", "ratio") else ""
    if n == 0:
        counts = ", ".join(f"{k}: {len(x)}" for k, x in zip(c.labels, (a, b)) if c.kind in ("value", "diff", "ratio"))
        msg = f"{_what(c)} on {where}: no {paired}seeds" + (f" (seeds per label: {counts})" if counts else "")
    else:
        ours = fmt(mean, d, signed) + (f" [{fmt(low, d, signed)}, {fmt(high, d, signed)}]" if n >= 2 else "")
        msg = (
            f"{_what(c)} on {where}: {ours} {c.unit}, n={n} {paired}seed{'s' * (n != 1)} ({', '.join(map(str, seeds))})"
        )
    if c.kind in ("diff", "ratio") and seeds:
        msg += f"; {c.a} {np.mean([a[s] for s in seeds]):.{d}f}, {c.b[0]} {np.mean([b[s] for s in seeds]):.{d}f}"
    if c.paper is not None:
        msg += f"; paper {fmt(c.paper, d, signed)}" + {True: " (inside ours)", False: " (outside ours)"}.get(inside, "")
    why = "" if v != "inconclusive" else f" (fewer than 2 {paired}seeds)" if n < 2 else " (the interval straddles it)"
    msg += f"; claimed {c.direction} {c.threshold:g} → {v}{why}"
    return {
        "id": c.id, "group": group, "space": space, "text": c.text, "source": c.source, "paper": c.paper,
        "ours_mean": mean, "low": low, "high": high, "n": n, "seeds": seeds, "direction": c.direction,
        "threshold": c.threshold, "verdict": v, "paper_in_interval": inside, "message": msg, "signed": signed,
        "digits": d,
    }  # fmt: skip


def evaluate(res: Results, c: Claim, group: str = "claim") -> list[dict]:
    """Result rows of one claim: one per space with data for its labels (or one pooled row for Table 1 gains)."""
    if not c.per_space:
        values = {(s, label): per_seed(res, c.quantity, label, s) for s in res.spaces for label in c.labels}
        return [judge(c, group, "all", gains(values, c.a, c.b, c.kind), {}, {})]
    spaces = [s for s in res.spaces if any(per_seed(res, c.quantity, label, s) for label in c.labels)] or ["—"]
    rows = []
    for space in spaces:
        a = per_seed(res, c.quantity, c.a, space)
        b = per_seed(res, c.quantity, c.b[0], space) if c.b else {}
        if c.kind == "value":
            values = a
        elif c.kind == "diff":
            values = {s: a[s] - b[s] for s in a if s in b}
        else:
            values = {s: a[s] / b[s] for s in a if s in b and b[s] != 0}
        rows.append(judge(c, group, space, values, a, b))
    return rows


def judge_all(res: Results) -> list[dict]:
    """Every paper claim, then every qualitative check, evaluated on `res`."""
    return [r for c in paper.CLAIMS for r in evaluate(res, c)] + [
        r for c in paper.CHECKS for r in evaluate(res, c, "check")
    ]


def claim_results(run_dir: str | Path) -> list[dict]:
    """Each claim and check per space: id, paper, ours_mean, low, high, n, seeds, verdict, message."""
    return judge_all(load(run_dir))
