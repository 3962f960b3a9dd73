"""Cream (Peng et al., 2020): single-path training distilled from a prioritized path board via meta-matching.

Per step, as SPOS, one uniform random path (the student) is trained. From `distill.start_epoch` on:
- **Board.** After the step the student's top-1 on the batch (summed over ranks, so all ranks agree) may
  admit it to a board of `cream.board_size` paths (`admit`: board not full, or > 5 points better than the
  worst, or better than the worst with fewer FLOPs; sorted by score, the last dropped). An entry keeps its
  score, FLOPs, arch, the first 4 images of the batch and a softmax on them: as the official code, the
  softmax of the step's teacher (of the student itself while the board was empty).
- **Meta-matching.** A `Linear(4·classes → 1)` rates every entry from the student's softmax on the entry's
  images minus the stored softmax; the best-rated entry teaches this step. KD = soft-target CE at τ = 1
  from the teacher path's logits (same supernet, no grad); loss = (v·KD + (2 − v)·CE)/2 with v the chosen
  entry's matching value sigmoid(−rating) (`cream.pick = "meta"`, the official default `PICK_METHOD: meta`),
  so the meta layer also learns through the main loss; `pick = "top1"` is the official alternative with the
  fixed v = `cream.kd_mix` (0.5: 0.25·KD + 0.75·CE). Without a board (or before the start epoch): CE alone.
- **Meta update** every `cream.meta_interval` steps (in-epoch step > 0, as the official code): the KD loss
  weighted by the matching weight sigmoid(−rating of the chosen entry) on the first 4 images gives a simulated
  SGD step w' = w − lr·∇ of the student path (create_graph); the CE of the simulated student on the next 4
  images of the same training batch (the official "validation" slice, issue #23: not held out of training)
  is back-propagated to the meta layer (second order), clipped to norm 1, stepped.

Decisions (facts from microsoft/Cream, see reference/baselines.md):
- The meta layer has its own optimiser (SGD, lr 1e-4 on the supernet's linear schedule, no weight decay: the
  official meta group). It steps after every KD step on the main loss's gradient through v (pick "meta"; in
  the official code the meta group sits in the main optimiser, which is the same update) and at each meta
  step on the held-out loss. `extra_modules()` is empty, so the layer and its optimiser are checkpointed in
  `state_dict`, and the supernet's optimiser never sees the layer.
- The matching weight is the chosen entry's (the official code uses the last entry's, issue #78).
- The simulated step uses the supernet's current learning rate (the official code takes
  `param_groups[-1]['lr']`, which is the meta group's 1e-4), and is only simulated: the official code also
  applies the KD gradient to the real student; here the meta step changes nothing but the meta layer.
- Paths are uniform (the base sampler) rather than the official per-layer prior; board ties rank fewer FLOPs
  first; stored images and softmaxes are rank 0's (broadcast), so every rank holds the same board and a
  resumed run is identical. BN runs on batch statistics in the matching and meta forwards without touching
  the stored statistics.
- Cream's own final choice is the board's best path (`final_extras`); the shared evolution search also runs,
  so Table 1 compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from baselines.cream.board import Entry, admit, choose_teacher, meta_ratings, path_parameters, soft_target_ce
from baselines.spos import SPOS
from ennas.core import distributed as dist
from ennas.core.config import Options
from ennas.core.evaluate import batch_statistics
from ennas.core.loop import Step
from ennas.core.method import register_method
from ennas.core.probe import ProbeSet, measure_sets, probed_epoch
from ennas.seeding import stream_seed
from spaces.arch import Arch, encode

if TYPE_CHECKING:
    from ennas.core.context import RunContext


@dataclass(frozen=True)
class CreamOptions(Options):
    """The `cream` config section: the board, the meta-matching layer and the loss mix (official defaults)."""

    board_size: int = 10  # prioritized path board entries
    meta_interval: int = 200  # steps between meta-layer updates
    slice: int = 4  # images per board entry and per meta-step slice (official SUPERNET.SLICE)
    acc_gap: float = 5.0  # points by which a path must beat the board's worst to enter regardless of FLOPs
    pick: str = "meta"  # "meta": v of (v·KD + (2 − v)·CE)/2 is the matching value (official default); "top1"
    kd_mix: float = 0.5  # the fixed v of pick "top1"
    meta_lr: float = 1e-4  # the official meta-layer group's learning rate

    def checks(self) -> list[tuple[bool, str]]:
        """Value rules of the section."""
        return [
            (self.board_size >= 1, "board_size must be >= 1"),
            (self.meta_interval >= 1, "meta_interval must be >= 1"),
            (self.slice >= 1, "slice must be >= 1"),
            (0 <= self.kd_mix <= 2, "kd_mix must be in [0, 2]"),
            (self.pick in ("meta", "top1"), f"pick must be meta or top1, got {self.pick!r}"),
        ]


@register_method
class Cream(SPOS):
    """Single-path training distilled from the best-matching path of a prioritized board."""

    name = "cream"
    supervised = False
    section = "cream"
    options = CreamOptions

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        k = self.opts.slice
        per_rank = ctx.cfg.supernet.batch_size // dist.world_size()
        if per_rank < 2 * k:
            raise ValueError(f"cream needs at least {2 * k} images per rank and batch (has {per_rank})")
        classes = ctx.data.num_classes
        self.meta = nn.Linear(k * classes, 1)
        gen = torch.Generator().manual_seed(stream_seed(ctx.cfg.seed, "init", 1))
        bound = 1.0 / (k * classes) ** 0.5  # torch's default Linear range, from the run's own stream
        with torch.no_grad():
            for p in self.meta.parameters():
                p.uniform_(-bound, bound, generator=gen)
        self.meta.to(ctx.device)
        s = ctx.cfg.supernet
        self.meta_opt = torch.optim.SGD(
            self.meta.parameters(), lr=self.opts.meta_lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=0.0
        )
        self.board: list[Entry] = []
        self.sums: dict[str, float] = {}  # this epoch's KD / meta statistics (checkpointed)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's images and softmax

    # --- teacher choice ---------------------------------------------------------------------------
    @torch.no_grad()
    def student_probs(self, model: nn.Module, student: Arch) -> torch.Tensor:
        """The student's softmax (n, k, C) on each board entry's stored images (BN on each entry's batch)."""
        with batch_statistics(model):
            probs = [model(e.images, student).softmax(1) for e in self.board]
        return torch.stack(probs).to(self.meta.weight.dtype)

    def ratings(self, model: nn.Module, student: Arch) -> torch.Tensor:
        """The meta layer's rating of every board entry as teacher of `student` (differentiable in the meta layer)."""
        stored = torch.stack([e.probs for e in self.board])
        return meta_ratings(self.meta, self.student_probs(model, student), stored)

    def pick(self, model: nn.Module, student: Arch) -> int:
        """Index of the board entry that teaches `student`: the highest meta rating."""
        with torch.no_grad():
            return choose_teacher(self.ratings(model, student))[0]

    # --- the loss -------------------------------------------------------------------------------
    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """CE before the KD start or with an empty board; else (v·KD + (2 − v)·CE)/2 from the matched board path."""
        x, y, student, k, opts = step.x, step.y, step.paths[0], self.opts.slice, self.opts
        kd_on = step.epoch >= self.ctx.cfg.distill.start_epoch and bool(self.board)
        if kd_on and step.micro == 0 and step.index > 0 and step.index % opts.meta_interval == 0:
            # the step's lr is the supernet's current one (its linear schedule), for the simulated step
            self.meta_update(model, x, y, student, step.lr)
        logits = model(x, student)
        ce = self.criterion(logits, y)
        stats = {"correct": int((logits.argmax(1) == y).sum()), "count": len(y)}
        if not kd_on:
            self._pending = (x[:k].detach().clone(), logits[:k].detach().float().softmax(1))
            return ce, stats
        if opts.pick == "meta":  # the rating keeps its graph: the main loss trains the meta layer through v
            idx, v = choose_teacher(self.ratings(model, student))
        else:
            idx, v = self.pick(model, student), torch.tensor(opts.kd_mix, device=x.device)
        teacher = self.board[idx].arch
        with torch.no_grad():
            t_logits = model(x, teacher)
        kd = soft_target_ce(logits, t_logits, tau=1.0)
        self._pending = (x[:k].detach().clone(), t_logits[:k].float().softmax(1))
        self._add(kd_batches=1.0, kd=kd.item(), self_taught=float(teacher == student), kd_weight=float(v.detach()))
        return (v * kd + (2 - v) * ce) / 2, stats

    def after_step(self, model: nn.Module, step: Step, stats: dict) -> None:
        """Step the meta layer on the main loss's gradient (pick "meta"); offer the trained path to the board,
        scored by its top-1 on the whole (all-rank) batch."""
        if any(p.grad is not None for p in self.meta.parameters()):
            if step.grad_scale != 1.0:  # fp16: the loop's scaler unscaled only the supernet optimiser's gradients
                for p in self.meta.parameters():
                    if p.grad is not None:
                        p.grad.div_(step.grad_scale)
            self.step_meta(step.lr)
        pending, self._pending = self._pending, None
        if step.epoch < self.ctx.cfg.distill.start_epoch or pending is None:
            return
        x, path = step.x, step.paths[0]
        counts = dist.all_sum(torch.tensor([stats["correct"], stats["count"]], dtype=torch.float64, device=x.device))
        score = float(100.0 * counts[0] / counts[1])
        cand = Entry(score, int(self.ctx.table.flops(path)), tuple(path), *pending)
        self.board = admit(self.board, cand, self.opts.board_size, self.opts.acc_gap)
        if dist.world_size() > 1 and any(e is cand for e in self.board):
            # rank 0's images and softmax, so every rank holds the same board (and a resumed run the same)
            images, probs = dist.broadcast_object((cand.images.cpu(), cand.probs.cpu()))
            cand.images, cand.probs = images.to(x.device), probs.to(x.device)

    # --- meta-matching update ---------------------------------------------------------------------
    def held_out_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, student: Arch, lr: float
    ) -> tuple[torch.Tensor, int]:
        """CE on images k..2k of the student after one simulated SGD step on the matching-weighted KD loss on
        images 0..k; differentiable in the meta layer (second order). Returns (loss, chosen entry)."""
        k = self.opts.slice
        xs, xh, yh = x[:k], x[k : 2 * k], y[k : 2 * k]
        params = path_parameters(model, student)
        with batch_statistics(model):
            idx, weight = choose_teacher(self.ratings(model, student))
            with torch.no_grad():
                t_logits = model(xs, self.board[idx].arch)
            kd = weight * soft_target_ce(functional_call(model, params, (xs, student)), t_logits, tau=1.0)
            grads = torch.autograd.grad(kd, list(params.values()), create_graph=True, allow_unused=True)
            simulated = {n: p if g is None else p - lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
            held = functional_call(model, simulated, (xh, student))
        return self.criterion(held, yh), idx

    def meta_update(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, student: Arch, lr: float) -> None:
        """One meta-layer step down the held-out CE of the simulated student (gradient averaged over ranks)."""
        loss, _ = self.held_out_loss(model, x, y, student, lr)
        meta_params = list(self.meta.parameters())
        grads = torch.autograd.grad(loss, meta_params)
        for p, g in zip(meta_params, grads, strict=True):
            p.grad = g.detach()
        self.step_meta(lr, clip=1.0)
        self._add(meta_updates=1.0, meta_loss=loss.item())

    def step_meta(self, lr: float, clip: float = 0.0) -> None:
        """One step of the meta layer's optimiser on its gradient (averaged over ranks, clipped to norm `clip` if
        set), at the official meta group's rate on the supernet's schedule (`lr`: the supernet's), then clear it."""
        meta_params = list(self.meta.parameters())
        dist.average_gradients(meta_params)
        if clip:
            nn.utils.clip_grad_norm_(meta_params, clip)
        for group in self.meta_opt.param_groups:
            group["lr"] = self.opts.meta_lr * lr / self.ctx.cfg.supernet.lr
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        self._add(meta_steps=1.0)

    # --- measurements ------------------------------------------------------------------------------
    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Reset the epoch's KD statistics."""
        self.sums = {}

    def _add(self, **values: float) -> None:
        """Accumulate into this epoch's running sums."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def epoch_metrics(self, model: nn.Module, epoch: int) -> dict:
        """Board fill, training KD statistics, and teacher / student accuracy and gap on the probe images."""
        out: dict = {"board_size_filled": len(self.board)}
        n = self.sums.get("kd_batches", 0.0)
        if n:
            out["kd_loss"] = self.sums["kd"] / n
            out["self_taught"] = self.sums["self_taught"] / n  # share of steps whose teacher was the student
            out["kd_weight"] = self.sums.get("kd_weight", 0.0) / n  # mean v of (v·KD + (2 − v)·CE)/2
        if self.sums.get("meta_updates"):
            out["meta_updates"] = int(self.sums["meta_updates"])
            out["meta_loss"] = self.sums["meta_loss"] / self.sums["meta_updates"]
        if self.sums.get("meta_steps"):
            out["meta_steps"] = int(self.sums["meta_steps"])  # every meta-layer optimiser step, both kinds
        if self.board:
            out.update(self.probe(model, epoch))
        return out

    def probe(self, model: nn.Module, epoch: int) -> dict:
        """`distill.probe_sets` uniform students (seeded by (seed, "probe", epoch)), each with the board path the
        meta layer would pick as its teacher, measured as every KD method's probe (`ennas.core.probe`)."""
        d = self.ctx.cfg.distill
        if d.probe_sets <= 0 or not probed_epoch(d.probe_every, epoch, self.ctx.cfg.supernet.epochs):
            return {}
        rng = np.random.default_rng(stream_seed(self.ctx.cfg.seed, "probe", epoch))
        students = [self.sample_one(rng) for _ in range(d.probe_sets)]
        sets = [ProbeSet((s,), self.board[self.pick(model, s)].arch) for s in students]
        out = measure_sets(model, sets, self.ctx.probe_images, device=self.ctx.device)
        return out | {"probe_teachers": len({s.teacher for s in sets})}

    def final_extras(self) -> dict:
        """Cream's own choice, the board's best path, beside the shared search's result; and the whole board."""
        best = self.board[0] if self.board else None
        return {
            "board_best_arch": encode(best.arch) if best else None,
            "board_best_score": best.score if best else None,
            "board_best_flops": best.flops if best else None,
            "board": [e.summary() for e in self.board],
        }

    # --- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Board (with its images and softmaxes), meta layer and its optimiser, and the epoch's sums."""
        return {
            "board": [{**e.summary(), "arch": list(e.arch), "images": e.images, "probs": e.probs} for e in self.board],
            "meta": self.meta.state_dict(),
            "meta_opt": self.meta_opt.state_dict(),
            "sums": dict(self.sums),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        dev = self.ctx.device
        self.board = [
            Entry(float(e["score"]), int(e["flops"]), tuple(e["arch"]), e["images"].to(dev), e["probs"].to(dev))
            for e in state.get("board", [])
        ]
        if "meta" in state:
            self.meta.load_state_dict(state["meta"])
            self.meta_opt.load_state_dict(state["meta_opt"])
        self.sums = dict(state.get("sums", {}))
