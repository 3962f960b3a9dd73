"""The pipeline every method runs: supernet training -> evolution search -> retraining -> final.json.

Each stage leaves a completion file (`supernet.pt`, `search_result.json`, `final.json`); rerunning the
same command skips complete stages and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable

import numpy as np
import torch

from ennas import distributed as dist
from ennas.context import RunContext, stream_seed
from ennas.engine import Loop, steps_per_epoch, train_epochs
from ennas.evaluate import score_path
from ennas.methods import Method
from ennas.optim import linear_schedule, supernet_optimizer
from ennas.results import load_torch, read_json, read_jsonl, save_torch, write_json, write_jsonl
from ennas.retrain import retrain
from ennas.search import (
    EvolutionConfig,
    SearchResult,
    cache_from_records,
    check_budget,
    evolution_search,
    random_search,
)
from spaces.arch import Arch, decode, describe, encode


def supernet_stage(ctx: RunContext, method: Method) -> None:
    """Train the supernet with the method's sampling and loss (or the method's own stage, e.g. DNA)."""
    done = ctx.file("supernet.pt")
    model = ctx.supernet
    if done.exists():
        state = load_torch(done, ctx.device)
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        return
    if hasattr(method, "train_supernet"):  # a method whose training is not a per-batch path loss
        method.train_supernet(model)
    else:
        cfg = ctx.cfg.supernet
        extra = [p for m in method.extra_modules().values() for p in m.parameters()]
        optimizer = supernet_optimizer(list(model.parameters()) + extra, cfg)
        loop = Loop(
            name="supernet",
            model=model,
            method=method,
            optimizer=optimizer,
            scheduler=None,
            dataset=ctx.data.train,
            batch_size=cfg.batch_size,
            epochs=cfg.epochs,
            fraction=method.epoch_fraction(),
            max_steps_per_epoch=cfg.max_steps_per_epoch,
            checkpoint_steps=cfg.checkpoint_steps,
            grad_clip=cfg.grad_clip,
            extra_state=method.extra_modules(),
        )
        loop.scheduler = linear_schedule(optimizer, cfg.epochs * steps_per_epoch(loop, len(ctx.data.train)))
        train_epochs(ctx, loop)
    if dist.is_main():
        save_torch(done, {"model": model.state_dict(), "method": method.state_dict()})
    dist.barrier()


def search_stage(ctx: RunContext, method: Method) -> dict:
    """Evolution search under the FLOPs budget on the search split, memoised and recorded in search.jsonl."""
    done = ctx.file("search_result.json")
    if done.exists():
        return read_json(done)
    if hasattr(method, "search"):  # e.g. DNA's traversal of block ratings
        result = method.search(ctx.supernet)
    else:
        result = evolution_stage(ctx)
    result.update(method.final_extras())
    if dist.is_main():
        write_json(done, result)
    dist.barrier()
    return result


def search_log(ctx: RunContext, name: str) -> tuple[list[dict], dict, Callable[[dict], None]]:
    """A search's records so far (resuming), the score cache they give, and the callback that records more."""
    path = ctx.file(name)
    records = read_jsonl(path)

    def record(r: dict) -> None:
        records.append({**r, "method": ctx.cfg.method, "space": ctx.cfg.space, "seed": ctx.cfg.seed})
        if dist.is_main():
            write_jsonl(path, records)

    return records, cache_from_records(ctx.space, records), record


def run_evolution(ctx: RunContext, score: Callable[[Arch], float], log_name: str, rng_key: int) -> SearchResult:
    """SPOS evolution with the run's search settings and budget, memoised by and recorded in `log_name`."""
    s = ctx.cfg.search
    _, cache, record = search_log(ctx, log_name)
    evo = EvolutionConfig(s.population, s.generations, s.topk, s.mutation_prob, s.num_mutation, s.num_crossover)
    rng = np.random.default_rng(stream_seed(ctx.cfg.seed, "search", rng_key))
    return evolution_search(
        ctx.space,
        score,
        ctx.table.flops,
        ctx.flops_budget,
        evo,
        rng,
        on_evaluate=record,
        cache=cache,
        progress=ctx.cfg.progress and dist.is_main(),
        bounds=ctx.table.bounds(),
    )


def evolution_stage(ctx: RunContext) -> dict:
    """SPOS evolution (and the random-search baseline with as many evaluations) over supernet paths."""
    check_budget(ctx.space, ctx.table.flops, ctx.flops_budget, ctx.table.bounds())
    t0 = time.time()
    model = ctx.supernet

    def score(arch):
        return score_path(model, arch, ctx.recal_batches, ctx.search_batches, ctx.device)

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


def environment() -> dict:
    """Versions, machine and git commit for config.json."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout
    except OSError:
        commit = ""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "world_size": dist.world_size(),
        "git_commit": commit.strip() or None,
    }


def run_pipeline(ctx: RunContext, method: Method) -> dict:
    """Supernet -> search -> retrain for one method, skipping what is already complete in the output folder."""
    final_path = ctx.file("final.json")
    if final_path.exists():
        return read_json(final_path)
    check_budget(ctx.space, ctx.table.flops, ctx.flops_budget, ctx.table.bounds())  # before any work
    if dist.is_main():
        write_json(ctx.file("config.json"), {**ctx.cfg.to_dict(), "environment": environment()})
    supernet_stage(ctx, method)
    found = search_stage(ctx, method)
    arch = decode(ctx.space, found["arch"])
    trained = retrain(ctx, arch)
    supernet_s = sum(r["device_s"] for r in read_jsonl(ctx.file("train_log.jsonl")) if r.get("stage") != "retrain")
    search_s = supernet_s + found.get("search_device_s", 0.0)
    final = {
        "method": ctx.cfg.method,
        "space": ctx.cfg.space,
        "scale": ctx.cfg.scale,
        "dataset": ctx.data.name,
        "seed": ctx.cfg.seed,
        "arch": encode(arch),
        "arch_readable": describe(ctx.space, arch),
        "flops": ctx.table.flops(arch),
        "mflops": ctx.table.flops(arch) / 1e6,
        "params": ctx.table.params(arch),
        "top1": trained["top1"],
        "top5": trained["top5"],
        "supervised": type(method).supervised,
        "search_score": found.get("search_score"),
        "search_cost_device_hours": search_s / 3600,
        "supernet_device_s": supernet_s,
        "search_device_s": found.get("search_device_s", 0.0),
        "retrain_device_s": trained["retrain_device_s"],
        "device": str(ctx.device),
        "world_size": dist.world_size(),
        "extras": {k: v for k, v in found.items() if k not in ("arch", "flops")},
    }
    if dist.is_main():
        write_json(final_path, final)
    return final
