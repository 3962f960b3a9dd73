"""How much room uniform marginals leave a set sampler: expected within-set ζ of reference samplers and LP bounds.

EnNAS draws m operators per layer for the m subnets of a batch and asks every operator to be drawn with
chance 1/T at every position (so all operators train equally). The *within-set ζ* of one draw is the mean
ζ over its C(m, 2) pairs of positions (ζ of an operator with itself is 0, so a repeat lowers it); a
sampler's *expected within-set ζ* is its mean over the sampler's draws, averaged over layers by the caller.
Under that marginal constraint the expected within-set ζ of any sampler lies between two bounds, each a
linear programme over the laws p(S) of the multisets S of m operators a layer can draw:

    max / min  Σ_S p(S) D(S)   s.t.  p ≥ 0,  Σ_S p(S) = 1,  Σ_S p(S) c_o(S) = m/T for every operator o,

with c_o(S) the times o occurs in S and D(S) = ½ cᵀζc / C(m, 2). (A law over multisets, put into uniformly
random order, gives position h operator o with chance E[c_o]/m; so the constraint is "marginal 1/T".)

**Which sets.** The maximum is taken over *all* multisets: repeats usually lower ζ, but not always under the
marginal constraint (T = 3, m = 2, ζ(0, 1) = 1 and ζ = 0 otherwise: repeat-free sets reach 1/3, the law
{0, 1} w.p. 2/3, {2, 2} w.p. 1/3 reaches 2/3), so restricting to subsets could understate the room. The
minimum over all multisets is 0 whatever ζ is (draw one operator, uniformly, m times), which says nothing;
the bound reported is the minimum over *repeat-free* sets (for m ≥ T: sets where every operator occurs
⌊m/T⌋ or ⌈m/T⌉ times, the family DiversitySampler draws from), i.e. the least diverse a sampler that never
repeats an operator needlessly can be. With the reference samplers (independent uniform picks, uniform
repeat-free sets) this places a set sampler on [min without repeats, max].

**Cost.** C(T + m − 1, m) multisets per layer (T = 14, m = 4: 2,380); HiGHS solves one in milliseconds.
Past MAX_SETS the bounds are NaN rather than slow. Nothing here draws random numbers: every value is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linprog

from ennas.method.sampler import DiversitySampler, uniform_set_diversity

MAX_SETS = 50_000  # sets per layer above which the LP bounds are not computed (NaN)
KEYS = ("independent", "no_repeats", "sampler", "max", "min_no_repeats")
# Where an EnNAS run's train_log.jsonl records each layer-mean (the first two keys predate this module).
LOG_KEYS = {
    "independent": "uniform_set_zeta",
    "no_repeats": "norepeat_set_zeta",
    "sampler": "set_zeta",
    "max": "max_set_zeta",
    "min_no_repeats": "min_norepeat_set_zeta",
}


def set_counts(t: int, m: int, repeats: bool) -> np.ndarray:
    """(sets, T) operator counts of every multiset of m of T operators, or of the repeat-free ones if not repeats."""
    if repeats:
        n = math.comb(t + m - 1, m)
        combos = itertools.combinations_with_replacement(range(t), m)
    else:
        rounds, size = divmod(m, t)  # m ≥ T: every operator `rounds` times plus `size` distinct extras
        n = math.comb(t, size)
        combos = ((*range(t),) * rounds + c for c in itertools.combinations(range(t), size))
    if n > MAX_SETS:
        raise ValueError(f"{n} sets of {m} of {t} operators exceed MAX_SETS = {MAX_SETS}")
    members = np.array(list(combos), dtype=np.int64).reshape(n, m)
    counts = np.zeros((n, t))
    np.add.at(counts, (np.repeat(np.arange(n), m), members.ravel()), 1.0)
    return counts


def set_diversity(zeta: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """D(S) per set: the mean ζ over the set's pairs of positions (ζ has a zero diagonal, so repeats add 0)."""
    m = int(round(counts[0].sum())) if len(counts) else 0
    if m < 2:
        return np.zeros(len(counts))
    return 0.5 * np.einsum("sa,ab,sb->s", counts, zeta, counts) / math.comb(m, 2)


def extreme_law(zeta: np.ndarray, m: int, *, maximise: bool, repeats: bool) -> tuple[np.ndarray, np.ndarray]:
    """The LP optimum: (counts, p) of the law over sets with marginals 1/T that maximises / minimises E[D]."""
    t = zeta.shape[0]
    counts = set_counts(t, m, repeats)
    d = set_diversity(zeta, counts)
    res = linprog(
        -d if maximise else d,
        A_eq=np.vstack([counts.T, np.ones(len(counts))]),
        b_eq=np.append(np.full(t, m / t), 1.0),
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"within-set ζ LP failed: {res.message}")
    return counts, np.clip(res.x, 0.0, None)


def extreme_diversity(zeta: np.ndarray, m: int, *, maximise: bool, repeats: bool) -> float:
    """Max / min expected within-set ζ of any law with marginals 1/T (NaN past MAX_SETS sets)."""
    try:
        counts, p = extreme_law(zeta, m, maximise=maximise, repeats=repeats)
    except ValueError:
        return math.nan
    return float(p @ set_diversity(zeta, counts))


def headroom(zetas: Sequence[np.ndarray], m: int, beta: float | None) -> dict[str, np.ndarray]:
    """Per layer (KEYS): expected within-set ζ of independent sets, of uniform repeat-free sets, of the run's
    own sampler (DiversitySampler at `beta`; None: independent sets, as ennas-wo-ds draws), and the bounds
    under uniform marginals (max over all sets, min over repeat-free ones). Exact: no Monte Carlo."""
    no_repeats = DiversitySampler(zetas, m, beta=0.0)  # β = 0 is uniform over repeat-free sets
    clean = no_repeats.zetas  # symmetrised, zero diagonal: the matrices the samplers use
    independent = uniform_set_diversity(clean) if m >= 2 else np.zeros(len(clean))
    if beta is None:
        own = independent
    else:
        own = no_repeats.expected_diversity() if beta == 0 else DiversitySampler(clean, m, beta).expected_diversity()
    return {
        "independent": independent,
        "no_repeats": no_repeats.expected_diversity(),
        "sampler": own,
        "max": np.array([extreme_diversity(z, m, maximise=True, repeats=True) for z in clean]),
        "min_no_repeats": np.array([extreme_diversity(z, m, maximise=False, repeats=False) for z in clean]),
    }


def headroom_record(zetas: Sequence[np.ndarray], m: int, beta: float | None) -> dict[str, float]:
    """The layer means of `headroom`, under the train_log keys (LOG_KEYS) an EnNAS epoch record carries."""
    return {LOG_KEYS[k]: float(np.mean(v)) for k, v in headroom(zetas, m, beta).items()}
