"""Statistical power: the minimum detectable effect at n seeds and the seeds needed at Δ, to size a study.

    python -m benchmark.power runs/proxy --n 5 10

Claims are judged by a two-sided paired (one-sample) t test at α = 0.05 and sized for 80 % power with the
noncentral t (`scipy.stats.nct`); the equivalence claim (cost) by two one-sided tests (TOST) at α = 0.05 each,
i.e. its 90 % interval inside ±Δ, sized for 80 % power when there is no difference at all. Everything is read off
the observed paired sd of a pilot, which a pilot of three seeds underestimates as often as not (Colas et al.
2018): a planned n is a floor. Estimates that come with a standard error instead of per-seed values (bootstrap
intervals over architectures) use the normal approximation, with n in those units. The largest-gain claim is
tested against a label-permutation null, not 0, so its sizing is simulated against that null (`max_gain_plan`).

Given a run folder, the CLI prints, per claim, the observed sd, the MDE at the current n and at each planned
`--n`, the power at Δ there and the n needed at Δ. Bad input ends with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import integrate, optimize, stats

ALPHA = 0.05
POWER = 0.80
N_MAX = 100_000  # beyond this, "needs more than N_MAX" is the answer


# --- paired t test ---------------------------------------------------------------------------------------
def t_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample t test of mean 0 when the true mean (paired difference) is `effect`."""
    if n < 2 or not math.isfinite(sd) or not math.isfinite(effect):
        return math.nan
    if sd == 0:
        return 1.0 if effect != 0 else alpha
    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd  # the power is symmetric in the effect's sign
    crit = stats.t.ppf(1 - alpha / 2, df)
    wrong_side = stats.nct.cdf(-crit, df, nc)  # NaN in scipy for large nc, where it is below 1e-20
    return float(stats.nct.sf(crit, df, nc) + (0.0 if math.isnan(wrong_side) else wrong_side))


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true effect the t test detects with `power` at n (two-sided α): solves t_power = power."""
    return _solve_for_power(t_power, sd, n, alpha, power, low=0.0)


def _solve_for_power(power_of, sd: float, n: int, alpha: float, power: float, low: float) -> float:
    """The effect (or margin) x at which power_of(x, sd, n, alpha) reaches `power`: doubled until bracketed, then
    Brent's root (both the t test's MDE and TOST's narrowest margin)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = sd
    while power_of(hi, sd, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda x: power_of(x, sd, n, alpha) - power, low * sd, hi, xtol=1e-10 * sd))


def _smallest_n(ok, n_min: int = 2) -> int | None:
    """The smallest n >= n_min with ok(n), for ok monotone in n; None beyond N_MAX."""
    hi = n_min
    while not ok(hi):
        if hi >= N_MAX:
            return None
        hi = min(2 * hi, N_MAX)
    lo = max(n_min, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return hi


def n_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = POWER, n_min: int = 2) -> int | None:
    """Seeds (at least n_min) needed for `power` at a true effect Δ (two-sided t test); None if unknown or
    beyond N_MAX."""
    if not (math.isfinite(sd) and math.isfinite(delta)) or delta == 0:
        return None
    return _smallest_n(lambda n: t_power(delta, sd, n, alpha) >= power, n_min)


