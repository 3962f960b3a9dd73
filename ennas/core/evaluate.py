"""Evaluation shared by every stage: BN recalibration, top-k accuracy, scoring a path of the supernet.

One recalibration policy for all methods (SPOS's): reset the BN statistics of the extracted network and
re-estimate them on the fixed recalibration batches, then score on the fixed search batches. Those batches
are the same whole set on every rank, so under torchrun each rank scores whole candidates of its own
(`over_ranks=False`: no collective) and a candidate's score does not depend on the world size; evaluation
on sharded batches (the test set) sums its counts over ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from ennas.core import distributed as dist

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of a model."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Batches,
    batches: int | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    over_ranks: bool = True,
) -> None:
    """Reset BN statistics and re-estimate them as a cumulative average over `batches` training batches.

    A cumulative average (momentum None) weighs every batch equally, unlike SPOS's momentum 0.1 whose
    result depends mostly on the last few batches. With `over_ranks` (each rank holds a shard of the
    batches) the estimates are averaged across ranks.
    """
    layers = bn_layers(model)
    saved = [(m.momentum, m.training) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    forward = forward or model
    for i, (x, _) in enumerate(loader):
        if batches is not None and i >= batches:
            break
        forward(x.to(device, non_blocking=True))
    for m, (momentum, training) in zip(layers, saved):
        m.momentum = momentum
        m.train(training)
    if over_ranks:
        dist.average_tensors([t for m in layers for t in (m.running_mean, m.running_var)])


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Run BN on batch statistics without touching the stored ones (momentum 0), e.g. to probe subnets."""
    layers = bn_layers(model)
    saved = [(m.momentum, m.training, m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
        m.train()
    try:
        yield
    finally:
        for m, (momentum, training, tracked) in zip(layers, saved):
            m.momentum = momentum
            m.train(training)
            m.num_batches_tracked.copy_(tracked)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many samples have their label among the top-k logits, for each k (capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == targets.unsqueeze(1)
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Batches,
    device: torch.device | str = "cpu",
    over_ranks: bool = True,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and loss of `forward` on `batches`, summed over ranks if `over_ranks`."""
    totals = torch.zeros(4, dtype=torch.float64)  # top1, top5, loss sum, count
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = forward(x).float()
        c1, c5 = topk_correct(logits, y)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum").item()
        totals += torch.tensor([c1, c5, loss, len(y)], dtype=torch.float64)
    if over_ranks:
        totals = dist.all_sum(totals.to(device)).cpu()
    n = max(totals[3].item(), 1.0)
    return {"top1": 100 * totals[0].item() / n, "top5": 100 * totals[1].item() / n, "loss": totals[2].item() / n}


def score_path(
    supernet: nn.Module,
    arch: tuple[int, ...],
    recal: Batches,
    search: Batches,
    device: torch.device | str = "cpu",
    recal_batches: int | None = None,
) -> float:
    """Top-1 (%) of a path on the search batches after recalibrating BN on its own extracted copy.

    Working on a copy leaves the supernet's own statistics untouched, so scoring has no side effects. The
    batches are whole on this rank (the run's fixed batches), so nothing is exchanged with other ranks.
    """
    net = supernet.extract(arch).to(device)
    recalibrate_bn(net, recal, recal_batches, device=device, over_ranks=False)
    net.eval()
    return evaluate(net, search, device, over_ranks=False)["top1"]
