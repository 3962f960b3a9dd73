"""Cream's prioritized path board and meta-matching, as plain functions (facts: microsoft/Cream).

A board entry keeps a path's batch top-1, FLOPs, arch, the first images of its batch and a softmax on them;
`admit` is the official entry rule; the meta-matching layer rates entries from the student's softmax minus
the stored one, and the best-rated entry teaches (`choose_teacher`); KD is soft-target CE (`soft_target_ce`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spaces.arch import Arch, encode


@dataclass
class Entry:
    """One board path: its batch top-1, FLOPs, arch, and the images and softmax meta-matching compares on."""

    score: float
    flops: int
    arch: Arch
    images: torch.Tensor | None = None  # (slice, C, H, W)
    probs: torch.Tensor | None = None  # (slice, classes)

    def summary(self) -> dict:
        """The JSON-able part (for logs and final.json)."""
        return {"arch": encode(self.arch), "score": self.score, "flops": self.flops}


def admit(board: list[Entry], cand: Entry, size: int, gap: float) -> list[Entry]:
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


def soft_target_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """-sum_c p_t log q_s at temperature tau, batch mean: Cream's KD loss (used there at tau = 1, unscaled)."""
    p = F.softmax(teacher_logits.detach() / tau, dim=-1)
    return -(p * F.log_softmax(student_logits / tau, dim=-1)).sum(-1).mean()
