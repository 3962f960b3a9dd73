"""Evolution and random search on synthetic scores: budget never exceeded, optimum found, memoised, replayable."""

import collections
import json
import sys

import numpy as np
import pytest

from ennas.core.search import (
    EvolutionConfig,
    best_so_far,
    cache_from_records,
    cheapest_arch,
    check_budget,
    evolution_search,
    random_search,
)
from spaces.arch import decode
from spaces.flops import FlopsTable
from spaces.registry import get_space

SMALL = EvolutionConfig(population=10, generations=3, topk=3, num_mutation=5, num_crossover=5)


@pytest.fixture(scope="module")
def space():
    return get_space("s1", "proxy")


@pytest.fixture(scope="module")
def table(space):
    return FlopsTable(space, 28, 10, 1)


def layer_values(table, seed):
    """Per-layer candidate values, larger for costlier ops plus noise, so the FLOPs budget binds the optimum."""
    rng = np.random.default_rng(seed)
    return [np.sqrt(np.asarray(m) / max(m)) + 0.3 * rng.random(len(m)) for m in table.layer_macs]


def separable(values):
    """A score that is a sum of per-layer values (and counts its calls per architecture)."""

    def score(arch):
        score.calls[arch] += 1
        return float(sum(v[c] for v, c in zip(values, arch)))

    score.calls = collections.Counter()
    return score


def hidden_target(space, seed):
    """Score = minus the Hamming distance to a hidden architecture (counting calls per architecture)."""
    target = tuple(int(c) for c in np.random.default_rng(seed).integers(0, space.num_choices))

    def score(arch):
        score.calls[arch] += 1
        return -float(sum(a != t for a, t in zip(arch, target)))

    score.calls, score.target = collections.Counter(), target
    return score


def optimum(table, values, budget):
    """Exact best separable score within budget: a multiple-choice knapsack over a Pareto front of (MACs, score)."""
    front = {table.fixed_macs: 0.0}
    for macs, vals in zip(table.layer_macs, values):
        grown = {}
        for cost, total in front.items():
            for m, v in zip(macs, vals):
                if cost + m <= budget and grown.get(cost + m, -np.inf) < total + v:
                    grown[cost + m] = total + v
        front, best = {}, -np.inf
        for cost, total in sorted(grown.items()):
            if total > best:
                front[cost], best = total, total
    return max(front.values())


def budget_quantile(space, table, q):
    """A budget that a fraction q of uniform random architectures meets."""
    rng = np.random.default_rng(123)
    return float(np.quantile([table.flops(tuple(rng.integers(0, space.num_choices))) for _ in range(2000)], q))


def test_config_defaults_are_spos_and_validated():
    assert EvolutionConfig().max_evaluations == 1050
    with pytest.raises(ValueError, match="topk"):
        EvolutionConfig(population=5, topk=10)
    with pytest.raises(ValueError, match="exceeds"):
        EvolutionConfig(population=10, topk=3, num_mutation=6, num_crossover=6)
    with pytest.raises(ValueError, match="mutation_prob"):
        EvolutionConfig(mutation_prob=1.5)


@pytest.mark.parametrize("search", ["evolution", "random"])
def test_never_scores_over_budget(space, table, search):
    budget = budget_quantile(space, table, 0.1)
    values = layer_values(table, 0)

    def score(arch):
        assert table.flops(arch) <= budget, "an over-budget architecture was scored"
        return float(sum(v[c] for v, c in zip(values, arch)))

    rng = np.random.default_rng(0)
    if search == "evolution":
        result = evolution_search(space, score, table.flops, budget, EvolutionConfig(20, 5, 5, 0.1, 10, 10), rng)
    else:
        result = random_search(space, score, table.flops, budget, 100, rng)
    assert result.num_evaluations > 20
    assert all(r["flops"] <= budget for r in result.history)
    assert result.best_flops <= budget


