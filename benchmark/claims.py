"""The paper's claims judged on our runs: per-seed values, paired differences, gains, intervals and verdicts.

Each claim's per-seed values (paired where two labels are compared) give a t interval and a verdict from
`benchmark.verdicts` (the scheme is documented there) against the paper's figure scaled to our data and the
claim's Δ (`benchmark.paper`). Ratios are judged on the log scale and shown back as ratios. The ranking rows
read each run's ranking.csv at its last supernet epoch: τ differences between methods over seeds, and per run
the supernet against FLOPs alone (a bootstrap over architectures that `benchmark.ranking` wrote).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import paper, power
from benchmark.paper import Claim
from benchmark.results import LOG_KEYS, NAN, Results, load
from benchmark.verdicts import MIN_N, from_values, judge_interval, max_gain_null, null_summary, supplied


# --- statistics ----------------------------------------------------------------------------------------
def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with a two-sided Student-t interval (95 % or 90 %) over the finite values."""
    e = from_values(values)
    return (e.mean, e.low, e.high, e.n) if level == 0.95 else (e.mean, e.low90, e.high90, e.n)


def paired_interval(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> dict:
    """Mean and t-interval of a[s] − b[s] over the seeds both have: {mean, low, high, n, seeds}."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    mean, low, high, n = t_interval([a[s] - b[s] for s in seeds], level)
    return {"mean": mean, "low": low, "high": high, "n": n, "seeds": seeds}


def last_ranking(res: Results) -> pd.DataFrame:
    """The supernet's ranking.csv row of each run at its last epoch (long form: predictor `supernet`)."""
    rk = res.ranking
    if rk.empty or not {"epoch", "kendall_tau"} <= set(rk.columns):
        return pd.DataFrame(columns=["label", "space", "seed", "epoch", "kendall_tau"])
    if "predictor" in rk:
        rk = rk[rk["predictor"] == "supernet"]
    rk = rk.dropna(subset=["epoch", "kendall_tau"])
    return rk.sort_values("epoch", kind="stable").drop_duplicates(["label", "space", "seed"], keep="last")


def per_seed(res: Results, quantity: str, label: str, space: str) -> dict[int, float]:
    """{seed: value} of one label on one space: a final.json quantity, its last supernet epoch's log field, or
    the supernet's Kendall τ at its last ranked epoch."""
    if quantity == "kendall_tau":
        df = last_ranking(res)
    else:
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


def _null_groups(values: dict[tuple[str, str], dict[int, float]], c: Claim, seeds: list[int]) -> list[list[list]]:
    """Per seed, per space: a's value then each baseline's, as `verdicts.max_gain_null` takes them."""
    out = []
    for seed in seeds:
        spaces = []
        for space in sorted({s for s, _ in values}):
            a = values.get((space, c.a), {})
            b = [values[(space, x)][seed] for x in c.b if seed in values.get((space, x), {})]
            spaces += [[a[seed], *b]] if seed in a and b else []
        out.append(spaces)
    return out


def runs_sd(values: dict[tuple[str, str], dict[int, float]], c: Claim, seeds: list[int]) -> float:
    """One run's noise sd among the claim's labels: the residual of seed x label on each space (seeds holding all
    the labels there), pooled over spaces; it sizes the largest-gain claim's simulated test."""
    squares, df = 0.0, 0
    for space in sorted({s for s, _ in values}):
        rows = [[values[(space, x)][seed] for x in c.labels] for seed in seeds
                if all(seed in values.get((space, x), {}) for x in c.labels)]  # fmt: skip
        if len(rows) >= 2:
            x = np.asarray(rows)
            resid = x - x.mean(axis=0) - x.mean(axis=1, keepdims=True) + x.mean()
            squares, df = squares + float((resid**2).sum()), df + (x.shape[0] - 1) * (x.shape[1] - 1)
    return math.sqrt(squares / df) if df else NAN


# --- claims --------------------------------------------------------------------------------------------
def fmt(x: float, digits: int, signed: bool = True) -> str:
    """Fixed-format number; '—' for NaN."""
    return "—" if not math.isfinite(x) else f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def delta_of(log_ratio: float, digits: int = 1) -> str:
    """A log-ratio margin as ±percent."""
    return "—" if not math.isfinite(log_ratio) else f"±{100 * (math.exp(log_ratio) - 1):.{digits}f} %"


def shower(c: Claim):
    """How a value of claim `c` is printed: log-ratios as ratios, the rest signed in the claim's digits."""
    if c.kind == "ratio":
        return lambda x: fmt(math.exp(x), c.digits, False) if math.isfinite(x) else "—"
    return lambda x: fmt(x, c.digits)


def delta_text(c: Claim) -> str:
    """Δ as printed: ±percent for ratios (judged on the log scale), else in the claim's units."""
    return delta_of(c.effect.delta, 0) if c.kind == "ratio" else f"{c.effect.delta:.{c.digits}f}"


def _what(c: Claim) -> str:
    """What our number for claim `c` is, in words."""
    q = {"supernet_train_s": "supernet device time net of probes and DNA's teacher (ζ included)"}.get(
        c.quantity, c.quantity
    )
    q = {"kendall_tau": "supernet Kendall τ (last ranked epoch)"}.get(q, q)
    when = " at the last supernet epoch" if c.quantity in LOG_KEYS else ""
    b = ", ".join(c.b)
    if c.kind == "mean_gain":
        return f"{c.a} {q} − mean of ({b}) on the same space and seed, averaged"
    if c.kind == "max_gain":
        return f"largest {c.a} − baseline {q} ({b}) on the same space and seed"
    return {"value": f"{c.a} {q}{when}", "diff": f"{c.a} − {b} {q}{when}", "ratio": f"{c.a} / {b} {q}"}[c.kind]


def judge(c: Claim, group: str, space: str, values: dict[int, float], a: dict, b: dict, **ctx) -> dict:
    """A claim's result row: the per-seed values' t intervals, the verdict against P scaled and Δ, its sizing,
    and a one-line message. `ctx` may give `scaled` (P scaled), `null` (a permutation null summary), or `est`
    with `what` (an estimate made elsewhere, e.g. isolated timings, and the words for it). Numbers are in the
    judged units (log-ratios for ratios); `shown` holds them as printed."""
    seeds = sorted(values)
    est = ctx.get("est") or from_values([values[s] for s in seeds])
    show, d = shower(c), c.digits
    p_fig = paper.paper_figure(c, space)
    ref = math.log(p_fig) if c.kind == "ratio" and p_fig else p_fig  # P in the judged (log) units
    scaled = ctx.get("scaled", ref)
    size = delta_of if c.kind == "ratio" else lambda x: fmt(x, d, False)
    units = ctx.get("units", "seeds")  # what n counts: seeds, or rounds of isolated timings
    opts = {"test": c.test, "null": ctx.get("null"), "size": ctx.get("size"), "units": units}
    v = judge_interval(est, c.effect.delta, scaled, show=show, show_size=size, **opts)
    where = "all spaces" if space == "all" else space
    paired = "paired " if c.kind in ("diff", "ratio") else ""
    if ctx.get("what"):
        msg = f"{ctx['what']}: {show(est.mean)} [{show(est.low)}, {show(est.high)}] {c.unit}, n={est.n}"
    elif est.n == 0:
        counts = ", ".join(f"{k}: {len(x)}" for k, x in zip(c.labels, (a, b)) if c.kind in ("value", "diff", "ratio"))
        msg = f"{_what(c)} on {where}: no {paired}seeds" + (f" (seeds per label: {counts})" if counts else "")
    else:
        ours = show(est.mean) + (f" [{show(est.low)}, {show(est.high)}]" if est.n >= 2 else "")
        msg = f"{_what(c)} on {where}: {ours} {c.unit}, n={est.n} {paired}seed{'s' * (est.n != 1)} ({', '.join(map(str, seeds))})"
    if c.kind in ("diff", "ratio") and seeds:
        each = " device-s" if c.quantity.endswith("_s") else ""  # the ratio's terms carry their own unit
        msg += f"; {c.a} {np.mean([a[s] for s in seeds]):.{d}f}{each}, {c.b[0]} {np.mean([b[s] for s in seeds]):.{d}f}{each}"
    if ctx.get("null"):
        null = ctx["null"]
        msg += f"; label-permutation null mean {show(null['mean'])}, 95 % quantile {show(null['q95'])}, p = {null['p']:.3f}"
    if p_fig is not None:
        msg += f"; paper {show(ref)}" + (f" (scaled to ours {show(scaled)})" if scaled != ref else "")
    msg += f"; Δ {delta_text(c)} → {v['verdict_text']}"
    shown = {"paper": "—" if ref is None else show(ref), "scaled": "—" if scaled is None else show(scaled)}
    shown |= {"mean": show(est.mean), "interval": f"[{show(est.low)}, {show(est.high)}]" if est.n >= 2 else "—"}
    shown |= {"delta": delta_text(c), "mde": size(v["mde"])}
    return {
        "id": c.id, "group": group, "space": space, "text": c.text, "source": c.source, "test": c.test,
        "paper": ref, "paper_scaled": NAN if scaled is None else scaled, "delta": c.effect.delta,
        "delta_why": c.effect.why, "ours_mean": est.mean, "low": est.low, "high": est.high, "low90": est.low90,
        "high90": est.high90, "sd": est.sd, "n": est.n, "seeds": seeds, "message": msg, "shown": shown,
        "unit": c.unit, "digits": d, "null": ctx.get("null"), **v,
    }  # fmt: skip


def _errors(values: dict[tuple[str, str], dict[int, float]], baselines: Sequence[str], seeds: Sequence[int]) -> dict:
    """Our baselines' top-1 error, 100 − the mean top-1 over `seeds`, per (space, baseline), for P scaled."""
    out = {}
    for (space, label), v in sorted(values.items()):
        if label in baselines and any(s in v for s in seeds):
            out[(space, label)] = 100.0 - float(np.mean([v[s] for s in seeds if s in v]))
    return out


def pooled(c: Claim, values: dict[tuple[str, str], dict[int, float]], group: str = "claim") -> dict:
    """The row of a claim pooled over spaces (Table 1 gains) from {(space, label): {seed: value}}: P scaled from
    the baselines' errors on the seeds judged and, for the largest gain, its label-permutation null."""
    g = gains(values, c.a, c.b, c.kind)
    ctx = {"scaled": paper.scaled_top1(c, _errors(values, c.b, sorted(g)))} if c.quantity == "top1" else {}
    if c.kind == "max_gain" and g:
        ctx["null"] = null_summary(max_gain_null(_null_groups(values, c, sorted(g))), float(np.mean(list(g.values()))))
        spaces = len({s for (s, label), v in values.items() if label == c.a and v})
        sd = runs_sd(values, c, sorted(g))
        ctx["size"] = {"sizing": "max-gain-null", "runs_sd": sd, "labels": len(c.labels), "spaces": spaces}
        ctx["size"] |= power.max_gain_plan(sd, c.effect.delta, len(g), len(c.labels), spaces, n_min=MIN_N)
    return judge(c, group, "all", g, {}, {}, **ctx)


def evaluate(res: Results, c: Claim, group: str = "claim") -> list[dict]:
    """Result rows of one claim: one per space with data for its labels (or one pooled row for Table 1 gains)."""
    if not c.per_space:
        return [
            pooled(
                c, {(s, label): per_seed(res, c.quantity, label, s) for s in res.spaces for label in c.labels}, group
            )
        ]
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
            values = {s: math.log(a[s] / b[s]) for s in a if s in b and a[s] > 0 and b[s] > 0}
        ctx = {}
        if c.quantity == "top1" and c.kind == "diff":
            ctx["scaled"] = paper.scaled_top1(c, _errors({(space, c.b[0]): b}, c.b, sorted(values)))
        rows.append(judge(c, group, space, values, a, b, **ctx))
    return rows


def supernet_vs_flops(res: Results) -> list[dict]:
    """Per run, τ(supernet) − τ(FLOPs) against the ground truth at the last ranked epoch, judged with τ's Δ
    from the paired bootstrap over architectures that ranking.csv holds (rows written before it: none)."""
    rows = []
    last = last_ranking(res)
    if "flops_diff" not in last:
        return rows
    for r in last.itertuples():
        est = supplied(r.flops_diff, r.flops_diff_low, r.flops_diff_high, int(r.n), se=r.flops_diff_se,
                       low90=r.flops_diff_low90, high90=r.flops_diff_high90)  # fmt: skip
        show, size = (lambda x: fmt(x, 3)), (lambda x: fmt(x, 3, False))
        v = judge_interval(est, paper.TAU.delta, None, show=show, show_size=size, units="architectures")
        rows.append({"id": "supernet_vs_flops", "group": "flops", "space": r.space, "label": r.label, "seed": r.seed,
                     "epoch": int(r.epoch), "tau": r.kendall_tau, "ours_mean": est.mean, "low": est.low,
                     "high": est.high, "n": est.n, "delta": paper.TAU.delta, **v})  # fmt: skip
    return rows


PERF_COSTS = "perf_costs.json"  # `python -m benchmark.perf cost_ratio --json` beside the runs: isolated timings


def isolated_cost(res: Results, rows: list[dict]) -> list[dict]:
    """The cost claim decided by isolated, interleaved epoch timings (benchmark.perf cost_ratio) where the folder
    holds them; the runs' own co-scheduled times stay, as group `cost-coscheduled`, for the cost section."""
    path = res.root / PERF_COSTS
    perf = json.loads(path.read_text()).get("cost_ratio") if path.is_file() else None
    c = next(c for c in paper.CLAIMS if c.id == "cost_vs_spos")
    key = f"{c.a}_over_{c.b[0]}"
    if not perf or key not in perf:
        return rows
    r = perf[key]
    est = supplied(math.log(r["ratio"]), math.log(r["low"]), math.log(r["high"]), int(perf["rounds"]), r["log_sd"])
    what = f"{c.a} / {c.b[0]} supernet epoch, isolated and interleaved on one machine ({PERF_COSTS}), {perf['what']}"
    row = judge(c, "claim", "s1", {}, {}, {}, est=est, what=what, units="rounds") | {"source_of_estimate": "isolated"}
    kept = [r | {"group": "cost-coscheduled"} if r["id"] == c.id and r["group"] == "claim" else r for r in rows]
    at = next(i for i, r in enumerate(kept) if r["id"] == c.id)
    return kept[:at] + [row] + kept[at:]


def judge_all(res: Results) -> list[dict]:
    """Every paper claim, qualitative check and ranking claim, then each run's supernet against FLOPs."""
    groups = (("claim", paper.CLAIMS), ("check", paper.CHECKS), ("ranking", paper.RANKING))
    rows = [r for group, cs in groups for c in cs for r in evaluate(res, c, group)]
    return isolated_cost(res, rows) + supernet_vs_flops(res)


def claim_results(run_dir: str | Path) -> list[dict]:
    """Each claim and check per space: id, paper, ours_mean, low, high, n, seeds, verdict, message."""
    return judge_all(load(run_dir))
