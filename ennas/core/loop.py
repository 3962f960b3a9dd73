"""The training loop, shared by supernet training (every method), DNA's blocks and teacher, and retraining.

What differs between loops is a small `StepPolicy` (which paths a batch trains, its loss, what happens
after the step, what an epoch record adds). `train_epochs` runs epochs of `policy.sample_paths` ->
`policy.batch_loss` -> backward -> gradient averaging over ranks -> optimiser step, writes one record per
epoch to a JSON-lines log, and saves an atomic checkpoint at every epoch end (and every `checkpoint_steps`
steps) holding the model, optimiser, scheduler, position, every RNG state, the epoch's running sums and
the policy's own state. Rerunning after a kill resumes from that checkpoint and reproduces the
uninterrupted run exactly (with num_workers = 0; worker processes re-seed per epoch, which is exact at
epoch boundaries only). `build_loop` is the one way to describe a loop.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ennas.core import checkpoint, preempt
from ennas.core import distributed as dist
from ennas.core.config import ConfigError
from ennas.core.io import read_jsonl, save_torch, write_jsonl
from ennas.core.precision import amp_dtype, autocast, grad_scaler
from ennas.core.progress import Ticker, run_name
from ennas.data import EpochLoader
from ennas.seeding import path_rng, stream_seed
from spaces.arch import Arch

# With output to a file (nohup, SLURM) no bar is drawn: a stage prints a line at least this often instead.
HEARTBEAT_S = 30.0

if TYPE_CHECKING:
    from ennas.core.context import RunContext


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Step:
    """One training step's batch as the policy sees it: images, labels, paths, position and learning rate."""

    x: torch.Tensor
    y: torch.Tensor
    paths: list[Arch]
    epoch: int
    index: int  # step within the epoch
    lr: float  # the first parameter group's learning rate for this step (before the scheduler moves it)
    micro: int = 0  # which micro-batch of the step this is (gradient accumulation), 0..micro_batches-1
    micro_batches: int = 1
    grad_scale: float = 1.0  # the fp16 loss scale the backward pass multiplies gradients by (1 otherwise)


class StepPolicy:
    """What one loop does per batch; every hook but `batch_loss` defaults to doing nothing."""

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Per-epoch preparation (e.g. EnNAS re-estimates operator diversity)."""

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[Arch]:
        """The path(s) trained on this batch; `rng` is seeded from (seed, epoch, step), identical on all ranks."""
        return []

    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """The loss to back-propagate and plain statistics (summed over the batch) for the epoch record."""
        raise NotImplementedError(f"{type(self).__name__} trains no per-batch loss")

    def after_step(self, model: nn.Module, step: Step, stats: dict) -> None:
        """Work after the optimiser step (e.g. Cream's board update)."""

    def epoch_metrics(self, model: nn.Module, epoch: int) -> dict:
        """Measurements for the epoch record (teacher / student / diversity; none by default)."""
        return {}

    def state_dict(self) -> dict:
        """The policy's own state for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""


class Scheduler(Protocol):
    """Stepped once per optimiser step, with state (torch's LR schedulers and ennas.core.optim.PerStep)."""

    def step(self) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class EpochPlan:
    """Which data the epochs of a loop cover, and how often it checkpoints."""

    dataset: torch.utils.data.Dataset
    batch_size: int  # global, split across ranks
    epochs: int
    stream: str  # random stream of the data order (ennas.seeding.STREAMS)
    stream_keys: tuple[int, ...] = ()  # refine the stream (retraining seed k > 0 of one architecture)
    fraction: float = 1.0  # of the dataset per epoch
    max_steps_per_epoch: int = 0  # 0: no cap
    checkpoint_steps: int = 0  # 0: at epoch ends only
    accumulate: int = 1  # micro-batches per optimiser step (gradient accumulation; the update is the same)


@dataclass
class Loop:
    """What one training run consists of; the policy supplies paths and losses."""

    name: str  # "supernet", "retrain", "teacher", "dna_block0", ...: names the checkpoint and the log stage
    model: nn.Module
    policy: StepPolicy
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    plan: EpochPlan
    grad_clip: float = 0.0
    extra_state: dict[str, Any] = field(default_factory=dict)  # other objects with state_dict (e.g. an EMA model)
    on_epoch_end: Callable[[int], dict] | None = None  # extra record fields (e.g. the teacher's search accuracy)
    snapshot_epochs: frozenset[int] = frozenset()  # 0-based epochs whose weights are kept in snapshots/
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling, set by train_epochs (checkpointed)


def build_loop(
    name: str,
    model: nn.Module,
    policy: StepPolicy,
    optimizer: torch.optim.Optimizer,
    plan: EpochPlan,
    schedule: Callable[[torch.optim.Optimizer, int], Scheduler],
    *,
    grad_clip: float = 0.0,
    extra_state: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int], dict] | None = None,
    snapshot_epochs: tuple[int, ...] = (),
) -> Loop:
    """A Loop whose scheduler `schedule(optimizer, steps_per_epoch)` is built from the plan's epoch length."""
    plan = fit_batch(plan, name)
    scheduler = schedule(optimizer, steps_per_epoch(plan))
    extra = extra_state or {}
    return Loop(
        name, model, policy, optimizer, scheduler, plan, grad_clip, extra, on_epoch_end, frozenset(snapshot_epochs)
    )


