"""Checkpoints of a training loop: everything needed to continue at (epoch, step), written atomically.

A checkpoint holds the config, position, the epoch's running sums, the model, optimiser, scheduler, the
policy's own state, other stateful objects of the loop (an EMA model) and every global RNG's state, so a
resumed loop reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from ennas.core import distributed as dist
from ennas.core.io import load_torch, save_torch
from ennas.core.resume import differences

if TYPE_CHECKING:
    from ennas.core.context import RunContext
    from ennas.core.loop import Loop


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


def save(ctx: RunContext, loop: Loop, epoch: int, step: int, sums: dict) -> None:
    """Atomically save everything needed to continue at (epoch, step); rank 0 writes, after ranks agree on BN."""
    dist.average_buffers(loop.model)
    for obj in loop.extra_state.values():  # an EMA copy keeps BN statistics of its own rank's shards
        if isinstance(obj, torch.nn.Module):
            dist.average_buffers(obj)
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
        "policy": loop.policy.state_dict(),
        "extra": {k: v.state_dict() for k, v in loop.extra_state.items()},
        "rng": rng_state(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None and loop.scaler.is_enabled() else None,
    }
    path = ctx.file(f"{loop.name}_checkpoint.pt")
    try:
        save_torch(path, state)
    except OSError as err:  # full disk, read-only or removed folder: the write went to a temp file, now gone
        reason = err.strerror or type(err).__name__
        kept = "the previous checkpoint is kept" if path.exists() else "there is no earlier checkpoint"
        raise CheckpointError(
            f"cannot write checkpoint {path} ({reason}); {kept}; free space or make {path.parent} writable, "
            "then rerun the same command to resume"
        ) from None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written (full disk, read-only folder) or read (truncated, corrupt, from
    another program), or that belongs to other settings."""


def load(ctx: RunContext, loop: Loop) -> tuple[int, int, dict]:
    """Restore the loop from its checkpoint if one exists; returns (epoch, step, running sums).

    Checkpoints are written atomically, so a corrupt one did not come from an interrupted write. There is no
    older one to fall back to (each save replaces the last), and silently restarting the stage would hide the
    fault, so an unreadable checkpoint stops the run with one line naming the file.
    """
    path = ctx.file(f"{loop.name}_checkpoint.pt")
    if not dist.broadcast_object(path.exists()):  # rank 0 decides; every rank then reads the same file
        return 0, 0, {}
    try:
        state = load_torch(path, ctx.device)
    except Exception as err:  # torch.load raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0][:120]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({first}); delete it to rerun the {loop.name} stage from its start"
        ) from None
    stored = state.get("config") if isinstance(state, dict) else None
    diffs = differences(stored, ctx.cfg.to_dict()) if stored is not None else []
    if diffs:  # config.json is checked first; this guards a checkpoint copied or left from another run
        named = "; ".join(f"{k} {a!r} there, {b!r} now" for k, a, b in diffs[:4])
        raise CheckpointError(f"checkpoint {path} was written under other settings ({named}); delete it or rerun them")
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    loop.policy.load_state_dict(state["policy"])
    for k, v in loop.extra_state.items():
        v.load_state_dict(state["extra"][k])
    if state.get("scaler") and loop.scaler is not None:
        loop.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["epoch"], state["step"], state["sums"]
