"""Verdicts: what an interval says about a claim, given the paper's figure and a smallest effect of interest Δ.

An effect claim ("greater than 0") with 95 % interval [L, U], 90 % interval [L90, U90] and reference R (the
paper's figure scaled to our data, or Δ where the paper gives none) is judged in this order, first match wins:

1. *too few seeds*: n < 3 (no verdict);
2. *contradicted*: U < 0;
3. *held, larger than R*: L > R;
4. *consistent with R*: L > 0 and L ≤ R ≤ U;
5. *held, smaller than R*: L > 0 and U < R (an effect that is there, whatever its size: the issue's order,
   so a real but small effect is reported as held and smaller, with its interval, not as negligible);
6. *negligible*: L90 > −Δ and U90 < Δ (two one-sided tests at 5 % each; Lakens);
7. *no effect of R's size*: L ≤ 0 ≤ U and U < R (U bounds the effect from above);
8. otherwise *inconclusive*, with the minimum detectable effect at the current n and the n needed at Δ.

A statistic with a known upward bias (the largest of several differences) also gets a permutation null; the
held verdicts (3-5) need p < 0.05 against it, else they become *inconclusive*. Its MDE and n needed are
simulated against that null (`power.max_gain_plan`; the t test's stay beside them): a t test against 0 does not
apply to a statistic the max biases upward. An equivalence claim (the same cost) is *held* when its 90 % interval
lies inside ±Δ, *contradicted* when its 95 % interval lies entirely outside, else *inconclusive*.
`judge_interval` takes an `Estimate`, from per-seed values (`from_values`) or supplied from elsewhere
(`supplied`: a bootstrap over architectures, isolated timings).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from benchmark import power

MIN_N = 3  # below this a claim gets no verdict: with 2 seeds one outlier decides everything
NULL_DRAWS = 20_000  # Monte Carlo draws of a permutation null too large to enumerate
NAN = math.nan
HELD = ("held-larger", "consistent", "held-smaller", "held")  # verdicts that say the claimed effect is there
WORDS = {
    "too-few-seeds": "too few {units}",
    "contradicted": "contradicted",
    "negligible": "negligible (within ±Δ)",
    "held-larger": "held, larger than {ref}",
    "consistent": "consistent with {ref}",
    "held-smaller": "held, smaller than {ref}",
    "no-effect-of-size": "no effect of {refs} size",
    "inconclusive": "inconclusive",
    "held": "held (the same within ±Δ)",
}

# The scheme in one paragraph, for REPORT.md.
SCHEME = (
    "Verdicts, first match wins (benchmark/verdicts.py): *too few seeds* (n < 3, no verdict); *contradicted* "
    "(interval below 0); *held, larger than*, *consistent with* or *held, smaller than* the paper (interval "
    "above 0; P scaled below, inside or above it); *negligible* (90 % interval inside ±Δ); *no effect of the "
    "paper's size* (the interval straddles 0, P scaled above it: its upper end bounds the effect); else "
    "*inconclusive*. Where the paper gives no figure, Δ stands in for P. The largest-gain claim must also beat a "
    "label-permutation null (p < 0.05) to be held. The cost claim is an equivalence: *held* when the 90 % "
    "interval of the ratio lies inside ±Δ, *contradicted* when the 95 % interval lies outside. MDE: the smallest "
    "true effect found with 80 % power at the current n (two-sided paired t test, α 0.05; TOST: the narrowest "
    "margin shown); n for Δ: the seeds needed for 80 % power at Δ. The largest-gain claim's MDE and n for Δ are "
    "simulated against its permutation null (EnNAS above every baseline by the effect; one run's noise sd from "
    "the seed × label residuals), as its bias makes a t test against 0 too lenient."
)


@dataclass(frozen=True)
class Estimate:
    """An effect with its 95 % and 90 % intervals, its n, and the spread that sizes a study: `sd` of one unit's
    value (a t interval over seeds), or, where that is unknown, `se` of the estimate (a bootstrap)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = NAN
    low90: float = NAN
    high90: float = NAN
    se: float = NAN


def from_values(values: Sequence[float]) -> Estimate:
    """The t intervals (95 %, 90 %) of the mean of per-seed values (paired differences where two labels are
    compared); NaN intervals below n = 2."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, NAN, NAN, 1)
    sd = float(x.std(ddof=1))
    h95, h90 = (float(stats.t.ppf(q, n - 1) * sd / math.sqrt(n)) for q in (0.975, 0.95))
    return Estimate(mean, mean - h95, mean + h95, n, sd, mean - h90, mean + h90)


def supplied(mean: float, low: float, high: float, n: int, sd: float = NAN, **kw: float) -> Estimate:
    """An estimate made elsewhere: (mean, 95 % low, high, n, sd), optionally low90/high90/se. A missing 90 %
    interval is the t interval from sd and n, or else the 95 % one narrowed by the t quantiles' ratio."""
    low90, high90 = kw.get("low90", NAN), kw.get("high90", NAN)
    if not (math.isfinite(low90) and math.isfinite(high90)) and n >= 2:
        if math.isfinite(sd):
            h = float(stats.t.ppf(0.95, n - 1) * sd / math.sqrt(n))
            low90, high90 = mean - h, mean + h
        else:
            shrink = float(stats.t.ppf(0.95, n - 1) / stats.t.ppf(0.975, n - 1))
            low90, high90 = mean - shrink * (mean - low), mean + shrink * (high - mean)
    return Estimate(mean, low, high, n, sd, low90, high90, kw.get("se", NAN))