@pytest.mark.parametrize("with_bounds", [True, False])
def test_infeasible_budget_fails_before_scoring(space, table, with_bounds):
    low = table.bounds()[0]
    assert table.flops(cheapest_arch(space, table.flops)) == low  # FLOPs are additive over layers
    bounds = table.bounds() if with_bounds else None
    score = separable(layer_values(table, 0))
    with pytest.raises(ValueError, match=r"below the cheapest architecture of s1/proxy \(0\.6M"):
        evolution_search(space, score, table.flops, low - 1, SMALL, np.random.default_rng(0), bounds=bounds)
    with pytest.raises(ValueError, match="below the cheapest"):
        random_search(space, score, table.flops, low - 1, 10, np.random.default_rng(0), bounds=bounds)
    with pytest.raises(ValueError, match="below the cheapest"):
        check_budget(space, table.flops, 1e3, table.bounds())
    assert not score.calls
    check_budget(space, table.flops, low, table.bounds())  # the cheapest architecture itself fits


def test_feasible_but_unreachable_budget_is_a_clear_error(space, table):
    score = separable(layer_values(table, 0))
    budget = table.bounds()[0] + 1000  # only a handful of architectures fit: rejection sampling cannot find them
    with pytest.raises(ValueError, match="too few architectures"):
        evolution_search(space, score, table.flops, budget, SMALL, np.random.default_rng(0))


@pytest.mark.parametrize("seed", range(4))
def test_evolution_nears_the_optimum_and_beats_random(space, table, seed):
    budget = 6e6
    values = layer_values(table, seed)
    best = optimum(table, values, budget)
    evo = evolution_search(
        space, separable(values), table.flops, budget, EvolutionConfig(), np.random.default_rng(seed)
    )
    rand = random_search(
        space, separable(values), table.flops, budget, evo.num_evaluations, np.random.default_rng(seed)
    )
    assert evo.best_score <= best + 1e-9
    spread = best - np.mean([r["score"] for r in evo.history if r["kind"] == "init"])
    assert best - evo.best_score <= 0.1 * spread, "evolution should land within 10% of the random-to-optimum gap"
    assert evo.best_score > rand.best_score


def test_evolution_finds_a_hidden_target_without_budget_pressure(space, table):
    score = hidden_target(space, 7)
    result = evolution_search(space, score, table.flops, table.bounds()[1], EvolutionConfig(), np.random.default_rng(0))
    assert result.best_arch == score.target and result.best_score == 0.0
    assert result.generation_best == sorted(result.generation_best)  # top-k only ever improves


def test_number_of_evaluations_and_records(space, table):
    logged = []
    score = separable(layer_values(table, 1))
    result = evolution_search(
        space, score, table.flops, table.bounds()[1], SMALL, np.random.default_rng(0), on_evaluate=logged.append
    )
    assert result.num_evaluations == SMALL.max_evaluations == 40
    assert result.num_scored == 40 and sum(score.calls.values()) == 40
    assert logged == result.history
    assert len(result.generation_best) == len(result.generation_topk_mean) == SMALL.generations + 1
    assert all(b >= m for b, m in zip(result.generation_best, result.generation_topk_mean))
    kinds = collections.Counter((r["generation"], r["kind"]) for r in logged)
    assert kinds[(0, "init")] == 10
    for generation in (1, 2, 3):
        assert kinds[(generation, "mutation")] + kinds[(generation, "crossover")] + kinds[(generation, "random")] == 10
    for record in logged:
        assert set(record) == {"arch", "score", "flops", "generation", "kind"}
        assert table.flops(decode(space, record["arch"])) == record["flops"]
    json.dumps(logged)  # plain data, ready for search.jsonl
    assert best_so_far(logged)[-1] == result.best_score
    assert result.best_score == max(r["score"] for r in logged)


