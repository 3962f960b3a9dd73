"""Teacher / student / diversity measurements on a fixed subset of the search split (Fig. 1, Fig. 2, the gap).

Every KD method measures the same way, so the curves compare like with like: the logits of each path are
taken on the same probe images with BN on batch statistics (the supernet's stored statistics mix many
paths) and without touching the stored statistics; a "teacher" is whatever the method distils from
(EnNAS: the ensemble of its m subnets, Cream: a board path), its "students" the subnets it teaches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ennas.core.evaluate import Batches, batch_statistics, topk_correct


@torch.no_grad()
def path_logits(
    model: nn.Module, arch: Sequence[int], batches: Batches, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Logits (N, C) of one path on the probe batches, BN on batch statistics, stored statistics untouched."""
    outs = []
    with batch_statistics(model):
        for x, _ in batches:
            outs.append(model(x.to(device), tuple(arch)).float().cpu())
    return torch.cat(outs)


def probe_labels(batches: Batches) -> torch.Tensor:
    """The labels of the probe batches, in order."""
    return torch.cat([y for _, y in batches])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * topk_correct(logits, labels, (1,))[0] / max(len(labels), 1)


def summarize(rows: list[dict]) -> dict:
    """Average the per-set measurements into the epoch record's fields."""
    if not rows:
        return {}
    keys = rows[0].keys()
    out = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    out["gap"] = out["teacher_acc"] - out["student_acc"]
    out["probe_sets"] = len(rows)
    return out


def subnet_diversity(logits: torch.Tensor | np.ndarray) -> float:
    """Mean over subnet pairs i<j of the mean per-sample ‖z_i − z_j‖: the paper's §4.3 / Fig. 2 measure."""
    z = torch.as_tensor(logits).detach().to(dtype=torch.float64, device="cpu")
    if z.dim() != 3:
        raise ValueError(f"logits must have shape (m, B, C), got {tuple(z.shape)}")
    m = z.shape[0]
    if m < 2:
        return 0.0
    i, j = torch.triu_indices(m, m, offset=1)
    return float((z[i] - z[j]).norm(dim=-1).mean())


def measure_sets(
    model: nn.Module,
    sets: Sequence[Sequence[Sequence[int]]],
    batches: Batches,
    teacher_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
) -> dict:
    """For each set of paths: teacher accuracy, mean student accuracy, their gap, and logit diversity.

    `teacher_fn(logits (m, N, C), labels)` forms the teacher's logits from the set's logits (EnNAS: the
    weighted ensemble); the students are the set's paths themselves.
    """
    labels = probe_labels(batches)
    cache: dict[tuple, torch.Tensor] = {}
    rows = []
    for paths in sets:
        for p in paths:
            if tuple(p) not in cache:
                cache[tuple(p)] = path_logits(model, p, batches, device)
        logits = torch.stack([cache[tuple(p)] for p in paths])
        teacher = teacher_fn(logits, labels)
        rows.append(
            {
                "teacher_acc": accuracy(teacher, labels),
                "student_acc": sum(accuracy(z, labels) for z in logits) / len(logits),
                "diversity": subnet_diversity(logits),
            }
        )
    return summarize(rows)
