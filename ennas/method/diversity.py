"""Operator diversity (EnNAS Eq. 4), so the sampler can favour unlike operators.

ζ(o_a, o_b) = 1 − (1/n) Σ_j cos(vec(o_a(u_j)), vec(o_b(u_j))) over the inputs u_j of a layer. The inputs
are the paper's "uniformly assigned, then merged" features: image j reaches layer l through the
operators its seeded assignment picked at the earlier layers (sample j takes operator perm_l[j] mod T_l),
so every operator contributes equally to the next layer's inputs. At each layer *every* operator is
applied to every input to get the cosines. Conventions: an all-zero output has cosine 0 with anything
(so a zero op is at ζ = 1 from every other op); the diagonal is exactly 0; ζ lies in [0, 2].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _assignments(n: int, num_choices: Sequence[int], seed: int) -> list[torch.Tensor]:
    """Which operator each image passes at each layer: seeded permutation mod T_l, counts within 1."""
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.permutation(n) % t) for t in num_choices]


def _layer_cosines(layer: nn.Module, h: torch.Tensor, route: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the batch of pairwise output cosines, and the merged output each sample carries on."""
    ops = list(layer.candidates)
    unit, merged = None, None
    for t, op in enumerate(ops):
        out = op(h)
        if merged is None:
            # One (T, B, D) buffer of unit vectors bounds memory to T·batch·D, whatever T is.
            unit = out.new_empty((len(ops), out.shape[0], out[0].numel()))
            merged = torch.empty_like(out)
        elif out.shape != merged.shape:
            raise ValueError(f"candidate {t} outputs {tuple(out.shape)}, candidate 0 {tuple(merged.shape)}")
        unit[t] = F.normalize(out.reshape(out.shape[0], -1), dim=1)
        pick = route == t
        merged[pick] = out[pick]
    # Per-sample T×T Gram matrices (one batched matmul), summed in float64 so n large stays exact.
    per_sample = unit.transpose(0, 1)
    return torch.bmm(per_sample, per_sample.transpose(1, 2)).double().sum(0), merged


@torch.no_grad()
def estimate_diversity(
    supernet: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    seed: int = 0,
    to_device: Callable[[torch.Tensor, torch.device], torch.Tensor] | None = None,
) -> list[np.ndarray]:
    """Per searchable layer, the T_l×T_l operator-diversity matrix ζ of Eq. 4, leaving the model untouched.

    `to_device(batch, device)` turns a slice of `images` into the network's input (DataBundle.to_device:
    uint8 images are normalised on the device); by default the slice is only moved there.
    """
    layers = list(supernet.layers)
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("estimate_diversity needs at least one image")
    routes = _assignments(n, [len(layer.candidates) for layer in layers], seed)
    param = next(supernet.parameters(), None)
    device = param.device if param is not None else images.device
    to_device = to_device or (lambda x, where: x.to(where))
    sums = [torch.zeros(len(layer.candidates), len(layer.candidates), dtype=torch.float64) for layer in layers]
    # Remember every module's own flag: a blanket train(flag) would unfreeze deliberately frozen parts.
    flags = [(module, module.training) for module in supernet.modules()]
    supernet.eval()
    try:
        for start in range(0, n, batch_size):
            h = supernet.stem(to_device(images[start : start + batch_size], device))
            for layer, route, total in zip(layers, routes, sums, strict=True):
                cos_sum, h = _layer_cosines(layer, h, route[start : start + batch_size].to(device))
                total += cos_sum.cpu()
    finally:
        for module, flag in flags:
            module.training = flag
    zetas = []
    for total in sums:
        zeta = 1.0 - total.numpy() / n
        zeta = np.clip(0.5 * (zeta + zeta.T), 0.0, 2.0)
        np.fill_diagonal(zeta, 0.0)
        zetas.append(zeta)
    return zetas


def save_diversity(zetas: Sequence[np.ndarray], path: str | Path) -> None:
    """Write the per-layer ζ matrices as JSON (a list of lists of lists) for inspection and for resuming."""
    Path(path).write_text(json.dumps([np.asarray(z, dtype=float).tolist() for z in zetas]))


def load_diversity(path: str | Path) -> list[np.ndarray]:
    """Read per-layer ζ matrices written by save_diversity."""
    return [np.asarray(z, dtype=np.float64).reshape(len(z), len(z)) for z in json.loads(Path(path).read_text())]
