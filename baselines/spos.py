"""SPOS (Guo et al., 2020): one uniform random path per step, optionally within a FLOPs band, cross-entropy.

`zero_grad(set_to_none=True)` in the shared loop leaves every operator off the path with grad None, so, as
in the official code, SGD moves it by neither momentum nor weight decay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ennas.core.loop import Step
from ennas.core.method import Method, register_method
from spaces.arch import Arch, sample_arch

if TYPE_CHECKING:
    from ennas.core.context import RunContext


@register_method
class SPOS(Method):
    """Single-path one-shot training with uniform sampling."""

    name = "spos"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=ctx.cfg.supernet.label_smoothing)

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[Arch]:
        """One path per batch."""
        return [self.sample_one(rng)]

    def sample_one(self, rng: np.random.Generator) -> Arch:
        """One uniform random path, within the configured FLOPs band if any (SPOS)."""
        band = self.ctx.cfg.supernet.flops_band
        return sample_arch(self.ctx.space, rng, self.ctx.table.flops if band else None, band)

    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """Cross-entropy (with label smoothing) of the batch's path."""
        logits = model(step.x, step.paths[0])
        loss = self.criterion(logits, step.y)
        return loss, {"correct": int((logits.argmax(1) == step.y).sum()), "count": len(step.y)}
