"""Statistical power: the minimum detectable effect at n seeds and the seeds needed at Δ, to size a study.

    python -m benchmark.power runs/proxy --n 5 10

Claims are judged by a two-sided paired (one-sample) t test at α = 0.05 and sized for 80 % power with the
noncentral t (`scipy.stats.nct`); the equivalence claim (cost) by two one-sided tests (TOST) at α = 0.05 each,
i.e. its 90 % interval inside ±Δ, sized for 80 % power when there is no difference at all. Everything is read off
the observed paired sd of a pilot, which a pilot of three seeds underestimates as often as not (Colas et al.
2018): a planned n is a floor. Estimates that come with a standard error instead of per-seed values (bootstrap
intervals over architectures) use the normal approximation, with n in those units.

Given a run folder, the CLI prints, per claim, the observed sd, the MDE at the current n and at each planned
`--n`, the power at Δ there and the n needed at Δ. Bad input ends with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

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
    and the n needed at Δ. Log-scale claims (ratios) show sd, Δ and MDE as log-ratios."""
    header = ["claim", "space", "test", "paired sd", "n", "Δ", "MDE at n", "power at Δ"]
    header += [f"{h} at n={n}" for n in ns for h in ("MDE", "power")] + ["n for 80 % at Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        eq = r["test"] == "equivalence"
        cells = [r["id"], r["space"], "TOST" if eq else "t", _num(r["sd"]), str(r["n"]), _num(r["delta"])]
        cells += [_num(r["mde"]), _num(r["power"], 2)]
        for n in ns:
            p = plan(r["sd"], r["delta"], n, eq)
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