def snapshot_path(ctx: RunContext, loop_name: str, epoch: int) -> Path:
    """Where the weights after 0-based `epoch` of a loop are kept (benchmark.fidelity reads them)."""
    return ctx.file(f"snapshots/{loop_name}_epoch{epoch}.pt")


def fit_batch(plan: EpochPlan, name: str) -> EpochPlan:
    """The plan with its batch cut to the images an epoch has, when a small dataset has fewer (with a note).

    The presets' batches are set for the full dataset; on a test folder of a few dozen images the batch becomes
    the largest multiple of ranks x micro-batches that fits (the learning rate is not rescaled).
    """
    images = round(len(plan.dataset) * plan.fraction)
    parts = dist.world_size() * plan.accumulate
    if plan.batch_size <= images or images < parts:
        return plan  # fits, or too small even for one image per part: steps_per_epoch says so in one line
    fitted = images // parts * parts
    if dist.is_main():
        print(
            f"note: {name}: batch {plan.batch_size} is more than the {images} images of an epoch; using {fitted}",
            file=sys.stderr,
        )
    return dataclasses.replace(plan, batch_size=fitted)


def check_batch(plan: EpochPlan, name: str) -> None:
    """A one-line ConfigError unless the global batch splits evenly into ranks x micro-batches.

    Splitting by floor division would silently train a smaller batch than configured on some GPU counts.
    """
    parts = dist.world_size() * plan.accumulate
    if plan.batch_size % parts:
        section = "retrain" if name.startswith("retrain") or name == "teacher" else "supernet"
        raise ConfigError(
            f"{name}: the global batch {plan.batch_size} does not divide into {dist.world_size()} rank(s) x "
            f"{plan.accumulate} micro-batch(es); choose {section}.batch_size or {section}.accumulate so that it does"
        )


def steps_per_epoch(plan: EpochPlan) -> int:
    """Optimiser steps in one epoch: whole per-rank batches of this epoch's share, capped if configured."""
    share = math.ceil(round(len(plan.dataset) * plan.fraction) / dist.world_size())
    steps = share // (plan.batch_size // dist.world_size())
    if steps == 0:
        raise ConfigError(
            f"the batch size {plan.batch_size} exceeds the {share} training images per rank and epoch; lower the "
            "batch_size of the stage (supernet.batch_size or retrain.batch_size) or use more training images"
        )
    return min(steps, plan.max_steps_per_epoch) if plan.max_steps_per_epoch else steps


def epoch_loader(ctx: RunContext, plan: EpochPlan, epoch: int, skip_steps: int, steps: int):
    """This rank's batches of `epoch`, starting after `skip_steps` batches (resuming mid-epoch).

    One EpochLoader serves every epoch of a loop (persistent workers); the run keeps only the latest, so a
    finished loop's workers end when the next loop starts. With data.decode=device the training view's workers
    read file bytes, and `to_device` decodes and augments each batch from the seed the loader gives it.
    """
    per_rank = plan.batch_size // dist.world_size()
    key = (plan.dataset, per_rank, plan.stream, plan.stream_keys, plan.fraction)
    if key not in ctx.loaders:
        ctx.loaders.clear()
        ctx.loaders[key] = EpochLoader(
            ctx.data.loader_view(plan.dataset, ctx.cfg.data.decode),
            per_rank,
            seed=stream_seed(ctx.cfg.seed, plan.stream, *plan.stream_keys),
            fraction=plan.fraction,
            rank=dist.rank(),
            world_size=dist.world_size(),
            num_workers=ctx.cfg.data.num_workers,
        )
    return ctx.loaders[key].epoch(epoch, skip_steps * per_rank, steps * per_rank)


def loop_scaler(ctx: RunContext, loop: Loop) -> torch.amp.GradScaler:
    """The loop's gradient scaler, made once for the run's precision (enabled for fp16 only)."""
    if loop.scaler is None:
        loop.scaler = grad_scaler(ctx.device, amp_dtype(ctx.cfg.amp, ctx.device))
    return loop.scaler


