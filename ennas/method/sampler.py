"""EnNAS diversity-based path sampling (Eq. 5): diverse subnets per batch while every operator trains equally.

The paper asks, per layer, for m operators drawn one after another, the next one more likely the larger
g(o, A) = mean_{a∈A} ζ(o, a) is for the already drawn A, and for two properties: (1) the sampled subnets
are more diverse than random ones; (2) every operator is drawn equally often (marginal 1/T). The printed
normalisation of Eq. 5 is garbled, and the literal rule p(o | A) ∝ g(o, A) breaks (2): an operator far from
all others is drawn more often. So the two properties are the specification, met by construction:

**Construction (per layer, m < T).** A distribution over m-subsets S of the T operators,
    P(S) ∝ exp(β·D(S) + Σ_{o∈S} θ_o),    D(S) = mean pairwise ζ within S,
whose biases θ are fitted (damped Newton on the convex dual, to 1e-12) so that every operator's
inclusion probability is exactly m/T. P is the I-projection of the Gibbs distribution ∝ exp(β·D) onto
the distributions that include every operator equally often: the most diversity-seeking distribution,
in KL, that still trains all operators equally. The m draws are S in uniformly random order; sampling it
"one after another" is the chain rule of that order,
    p(o | A) = Σ_{S ⊇ A∪{o}} P(S) / ((m − |A|) · Σ_{S ⊇ A} P(S)),
which is what `sample` does with precomputed tables (for m = 2 it is ∝ exp(β·ζ(o, a) + θ_o), i.e. the
paper's "grows with g(o, A)" in exponential form; for larger m it also looks ahead at how well the rest of
the set can be completed). Draw h goes to subnet h.

**Why (2) holds exactly.** Given S, a uniformly random order puts each member at each position with
chance 1/m, so position h shows operator o with chance P(o ∈ S)/m = (m/T)/m = 1/T, for every h.
`marginals()` recomputes this from the sequential tables (dynamic programming over prefixes).

**Why (1) holds.** At β = 0, P is uniform over m-subsets (θ = 0): uniform sampling without replacement,
already at least as diverse as independent uniform picks (ζ ≥ 0; those waste pairs on repeats, ζ = 0).
Along the family θ(β) that keeps the marginals fixed, d E[D]/dβ is the Schur complement of the Fisher
information (Var D minus its part explained linearly by the inclusion indicators), never negative; so
E[D] grows with β, strictly unless D is linear in the indicators (then no sampler with uniform marginals
can change E[D]). `expected_diversity()` reports E[D] per layer; `uniform_set_diversity` the baseline.

**Scale.** β = beta / std(D) with std over uniformly random subsets, so beta is unit-free (ζ shrinks as
operators co-adapt); default beta = 2 (log-odds of two standard deviations of set diversity). beta = 0,
an all-zero (or constant) ζ, m = 1 and T = 1 all give uniform sampling.

**m ≥ T.** Write m = q·T + r: every operator appears q times and the other r are drawn by the same rule
(r-subsets with inclusion r/T each), then the m picks go to subnets in uniformly random order, so each
position's marginal is (q + r/T)/m = 1/T. (The pairs between full rounds and the r extra picks contribute a
term linear in the indicators, which θ absorbs, so D over the r picks is the right objective.)

**Cost.** Tables are built once per ζ update (C(T, r) subsets; C(14, 4) = 1001): 3–8 ms per layer.
Per step, one rng call, then a dict lookup and a bisect per draw: 40–85 µs for 20–30 layers × 4 subnets.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BETA = 2.0
MAX_SUBSETS = 200_000  # C(T, r) above this would make the per-epoch tables slow and large


@dataclass
class _LayerTable:
    """One layer's precomputed sampling tables: plain arrays and dicts, so the sampler pickles."""

    num_choices: int
    rounds: int  # q: times every operator appears outright (m ≥ T)
    size: int  # r: operators drawn by the diversity rule
    beta: float  # the effective, scale-free β·(1/std D)
    members: np.ndarray  # (C(T, r), r) the r-subsets
    probs: np.ndarray  # P(S) for each subset
    rows: dict[int, int]  # prefix bitmask A (|A| < r) -> its row in `conditionals`
    conditionals: np.ndarray  # (prefixes, T) p(o | A)
    cdfs: dict[int, list[float]]  # prefix bitmask -> cumulative p(o | A), for bisect


def _mean_pairwise(zeta: np.ndarray, members: np.ndarray) -> np.ndarray:
    """D(S): the mean ζ over the pairs of each subset (0 for subsets with fewer than two members)."""
    pairs = list(itertools.combinations(range(members.shape[1]), 2))
    if not pairs:
        return np.zeros(len(members))
    return sum(zeta[members[:, a], members[:, b]] for a, b in pairs) / len(pairs)


