"""DNA's ratings of block paths: mean|student - teacher| / std(teacher) after BN recalibration, memoised."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from baselines.dna.blocks import DNABlock
from ennas.core import distributed as dist
from ennas.core.evaluate import recalibrate_bn
from ennas.core.io import read_jsonl, write_jsonl
from ennas.core.progress import Ticker, run_name
from spaces.arch import encode
from spaces.supernet import SuperNet

if TYPE_CHECKING:
    from baselines.dna.method import DNA
    from ennas.core.context import RunContext

FLUSH_EVERY = 256  # ratings between rewrites of dna_ratings.jsonl


@torch.no_grad()
def calibrate(module: nn.Module, recal: list[torch.Tensor], inputs: list[torch.Tensor], device) -> tuple[list, list]:
    """Recalibrate `module`'s BN on `recal`; return its train-mode outputs there and its eval outputs on `inputs`.

    The train-mode outputs are what the next layer sees while it is recalibrated, so recalibrating a path
    layer by layer gives the statistics of recalibrating the whole path at once. The inputs come from the run's
    fixed batches, whole on every rank, so nothing is averaged across ranks.
    """
    recal_out: list[torch.Tensor] = []
    recalibrate_bn(
        module,
        [(h, None) for h in recal],
        forward=lambda h: recal_out.append(module(h)),
        device=device,
        over_ranks=False,
    )
    module.eval()
    return recal_out, [module(h) for h in inputs]


@torch.no_grad()
def feature_rating(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], device) -> dict[str, float]:
    """DNA's rating: mean|student - teacher| / std(teacher) per batch, image-weighted (and the MSE).

    The batches are the run's fixed search batches, whole on every rank, so no rank needs another's sums.
    """
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # rating sum, MSE sum, images
    for out, target in zip(outputs, targets, strict=True):
        diff, n = out - target, float(len(out))
        rating = diff.abs().mean() / target.std().clamp_min(1e-12)
        totals += torch.stack([rating.double() * n, diff.pow(2).mean().double() * n, totals.new_tensor(n)])
    return {"rating": (totals[0] / totals[2]).item(), "mse": (totals[1] / totals[2]).item()}


def rate_block(block: DNABlock, paths: Iterable[tuple[int, ...]], data: tuple, device) -> Iterator[tuple[tuple, dict]]:
    """Yield (path, rating) for the wanted paths of a block, each prefix recalibrated and run once (depth first).

    `data` = (recal inputs, search inputs, targets) after the block's entry, from `DNA.block_data`. Every
    candidate is recalibrated on its own copy, so the supernet's statistics are untouched.
    """
    wanted = {tuple(p) for p in paths}
    prefixes = {p[:k] for p in wanted for k in range(len(p) + 1)}
    recal, inputs, targets = data

    def visit(prefix: tuple, recal: list, inputs: list) -> Iterator[tuple[tuple, dict]]:
        if len(prefix) == len(block.layers):
            _, outputs = calibrate(copy.deepcopy(block.exit), recal, inputs, device)
            yield prefix, feature_rating(outputs, targets, device)
            return
        for c, candidate in enumerate(block.layers[len(prefix)].candidates):
            if prefix + (c,) in prefixes:
                yield from visit(prefix + (c,), *calibrate(copy.deepcopy(candidate), recal, inputs, device))

    yield from visit((), recal, inputs)


class RatingLog:
    """Ratings of block paths, memoised and written to dna_ratings.jsonl, so a resumed search rates only the rest."""

    def __init__(self, ctx: RunContext, dna: DNA):
        self.ctx, self.dna = ctx, dna
        self.path = ctx.file("dna_ratings.jsonl")
        self.records = read_jsonl(self.path)
        self.cache = {(r["block"], r["path"]): r["rating"] for r in self.records}
        self.unsaved = 0
        self.data: dict[int, tuple] = {}

    def rate(self, model: SuperNet, i: int, paths: Sequence[Sequence[int]]) -> list[float]:
        """Ratings of `paths` through block i, computing only those not rated before (the block's data kept)."""
        keys = [encode(p) for p in paths]
        todo = [tuple(p) for p, k in zip(paths, keys) if (i, k) not in self.cache]
        if todo:
            if i not in self.data:
                self.data[i] = self.dna.block_data(model, i)
            ticker = Ticker(f"{run_name(self.ctx)} dna ratings of block {i}", len(todo), enabled=self.ctx.cfg.progress)
            for path, result in rate_block(self.dna.block(model, i), todo, self.data[i], self.ctx.device):
                ticker.tick()
                self.cache[(i, encode(path))] = result["rating"]
                a, b = self.dna.ranges[i]
                macs = self.dna.path_macs(i, path)
                self.records.append({"block": i, "path": encode(path), "layers": [a, b], **result, "macs": macs})
                self.unsaved += 1
                if self.unsaved >= FLUSH_EVERY:
                    self.flush()
        return [self.cache[(i, k)] for k in keys]

    def release(self, i: int) -> None:
        """Drop block i's cached features and save the ratings so far."""
        self.data.pop(i, None)
        self.flush()

    def flush(self) -> None:
        """Rewrite dna_ratings.jsonl with every rating so far (rank 0)."""
        if self.unsaved and dist.is_main():
            write_jsonl(self.path, self.records)
        self.unsaved = 0
