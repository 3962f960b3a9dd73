"""Teacher / student / diversity measurements on a fixed subset of the search split (Fig. 1, Fig. 2, the gap).

Every KD method measures the same way, so the curves compare like with like: the logits of each path are
taken on the same probe images with BN on batch statistics (the supernet's stored statistics mix many
paths) and without touching the stored statistics; a "teacher" is whatever the method distils from
(EnNAS: the ensemble of its m subnets, Cream: a board path), its "students" the subnets it teaches. Ensemble
weights are fitted on one part of the probe images and every accuracy is scored on the other; the score part
is sharded over ranks and every figure is counted over all of them, so each rank logs the same record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ennas.core import distributed as dist
from ennas.core.evaluate import Batches, batch_statistics, topk_correct
from spaces.arch import Arch


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


@dataclass(frozen=True)
class ProbeSet:
    """One measured teacher and its students: a single teacher path (Cream's board path), or, with `teacher`
    None, the ensemble of the students (EnNAS) whose weights are fitted on the fit images."""

    students: tuple[Arch, ...]
    teacher: Arch | None = None


@dataclass(frozen=True)
class ProbeImages:
    """The probe's two disjoint parts of the search split: `fit` (ensemble weights; the same on every rank) and
    `score` (every accuracy; this rank's shard). Scoring a teacher on the labels its weights were fitted on would
    be an in-sample fit that flatters an ensemble next to a single-path teacher."""

    fit: Batches
    score: Batches


def crossed_se(values: torch.Tensor) -> tuple[float, float, float]:
    """(mean, set s.e., image s.e.) of a (sets, images) table in percent, all ranks' images together.

    Both the sets (drawn at random) and the probe images (a finite sample) vary, so the mean's variance is about
    var(set means)/sets + var(image means)/images (a crossed design, interaction neglected); the two parts are
    returned apart, and `total_se` adds them.
    """
    v = values.to(torch.float64)
    sets, n_local = v.shape
    set_sums = dist.all_sum(v.sum(1))  # (sets,) over every rank's images
    img = v.mean(0)  # this rank's image means over the sets
    moments = dist.all_sum(torch.stack([img.new_tensor(float(n_local)), img.sum(), (img**2).sum()]))
    n, s1, s2 = moments.tolist()
    n = max(n, 1.0)
    set_means = set_sums / n
    mean = float(s1 / n)
    set_var = float(set_means.var(unbiased=True)) if sets > 1 else 0.0
    img_var = max(s2 / n - mean**2, 0.0) * n / max(n - 1, 1.0)
    return 100.0 * mean, 100.0 * (set_var / sets) ** 0.5, 100.0 * (img_var / n) ** 0.5


def total_se(set_se: float, image_se: float) -> float:
    """The two parts of `crossed_se` combined."""
    return (set_se**2 + image_se**2) ** 0.5


def measure_sets(
    model: nn.Module,
    sets: Sequence[ProbeSet],
    images: ProbeImages,
    fit_weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Teacher accuracy, mean student accuracy, their gap and the students' logit diversity, over all ranks.

    Every method's probe goes through here. A set without a teacher path is an ensemble: `fit_weights(logits
    (m, N, C), labels)` solves its weights on the fit images, which then combine the students' logits on the
    score images. Each figure comes with its standard error (`crossed_se`, as `<name>_se`).
    """
    labels = probe_labels(images.score)
    fit_labels = probe_labels(images.fit) if fit_weights is not None else None
    cache: dict[tuple, torch.Tensor] = {}

    def logits(arch: Arch, part: str = "score") -> torch.Tensor:
        """A path's logits on one part of the probe images, each computed once."""
        key = (part, tuple(arch))
        if key not in cache:
            cache[key] = path_logits(model, arch, getattr(images, part), device)
        return cache[key]

    teacher_ok, student_ok, div_sums = [], [], []
    for s in sets:
        z = torch.stack([logits(p) for p in s.students])  # (m, N, C)
        if s.teacher is not None:
            t = logits(s.teacher)
        else:
            w = fit_weights(torch.stack([logits(p, "fit") for p in s.students]), fit_labels)
            t = torch.einsum("m,mnc->nc", w.to(z.dtype), z)
        teacher_ok.append((t.argmax(1) == labels).double())
        student_ok.append((z.argmax(2) == labels).double().mean(0))
        div_sums.append(pairwise_distance_sum(z))
    if not sets:
        return {}
    t_ok, s_ok = torch.stack(teacher_ok), torch.stack(student_ok)  # (sets, N)
    out: dict = {"probe_sets": len(sets)}
    for name, table in (("teacher_acc", t_ok), ("student_acc", s_ok), ("gap", t_ok - s_ok)):
        mean, set_se, image_se = crossed_se(table)
        out |= {name: mean, f"{name}_se": total_se(set_se, image_se), f"{name}_image_se": image_se}
    count = dist.all_sum(torch.tensor([float(len(labels))], dtype=torch.float64))
    out["diversity"] = float(dist.all_sum(torch.tensor(div_sums, dtype=torch.float64)).sum() / (count * len(sets)))
    out["probe_images"] = int(count)
    return out


def probed_epoch(every: int, epoch: int, epochs: int) -> bool:
    """Whether supernet epoch `epoch` of `epochs` is probed with `distill.probe_every` = `every`: every k-th epoch
    from the first, and always the last (the claims read the last epoch's teacher, gap and diversity)."""
    return epoch % every == 0 or epoch == epochs - 1


def pairwise_distance_sum(z: torch.Tensor) -> float:
    """`subnet_diversity` of (m, N, C) logits times N: summable over ranks' shards of the images."""
    return subnet_diversity(z) * z.shape[1]
