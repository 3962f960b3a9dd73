"""The method interface and registry: what differs between trainers lives in a small method object.

A method says how paths are sampled for a batch, how the batch loss is formed, what it measures per
epoch as "teacher" and "students", and what state it keeps across a checkpoint. The loop, distributed
averaging, checkpoints, logs, search and retraining are shared (ennas.engine, ennas.pipeline). A method
whose training is not a per-batch path loss (DNA) overrides a whole stage instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from spaces.arch import Arch, sample_arch

if TYPE_CHECKING:
    from ennas.context import RunContext

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its `name` (to the CLI and `--method all`)."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """A registered method class; unknown names fail with the list of known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


class Method:
    """Single uniform path per step with cross-entropy: the SPOS core that other methods extend."""

    name: ClassVar[str] = "base"
    supervised: ClassVar[bool] = False  # uses an external trained teacher (Table 1's "Supervised")

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.criterion = nn.CrossEntropyLoss(label_smoothing=ctx.cfg.supernet.label_smoothing)

    # --- the per-batch contract used by ennas.engine -------------------------------------------
    def epoch_fraction(self) -> float:
        """Fraction of the training set seen per epoch."""
        return self.ctx.cfg.distill.fraction or 1.0

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Per-epoch preparation (e.g. EnNAS re-estimates operator diversity)."""

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[Arch]:
        """The path(s) trained on this batch; `rng` is seeded from (seed, epoch, step), identical on all ranks."""
        return [self.sample_one(rng)]

    def sample_one(self, rng: np.random.Generator) -> Arch:
        """One uniform random path, within the configured FLOPs band if any (SPOS)."""
        band = self.ctx.cfg.supernet.flops_band
        return sample_arch(self.ctx.space, rng, self.ctx.table.flops if band else None, band)

    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, paths: list[Arch], epoch: int, step: int
    ) -> tuple[torch.Tensor, dict]:
        """The loss to back-propagate and plain statistics (summed over the batch) for the epoch record."""
        logits = model(x, paths[0])
        loss = self.criterion(logits, y)
        return loss, {"correct": int((logits.argmax(1) == y).sum()), "count": len(y)}

    def after_step(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, paths: list[Arch], stats: dict, epoch: int, step: int
    ) -> None:
        """Work after the optimiser step (e.g. Cream's board and meta-network updates)."""

    def epoch_metrics(self, model: nn.Module, epoch: int) -> dict:
        """Teacher / student / diversity measurements for the epoch record (none for SPOS)."""
        return {}

    def state_dict(self) -> dict:
        """The method's own state for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    # --- optional stage overrides used by ennas.pipeline ---------------------------------------
    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules besides the supernet that the method owns (saved with checkpoints)."""
        return {}

    def final_extras(self) -> dict:
        """Method-specific entries for final.json (e.g. Cream's own board-best architecture)."""
        return {}