def test_same_seed_same_history_other_seed_differs(space, table):
    values = layer_values(table, 2)
    runs = [
        evolution_search(space, separable(values), table.flops, 6e6, SMALL, np.random.default_rng(s)) for s in (5, 5, 6)
    ]
    assert runs[0].history == runs[1].history
    assert runs[0].history != runs[2].history


def test_memoised_across_calls_and_replayed_from_the_log(space, table):
    # two searches converging on the same target share architectures, so the shared cache is exercised
    score, cache, logged = hidden_target(space, 7), {}, []
    cfg, budget = EvolutionConfig(), table.bounds()[1]
    first = evolution_search(space, score, table.flops, budget, cfg, np.random.default_rng(0), logged.append, cache)
    other = evolution_search(space, score, table.flops, budget, cfg, np.random.default_rng(1), cache=cache)
    assert max(score.calls.values()) == 1, "an architecture was scored twice"
    assert other.num_scored < other.num_evaluations, "the two searches should share some architectures"
    assert len(cache) == len(score.calls)

    # a resumed run: the cache rebuilt from the log, same seed -> identical search, nothing re-scored or re-logged
    again, relogged = hidden_target(space, 7), []
    cache = cache_from_records(space, json.loads(json.dumps(logged)))
    replay = evolution_search(space, again, table.flops, budget, cfg, np.random.default_rng(0), relogged.append, cache)
    assert not again.calls and not relogged and replay.num_scored == 0
    assert replay.history == first.history
    assert (replay.best_arch, replay.best_score) == (first.best_arch, first.best_score)


def test_interrupted_search_resumes_to_the_uninterrupted_log(space, table):
    values = layer_values(table, 4)
    cfg = EvolutionConfig(population=20, generations=5, topk=5, num_mutation=10, num_crossover=10)
    full_log = []
    full = evolution_search(space, separable(values), table.flops, 6e6, cfg, np.random.default_rng(3), full_log.append)

    class Interrupted(Exception):
        pass

    def dies_after_50(arch):
        if len(partial_log) == 50:
            raise Interrupted
        return float(sum(v[c] for v, c in zip(values, arch)))

    partial_log = []
    with pytest.raises(Interrupted):
        evolution_search(space, dies_after_50, table.flops, 6e6, cfg, np.random.default_rng(3), partial_log.append)
    rest_log, score = [], separable(values)
    cache = cache_from_records(space, partial_log)
    resumed = evolution_search(space, score, table.flops, 6e6, cfg, np.random.default_rng(3), rest_log.append, cache)
    assert sum(score.calls.values()) == full.num_evaluations - 50
    assert partial_log + rest_log == full_log
    assert resumed.history == full.history


def test_cache_from_records_rejects_conflicting_scores(space):
    records = [{"arch": "0-1-2-3-4-5-6-7", "score": 0.5}, {"arch": "0-1-2-3-4-5-6-7", "score": 0.5}]
    assert cache_from_records(space, records) == {(0, 1, 2, 3, 4, 5, 6, 7): 0.5}
    with pytest.raises(ValueError, match="two scores"):
        cache_from_records(space, records + [{"arch": "0-1-2-3-4-5-6-7", "score": 0.7}])


def test_random_search_draws_distinct_archs(space, table):
    score = separable(layer_values(table, 0))
    result = random_search(space, score, table.flops, 6e6, 200, np.random.default_rng(0))
    archs = [r["arch"] for r in result.history]
    assert len(archs) == len(set(archs)) == result.num_evaluations == 200
    assert {r["kind"] for r in result.history} == {"random"}
    assert result.generation_best == []


def test_progress_bar_only_on_a_terminal(space, table, capsys, monkeypatch):
    def search():
        score = separable(layer_values(table, 0))
        evolution_search(space, score, table.flops, 6e6, SMALL, np.random.default_rng(0), progress=True)

    search()
    assert "evolution" not in capsys.readouterr().err  # a log file gets no bar frames
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    search()
    assert "evolution" in capsys.readouterr().err
