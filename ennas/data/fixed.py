"""Fixed batches (BN recalibration, candidate scoring, probes): drawn once, kept as uint8, replayed for every use.

Small sets stay in host memory; larger ones go to a .npy file that is memory-mapped, so a candidate's
recalibration sees the very same augmented images however many candidates, epochs or ranks read them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch


class FixedBatches:
    """uint8 images (N, C, H, W) and their labels, yielded in the batches they were drawn in."""

    def __init__(self, images: torch.Tensor | np.ndarray, targets: torch.Tensor, batch_size: int) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images, self.targets, self.batch_size = images, targets, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.targets), self.batch_size):
            x = self.images[start : start + self.batch_size]
            if isinstance(x, np.ndarray):  # a memory-mapped file: read this batch into memory
                x = torch.from_numpy(np.array(x))
            yield x, self.targets[start : start + self.batch_size]

    @property
    def on_disk(self) -> bool:
        """True when the images are memory-mapped from a file rather than held in memory."""
        return isinstance(self.images, np.ndarray)

    @classmethod
    def open(cls, path: str | Path, batch_size: int) -> FixedBatches:
        """The batches a `draw(..., path=path)` wrote, memory-mapped read-only."""
        path = Path(path)
        images = np.load(path.with_suffix(".images.npy"), mmap_mode="r")
        targets = torch.from_numpy(np.load(path.with_suffix(".labels.npy")))
        return cls(images, targets, batch_size)


def draw(batches: Iterable, n: int, batch_size: int, path: str | Path | None = None) -> FixedBatches:
    """Iterate `batches` (uint8 images, labels) once and keep the first n images: in memory, or in `path` on disk.

    On disk the images go to PATH.images.npy (written under a temporary name and renamed when complete, so a
    reader never sees half a file) and the labels to PATH.labels.npy; `FixedBatches.open(path)` reads them.
    """
    images, targets, filled = None, torch.empty(n, dtype=torch.int64), 0
    if n == 0:
        return FixedBatches(torch.empty(0, dtype=torch.uint8), targets, batch_size)
    tmp = None if path is None else Path(path).with_suffix(f".images.{os.getpid()}.tmp.npy")
    for x, y in batches:
        if x.dtype != torch.uint8:
            raise TypeError(f"fixed batches hold uint8 images; the transform returned {x.dtype}")
        if images is None:
            shape = (n, *x.shape[1:])
            if tmp is None:
                images = torch.empty(shape, dtype=torch.uint8)
            else:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        k = min(len(x), n - filled)
        images[filled : filled + k] = x[:k] if tmp is None else x[:k].numpy()
        targets[filled : filled + k] = y[:k]
        filled += k
        if filled == n:
            break
    if filled < n:
        raise ValueError(f"asked for {n} fixed images, the batches held {filled}")
    if tmp is None:
        return FixedBatches(images, targets, batch_size)
    images.flush()
    del images
    path = Path(path)
    np.save(path.with_suffix(".labels.npy"), targets.numpy())
    os.replace(tmp, path.with_suffix(".images.npy"))
    return FixedBatches.open(path, batch_size)