# --- equivalence (TOST) ----------------------------------------------------------------------------------
def tost_power(margin: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """P(the 1 − 2α t-interval lies inside ±margin) when the true difference is 0.

    Given the sample sd s, both one-sided tests reject iff |mean| < margin − t(1−α, n−1)·s/√n; the mean is
    N(0, sd²/n) and independent of s, with (n−1)s²/sd² ~ χ²(n−1): one integral over that χ².
    """
    if n < 2 or not (math.isfinite(sd) and math.isfinite(margin)) or margin <= 0:
        return math.nan
    if sd == 0:
        return 1.0
    df, crit, se = n - 1, stats.t.ppf(1 - alpha, n - 1), sd / math.sqrt(n)
    q_max = df * (margin / (crit * se)) ** 2  # beyond it the interval is wider than ±margin whatever the mean

    def inside(q: float) -> float:
        half = margin - crit * se * math.sqrt(q / df)
        return (2 * stats.norm.cdf(half / se) - 1) * stats.chi2.pdf(q, df)

    return float(integrate.quad(inside, 0.0, q_max, limit=200)[0])


def tost_mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The narrowest margin ±m that TOST shows with `power` at n when there is no difference."""
    return _solve_for_power(tost_power, sd, n, alpha, power, low=1e-12)


def tost_n_needed(margin: float, sd: float, alpha: float = ALPHA, power: float = POWER, n_min: int = 2) -> int | None:
    """Seeds (at least n_min) needed for TOST to show ±margin with `power` when there is no difference."""
    if not (math.isfinite(sd) and math.isfinite(margin)) or margin <= 0:
        return None
    return _smallest_n(lambda n: tost_power(margin, sd, n, alpha) >= power, n_min)


# --- estimates with a standard error (normal approximation) ----------------------------------------------
def z_mde(se: float, alpha: float = ALPHA, power: float = POWER, equivalence: bool = False) -> float:
    """MDE (or TOST margin) of an estimate with standard error `se`: (z(1−α/2) + z(power))·se, or z(1−α) + z(1−β/2)
    for TOST at no difference."""
    if not math.isfinite(se):
        return math.nan
    if equivalence:
        return float((stats.norm.ppf(1 - alpha) + stats.norm.ppf(1 - (1 - power) / 2)) * se)
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


def z_n_needed(delta: float, se: float, n: int, n_min: int = 2, **kw) -> int | None:
    """Units (at least n_min) needed for an MDE of Δ when `se` (at n units) shrinks as 1/√n."""
    m = z_mde(se, **kw)
    if not (math.isfinite(m) and n >= 1) or delta <= 0:
        return None
    return max(n_min, math.ceil(n * (m / delta) ** 2))


# --- the largest of several differences, against its label-permutation null (simulated) -------------------
SIM_STUDIES = 1000  # simulated studies per power value: the Monte Carlo sd of a power of 0.8 is about 0.013
SIM_NULL_DRAWS = 500  # relabellings per simulated study, for its Monte Carlo p, (1 + at least as large) / (1 + draws)
SIM_N_MAX = 256  # beyond this many seeds the simulation stops: the n needed is then unknown (None)


def max_gain_options(values: np.ndarray) -> np.ndarray:
    """Along the last axis, each value minus the smallest of the others: the largest gain if that value were `a`
    (max over b of a − b is a − min(b)). The permutation null (`verdicts.max_gain_null`) and its simulated power
    both read it."""
    low = np.sort(values, axis=-1)
    return values - np.where(values == low[..., :1], low[..., 1:2], low[..., :1])


def max_gain_power(gain: float, sd: float, n: int, labels: int, spaces: int = 1, alpha: float = ALPHA) -> float:
    """Power of the largest-gain claim's test (p < α against the label-permutation null of
    `verdicts.max_gain_null`) when `a` beats each of labels − 1 equal baselines by `gain` on every space and each
    run's value has noise sd `sd`: the share of SIM_STUDIES simulated studies of n seeds that reject.

    The t test's power does not apply here: the statistic, the mean over seeds of the largest gain, is biased
    upward by the max and a label-permutation null, not 0, is what it must beat. Simulated in units of sd with
    fixed seeds (common random numbers), so the power is a deterministic, non-decreasing function of gain / sd.
    """
    if n < 2 or labels < 2 or not (math.isfinite(sd) and math.isfinite(gain)) or sd < 0:
        return math.nan
    z = gain / sd if sd > 0 else (1e6 if gain > 0 else 0.0)  # no noise: any gain is as good as a huge one
    rng = np.random.default_rng(n)
    values = rng.standard_normal((SIM_STUDIES, n, spaces, labels))
    values[..., 0] += z
    options = max_gain_options(values)  # (study, seed, space, which value plays a)
    observed = options[..., 0].max(axis=2).mean(axis=1)
    at_least = np.zeros(SIM_STUDIES)
    flat = options.ravel()
    row_at = (np.arange(SIM_STUDIES * n * spaces) * labels).reshape(SIM_STUDIES, 1, n, spaces)
    for _ in range(SIM_NULL_DRAWS // 50):  # 50 relabellings at a time keep memory at studies x 50 x n x spaces
        # each study its own relabellings: shared ones would give every study the same Monte Carlo error
        pick = rng.integers(labels, size=(SIM_STUDIES, 50, n, spaces), dtype=np.int32)
        null = flat[row_at + pick].max(axis=3).mean(axis=2)  # (study, relabelling)
        at_least += (null >= observed[:, None] - 1e-12).sum(axis=1)
    return float(np.mean((1 + at_least) / (1 + SIM_NULL_DRAWS) < alpha))


SIM_GAIN_MAX = 1000.0  # in sd: a gain this large that still lacks the power is one the null cannot show at that n


@functools.lru_cache(maxsize=64)
def max_gain_plan(sd: float, delta: float, n: int, labels: int, spaces: int = 1, n_min: int = 2) -> dict:
    """MDE at n, power at Δ at n and the n (at least n_min, at most SIM_N_MAX) needed at Δ for the largest-gain
    claim against its permutation null (`max_gain_power`); the MDE by bisection to 0.5 % of sd, NaN where no gain
    reaches the power at n: the null bounds p from below whatever the gain (with one space by 1 / labels^n).
    Cached: a report judges the same claim more than once."""
    if n < 2 or not math.isfinite(sd):
        return {"mde": math.nan, "power": math.nan, "n_needed": None}

    def power_at(gain: float, m: int = n) -> float:
        return max_gain_power(gain, sd, m, labels, spaces)

    needed = None
    if delta > 0:
        needed = _smallest_n(lambda m: m > SIM_N_MAX or power_at(delta, m) >= POWER, n_min)
        needed = None if needed > SIM_N_MAX else needed
    if sd == 0:
        return {"mde": 0.0 if power_at(1.0) >= POWER else math.nan, "power": power_at(delta), "n_needed": needed}
    if power_at(SIM_GAIN_MAX * sd) < POWER:
        return {"mde": math.nan, "power": power_at(delta), "n_needed": needed}
    lo, hi = 0.0, sd
    while power_at(hi) < POWER:
        lo, hi = hi, 2 * hi
    while hi - lo > 5e-3 * sd:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if power_at(mid) >= POWER else (mid, hi)
    return {"mde": hi, "power": power_at(delta), "n_needed": needed}


# --- per claim -------------------------------------------------------------------------------------------
def plan(sd: float, delta: float, n: int, equivalence: bool = False, n_min: int = 2) -> dict:
    """MDE at n, power at Δ at n and the n (at least n_min) needed at Δ, for a paired t test (or TOST)."""
    if equivalence:
        needed = tost_n_needed(delta, sd, n_min=n_min)
        return {"mde": tost_mde(sd, n), "power": tost_power(delta, sd, n), "n_needed": needed}
    return {"mde": mde(sd, n), "power": t_power(delta, sd, n), "n_needed": n_needed(delta, sd, n_min=n_min)}


def _num(x: float, digits: int = 3) -> str:
    """A number, '—' when undefined."""
    return f"{x:.{digits}f}" if isinstance(x, float | int) and math.isfinite(x) else "—"


def power_md(rows: Sequence[dict], ns: Sequence[int] = ()) -> str:
    """A markdown table of claim rows (benchmark.claims): sd, n, Δ, MDE and power at n and at each planned n,
    and the n needed at Δ. Log-scale claims (ratios) show sd, Δ and MDE as log-ratios; the largest-gain claim
    ("null (sim.)") one run's sd and its simulated sizing."""
    header = ["claim", "space", "test", "paired sd", "n", "Δ", "MDE at n", "power at Δ"]
    header += [f"{h} at n={n}" for n in ns for h in ("MDE", "power")] + ["n for 80 % at Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        eq, null = r["test"] == "equivalence", r.get("sizing") == "max-gain-null"
        test, sd = ("null (sim.)", r["runs_sd"]) if null else ("TOST" if eq else "t", r["sd"])
        cells = [r["id"], r["space"], test, _num(sd), str(r["n"]), _num(r["delta"])]
        cells += [_num(r["mde"]), _num(r["power"], 2)]
        for n in ns:
            p = max_gain_plan(sd, r["delta"], n, r["labels"], r["spaces"]) if null else plan(sd, r["delta"], n, eq)
            cells += [_num(p["mde"]), _num(p["power"], 2)]
        needed = r["n_needed"]
        cells.append("—" if needed is None else str(needed) if needed < N_MAX else f"> {N_MAX}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmark.power DIR [--n N ...]`: the power table of DIR's claims; bad input exits 2."""
    p = argparse.ArgumentParser(prog="python -m benchmark.power", description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="folder of <label>-<space>-seed<N> run folders (a pilot)")
    p.add_argument("--n", type=int, nargs="*", default=[], help="planned numbers of seeds (each at least 2)")
    args = p.parse_args(argv)
    # Imported here: benchmark.claims judges with benchmark.verdicts, which uses this module's functions.
    from benchmark.claims import judge_all
    from benchmark.results import ReportError, load

    if any(n < 2 for n in args.n):
        print(f"error: --n takes numbers of seeds of at least 2, got {' '.join(map(str, args.n))}", file=sys.stderr)
        return 2
    try:
        res = load(args.dir)
    except (ReportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [r for r in judge_all(res) if r["group"] in ("claim", "check", "ranking")]
    print(f"Power of {args.dir}'s claims: two-sided paired t test (TOST for equivalence), α {ALPHA}, power {POWER}")
    print(power_md(rows, sorted(set(args.n))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