def train_step(ctx: RunContext, loop: Loop, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> dict:
    """One optimiser step on one batch; returns the policy's batch statistics plus the rank-averaged loss.

    The rank's batch runs as `plan.accumulate` micro-batches on the same paths, each backward pass adding
    1/accumulate of its mean loss's gradient, so the update equals one pass over the whole batch for losses that
    are batch means (exactly with BN in eval mode; in train mode BN normalises each micro-batch by its own
    statistics, as it does each rank's shard). Per-batch decisions of a policy (EnNAS's ensemble weights,
    Cream's teacher) are taken per micro-batch. The summed statistics also carry `stop`, the number of ranks
    that received a stop signal (ennas.core.preempt), in the same all-reduce as the loss.
    """
    x = ctx.data.to_device(x, ctx.device)  # uint8 (or file bytes: data.decode=device), normalised on the device
    y = y.to(ctx.device, non_blocking=True)
    if ctx.cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    paths = loop.policy.sample_paths(path_rng(ctx.cfg.seed, epoch, step), epoch, step)
    lr, k, dtype = loop.optimizer.param_groups[0]["lr"], loop.plan.accumulate, amp_dtype(ctx.cfg.amp, ctx.device)
    scaler = loop_scaler(ctx, loop)
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    # set_to_none: operators off the path keep grad None, so SGD moves them by neither momentum nor decay
    loop.optimizer.zero_grad(set_to_none=True)
    stats: dict = {}
    loss_sum = torch.zeros((), device=x.device)
    for i, (xs, ys) in enumerate(zip(x.chunk(k), y.chunk(k), strict=True)):
        with autocast(ctx.device, dtype):
            loss, micro_stats = loop.policy.batch_loss(loop.model, Step(xs, ys, paths, epoch, step, lr, i, k, scale))
        scaler.scale(loss / k if k > 1 else loss).backward()
        loss_sum += loss.detach().float() / k
        stats = add_sums(stats, micro_stats)
    params = [p for group in loop.optimizer.param_groups for p in group["params"]]
    dist.average_gradients(params)
    summed = dist.all_sum(torch.stack([loss_sum, torch.tensor(preempt.flag(), device=x.device)]))
    mean_loss = (summed[0] / dist.world_size()).item()
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            f"{loop.name} loss became {mean_loss} at epoch {epoch} step {step}; stopped, and the last good "
            f"checkpoint {ctx.file(loop.name + '_checkpoint.pt')} is kept (lower the learning rate and rerun)"
        )
    scaler.unscale_(loop.optimizer)  # clipping and the policy's own steps see true gradients
    if loop.grad_clip:
        nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], loop.grad_clip)
    scaler.step(loop.optimizer)
    scaler.update()
    loop.scheduler.step()
    loop.policy.after_step(loop.model, Step(x, y, paths, epoch, step, lr, 0, k, scale), stats)
    return {**stats, "loss_sum": mean_loss * stats.get("count", len(y)), "stop": float(summed[1])}


def add_sums(sums: dict, stats: dict) -> dict:
    """Accumulate numeric batch statistics into the epoch's running sums."""
    for k, v in stats.items():
        if isinstance(v, int | float):
            sums[k] = sums.get(k, 0) + v
    return sums


def epoch_record(ctx: RunContext, loop: Loop, epoch: int, sums: dict, wall: float) -> dict:
    """The JSON record of one finished epoch (docs/design.md §7).

    `wall_s` / `device_s` are the whole epoch: training steps, the policy's epoch start (part of the method:
    EnNAS's ζ estimate and sampler build, paper §3.3-3.4) and the measurements (probes, `on_epoch_end`). The two
    are also given apart, `epoch_start_device_s` and `probe_device_s`, so a method's cost is read as device_s
    minus the probes, which are instrumentation for the figures. (Runs logged before the split have no
    `epoch_start_device_s`: their probe_device_s includes the epoch start.)
    """
    count = max(sums.get("count", 0), 1)
    t0 = time.time()
    with autocast(ctx.device, amp_dtype(ctx.cfg.amp, ctx.device)):
        measured = loop.policy.epoch_metrics(loop.model, epoch)
        if loop.on_epoch_end is not None:
            measured.update(loop.on_epoch_end(epoch))
    measure_s = time.time() - t0
    start_s = sums.get("epoch_start_s", 0.0)
    images_per_s = sums.get("count", 0) * dist.world_size() / max(wall, 1e-9)  # training steps only
    wall += measure_s + start_s
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
        "probe_device_s": measure_s * dist.world_size(),
        "epoch_start_device_s": start_s * dist.world_size(),
        "img_s": images_per_s,
    }
    return record | measured


