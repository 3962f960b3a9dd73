"""The pipeline every method runs: supernet training -> evolution search -> retraining -> final.json.

Each stage leaves a completion file (`supernet.pt`, `search_result.json`, `final.json`); rerunning the
same command skips complete stages and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

from ennas.core import distributed as dist
from ennas.core import preempt
from ennas.core.context import RunContext
from ennas.core.io import load_torch, read_json, read_jsonl, save_torch, write_json
from ennas.core.method import Method
from ennas.core.precision import amp_dtype, autocast
from ennas.core.resume import check_resumable
from ennas.core.retrain import is_retrain_stage, retrain
from ennas.core.search import check_budget
from spaces.arch import decode, describe, encode


def supernet_stage(ctx: RunContext, method: Method) -> None:
    """Train the supernet with the method's own stage, or load it when a previous run finished it."""
    done = ctx.file("supernet.pt")
    model = ctx.supernet
    if dist.broadcast_object(done.exists()):  # rank 0 decides every skip, so all ranks take the same path
        state = load_torch(done, ctx.device)
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        return
    method.train_supernet(model)
    if dist.is_main():
        save_torch(done, {"model": model.state_dict(), "method": method.state_dict()})
    dist.barrier()


def search_stage(ctx: RunContext, method: Method) -> dict:
    """The method's search under the FLOPs budget (evolution by default), recorded in search_result.json."""
    done = ctx.file("search_result.json")
    if dist.broadcast_object(done.exists()):
        return read_json(done)
    with autocast(ctx.device, amp_dtype(ctx.cfg.amp, ctx.device)):
        result = method.search(ctx.supernet)
    result.update(method.final_extras())
    if dist.is_main():
        write_json(done, result)
    dist.barrier()
    return result


LIBRARIES = ("torchvision", "timm", "fvcore", "numpy", "scipy", "cvxpy", "ecos", "pandas", "matplotlib", "tqdm")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a run's numbers can depend on (None: not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict:
    """Versions, machine and git commit for config.json."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout
    except OSError:
        commit = ""
    return {
        "torch": torch.__version__,
        "libraries": library_versions(),
        "threads": torch.get_num_threads(),  # the effective count: it changes floating-point sums, so results
        "cpu_count": os.cpu_count(),
        "cuda_version": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
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
    check_resumable(ctx.out, ctx.cfg)  # never continue, or return, a run made with other settings
    if dist.broadcast_object(final_path.exists()):
        final = read_json(final_path)
        if len(retrain_results(final)) < ctx.cfg.retrain.seeds:
            return add_retrain_seeds(ctx, final)  # a finished run asked for more retraining seeds
        if dist.is_main() and not ctx.cfg.keep_checkpoints:
            remove_checkpoints(ctx.out)  # a run finished with --keep-checkpoints, rerun without it
        return final
    check_budget(ctx.space, ctx.table.flops, ctx.flops_budget, ctx.table.bounds())  # before any work
    if dist.is_main():
        write_json(ctx.file("config.json"), {**ctx.cfg.to_dict(), "environment": environment()})
    supernet_stage(ctx, method)
    preempt.check("after the supernet stage")
    found = search_stage(ctx, method)
    preempt.check("after the search stage")
    arch = decode(ctx.space, found["arch"])
    trained = retrain(ctx, arch)
    log = read_jsonl(ctx.file("train_log.jsonl"))
    supernet_s = sum(r["device_s"] for r in log if not is_retrain_stage(r.get("stage")))
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
        "retrain_seeds": [seed_record(trained)],
    }
    if dist.is_main():
        write_json(final_path, final)  # the run's result stands from here; further seeds refine it
    return add_retrain_seeds(ctx, final)


def seed_record(trained: dict) -> dict:
    """What final.json keeps of one retraining seed."""
    return {k: trained[k] for k in ("index", "top1", "top5", "retrain_device_s")}


def retrain_results(final: dict) -> list[dict]:
    """The retraining seeds of a final.json; one made before retrain.seeds existed has its own retraining only."""
    if final.get("retrain_seeds"):
        return list(final["retrain_seeds"])
    return [{"index": 0, "top1": final["top1"], "top5": final["top5"], "retrain_device_s": final["retrain_device_s"]}]


def add_retrain_seeds(ctx: RunContext, final: dict) -> dict:
    """Retrain the found architecture with the seeds `retrain.seeds` asks for beyond those final.json holds.

    final.json is rewritten after each seed (top-1 and top-5 become the mean over the seeds, each seed kept), so
    a stop loses at most the seed in progress, which resumes from its checkpoint.
    """
    seeds = retrain_results(final)
    arch = decode(ctx.space, final["arch"])
    for index in range(len(seeds), ctx.cfg.retrain.seeds):
        preempt.check(f"before retraining seed {index}")
        seeds.append(seed_record(retrain(ctx, arch, index)))
        final = final | {
            "top1": round(sum(s["top1"] for s in seeds) / len(seeds), 4),
            "top5": round(sum(s["top5"] for s in seeds) / len(seeds), 4),
            "retrain_seeds": seeds,
        }
        if dist.is_main():
            write_json(ctx.file("final.json"), final)
    if dist.is_main() and not ctx.cfg.keep_checkpoints:
        remove_checkpoints(ctx.out)
    return final


def remove_checkpoints(folder: Path) -> list[str]:
    """Delete a finished run's *_checkpoint.pt files (what a resume would need; final.json holds its result).

    The stage files stay: supernet.pt (ranking fidelity, re-searching), retrained.pt, snapshots/ (fidelity
    over training). Returns the removed names.
    """
    removed = sorted(p.name for p in Path(folder).glob("*_checkpoint.pt"))
    for name in removed:
        (Path(folder) / name).unlink(missing_ok=True)
    return removed
