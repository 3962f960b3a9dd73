"""Cream (Peng et al., 2020): single-path training distilled from a prioritized path board via meta-matching.

Per step, as SPOS, one uniform random path (the student) is trained. From `distill.start_epoch` on:
- **Board.** After the step the student's top-1 on the batch (summed over ranks, so all ranks agree) may
  admit it to a board of `distill.board_size` paths (`admit`: board not full, or > 5 points better than the
  worst, or better than the worst with fewer FLOPs; sorted by score, the last dropped). An entry keeps its
  score, FLOPs, arch, the first 4 images of the batch and a softmax on them: as the official code, the
  softmax of the step's teacher (of the student itself while the board was empty).
- **Meta-matching.** A `Linear(4·classes → 1)` rates every entry from the student's softmax on the entry's
  images minus the stored softmax; the best-rated entry teaches this step. KD = soft-target CE at τ = 1
  from the teacher path's logits (same supernet, no grad); loss = 0.25·KD + 0.75·CE, i.e. the official
  (m·KD + (2 − m)·CE)/2 at m = 0.5. Without a board (or before the start epoch): CE alone.
- **Meta update** every `distill.meta_interval` steps (in-epoch step > 0, as the official code): the KD loss
  weighted by the matching weight sigmoid(−rating of the chosen entry) on the first 4 images gives a simulated
  SGD step w' = w − lr·∇ of the student path (create_graph); the CE of the simulated student on the next 4
  images of the same training batch (the official "validation" slice, issue #23: not held out of training)
  is back-propagated to the meta layer (second order), clipped to norm 1, stepped.

Decisions (facts from microsoft/Cream, see reference/baselines.md):
- The meta layer has its own optimiser (SGD, lr 1e-4 on the supernet's linear schedule, no weight decay: the
  official meta group) and is updated only by the meta step. In the official code the main loss also reaches
  it through m = sigmoid(−rating); here m is the fixed 0.5 of DESIGN.md and the rating is detached, so
  `extra_modules()` is empty and the layer and its optimiser are checkpointed in `state_dict`.
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
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ennas import distributed as dist
from ennas.context import RunContext, stream_seed
from ennas.distill import soft_target_ce
from ennas.engine import steps_per_epoch
from ennas.evaluate import batch_statistics
from ennas.methods import Method, register_method
from ennas.probe import path_logits, probe_labels
from spaces.arch import Arch, encode

SLICE = 4  # images per board entry and per meta-step slice (official SUPERNET.SLICE)
ACC_GAP = 5.0  # points by which a path must beat the board's worst to enter regardless of FLOPs
KD_MIX = 0.5  # m of (m·KD + (2 − m)·CE)/2 (the official top-1 pick)
META_LR = 1e-4  # the official meta-layer group's learning rate


@dataclass
class Entry:
    """One board path: its batch top-1, FLOPs, arch, and the images and softmax meta-matching compares on."""

    score: float
    flops: int
    arch: Arch
    images: torch.Tensor | None = None  # (SLICE, C, H, W)
    probs: torch.Tensor | None = None  # (SLICE, classes)

    def summary(self) -> dict:
        """The JSON-able part (for logs and final.json)."""
        return {"arch": encode(self.arch), "score": self.score, "flops": self.flops}


def admit(board: list[Entry], cand: Entry, size: int, gap: float = ACC_GAP) -> list[Entry]:
    """The board after offering it `cand` (official rule): enters if not full, or > worst + gap, or > worst with
    fewer FLOPs; sorted by score (ties: fewer FLOPs first), capped at `size`."""
    if len(board) >= size:
        worst = board[-1]
        better = cand.score > worst.score + gap or (cand.score > worst.score and cand.flops < worst.flops)
        if not better:
            return list(board)
    ranked = sorted([*board, cand], key=lambda e: (-e.score, e.flops, e.arch))
    return ranked[:size]


def meta_ratings(meta: nn.Linear, student_probs: torch.Tensor, board_probs: torch.Tensor) -> torch.Tensor:
    """Meta-matching ratings (n,) of n board entries from the student's (n, k, C) and stored (n, k, C) softmaxes."""
    return meta((student_probs - board_probs).flatten(1)).squeeze(1)