def train_epochs(ctx: RunContext, loop: Loop, log_name: str = "train_log.jsonl") -> list[dict]:
    """Run (or resume) the loop to its last epoch; returns every epoch record of this stage.

    A stop signal (ennas.core.preempt) ends the loop after the current step with a checkpoint at the next one
    and raises Preempted; rerunning resumes there exactly as from any other checkpoint.
    """
    check_batch(loop.plan, loop.name)
    dtype = amp_dtype(ctx.cfg.amp, ctx.device)
    loop_scaler(ctx, loop)  # before the checkpoint restores its state
    start_epoch, start_step, sums = checkpoint.load(ctx, loop)
    name = run_name(ctx)
    if (start_epoch or start_step) and start_epoch < loop.plan.epochs and dist.is_main():
        print(f"[{name} {loop.name}] resuming at epoch {start_epoch} step {start_step} from its checkpoint", flush=True)
    log_path: Path = ctx.file(log_name)
    others = [r for r in read_jsonl(log_path) if r.get("stage") != loop.name]
    records = [r for r in read_jsonl(log_path) if r.get("stage") == loop.name and r["epoch"] < start_epoch]
    plan = loop.plan
    for epoch in range(start_epoch, plan.epochs):
        steps = steps_per_epoch(plan)
        skip = start_step if epoch == start_epoch else 0
        if skip == 0:
            t_start = time.time()
            with autocast(ctx.device, dtype):
                loop.policy.on_epoch_start(loop.model, epoch)
            sums = {"epoch_start_s": time.time() - t_start}  # checkpointed with the sums: a resume keeps it
        loop.model.train()
        wall = sums.pop("wall_s", 0.0)
        t0, stop = time.time(), False
        bar = tqdm(
            epoch_loader(ctx, plan, epoch, skip, steps),
            total=steps,
            initial=skip,
            leave=False,
            desc=f"{name} {loop.name} {epoch + 1}/{plan.epochs}",
            # a bar only on a terminal: in a log file its redraws would be thousands of \r frames
            disable=not (ctx.cfg.progress and dist.is_main() and sys.stderr.isatty()),
        )
        label = f"{name} {loop.name} epoch {epoch + 1}/{plan.epochs}: steps"
        ticker = Ticker(label, steps - skip, every_s=HEARTBEAT_S, enabled=ctx.cfg.progress)  # no terminal: lines
        for step, (x, y) in enumerate(bar, start=skip):
            stats = train_step(ctx, loop, x, y, epoch, step)
            stop = preempt.agreed(stats.pop("stop"))
            sums = add_sums(sums, stats)
            ticker.tick()
            due = plan.checkpoint_steps and (step + 1) % plan.checkpoint_steps == 0
            if (due or stop) and step + 1 < steps:
                checkpoint.save(ctx, loop, epoch, step + 1, {**sums, "wall_s": wall + time.time() - t0})
            if stop and step + 1 < steps:
                bar.close()
                raise preempt.Preempted(
                    preempt.received() or signal.SIGTERM, f"in {loop.name} epoch {epoch} at step {step + 1}"
                )
        record = epoch_record(ctx, loop, epoch, sums, wall + time.time() - t0)
        records.append(record)
        if dist.is_main():
            write_jsonl(log_path, others + records)
            left = sum(r["wall_s"] for r in records[-3:]) / len(records[-3:]) * (plan.epochs - epoch - 1)
            bar.write(
                f"{json_line(record, name)} img/s={record['img_s']:.0f} stage_eta={timedelta(seconds=round(left))}"
            )
        if epoch in loop.snapshot_epochs:
            # Before the epoch's checkpoint: a kill in between reruns the epoch and rewrites the same weights.
            dist.average_buffers(loop.model)
            if dist.is_main():
                save_torch(snapshot_path(ctx, loop.name, epoch), {"epoch": epoch, "model": loop.model.state_dict()})
        checkpoint.save(ctx, loop, epoch + 1, 0, {})
        if stop:  # on the epoch's last step: its record and end-of-epoch checkpoint are written
            raise preempt.Preempted(preempt.received() or signal.SIGTERM, f"after {loop.name} epoch {epoch}")
    return records


def json_line(record: dict, name: str | None = None) -> str:
    """A short human summary of an epoch record for the console, naming the run and its stage."""
    keys = ("epoch", "loss", "train_acc", "teacher_acc", "student_acc", "gap", "diversity", "test_top1", "wall_s")
    parts = [
        f"{k}={record[k]:.4g}" if isinstance(record[k], float) else f"{k}={record[k]}"
        for k in keys
        if record.get(k) is not None
    ]
    who = name or f"{record['method']}-{record['space']}-seed{record['seed']}"
    return f"[{who} {record['stage']}] " + " ".join(parts)