def sizing(est: Estimate, delta: float, equivalence: bool = False) -> dict:
    """MDE at the estimate's n, power at Δ and n needed at Δ: from sd (t / TOST) or, failing that, from se."""
    if math.isfinite(est.sd):
        return power.plan(est.sd, delta, est.n, equivalence, n_min=MIN_N)
    mde = power.z_mde(est.se, equivalence=equivalence)
    needed = power.z_n_needed(delta, est.se, est.n, n_min=MIN_N, equivalence=equivalence)
    return {"mde": mde, "power": NAN, "n_needed": needed}


def classify(est: Estimate, delta: float, reference: float | None = None, test: str = "effect") -> str:
    """The verdict code of the module docstring's scheme (no permutation null)."""
    L, U = est.low, est.high
    if est.n < MIN_N or not (math.isfinite(L) and math.isfinite(U)):
        return "too-few-seeds"
    L90 = est.low90 if math.isfinite(est.low90) else L
    U90 = est.high90 if math.isfinite(est.high90) else U
    if test == "equivalence":
        if -delta < L90 and U90 < delta:
            return "held"
        return "contradicted" if L > delta or U < -delta else "inconclusive"
    ref = delta if reference is None or not math.isfinite(reference) else reference
    if U < 0:
        return "contradicted"
    if L > ref:
        return "held-larger"
    if L > 0:
        return "consistent" if ref <= U else "held-smaller"
    if -delta < L90 and U90 < delta:
        return "negligible"
    return "no-effect-of-size" if U < ref else "inconclusive"


def judge_interval(
    est: Estimate,
    delta: float,
    reference: float | None = None,
    *,
    test: str = "effect",
    null: dict | None = None,
    show: Callable[[float], str] = lambda x: f"{x:+.2f}",
    show_size: Callable[[float], str] = lambda x: f"{x:.2f}",
    units: str = "seeds",
    size: dict | None = None,
) -> dict:
    """{verdict (a code), verdict_label (its words), verdict_text (with the figures), mde, power, n_needed} of an
    estimate, per-seed or supplied. `reference` is the paper's figure scaled to our data (None: Δ stands in),
    `null` a permutation null {p, q95} that the held verdicts must beat, `show` formats a value in the claim's
    units (a log-ratio shown as a ratio, say) and `show_size` an MDE; `units` names what n counts. `size`, where
    given, replaces the t test's sizing ({mde, power, n_needed}: the largest gain's, against its null), which is
    then kept beside it as mde_t and n_needed_t."""
    code = classify(est, delta, reference, test)
    t_size = sizing(est, delta, test == "equivalence")
    size = t_size if size is None else size | {"mde_t": t_size["mde"], "n_needed_t": t_size["n_needed"]}
    why = ""
    if null is not None and code in HELD and not null["p"] < 0.05:
        code = "inconclusive"
        why = f" (not above the label-permutation null: p = {null['p']:.2f}, its 95 % quantile {show(null['q95'])})"
    paper = reference is not None and math.isfinite(reference)
    label = WORDS[code].format(ref="the paper" if paper else "Δ", refs="the paper's" if paper else "Δ's", units=units)
    text = label
    if code == "too-few-seeds":
        text += f" (n = {est.n} < {MIN_N}): no verdict"
    elif code == "negligible" and est.low > 0:
        text += f": above 0 ({show(est.low)} at least) but below Δ"
    elif code == "no-effect-of-size":
        text += f": the effect is at most {show(est.high)}"
    text += why
    if code == "inconclusive":
        needed = size["n_needed"]
        target = "at Δ" if test == "effect" else "to show ±Δ"
        text += f"; MDE {show_size(size['mde'])} at n = {est.n}, " + (
            f"{needed} {units} for 80 % power {target}" if needed else "n needed unknown"
        )
        if "mde_t" in size:
            text += " against the label-permutation null (simulated)"
            t_needed = f", {size['n_needed_t']} {units}" if size["n_needed_t"] else ""
            text += f"; as a t test against 0: MDE {show_size(size['mde_t'])}{t_needed}"
    return {"verdict": code, "verdict_label": label, "verdict_text": text, "held_below_null": bool(why), **size}


# --- the largest of several differences: a permutation null ----------------------------------------------
def max_gain_null(per_seed: Sequence[Sequence[Sequence[float]]], seed: int = 0) -> np.ndarray:
    """Null distribution of mean over seeds of (max over spaces of (a − min of the baselines)) when the labels
    are exchangeable within each (seed, space): the statistic recomputed with each value in turn as `a`.

    `per_seed[i][j]` holds seed i's values on space j, `a`'s first. Per (seed, space) there are only as many
    distinct statistics as values (only a − min(b) matters: the max over b of a − b is a − min(b)), so the null
    is enumerated exactly while the combinations number at most NULL_DRAWS, and drawn (seeded) beyond.
    """
    seeds = []
    for spaces in per_seed:
        options = [power.max_gain_options(np.asarray(v, dtype=float)) for v in spaces]
        seeds.append(np.array([max(c) for c in itertools.product(*options)]))  # per seed: every relabelling
    total = math.prod(len(s) for s in seeds)
    if total <= NULL_DRAWS:
        grids = np.meshgrid(*seeds, indexing="ij")
        return np.mean(grids, axis=0).ravel()
    rng = np.random.default_rng(seed)
    return np.mean([rng.choice(s, NULL_DRAWS) for s in seeds], axis=0)


def null_summary(null: np.ndarray, observed: float) -> dict:
    """p (share of the null at least as large as observed), the null's mean and its 95 % quantile."""
    if null.size == 0 or not math.isfinite(observed):
        return {"p": NAN, "mean": NAN, "q95": NAN}
    p = float(np.mean(null >= observed - 1e-12))
    return {"p": p, "mean": float(null.mean()), "q95": float(np.quantile(null, 0.95))}
