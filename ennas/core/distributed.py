"""torch.distributed from the torchrun environment (gloo on CPU, NCCL on GPU); a no-op at world size one.

Supernet methods run several paths per step and leave most operators unused, so instead of wrapping
the supernet in DDP (which needs find_unused_parameters and one forward per step) gradients are
averaged here with one all-reduce per step over every parameter that has a gradient. All ranks sample
identical paths, so they hold gradients for the same parameters in the same order.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist

from ennas.core.config import ConfigError


def world_size() -> int:
    """Number of processes (1 without torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on the one process that writes logs, checkpoints and results."""
    return rank() == 0


def check_device(requested: str) -> None:
    """A one-line ConfigError when `device=cuda` is asked for where no GPU is visible (before any work)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda was requested but torch sees no CUDA GPU here; use --set device=auto (or cpu), or check "
            "CUDA_VISIBLE_DEVICES and the driver"
        )


def pick_device(requested: str = "auto") -> torch.device:
    """The device this rank trains on: its own GPU under torchrun, else the CPU."""
    check_device(requested)
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    # Input shapes are fixed per stage, so cuDNN's autotuner pays once per shape; it picks kernels by timing,
    # which makes GPU runs nondeterministic (README, Determinism).
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", local)


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); nothing to do otherwise."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if dist.is_initialized():
        dist.barrier()


def average_tensors(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over ranks, in one flat all-reduce."""
    if not dist.is_initialized() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` that have one across ranks (all ranks hold the same set)."""
    average_tensors([p.grad for p in params if p.grad is not None])


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BN running statistics) across ranks, so every rank holds the same model.

    Each rank's BN layers see only its own shard of the batch; averaging at every checkpoint keeps rank 0's
    checkpoint the model of all ranks and makes a resumed run identical to an uninterrupted one.
    """
    average_tensors([b for b in module.buffers() if b.is_floating_point()])


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (counts and metric sums in evaluation), returned on the device it came from.

    NCCL reduces only CUDA tensors, so a CPU tensor travels through the GPU there; gloo takes either.
    """
    if dist.is_initialized():
        home = values.device
        via = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else home
        values = values.to(via, copy=True)
        dist.all_reduce(values)
        values = values.to(home)
    return values


def broadcast_object(obj):
    """Rank 0's Python object on every rank (e.g. a search decision)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_shared_folder(folder: Path, wait_s: float | None = None) -> None:
    """A one-line ConfigError on every rank unless every rank reads in `folder` what rank 0 wrote there.

    Rank 0 alone writes results and checkpoints, and every rank resumes from them, so a multi-node run needs
    `folder` on a filesystem all nodes share; without one, rank 0 would resume while the others start over and
    the collectives hang. Each rank waits up to `wait_s` for the file (network filesystems cache lookups).
    """
    if not dist.is_initialized():
        return
    if wait_s is None:  # ENNAS_SHARED_WAIT_S: longer for slow network filesystems, shorter in tests
        wait_s = float(os.environ.get("ENNAS_SHARED_WAIT_S", "10"))
    token = broadcast_object(uuid.uuid4().hex)
    probe = Path(folder) / f".shared_check_{token[:8]}"
    if is_main():
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    barrier()
    deadline, seen = time.time() + wait_s, False
    while not seen:
        try:
            seen = probe.read_text() == token
        except OSError:
            seen = False
        if seen or time.time() > deadline:
            break
        time.sleep(0.5)
    missing = all_sum(torch.tensor([0.0 if seen else 1.0]))
    barrier()
    if is_main():
        probe.unlink(missing_ok=True)
    if missing.item():
        raise ConfigError(
            f"{int(missing.item())} of {world_size()} rank(s) (this is rank {rank()} on {socket.gethostname()}) cannot "
            f"read {probe.parent} as rank 0 writes it: a multi-node run needs --out (or --run-dir) on a filesystem "
            "every node mounts at the same path"
        )


def all_gather_object(obj) -> list:
    """Every rank's Python object, in rank order, on every rank (a one-element list at world size one)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def map_over_ranks(fn, items: list) -> list:
    """[fn(item) for item in items], item i computed on rank i mod world size, the results on every rank.

    For work whose result does not depend on where it runs (scoring a candidate on the fixed batches every
    rank holds): each rank does 1/world_size of it, and at world size one this is the plain loop.
    """
    mine = [fn(item) for item in items[rank() :: world_size()]]
    if world_size() == 1:
        return mine
    parts = all_gather_object(mine)
    return [parts[i % world_size()][i // world_size()] for i in range(len(items))]
