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
    }
    save_torch(ctx.file(f"{loop.name}_checkpoint.pt"), state)


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be read (truncated, corrupt, from another program)."""


def load(ctx: RunContext, loop: Loop) -> tuple[int, int, dict]:
    """Restore the loop from its checkpoint if one exists; returns (epoch, step, running sums).

    Checkpoints are written atomically, so a corrupt one did not come from an interrupted write. There is no
    older one to fall back to (each save replaces the last), and silently restarting the stage would hide the
    fault, so an unreadable checkpoint stops the run with one line naming the file.
    """
    path = ctx.file(f"{loop.name}_checkpoint.pt")
    if not path.exists():
        return 0, 0, {}
    try:
        state = load_torch(path, ctx.device)
    except Exception as err:  # torch.load raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({first}); delete it to rerun the {loop.name} stage from its start"
        ) from None
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    loop.policy.load_state_dict(state["policy"])
    for k, v in loop.extra_state.items():
        v.load_state_dict(state["extra"][k])
    set_rng_state(state["rng"])
    return state["epoch"], state["step"], state["sums"]