def choose_teacher(ratings: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The best-rated entry and its matching weight sigmoid(−rating) (the chosen entry's, not the last one's, #78)."""
    idx = int(ratings.detach().argmax())
    return idx, torch.sigmoid(-ratings[idx])


def path_parameters(model: nn.Module, arch: Arch) -> dict[str, nn.Parameter]:
    """The supernet's parameters on one path, by name (for `functional_call` with simulated weights)."""
    ids = {id(p) for m in model.path_modules(arch) for p in m.parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


@register_method
class Cream(Method):
    """Single-path training distilled from the best-matching path of a prioritized board."""

    name = "cream"
    supervised = False

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        per_rank = ctx.cfg.supernet.batch_size // dist.world_size()
        if per_rank < 2 * SLICE:
            raise ValueError(f"cream needs at least {2 * SLICE} images per rank and batch (has {per_rank})")
        classes = ctx.data.num_classes
        self.meta = nn.Linear(SLICE * classes, 1)
        gen = torch.Generator().manual_seed(stream_seed(ctx.cfg.seed, "init", 1))
        bound = 1.0 / (SLICE * classes) ** 0.5  # torch's default Linear range, from the run's own stream
        with torch.no_grad():
            for p in self.meta.parameters():
                p.uniform_(-bound, bound, generator=gen)
        self.meta.to(ctx.device)
        s = ctx.cfg.supernet
        self.meta_opt = torch.optim.SGD(
            self.meta.parameters(), lr=META_LR, momentum=s.momentum, nesterov=s.nesterov, weight_decay=0.0
        )
        self.board: list[Entry] = []
        self.sums: dict[str, float] = {}  # this epoch's KD / meta statistics (checkpointed)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's images and softmax
        self._steps: int | None = None

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
    def batch_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, paths: list[Arch], epoch: int, step: int
    ) -> tuple[torch.Tensor, dict]:
        """CE before the KD start or with an empty board; else 0.25·KD + 0.75·CE from the matched board path."""
        student = paths[0]
        d = self.ctx.cfg.distill
        kd_on = epoch >= d.start_epoch and bool(self.board)
        if kd_on and step > 0 and step % d.meta_interval == 0:
            self.meta_update(model, x, y, student, self.supernet_lr(epoch, step))
        logits = model(x, student)
        ce = self.criterion(logits, y)
        stats = {"correct": int((logits.argmax(1) == y).sum()), "count": len(y)}
        if not kd_on:
            self._pending = (x[:SLICE].detach().clone(), logits[:SLICE].detach().float().softmax(1))
            return ce, stats
        teacher = self.board[self.pick(model, student)].arch
        with torch.no_grad():
            t_logits = model(x, teacher)
        kd = soft_target_ce(logits, t_logits, tau=1.0)
        self._pending = (x[:SLICE].detach().clone(), t_logits[:SLICE].float().softmax(1))
        self._add(kd_batches=1.0, kd=kd.item(), self_taught=float(teacher == student))
        return (KD_MIX * kd + (2 - KD_MIX) * ce) / 2, stats

    def after_step(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, paths: list[Arch], stats: dict, epoch: int, step: int
    ) -> None:
        """Offer the trained path to the board, scored by its top-1 on the whole (all-rank) batch."""
        pending, self._pending = self._pending, None
        if epoch < self.ctx.cfg.distill.start_epoch or pending is None:
            return
        counts = dist.all_sum(torch.tensor([stats["correct"], stats["count"]], dtype=torch.float64, device=x.device))
        score = float(100.0 * counts[0] / counts[1])
        cand = Entry(score, int(self.ctx.table.flops(paths[0])), tuple(paths[0]), *pending)
        self.board = admit(self.board, cand, self.ctx.cfg.distill.board_size)
        if dist.world_size() > 1 and any(e is cand for e in self.board):
            # rank 0's images and softmax, so every rank holds the same board (and a resumed run the same)
            images, probs = dist.broadcast_object((cand.images.cpu(), cand.probs.cpu()))
            cand.images, cand.probs = images.to(x.device), probs.to(x.device)

    # --- meta-matching update ---------------------------------------------------------------------
    def supernet_lr(self, epoch: int, step: int) -> float:
        """The supernet's learning rate at this step (the linear schedule of ennas.optim), for the simulated step."""
        s = self.ctx.cfg.supernet
        if self._steps is None:
            shape = SimpleNamespace(
                fraction=self.epoch_fraction(), batch_size=s.batch_size, max_steps_per_epoch=s.max_steps_per_epoch
            )
            self._steps = steps_per_epoch(shape, len(self.ctx.data.train))
        done = epoch * self._steps + step
        return s.lr * max(0.0, 1.0 - done / (s.epochs * self._steps))

    def held_out_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, student: Arch, lr: float
    ) -> tuple[torch.Tensor, int]:
        """CE on images k..2k of the student after one simulated SGD step on the matching-weighted KD loss on
        images 0..k; differentiable in the meta layer (second order). Returns (loss, chosen entry)."""
        xs, xh, yh = x[:SLICE], x[SLICE : 2 * SLICE], y[SLICE : 2 * SLICE]
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
        dist.average_gradients(meta_params)
        nn.utils.clip_grad_norm_(meta_params, 1.0)
        for group in self.meta_opt.param_groups:  # the official meta group follows the supernet's schedule
            group["lr"] = META_LR * lr / self.ctx.cfg.supernet.lr
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        self._add(meta_updates=1.0, meta_loss=loss.item())

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
        if self.sums.get("meta_updates"):
            out["meta_updates"] = int(self.sums["meta_updates"])
            out["meta_loss"] = self.sums["meta_loss"] / self.sums["meta_updates"]
        if self.board:
            out.update(self.probe(model, epoch))
        return out

    def probe(self, model: nn.Module, epoch: int) -> dict:
        """`distill.probe_sets` uniform students (seeded by (seed, "probe", epoch)), each with the board path the
        meta layer would pick as its teacher; top-1 on the probe images, counted over all ranks' shards."""
        d = self.ctx.cfg.distill
        if d.probe_sets <= 0:
            return {}
        rng = np.random.default_rng(stream_seed(self.ctx.cfg.seed, "probe", epoch))
        students = [self.sample_one(rng) for _ in range(d.probe_sets)]
        teachers = [self.board[self.pick(model, s)].arch for s in students]
        batches = self.ctx.probe_batches
        labels = probe_labels(batches)
        cache: dict[Arch, int] = {}

        def correct(arch: Arch) -> int:
            if arch not in cache:
                cache[arch] = int((path_logits(model, arch, batches, self.ctx.device).argmax(1) == labels).sum())
            return cache[arch]

        counts = torch.tensor(
            [sum(map(correct, students)), sum(map(correct, teachers)), len(labels) * len(students)],
            dtype=torch.float64,
            device=self.ctx.device,
        )
        s_correct, t_correct, total = dist.all_sum(counts).tolist()
        student_acc, teacher_acc = 100.0 * s_correct / max(total, 1), 100.0 * t_correct / max(total, 1)
        return {
            "teacher_acc": teacher_acc,
            "student_acc": student_acc,
            "gap": teacher_acc - student_acc,
            "probe_sets": len(students),
            "probe_teachers": len(set(teachers)),
        }

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
