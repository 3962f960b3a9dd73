"""EnNAS (§3) and its ablation EnNAS w/o DS: m subnets per batch, distilled from their own ensemble.

Per batch both methods run the m sampled paths, solve the ensemble weights w on the batch (Eq. 1-2,
`ennas.ensemble`), and back-propagate once through the sum of the m losses (Eq. 3)

    L_i = CE_ls(z_i, y) + λ τ² KL(softmax(t/τ) ‖ softmax(z_i/τ)),   t = Σ_i w_i z_i (detached),

with KD from `distill.start_epoch` on (before it: the m plain CEs). Options: the `ennas` config section
(`EnNASOptions`), shared by both methods. They differ only in how the m paths
are drawn: `ennas-wo-ds` independently and uniformly (`sample_uniform_set`), `ennas` by the
diversity-based sampler (`DiversitySampler`, Eq. 5) over operator diversities ζ (Eq. 4) re-estimated
at every epoch start. Both measure their teachers and students in the same code path (`epoch_metrics`).

Decisions (docs/design.md §2):
- **Sum, not mean, of the m losses.** The paper sums per-subnet losses and Algorithm 1 updates the weights
  once per subnet; one SGD step on the sum is those m steps to first order, so every sampled operator moves
  as far as in one SPOS step (the stem, the tail and an operator shared by several subnets take the sum of
  their gradients, as over those m steps), and with 1/m of the data per epoch (`paths_per_step`) EnNAS makes
  as many per-subnet updates per epoch as SPOS. The logged `loss` is thus the sum over the m subnets;
  `train_acc` is their mean.
- **Teacher.** w is solved on the detached logits and t is built from them, so no gradient flows through
  w or t. Under torchrun each rank solves w on its own shard of the batch (a per-rank teacher; all ranks
  train the same m paths), and the gradients of the m losses are then averaged over ranks as usual.
- **ζ at epoch 0** is estimated from the freshly initialised supernet (the paper re-estimates per epoch and
  gives no warm-up), on `distill.diversity_images` training images drawn once by a seeded generator, with
  one seeded draw of the training augmentation (global RNG untouched), cached for the run. Rank 0 estimates
  and broadcasts, so every rank builds the same sampler and samples the same paths.
- **λ and τ** (printed in the paper, not valued): λ = 1.0, as KDCL and ONE weight the distillation term about
  equally with CE; τ = 3.0, as ONE (related online-distillation work uses 2-4). The τ² factor keeps the
  soft-target gradients, which shrink as 1/τ², comparable to CE's whatever τ is.
- **Probes** (Fig. 1, Fig. 2, the gap): `distill.probe_sets` sets per epoch from the method's own sampler
  (seeded by (seed, "probe", epoch)); a set's teacher is its ensemble with weights solved on the probe's fit
  images and scored, like the students, on its other images (`ennas.core.probe`). Also logged: the training teachers' mean max
  weight and weight entropy, the mean KD term, and the solve's share of step time (`solve_share`);
  for `ennas`, the expected within-set ζ of its sampler, of independent uniform sets, of uniform sets without
  repeats and the bounds any sampler with marginals 1/T can reach (`ennas.method.headroom`; exact, no random
  draws, so logging them changes nothing in training). `ennas-wo-ds` estimates no ζ, so logs none of these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ennas.core import distributed as dist
from ennas.core.config import Options
from ennas.core.loop import Step
from ennas.core.method import Method, register_method
from ennas.core.probe import ProbeSet, measure_sets, probed_epoch
from ennas.method.distill import kd_loss
from ennas.method.diversity import estimate_diversity, save_diversity
from ennas.method.ensemble import CONSTRAINTS, SOLVERS, ensemble_logits, ensemble_weights
from ennas.method.headroom import headroom_record
from ennas.method.sampler import DEFAULT_BETA, DiversitySampler, sample_uniform_set
from ennas.seeding import seed_torch, stream_seed
from spaces.arch import Arch

if TYPE_CHECKING:
    from ennas.core.context import RunContext


@dataclass(frozen=True)
class EnNASOptions(Options):
    """The `ennas` config section: the ensemble teacher, its distillation and the diversity sampler."""

    m: int = 4  # subnets per batch (paper: 4)
    lam: float = 1.0  # λ of Eq. 3 (see the module docstring)
    tau: float = 3.0  # τ of Eq. 3
    solver: str = "newton"  # ensemble-weight solver: newton (exact, fast) or ecos (the paper's, slow)
    constraint: str = "simplex"  # w ≥ 0 and Σw = 1 (default), or Σw = 1 only ("sum", falls back when unbounded)
    beta: float = DEFAULT_BETA  # diversity sampler strength, unit-free (its default's rationale: ennas.method.sampler)
    diversity_images: int = 512  # images for the per-epoch operator-diversity estimate

    def checks(self) -> list[tuple[bool, str]]:
        """Value rules of the section."""
        return [
            (self.m >= 1, "m must be >= 1"),
            (self.tau > 0, "tau must be > 0"),
            (self.beta >= 0, "beta must be >= 0"),
            (self.solver in SOLVERS, f"solver must be one of {', '.join(SOLVERS)}"),
            (self.constraint in CONSTRAINTS, f"constraint must be one of {', '.join(CONSTRAINTS)}"),
        ]


@register_method
class EnNASWithoutDS(Method):
    """EnNAS with m independent uniform subnets per batch: the paper's "EnNAS w/o DS" ablation."""

    name = "ennas-wo-ds"
    section = "ennas"
    options = EnNASOptions

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        if ctx.cfg.supernet.flops_band is not None:
            raise ValueError(f"{self.name} samples sets of paths without a FLOPs band; unset supernet.flops_band")
        self.m = self.opts.m
        self.criterion = nn.CrossEntropyLoss(label_smoothing=ctx.cfg.supernet.label_smoothing)
        self.sums: dict[str, float] = {}  # this epoch's training-batch teacher statistics (checkpointed)
        self._step_start = 0.0

    # --- sampling ------------------------------------------------------------------------------
    def paths_per_step(self) -> int:
        """The m subnets of every batch: an epoch covers 1/m of the data (the paper's fair-cost rule)."""
        return self.m

    def draw_set(self, rng: np.random.Generator) -> list[Arch]:
        """One set of m paths: the training batches and the probes draw from this one rule."""
        return sample_uniform_set(self.ctx.space.num_choices, self.m, rng)

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[Arch]:
        """The m paths of this batch, from the (seed, epoch, step) generator alone."""
        return self.draw_set(rng)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Reset the epoch's teacher statistics."""
        self.sums = {}

    # --- the loss --------------------------------------------------------------------------------
    def teacher_weights(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Ensemble weights (m,) minimising the ensemble's CE on these labels (Eq. 2), no gradient."""
        return ensemble_weights(logits.detach(), labels, solver=self.opts.solver, constraint=self.opts.constraint)

    def teacher(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The ensemble teacher's logits t = Σ w_i z_i (Eq. 1), detached."""
        return ensemble_logits(logits.detach(), self.teacher_weights(logits, labels))

    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """Σ_i [CE(z_i, y) + λ·KD(z_i, t)] over the m paths (CE only before distill.start_epoch)."""
        self._step_start = time.perf_counter()
        opts, x, y, paths = self.opts, step.x, step.y, step.paths
        logits = torch.stack([model(x, path) for path in paths])  # (m, B, C)
        loss = sum(self.criterion(z, y) for z in logits)
        stats = {"correct": int((logits.argmax(-1) == y).sum()), "count": len(paths) * len(y)}
        if step.epoch < self.ctx.cfg.distill.start_epoch:
            return loss, stats
        if logits.is_cuda:
            torch.cuda.synchronize()  # so the solve's time excludes the forward passes it would wait for
        start = time.perf_counter()
        w = self.teacher_weights(logits, y)
        solve_s = time.perf_counter() - start
        t = ensemble_logits(logits.detach(), w)
        kd = sum(kd_loss(z, t, opts.tau) for z in logits)
        self._add(
            kd_batches=1.0,
            kd=float(kd.detach()) / len(paths),
            w_max=float(w.max()),
            w_entropy=float(-(w * w.clamp_min(1e-30).log()).sum()),
            solve_s=solve_s,
        )
        return loss + opts.lam * kd, stats

    def after_step(self, model: nn.Module, step: Step, stats: dict) -> None:
        """Count the step's time (forwards, solve, backward, optimiser), for the solver's time share."""
        self._add(step_s=time.perf_counter() - self._step_start)

    def _add(self, **values: float) -> None:
        """Accumulate into this epoch's running sums."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    # --- measurements ----------------------------------------------------------------------------
    def epoch_metrics(self, model: nn.Module, epoch: int) -> dict:
        """Teacher / student accuracy, gap and logit diversity of probe sets, plus training-teacher statistics."""
        out = self.probe(model, epoch)
        n = self.sums.get("kd_batches", 0.0)
        if n:
            out.update(
                {
                    "kd_loss": self.sums["kd"] / n,  # per subnet, before λ
                    "teacher_w_max": self.sums["w_max"] / n,
                    "teacher_w_entropy": self.sums["w_entropy"] / n,
                    "solve_s": self.sums["solve_s"],
                    "solve_share": self.sums["solve_s"] / max(self.sums.get("step_s", 0.0), 1e-12),
                }
            )
        return out

    def probe(self, model: nn.Module, epoch: int) -> dict:
        """`distill.probe_sets` sets from the method's own sampler, measured on the probe images."""
        d, epochs = self.ctx.cfg.distill, self.ctx.cfg.supernet.epochs
        probe_sets = d.probe_sets
        if probe_sets <= 0 or not probed_epoch(d.probe_every, epoch, epochs):
            return {}
        rng = np.random.default_rng(stream_seed(self.ctx.cfg.seed, "probe", epoch))
        sets = [ProbeSet(tuple(self.draw_set(rng))) for _ in range(probe_sets)]
        return measure_sets(model, sets, self.ctx.probe_images, self.teacher_weights, self.ctx.device)

    # --- checkpoint state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The epoch's running teacher statistics (so a run resumed mid-epoch logs the same record)."""
        return {"sums": dict(self.sums)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.sums = dict(state.get("sums", {}))


@register_method
class EnNAS(EnNASWithoutDS):
    """EnNAS: diversity-based sampling of the m subnets (Eq. 4-5) plus the ensemble teacher."""

    name = "ennas"

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.zetas: list[np.ndarray] | None = None
        self.sampler: DiversitySampler | None = None
        self._images: torch.Tensor | None = None

    def draw_set(self, rng: np.random.Generator) -> list[Arch]:
        """m diverse paths from the current epoch's sampler (every operator at marginal 1/T)."""
        if self.sampler is None:
            raise RuntimeError("ennas has no operator diversities yet: on_epoch_start (or a checkpoint) sets them")
        return self.sampler.sample(rng)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Re-estimate ζ on the fixed diversity images and rebuild the sampler (rank 0 estimates, all build)."""
        super().on_epoch_start(model, epoch)
        zetas = None
        if dist.is_main():
            seed = stream_seed(self.ctx.cfg.seed, "diversity", epoch, 2)
            zetas = estimate_diversity(model, self.diversity_images(), seed=seed, to_device=self.ctx.data.to_device)
        self.set_zetas(dist.broadcast_object(zetas))
        if dist.is_main():
            self.ctx.out.mkdir(parents=True, exist_ok=True)
            save_diversity(self.zetas, self.ctx.file(f"diversity_epoch{epoch}.json"))

    def set_zetas(self, zetas: list) -> None:
        """Install per-layer ζ matrices and build the sampler from them (deterministic: same ζ, same tables)."""
        self.zetas = [np.asarray(z, dtype=np.float64) for z in zetas]
        self.sampler = DiversitySampler(self.zetas, self.m, beta=self.opts.beta)

    def diversity_images(self) -> torch.Tensor:
        """The fixed training images ζ is estimated on: seeded choice, one seeded augmentation draw, cached (uint8)."""
        if self._images is None:
            train, seed = self.ctx.data.train, self.ctx.cfg.seed
            n = min(self.opts.diversity_images, len(train))
            gen = torch.Generator().manual_seed(stream_seed(seed, "diversity"))
            picks = torch.randperm(len(train), generator=gen)[:n].tolist()
            # The train transform draws from torch's global RNG: fork it, so training's draws are untouched.
            with torch.random.fork_rng(devices=[]):
                seed_torch(seed, "diversity", 1)
                self._images = torch.stack([train[i][0] for i in picks])
        return self._images

    def epoch_metrics(self, model: nn.Module, epoch: int) -> dict:
        """The shared measurements plus the expected within-set ζ of this epoch's sampler and its headroom."""
        return super().epoch_metrics(model, epoch) | self.zeta_metrics()

    def zeta_metrics(self) -> dict:
        """Layer-mean expected within-set ζ: the sampler's (`set_zeta`), independent sets' (`uniform_set_zeta`),
        repeat-free sets' and the max / min under marginals 1/T (`ennas.method.headroom`); {} before any ζ."""
        return {} if self.zetas is None else headroom_record(self.zetas, self.m, self.opts.beta)

    def state_dict(self) -> dict:
        """Running sums plus ζ (plain lists of floats: exact round trip), so a resumed run rebuilds the sampler."""
        state = super().state_dict()
        if self.zetas is not None:
            state["zetas"] = [z.tolist() for z in self.zetas]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the sums and rebuild the identical sampler from the saved ζ."""
        super().load_state_dict(state)
        if state.get("zetas") is not None:
            self.set_zetas(state["zetas"])
