"""ImageNet's training augmentation on the device, for a batch decoded there (data.decode=device).

The same recipe as the CPU path's transforms (RandomResizedCrop, RandomHorizontalFlip, ColorJitter(0.4, 0.4,
0.4)) as tensor operations on whatever device the images are on. Every random number comes from a private
CPU generator that the caller seeds, drawn in fixed-size blocks per image, so a batch's augmentation is a
function of that seed alone: the same on every device and rank and with any number of loader workers.
The draws are not those of the PIL path (other crops, flips and jitter at the same seed), so a run with
data.decode=device is a different run from one with data.decode=cpu; the resampling also differs slightly
(torch's antialiased bilinear instead of PIL's, jitter in float with one rounding at the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_ATTEMPTS = 10  # RandomResizedCrop's tries before its central fallback
_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def crop_box(
    height: int, width: int, tries: torch.Tensor, where: torch.Tensor, scale: tuple, ratio: tuple
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of RandomResizedCrop from uniform draws: `tries` (ATTEMPTS, 2) and `where` (2,).

    torchvision's algorithm (area share in `scale`, log-uniform aspect in `ratio`, up to ten tries, then the
    largest central crop of an allowed aspect), with the draws made in advance.
    """
    area, (lo, hi) = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for s, r in tries.tolist():
        target = area * (scale[0] + s * (scale[1] - scale[0]))
        aspect = math.exp(lo + r * (hi - lo))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = (min(int(u * (n + 1)), n) for u, n in zip(where.tolist(), (height - h, width - w)))
            return top, left, h, w
    shape = width / height
    if shape < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif shape > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0, 255)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1 - f) * _grey(x).mean((1, 2, 3), keepdim=True)).clamp_(0, 255)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1 - f) * _grey(x)).clamp_(0, 255)


@dataclass(frozen=True)
class DeviceAugment:
    """RandomResizedCrop(size) + horizontal flip + ColorJitter on a list of uint8 (3, H, W) images on one device."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float] = (0.4, 0.4, 0.4)  # brightness, contrast, saturation

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """A uint8 (N, 3, size, size) batch on the images' device; draws only from `generator`."""
        n = len(images)
        tries = torch.rand(n, _ATTEMPTS, 2, generator=generator)
        where = torch.rand(n, 2, generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        amounts = torch.tensor(self.jitter)
        factors = 1 + (2 * torch.rand(n, 3, generator=generator) - 1) * amounts  # uniform in [1 - a, 1 + a]
        order = torch.rand(n, 3, generator=generator).argsort(1)  # each image's order of the three jitter ops
        crops = []
        for image, t, w, flip in zip(images, tries, where, flips.tolist(), strict=True):
            top, left, h, wd = crop_box(image.shape[-2], image.shape[-1], t, w, self.scale, self.ratio)
            crop = image[None, :, top : top + h, left : left + wd].float()
            crop = F.interpolate(
                crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
            crops.append(crop.flip(-1) if flip else crop)
        x = torch.cat(crops)
        ops = (_brightness, _contrast, _saturation)
        for stage in range(3):
            for k, op in enumerate(ops):
                rows = (order[:, stage] == k).nonzero().flatten()
                if self.jitter[k] and len(rows):
                    f = factors[rows, k].to(x.device).view(-1, 1, 1, 1)
                    at = rows.to(x.device)
                    x[at] = op(x[at], f)
        return x.round_().clamp_(0, 255).to(torch.uint8)
