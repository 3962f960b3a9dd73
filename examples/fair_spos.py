"""An example method: SPOS with FairNAS's strict fairness (Chu et al., 2021) as its path sampler.

SPOS trains one uniform random path per batch, so over a few steps some operators get more updates than others.
Strict fairness trains `fair.paths` paths on every batch, built layer by layer from a random permutation of the
layer's choices: at the default (the largest choice count) every operator of every layer gets exactly one
gradient per step. The paths' losses are summed into one optimiser step, and an epoch sees 1/paths of the
training set (`paths_per_step`), so it makes as many per-path updates per epoch as SPOS (the paper's fair-cost
rule). `supernet.flops_band` is not used. Not registered by default: docs/adding-a-method.md says how.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from baselines.spos import SPOS
from ennas.core.config import Options
from ennas.core.loop import Step
from ennas.core.method import register_method
from spaces.arch import Arch


@dataclass(frozen=True)
class FairOptions(Options):
    """The `fair` config section: `--set fair.paths=4`."""

    paths: int = 0  # paths per batch; 0: the largest choice count of a layer (every operator once per step)

    def checks(self) -> list[tuple[bool, str]]:
        """Value rules of the section, checked with the rest of the config before any work."""
        return [(self.paths >= 0, "paths must be >= 0")]


@register_method
class FairSPOS(SPOS):
    """SPOS whose batch trains several paths that, at every layer, are a random permutation of its choices."""

    name = "fair-spos"  # --method fair-spos
    section = "fair"  # its options section in the run config
    options = FairOptions

    def paths_per_step(self) -> int:
        """The paths trained on each batch."""
        return self.opts.paths or max(self.ctx.space.num_choices)

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[Arch]:
        """The step's paths from its (seed, epoch, step) generator, the same on every rank: column l of the paths
        is a random permutation of layer l's choices (cut short, or repeated, to the number of paths)."""
        m = self.paths_per_step()
        columns = [np.resize(rng.permutation(n), m) for n in self.ctx.space.num_choices]
        return [tuple(int(column[i]) for column in columns) for i in range(m)]

    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """The sum of the paths' cross-entropies; the logged accuracy is their mean."""
        logits = [model(step.x, path) for path in step.paths]
        loss = sum(self.criterion(z, step.y) for z in logits)
        correct = sum(int((z.argmax(1) == step.y).sum()) for z in logits) / len(logits)
        return loss, {"correct": correct, "count": len(step.y)}
