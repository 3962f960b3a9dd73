"""Random erasing (Zhong et al., AAAI 2020) of a normalised batch on its device, drawn from a seeded generator.

A regulariser for a network trained long on little data: DNA's teacher on the proxy overfits (its
training accuracy climbs while its held-out accuracy stalls), and random erasing is the augmentation
that paper measured on Fashion-MNIST. Each image is erased with probability `prob` in one rectangle of
2-40 % of its area and aspect 0.3-3.3 (the paper's and timm's defaults), filled with per-pixel normal
noise (timm's mode "pixel"; the batch is normalised, so N(0, 1) is the data's own scale).

The draws come from a CPU generator the caller seeds per step, so a batch is erased alike however the
run was resumed, and nothing touches torch's global RNG that the data order relies on.
"""

from __future__ import annotations

import math

import torch

from ennas.seeding import generator

AREA = (0.02, 0.4)  # fraction of the image, as the paper's sl and sh
ASPECT = (0.3, 1 / 0.3)  # height / width, drawn log-uniformly
ERASE_KEY = 0xE4A5  # keeps these draws apart from the other users of ennas.seeding.generator


def erase(x: torch.Tensor, prob: float, rng: torch.Generator) -> torch.Tensor:
    """`x` (N, C, H, W) with one random rectangle of noise in each image chosen with probability `prob`."""
    if prob <= 0:
        return x
    n, c, h, w = x.shape
    chosen = torch.rand(n, generator=rng) < prob
    area = torch.empty(n).uniform_(*AREA, generator=rng) * h * w
    aspect = torch.exp(torch.empty(n).uniform_(math.log(ASPECT[0]), math.log(ASPECT[1]), generator=rng))
    box_h = torch.sqrt(area * aspect).round().clamp(1, h).long()
    box_w = torch.sqrt(area / aspect).round().clamp(1, w).long()
    top = (torch.rand(n, generator=rng) * (h - box_h + 1)).long()
    left = (torch.rand(n, generator=rng) * (w - box_w + 1)).long()
    noise = torch.randn(n, c, h, w, generator=rng)
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    in_rows = (rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
    inside = in_rows & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
    mask = (inside & chosen[:, None, None])[:, None].to(x.device)
    return torch.where(mask, noise.to(device=x.device, dtype=x.dtype), x)


def step_generator(seed: int, epoch: int, index: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """The generator of one (micro-)batch's erasing on one rank, fixed by the run's seed and the batch's place."""
    return generator(seed, ERASE_KEY, epoch, index, micro, rank)
