"""DNA's block as its own trainable module, and the shared loop's step policy that distils it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from baselines.dna.teacher import block_pairs
from ennas.core.loop import Step, StepPolicy


class DNABlock(nn.Module):
    """One block as DNA trains it: entry (the stem for block 0, else the input adapter), its layers, output adapter."""

    def __init__(self, entry: nn.Module, layers: Sequence[nn.Module], exit: nn.Module):
        super().__init__()
        self.entry = entry
        self.layers = nn.ModuleList(layers)
        self.exit = exit

    def forward(self, h: torch.Tensor, path: Sequence[int]) -> torch.Tensor:
        h = self.entry(h)
        for layer, choice in zip(self.layers, path, strict=True):
            h = layer(h, choice)
        return self.exit(h)


class BlockDistillation(StepPolicy):
    """The shared loop's policy for one block: a uniform path, MSE to the teacher's next stage."""

    def __init__(self, block: int, num_choices: Sequence[int], teacher: nn.Module, indices: tuple[int | None, int]):
        self.block, self.num_choices, self.teacher, self.indices = block, tuple(num_choices), teacher, indices
        self.criterion = nn.MSELoss()

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[tuple[int, ...]]:
        """One uniform path through the block's layers, from the step's (seed, epoch, step) generator."""
        return [tuple(int(rng.integers(n)) for n in self.num_choices)]

    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """MSE between the block's output on the teacher's stage i-1 features and the teacher's stage i."""
        inputs, targets = block_pairs(self.teacher, step.x, self.indices)
        loss = self.criterion(model(inputs, step.paths[0]), targets)
        return loss, {"count": len(step.y)}

    def epoch_metrics(self, model: nn.Module, epoch: int) -> dict:
        """The block and teacher stage (no classifier is trained here: a train_acc of 0 would read as one)."""
        return {"train_acc": None, "block": self.block, "teacher_index": self.indices[1]}
