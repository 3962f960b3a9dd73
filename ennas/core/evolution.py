"""The shared search stage: SPOS evolution (and random search) over supernet paths, scored and logged alike.

Every candidate is scored by `ennas.core.evaluate.score_path` on the run's fixed recalibration and search
batches, which every rank holds whole: under torchrun the ranks score different candidates (one each at a
time) and exchange the scores, so a candidate's score is the same on any number of GPUs. Every newly scored
one is appended to a JSON-lines log (`search.jsonl`, `random_search.jsonl`) whose records also seed the score
cache of a resumed search, so the search replays exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from torch import nn

from ennas.core import distributed as dist
from ennas.core import preempt
from ennas.core.context import RunContext
from ennas.core.evaluate import score_path
from ennas.core.io import read_jsonl, write_jsonl
from ennas.core.progress import Ticker, run_name
from ennas.core.search import (
    BatchScorer,
    SearchResult,
    cache_from_records,
    check_budget,
    evolution_search,
    random_search,
)
from ennas.seeding import stream_seed
from spaces.arch import Arch, encode


def search_record(ctx: RunContext, r: dict) -> dict:
    """A search log record: the candidate's fields plus the run's method, space and seed (every writer)."""
    return {**r, "method": ctx.cfg.method, "space": ctx.cfg.space, "seed": ctx.cfg.seed}


def search_log(ctx: RunContext, name: str) -> tuple[list[dict], dict, Callable[[dict], None]]:
    """A search's records so far (resuming), the score cache they give, and the callback that records more."""
    path = ctx.file(name)
    records = read_jsonl(path)
    ticker = Ticker(f"{run_name(ctx)} {name.removesuffix('.jsonl')}: candidates scored", enabled=ctx.cfg.progress)

    def record(r: dict) -> None:
        ticker.tick()
        records.append(search_record(ctx, r))
        if dist.is_main():
            write_jsonl(path, records)
        preempt.check(f"in the search after {len(records)} candidates of {name}")  # the log resumes it

    return records, cache_from_records(ctx.space, records), record


def run_evolution(ctx: RunContext, score: Callable[[Arch], float], log_name: str, rng_key: int) -> SearchResult:
    """SPOS evolution with the run's search settings and budget, memoised by and recorded in `log_name`."""
    _, cache, record = search_log(ctx, log_name)
    rng = np.random.default_rng(stream_seed(ctx.cfg.seed, "search", rng_key))
    return evolution_search(
        ctx.space,
        score,
        ctx.table.flops,
        ctx.flops_budget,
        ctx.cfg.search,
        rng,
        on_evaluate=record,
        cache=cache,
        progress=ctx.cfg.progress and dist.is_main(),
        bounds=ctx.table.bounds(),
    )


def evolution_stage(ctx: RunContext, model: nn.Module) -> dict:
    """SPOS evolution (and the random-search baseline with as many evaluations) over `model`'s paths."""
    check_budget(ctx.space, ctx.table.flops, ctx.flops_budget, ctx.table.bounds())
    t0 = time.time()

    def score_one(arch):
        return score_path(model, arch, ctx.recal_batches, ctx.search_batches, ctx.device)

    score = BatchScorer(lambda archs: dist.map_over_ranks(score_one, archs), size=dist.world_size())

    results = {"evolution": run_evolution(ctx, score, "search.jsonl", 2)}
    if ctx.cfg.search.random_baseline:
        _, cache, record = search_log(ctx, "random_search.jsonl")
        rng = np.random.default_rng(stream_seed(ctx.cfg.seed, "search", 3))
        results["random"] = random_search(
            ctx.space,
            score,
            ctx.table.flops,
            ctx.flops_budget,
            results["evolution"].num_evaluations,
            rng,
            on_evaluate=record,
            cache=cache,
            max_tries_factor=ctx.cfg.search.max_tries_factor,
            bounds=ctx.table.bounds(),
        )
    outputs = {
        kind: {
            "arch": encode(r.best_arch),
            "score": r.best_score,
            "flops": r.best_flops,
            "evaluations": r.num_evaluations,
        }
        for kind, r in results.items()
    }
    wall = time.time() - t0
    best = outputs["evolution"]
    return {
        "arch": best["arch"],
        "search_score": best["score"],
        "flops": best["flops"],
        "random_search": outputs.get("random"),
        "search_wall_s": wall,
        "search_device_s": wall * dist.world_size(),
    }
