"""Synthetic data: small, deterministic and learnable, for fast tests."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ennas.data.storage import DataError, Source, TensorImages, TensorTransform
from ennas.seeding import SPLIT_KEY, generator


def synthetic(
    root: str | Path | None = None,
    *,
    n_train: int = 2048,
    n_test: int = 512,
    num_classes: int = 10,
    in_chans: int = 1,
    resolution: int = 28,
    noise: float = 0.5,
    data_seed: int = 0,
) -> Source:
    """Noisy, shifted copies of one smooth random prototype per class: learnable in a few steps."""
    if root is not None:
        raise DataError(f"synthetic data is generated, not read: drop --data {root}")
    g = generator(data_seed, SPLIT_KEY, 2)
    # Prototypes are smooth (upsampled from a quarter of the resolution), so small shifts keep the class.
    coarse = torch.rand(num_classes, in_chans, max(2, resolution // 4), max(2, resolution // 4), generator=g)
    protos = F.interpolate(coarse, size=(resolution, resolution), mode="bilinear", align_corners=False)
    shift = max(1, resolution // 14)

    def draw(n: int) -> TensorImages:
        targets = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        x = protos[targets] + noise * torch.randn(n, in_chans, resolution, resolution, generator=g)
        moves = torch.randint(-shift, shift + 1, (n, 2), generator=g).tolist()
        x = torch.stack([xi.roll(m, dims=(-2, -1)) for xi, m in zip(x, moves, strict=True)])
        return TensorImages(x.clamp(0, 1).mul(255).round().to(torch.uint8), targets)

    train, test = draw(n_train), draw(n_test)
    pixels = train.images.float().div(255).transpose(0, 1).reshape(in_chans, -1)
    return Source(
        train=train,
        test=test,
        train_transform=TensorTransform(pad=shift),  # no flip: prototypes are not symmetric
        eval_transform=TensorTransform(),
        num_classes=num_classes,
        in_chans=in_chans,
        resolution=resolution,
        mean=tuple(pixels.mean(1).tolist()),
        std=tuple(pixels.std(1).tolist()),
    )
