"""The training loop, shared by supernet training (every method) and retraining: a few plain functions.

`train_epochs` runs epochs of `method.sample_paths` -> `method.batch_loss` -> backward -> gradient
averaging over ranks -> optimiser step, writes one record per epoch to a JSON-lines log, and saves an
atomic checkpoint at every epoch end (and every `checkpoint_steps` steps) holding the model, optimiser,
scheduler, position, every RNG state, the epoch's running sums and the method's own state. Rerunning
after a kill resumes from that checkpoint and reproduces the uninterrupted run exactly (with
num_workers = 0; worker processes re-seed per epoch, which is exact at epoch boundaries only).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ennas import distributed as dist
from ennas.context import RunContext, stream_seed
from ennas.data import EpochSampler, make_loader
from ennas.results import load_torch, read_jsonl, save_torch, write_jsonl


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Loop:
    """What one training run consists of; the method object supplies paths and losses."""

    name: str  # "supernet" or "retrain": names the checkpoint and log files
    model: nn.Module
    method: object  # ennas.methods.Method-like: sample_paths, batch_loss, after_step, epoch_metrics, state
    optimizer: torch.optim.Optimizer
    scheduler: object  # stepped once per optimiser step (`step()`), with state_dict/load_state_dict
    dataset: torch.utils.data.Dataset
    batch_size: int  # global
    epochs: int
    fraction: float = 1.0
    max_steps_per_epoch: int = 0
    checkpoint_steps: int = 0
    grad_clip: float = 0.0
    extra_state: dict = field(default_factory=dict)  # other objects with state_dict (e.g. an EMA model)
    on_epoch_end: Callable[[int], dict] | None = None  # extra record fields (e.g. retraining's test accuracy)
    stream: str = ""  # random stream of the data order (ennas.context.STREAMS); "" means `name`


def rng_state() -> dict:
    """Every global RNG's state (torch CPU/GPU, numpy, Python), for exact resumption."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ctx: RunContext, loop: Loop, epoch: int, step: int, sums: dict) -> None:
    """Atomically save everything needed to continue at (epoch, step); rank 0 writes, after ranks agree on BN."""
    dist.average_buffers(loop.model)
    if not dist.is_main():
        return
    state = {
        "config": ctx.cfg.to_dict(),
        "epoch": epoch,
        "step": step,
        "sums": sums,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "method": loop.method.state_dict(),
        "extra": {k: v.state_dict() for k, v in loop.extra_state.items()},
        "rng": rng_state(),
    }
    save_torch(ctx.file(f"{loop.name}_checkpoint.pt"), state)


def load_checkpoint(ctx: RunContext, loop: Loop) -> tuple[int, int, dict]:
    """Restore the loop from its checkpoint if one exists; returns (epoch, step, running sums)."""
    path = ctx.file(f"{loop.name}_checkpoint.pt")
    if not path.exists():
        return 0, 0, {}
    state = load_torch(path, ctx.device)
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    loop.method.load_state_dict(state["method"])
    for k, v in loop.extra_state.items():
        v.load_state_dict(state["extra"][k])
    set_rng_state(state["rng"])
    return state["epoch"], state["step"], state["sums"]


def steps_per_epoch(loop: Loop, n: int) -> int:
    """Optimiser steps in one epoch: whole per-rank batches of this epoch's share, capped if configured."""
    share = math.ceil(round(n * loop.fraction) / dist.world_size())
    steps = share // (loop.batch_size // dist.world_size())
    if steps == 0:
        raise ValueError(f"batch size {loop.batch_size} exceeds the {share} training images per rank and epoch")
    return min(steps, loop.max_steps_per_epoch) if loop.max_steps_per_epoch else steps


def epoch_loader(ctx: RunContext, loop: Loop, epoch: int, skip_steps: int, steps: int):
    """This rank's batches of `epoch`, starting after `skip_steps` batches (resuming mid-epoch)."""
    per_rank = loop.batch_size // dist.world_size()
    stream = loop.stream or loop.name
    sampler = EpochSampler(
        len(loop.dataset),
        seed=stream_seed(ctx.cfg.seed, stream),
        fraction=loop.fraction,
        rank=dist.rank(),
        world_size=dist.world_size(),
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)[skip_steps * per_rank : steps * per_rank]
    return make_loader(
        loop.dataset,
        per_rank,
        sampler=indices,
        drop_last=True,
        seed=stream_seed(ctx.cfg.seed, stream, epoch),
        num_workers=ctx.cfg.data.num_workers,
    )


