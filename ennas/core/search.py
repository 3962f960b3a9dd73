"""SPOS evolution and the random-search baseline: which candidates to score, for every method alike.

How a candidate is scored (BN recalibration, then top-1 on the search split) is the caller's `score_fn`;
this module only decides which architectures to score. Three properties make a search reproducible and
resumable: all randomness comes from the `rng` passed in; an architecture over the FLOPs budget is rejected
by `flops_fn` and never scored; scores are memoised in a caller-owned `cache`. A search is then a pure
function of (seed, scores), so a caller that rebuilds the cache from its `search.jsonl`
(`cache_from_records`) and runs again with the same seed replays the identical search, scoring only what
the log lacks. `on_evaluate` fires for every *newly scored* candidate, so appending its records to the log
on a resumed run yields exactly the log of an uninterrupted run.

Evolution follows the official SPOS code: generation 0 is a random population; each of the `generations`
next ones takes the top-k of everything evaluated so far, makes mutants and uniform crossovers of them and
fills up with random architectures. Like SPOS's `vis_dict`, a candidate already evaluated in this search is
rejected (not re-counted), so each generation adds `population` distinct architectures:
population × (generations + 1) evaluations, 1,050 at SPOS settings.

A `BatchScorer` scores several candidates per call (one per rank, say): candidates are proposed exactly as
one at a time, since no proposal within a generation depends on a score, and held until `size` of them
wait or a generation needs the scores; records and `on_evaluate` keep the one-at-a-time order.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from spaces.arch import Arch, decode, encode, sample_uniform
from spaces.registry import SpaceSpec

ScoreFn = Callable[[Arch], float]
ManyScoreFn = Callable[[list[Arch]], list[float]]
FlopsFn = Callable[[Arch], float]
OnEvaluate = Callable[[dict], None]


@dataclass(frozen=True)
class EvolutionConfig:
    """SPOS's evolution settings; the defaults are the paper's (about 1,050 evaluations)."""

    population: int = 50
    generations: int = 20
    topk: int = 10
    mutation_prob: float = 0.1
    num_mutation: int = 25
    num_crossover: int = 25
    max_tries_factor: int = 10

    def __post_init__(self) -> None:
        if min(self.population, self.topk, self.max_tries_factor) < 1:
            raise ValueError("population, topk and max_tries_factor must be at least 1")
        if min(self.generations, self.num_mutation, self.num_crossover) < 0:
            raise ValueError("generations, num_mutation and num_crossover must not be negative")
        if self.topk > self.population:
            raise ValueError(f"topk {self.topk} exceeds the population {self.population}")
        if self.num_mutation + self.num_crossover > self.population:
            raise ValueError(
                f"num_mutation + num_crossover = {self.num_mutation + self.num_crossover} exceeds "
                f"the population {self.population} they are part of"
            )
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must lie in [0, 1], got {self.mutation_prob}")

    @property
    def max_evaluations(self) -> int:
        """Evaluations when no operator gives up: the initial population plus one per later generation."""
        return self.population * (self.generations + 1)


@dataclass(frozen=True)
class BatchScorer:
    """A score function that takes `size` candidates at a time (`many`), e.g. split over the ranks.

    Passed wherever a ScoreFn is; called on one architecture it scores just that one.
    """

    many: ManyScoreFn
    size: int = 1

    def __call__(self, arch: Arch) -> float:
        return self.many([arch])[0]


@dataclass
class SearchResult:
    """What a search found, every candidate it evaluated in order, and (evolution only) per-generation progress."""

    best_arch: Arch
    best_score: float
    best_flops: int
    history: list[dict]
    num_evaluations: int
    num_scored: int  # calls to score_fn; the rest came from the cache
    generation_best: list[float] = field(default_factory=list)
    generation_topk_mean: list[float] = field(default_factory=list)


def cheapest_arch(space: SpaceSpec, flops_fn: FlopsFn) -> Arch:
    """The cheapest architecture, one layer at a time: exact when the cost is a sum over layers (FlopsTable's is)."""
    arch = [0] * len(space.layers)
    for i, n in enumerate(space.num_choices):
        arch[i] = min(range(n), key=lambda c: flops_fn(tuple(arch[:i] + [c] + arch[i + 1 :])))
    return tuple(arch)


class BudgetError(ValueError):
    """A FLOPs budget no architecture (or too few for sampling) fits: the user's setting to change."""


def check_budget(
    space: SpaceSpec, flops_fn: FlopsFn, budget: float, table_bounds: tuple[int, int] | None = None
) -> None:
    """Fail before any work when no architecture of the space fits the budget (instead of sampling forever).

    `table_bounds` is FlopsTable.bounds(); without it the minimum is found from `flops_fn` layer by layer.
    """
    if not (math.isfinite(float(budget)) and budget > 0):
        raise BudgetError(f"FLOPs budget must be a positive number of MACs, got {budget!r}")
    low = table_bounds[0] if table_bounds is not None else flops_fn(cheapest_arch(space, flops_fn))
    if budget < low:
        cheapest = cheapest_arch(space, flops_fn)
        example = f": {encode(cheapest)}" if flops_fn(cheapest) == low else ""
        raise BudgetError(
            f"FLOPs budget {budget / 1e6:.1f}M ({budget:.0f} MACs) is below the cheapest architecture of "
            f"{space.name}/{space.scale} ({low / 1e6:.1f}M, {low} MACs{example}); no architecture fits, "
            f"so nothing can be searched. Raise the budget (it counts multiply-accumulates)."
        )


def _nothing_found(space: SpaceSpec, budget: float, draws: int) -> BudgetError:
    """The error for a feasible budget so tight that rejection sampling finds nothing."""
    return BudgetError(
        f"no architecture of {space.name}/{space.scale} within {budget:.0f} MACs in {draws} uniform draws: "
        f"the budget admits too few architectures for rejection sampling; raise it or max_tries_factor"
    )


class _Candidates:
    """One search's evaluated set: rejects repeats and over-budget archs, scores through the cache, logs records.

    New candidates wait in `pending` until a BatchScorer's `size` of them are there (a plain score function:
    one) or `top` / `result` needs their scores; each is logged as soon as it is scored.
    """

    def __init__(self, score_fn: ScoreFn, flops_fn: FlopsFn, budget: float, cache: dict, on_evaluate):
        self.score_fn, self.flops_fn, self.budget = score_fn, flops_fn, budget
        self.batch = score_fn.size if isinstance(score_fn, BatchScorer) else 1
        self.cache, self.on_evaluate = cache, on_evaluate
        self.records: dict[Arch, dict] = {}  # insertion order is evaluation order
        self.pending: list[Arch] = []
        self.num_scored = 0

    def add(self, arch: Arch, generation: int, kind: str) -> bool:
        """Evaluate `arch` unless this search has seen it or it is over budget; True when it was added."""
        if arch in self.records:
            return False
        flops = int(self.flops_fn(arch))
        if flops > self.budget:  # rejected before scoring: over-budget subnets are never evaluated
            return False
        self.records[arch] = {
            "arch": encode(arch),
            "score": self.cache.get(arch),
            "flops": flops,
            "generation": generation,
            "kind": kind,
        }
        if arch not in self.cache:
            self.pending.append(arch)
            if len(self.pending) >= self.batch:
                self.flush()
        return True

    def flush(self) -> None:
        """Score the pending candidates (one call of a BatchScorer), then cache and log them in order."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        if isinstance(self.score_fn, BatchScorer):
            scores = self.score_fn.many(pending)
        else:
            scores = [self.score_fn(a) for a in pending]
        for arch, score in zip(pending, scores, strict=True):
            score = float(score)
            if not math.isfinite(score):
                raise ValueError(f"score_fn returned {score} for architecture {encode(arch)}")
            self.cache[arch] = score
            self.num_scored += 1
            self.records[arch]["score"] = score
            if self.on_evaluate is not None:
                self.on_evaluate(dict(self.records[arch]))

    def fill(self, propose: Callable[[], Arch], target: int, generation: int, kind: str, tries_factor: int) -> int:
        """Add up to `target` proposals, giving up after tries_factor × target attempts (SPOS); how many were added."""
        added = 0
        for _ in range(tries_factor * target):
            if added >= target:
                break
            added += self.add(propose(), generation, kind)
        return added

    def top(self, k: int) -> list[Arch]:
        """The k best archs so far; a stable sort so ties go to the earlier one, keeping replays identical."""
        self.flush()
        return sorted(self.records, key=lambda a: -self.records[a]["score"])[:k]

    def result(self) -> SearchResult:
        """The SearchResult of what was evaluated (at least one candidate)."""
        self.flush()
        best = self.top(1)[0]
        history = list(self.records.values())
        record = self.records[best]
        return SearchResult(best, record["score"], record["flops"], history, len(history), self.num_scored)


def _mutate(parents: list[Arch], num_choices: np.ndarray, prob: float, rng: np.random.Generator) -> Arch:
    """SPOS mutation: a parent drawn uniformly, every gene redrawn uniformly with probability `prob`."""
    parent = parents[rng.integers(len(parents))]
    redraw = rng.random(len(parent)) < prob
    fresh = rng.integers(0, num_choices)
    return tuple(int(f) if r else p for p, f, r in zip(parent, fresh, redraw))


def _crossover(parents: list[Arch], rng: np.random.Generator) -> Arch:
    """SPOS uniform crossover: two parents drawn uniformly (possibly the same), every gene from either one."""
    first, second = (parents[i] for i in rng.integers(len(parents), size=2))
    take_first = rng.random(len(first)) < 0.5
    return tuple(a if t else b for a, b, t in zip(first, second, take_first))


def evolution_search(
    space: SpaceSpec,
    score_fn: ScoreFn,
    flops_fn: FlopsFn,
    budget: float,
    cfg: EvolutionConfig,
    rng: np.random.Generator,
    on_evaluate: OnEvaluate | None = None,
    cache: dict[Arch, float] | None = None,
    progress: bool = False,
    bounds: tuple[int, int] | None = None,
) -> SearchResult:
    """SPOS evolution under a hard FLOPs budget: the search every method's supernet is ranked with."""
    check_budget(space, flops_fn, budget, bounds)
    cands = _Candidates(score_fn, flops_fn, budget, {} if cache is None else cache, on_evaluate)
    num_choices = np.asarray(space.num_choices)
    tries = cfg.max_tries_factor
    uniform = functools.partial(sample_uniform, space, rng)
    # generation 0: SPOS's random initial population
    cands.fill(uniform, cfg.population, 0, "init", tries)
    if not cands.records:
        raise _nothing_found(space, budget, tries * cfg.population)
    gen_best, gen_mean = [], []
    bar = tqdm(total=cfg.generations + 1, desc="evolution", disable=not (progress and sys.stderr.isatty()))
    for generation in range(cfg.generations + 1):
        if generation > 0:
            # parents: the top-k of everything evaluated so far, fixed for the whole generation
            parents = cands.top(cfg.topk)
            mutant = functools.partial(_mutate, parents, num_choices, cfg.mutation_prob, rng)
            made = cands.fill(mutant, cfg.num_mutation, generation, "mutation", tries)
            child = functools.partial(_crossover, parents, rng)
            made += cands.fill(child, cfg.num_crossover, generation, "crossover", tries)
            cands.fill(uniform, cfg.population - made, generation, "random", tries)
        top_scores = [cands.records[a]["score"] for a in cands.top(cfg.topk)]
        gen_best.append(top_scores[0])
        gen_mean.append(float(np.mean(top_scores)))
        bar.set_postfix(best=f"{top_scores[0]:.4g}", evaluated=len(cands.records))
        bar.update()
    bar.close()
    result = cands.result()
    result.generation_best, result.generation_topk_mean = gen_best, gen_mean
    return result


def random_search(
    space: SpaceSpec,
    score_fn: ScoreFn,
    flops_fn: FlopsFn,
    budget: float,
    num_evaluations: int,
    rng: np.random.Generator,
    on_evaluate: OnEvaluate | None = None,
    cache: dict[Arch, float] | None = None,
    max_tries_factor: int = 10,
    bounds: tuple[int, int] | None = None,
) -> SearchResult:
    """The baseline evolution must beat: distinct uniform random archs within budget, as many as evolution scores."""
    check_budget(space, flops_fn, budget, bounds)
    cands = _Candidates(score_fn, flops_fn, budget, {} if cache is None else cache, on_evaluate)
    cands.fill(functools.partial(sample_uniform, space, rng), num_evaluations, 0, "random", max_tries_factor)
    if not cands.records:
        raise _nothing_found(space, budget, max_tries_factor * num_evaluations)
    return cands.result()


def cache_from_records(space: SpaceSpec, records: Iterable[Mapping]) -> dict[Arch, float]:
    """Rebuild the score cache from logged records (search.jsonl), so a resumed search replays without re-scoring."""
    cache: dict[Arch, float] = {}
    for record in records:
        arch, score = decode(space, record["arch"]), float(record["score"])
        if cache.get(arch, score) != score:
            raise ValueError(
                f"architecture {encode(arch)} is logged with two scores ({cache[arch]} and {score}): "
                f"these records come from different scorers and cannot seed one replay"
            )
        cache[arch] = score
    return cache


def best_so_far(records: Iterable[Mapping]) -> list[float]:
    """The best score after each evaluation: evolution against random search on one axis, drawn from logs."""
    return [float(s) for s in np.maximum.accumulate([float(r["score"]) for r in records])]