def _fit_biases(energy: np.ndarray, incidence: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Biases θ making every inclusion probability equal `target`; returns θ and P(S). Newton on the dual."""
    theta = np.zeros(incidence.shape[1])

    def evaluate(th: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        logits = energy + incidence @ th
        top = logits.max()
        lse = top + math.log(np.exp(logits - top).sum())
        probs = np.exp(logits - lse)
        return lse - target * th.sum(), probs, incidence.T @ probs

    value, probs, incl = evaluate(theta)
    ones = np.ones((len(theta), len(theta))) / len(theta)  # fixes the gauge θ → θ + c, which changes nothing
    for _ in range(200):
        grad = incl - target
        if np.abs(grad).max() < 1e-13:
            break
        hess = (incidence * probs[:, None]).T @ incidence - np.outer(incl, incl) + ones
        step = -np.linalg.solve(hess, grad)
        scale = 1.0
        while True:
            new = evaluate(theta + scale * step)
            # Armijo; only where the values stop resolving (near the optimum) a smaller gradient instead: a
            # smaller gradient alone accepts steps that raise the dual and can wander off (seen on real ζ).
            resolved = abs(new[0] - value) > 1e-12 * max(1.0, abs(value))
            if new[0] <= value + 1e-4 * scale * grad @ step or (
                not resolved and np.abs(new[2] - target).max() < np.abs(grad).max()
            ):
                break
            scale *= 0.5
            if scale < 1e-12:
                break
        theta = theta + scale * step
        value, probs, incl = new
    if np.abs(incl - target).max() > 1e-10:
        raise RuntimeError(f"sampler biases did not converge: max marginal error {np.abs(incl - target).max():.2e}")
    return theta, probs


def _prefix_conditionals(members: np.ndarray, probs: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Every reachable prefix A (|A| < r) as sorted bitmasks, and its chain-rule row p(o | A)."""
    r = members.shape[1]
    bits = np.left_shift(np.int64(1), members)
    combos = [list(c) for k in range(r + 1) for c in itertools.combinations(range(r), k)]
    # F(B) = Σ_{S ⊇ B} P(S) for every B inside some subset: sum P(S) over all 2^r sub-bitmasks of each S.
    keys, inverse = np.unique(np.concatenate([bits[:, c].sum(axis=1) for c in combos]), return_inverse=True)
    sums = np.bincount(inverse, weights=np.tile(probs, len(combos)))
    drawn = np.zeros(len(keys), dtype=np.int64)
    drawn[inverse] = np.repeat([len(c) for c in combos], len(members))
    prefixes, totals, drawn = keys[drawn < r], sums[drawn < r], drawn[drawn < r]
    ops = np.left_shift(np.int64(1), np.arange(t))
    children = prefixes[:, None] | ops
    where = np.searchsorted(keys, children).clip(max=len(keys) - 1)
    fresh = (keys[where] == children) & (prefixes[:, None] & ops == 0)
    # p(o | A) = F(A ∪ {o}) / ((r − |A|) F(A)): given S ⊇ A, the next of S's remaining members is uniform.
    return prefixes, np.where(fresh, sums[where], 0.0) / ((r - drawn) * totals)[:, None]


def _build_layer(zeta: np.ndarray, m: int, beta: float) -> _LayerTable:
    """All of one layer's tables: the subset law P, and p(o | A) for every prefix A the draws can reach."""
    t = zeta.shape[0]
    if t > 62:
        raise ValueError(f"{t} operators in one layer; the sampler's prefix bitmasks hold at most 62")
    rounds, size = divmod(m, t) if m >= t else (0, m)
    if math.comb(t, size) > MAX_SUBSETS:
        raise ValueError(f"C({t}, {size}) subsets exceed {MAX_SUBSETS}; the diversity sampler enumerates them")
    subsets = list(itertools.combinations(range(t), size))
    members = np.array(subsets, dtype=np.int64).reshape(len(subsets), size)
    diversity = _mean_pairwise(zeta, members)
    spread = diversity.std()
    eff_beta = beta / spread if spread > 1e-12 * max(1.0, np.abs(diversity).max()) else 0.0
    incidence = np.zeros((len(members), t))
    np.put_along_axis(incidence, members, 1.0, axis=1)
    _, probs = _fit_biases(eff_beta * (diversity - diversity.mean()), incidence, size / t)
    prefixes, conditionals = _prefix_conditionals(members, probs, t)
    cdfs = np.cumsum(conditionals, axis=1) / conditionals.sum(axis=1, keepdims=True)
    # Past the last operator with p > 0 the cdf is exactly 1, so bisect of u < 1 never lands on p = 0.
    last = t - 1 - np.argmax(conditionals[:, ::-1] > 0, axis=1)
    cdfs[np.arange(t) >= last[:, None]] = 1.0
    keys = prefixes.tolist()
    return _LayerTable(
        t,
        rounds,
        size,
        eff_beta,
        members,
        probs,
        {key: row for row, key in enumerate(keys)},
        conditionals,
        dict(zip(keys, cdfs.tolist(), strict=True)),
    )


def _draw_layer(table: _LayerTable, m: int, uniforms: Iterator[float], rng: np.random.Generator) -> list[int]:
    """One layer's m operators: r sequential diversity draws, plus q full rounds shuffled in when m ≥ T."""
    picks, mask = [], 0
    for _ in range(table.size):
        o = bisect.bisect_right(table.cdfs[mask], next(uniforms))
        picks.append(o)
        mask |= 1 << o
    if table.rounds:
        pool = list(range(table.num_choices)) * table.rounds + picks
        picks = [pool[i] for i in rng.permutation(m).tolist()]
    return picks


def _check_zeta(zeta: np.ndarray) -> np.ndarray:
    """A finite square matrix, symmetrised with a zero diagonal (estimates carry rounding asymmetry)."""
    z = np.array(zeta, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != z.shape[1] or z.shape[0] == 0 or not np.isfinite(z).all():
        raise ValueError(f"each ζ must be a finite non-empty square matrix, got shape {z.shape}")
    z = 0.5 * (z + z.T)
    np.fill_diagonal(z, 0.0)
    return z


class DiversitySampler:
    """Draws m architectures per batch: diverse in ζ within every layer, each operator at marginal 1/T."""

    def __init__(self, zetas: Sequence[np.ndarray], m: int, beta: float = DEFAULT_BETA) -> None:
        """Build every layer's tables once per ζ update (ζ changes once per epoch)."""
        if m < 1:
            raise ValueError(f"m must be at least 1, got {m}")
        if beta < 0:
            raise ValueError(f"beta must be non-negative (beta < 0 would seek similar operators), got {beta}")
        self.zetas = [_check_zeta(z) for z in zetas]
        self.m = int(m)
        self.beta = float(beta)
        self.tables = [_build_layer(z, self.m, self.beta) for z in self.zetas]

    def __reduce__(self) -> tuple:
        """Pickle as (ζ, m, beta) and rebuild the tables on load: small, and the same tables bit for bit."""
        return (DiversitySampler, (self.zetas, self.m, self.beta))

    @property
    def num_choices(self) -> tuple[int, ...]:
        """T_l per layer, as the search space defines them."""
        return tuple(table.num_choices for table in self.tables)

    def sample(self, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """m architectures for one batch; draw h of each layer goes to subnet h. Randomness only from rng."""
        # One call for every layer's uniforms: rng calls, not arithmetic, dominate the per-step cost.
        uniforms = iter(rng.random(sum(table.size for table in self.tables)).tolist())
        columns = [_draw_layer(table, self.m, uniforms, rng) for table in self.tables]
        return [tuple(column[i] for column in columns) for i in range(self.m)]

    def conditional(self, layer: int, drawn: Sequence[int]) -> np.ndarray:
        """p(o | A) of the sequential rule at `layer` after the distinct operators `drawn` (|A| < r)."""
        mask = 0
        for o in drawn:
            mask |= 1 << int(o)
        table = self.tables[layer]
        return table.conditionals[table.rows[mask]].copy()

    def marginals(self) -> list[np.ndarray]:
        """Exact per-layer (m, T) chance that subnet h gets operator o, from the tables: all 1/T."""
        out = []
        for table in self.tables:
            reach, rows = {0: 1.0}, []
            for _ in range(table.size):
                row, nxt = np.zeros(table.num_choices), defaultdict(float)
                for mask, weight in reach.items():
                    p = table.conditionals[table.rows[mask]]
                    row += weight * p
                    for o in np.flatnonzero(p).tolist():
                        nxt[mask | 1 << o] += weight * p[o]
                rows.append(row)
                reach = nxt
            if table.rounds:
                counts = table.rounds + np.sum(rows, axis=0) if rows else np.full(table.num_choices, table.rounds)
                rows = [counts / self.m] * self.m
            out.append(np.array(rows, dtype=np.float64))
        return out

    def expected_diversity(self) -> np.ndarray:
        """Per layer, the expected mean ζ over pairs of the m subnets' operators (property (1))."""
        out = np.zeros(len(self.tables))
        if self.m < 2:
            return out
        for l, (table, zeta) in enumerate(zip(self.tables, self.zetas, strict=True)):
            counts = np.full((len(table.members), table.num_choices), float(table.rounds))
            np.put_along_axis(counts, table.members, table.rounds + 1.0, axis=1)
            pair_sums = 0.5 * np.einsum("sa,ab,sb->s", counts, zeta, counts)
            out[l] = table.probs @ pair_sums / math.comb(self.m, 2)
        return out


def uniform_set_diversity(zetas: Sequence[np.ndarray]) -> np.ndarray:
    """Per layer, the expected mean pairwise ζ of independent uniform picks: the `ennas-wo-ds` baseline."""
    return np.array([_check_zeta(z).mean() for z in zetas])


def sample_uniform_set(num_choices_per_layer: Sequence[int], m: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """m architectures drawn independently, uniformly: the paper's EnNAS w/o diversity-based sampling."""
    if not num_choices_per_layer:
        return [() for _ in range(m)]
    picks = rng.integers(0, np.asarray(num_choices_per_layer), size=(m, len(num_choices_per_layer)))
    return [tuple(row) for row in picks.tolist()]