def train_step(ctx: RunContext, loop: Loop, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> dict:
    """One optimiser step on one batch; returns the method's batch statistics plus the rank-averaged loss."""
    x = x.to(ctx.device, non_blocking=True)
    y = y.to(ctx.device, non_blocking=True)
    if ctx.cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    paths = loop.method.sample_paths(ctx.path_rng(epoch, step), epoch, step)
    # set_to_none: operators off the path keep grad None, so SGD moves them by neither momentum nor decay
    loop.optimizer.zero_grad(set_to_none=True)
    loss, stats = loop.method.batch_loss(loop.model, x, y, paths, epoch, step)
    loss.backward()
    params = [p for group in loop.optimizer.param_groups for p in group["params"]]
    dist.average_gradients(params)
    mean_loss = (dist.all_sum(loss.detach().float().reshape(1)) / dist.world_size()).item()
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            f"{loop.name} loss became {mean_loss} at epoch {epoch} step {step}; stopped, and the last good "
            f"checkpoint {ctx.file(loop.name + '_checkpoint.pt')} is kept (lower the learning rate and rerun)"
        )
    if loop.grad_clip:
        nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], loop.grad_clip)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.method.after_step(loop.model, x, y, paths, stats, epoch, step)
    return {**stats, "loss_sum": mean_loss * stats.get("count", len(y))}


def add_sums(sums: dict, stats: dict) -> dict:
    """Accumulate numeric batch statistics into the epoch's running sums."""
    for k, v in stats.items():
        if isinstance(v, int | float):
            sums[k] = sums.get(k, 0) + v
    return sums


def epoch_record(ctx: RunContext, loop: Loop, epoch: int, sums: dict, wall: float) -> dict:
    """The JSON record of one finished epoch (DESIGN.md §7)."""
    count = max(sums.get("count", 0), 1)
    record = {
        "method": ctx.cfg.method,
        "space": ctx.cfg.space,
        "seed": ctx.cfg.seed,
        "stage": loop.name,
        "epoch": epoch,
        "loss": sums.get("loss_sum", 0.0) / count,
        "train_acc": 100.0 * sums.get("correct", 0) / count,
        "lr": loop.optimizer.param_groups[0]["lr"],
        "wall_s": wall,
        "device_s": wall * dist.world_size(),
        "world_size": dist.world_size(),
    }
    record.update(loop.method.epoch_metrics(loop.model, epoch))
    if loop.on_epoch_end is not None:
        record.update(loop.on_epoch_end(epoch))
    return record


def train_epochs(ctx: RunContext, loop: Loop, log_name: str = "train_log.jsonl") -> list[dict]:
    """Run (or resume) the loop to its last epoch; returns every epoch record of this stage."""
    start_epoch, start_step, sums = load_checkpoint(ctx, loop)
    log_path: Path = ctx.file(log_name)
    others = [r for r in read_jsonl(log_path) if r.get("stage") != loop.name]
    records = [r for r in read_jsonl(log_path) if r.get("stage") == loop.name and r["epoch"] < start_epoch]
    n = round(len(loop.dataset))
    for epoch in range(start_epoch, loop.epochs):
        steps = steps_per_epoch(loop, n)
        skip = start_step if epoch == start_epoch else 0
        if skip == 0:
            sums = {}
            loop.method.on_epoch_start(loop.model, epoch)
        loop.model.train()
        wall = sums.pop("wall_s", 0.0)
        t0 = time.time()
        bar = tqdm(
            epoch_loader(ctx, loop, epoch, skip, steps),
            total=steps,
            initial=skip,
            leave=False,
            desc=f"{ctx.cfg.method} {loop.name} {epoch + 1}/{loop.epochs}",
            disable=not (ctx.cfg.progress and dist.is_main()),
        )
        for step, (x, y) in enumerate(bar, start=skip):
            sums = add_sums(sums, train_step(ctx, loop, x, y, epoch, step))
            if loop.checkpoint_steps and (step + 1) % loop.checkpoint_steps == 0 and step + 1 < steps:
                save_checkpoint(ctx, loop, epoch, step + 1, {**sums, "wall_s": wall + time.time() - t0})
        record = epoch_record(ctx, loop, epoch, sums, wall + time.time() - t0)
        records.append(record)
        if dist.is_main():
            write_jsonl(log_path, others + records)
            bar.write(json_line(record))
        save_checkpoint(ctx, loop, epoch + 1, 0, {})
    return records


def json_line(record: dict) -> str:
    """A short human summary of an epoch record for the console."""
    keys = ("epoch", "loss", "train_acc", "teacher_acc", "student_acc", "gap", "diversity", "test_top1", "wall_s")
    parts = [
        f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
        for k in keys
        if record.get(k) is not None
    ]
    return f"[{record['method']} {record['stage']}] " + " ".join(parts)
