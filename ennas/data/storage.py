"""Storage of a dataset: the data once in memory or on disk; views add indices and transforms to it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

# What PIL raises on a truncated, corrupt or hostile file.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DataError(Exception):
    """A data problem the user can fix; the CLI prints it as one line, without a traceback."""

    def __init__(self, message: str) -> None:
        # DataLoader re-raises a worker's error with the worker's traceback; keep our one line.
        if message.startswith("Caught DataError"):
            message = message.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]
        super().__init__(message)


class TensorImages:
    """Images held as one uint8 tensor (N, C, H, W) in memory, so per-item access is a slice."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        """The raw uint8 image and label of item i."""
        return self.images[i], int(self.targets[i])


class _Unreadable(Exception):
    """Raised by ImageFiles.load after counting a file that cannot be decoded."""


class ImageFiles:
    """An ImageFolder's files decoded on demand; unreadable ones are counted and skipped up to a limit.

    Counts are per process: each DataLoader worker counts the bad files it meets.
    """

    def __init__(self, folder: Path, *, max_bad: int | None, bad_fraction: float) -> None:
        images = ImageFolder(folder, allow_empty=True)
        counts = np.bincount(images.targets, minlength=len(images.classes))
        empty = [c for c, k in zip(images.classes, counts, strict=True) if k == 0]
        if empty:
            raise DataError(
                f"empty class folder(s) in {folder}: {few(empty)}; each needs at least one image "
                f"({' '.join(IMG_EXTENSIONS)}) or must be removed from both train/ and val/"
            )
        self.folder, self.samples, self.loader = folder, images.samples, images.loader
        self.targets = torch.tensor(images.targets)
        self.max_bad = max_bad if max_bad is not None else int(bad_fraction * len(self.samples))
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[Image.Image, int]:
        """The decoded RGB image and label of item i; counts and raises _Unreadable if it cannot be read."""
        path, target = self.samples[i]
        try:
            return self.loader(path), target
        except UNREADABLE as err:
            if not self.bad:
                warnings.warn(
                    f"skipping unreadable image {path} ({err}); further ones are skipped silently up to {self.max_bad}",
                    stacklevel=2,
                )
            self.bad.add(i)
            self._check_bad(path)
            raise _Unreadable(path) from err

    def verify(self) -> None:
        """Decode every image now and drop the unreadable ones, failing if there are too many."""
        bad = []
        for i, (path, _) in enumerate(self.samples):
            try:
                self.loader(path)
            except UNREADABLE:
                bad.append(i)
        self.bad = set(bad)
        self._check_bad(self.samples[bad[0]][0] if bad else "")
        if bad:
            warnings.warn(f"dropped {len(bad)} unreadable image(s) from {self.folder}", stacklevel=2)
            keep = sorted(set(range(len(self.samples))) - self.bad)
            self.samples = [self.samples[i] for i in keep]
            self.targets = self.targets[keep]
            self.bad = set()

    def _check_bad(self, example: str) -> None:
        if len(self.bad) > self.max_bad:
            raise DataError(
                f"{len(self.bad)} unreadable image(s) in {self.folder} (e.g. {example}), more than the "
                f"{self.max_bad} allowed; re-extract the dataset, or allow more with max_bad=N"
            )


class View(Dataset):
    """Some items of a storage with their own transform, so all splits share one copy of the data."""

    def __init__(self, base: TensorImages | ImageFiles, indices: torch.Tensor, transform: Callable) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> torch.Tensor:
        """Labels of this view's items, in order (no decoding)."""
        return self.base.targets[self.indices]

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        # An unreadable image is replaced by the next item of this view, never one of another split.
        for k in range(len(self)):
            try:
                image, target = self.base.load(int(self.indices[(j + k) % len(self)]))
            except _Unreadable:
                continue
            return self.transform(image), target
        raise DataError(f"no readable image among the {len(self)} of this split")


class TensorTransform:
    """Per-item augmentation of a uint8 CHW tensor, cheap on 2 cores: padded random crop and flip, still uint8.

    Normalising is left to the device (ennas.data.device.Normalize), so workers ship 4x fewer bytes. Draws
    come from torch's RNG, which torch.manual_seed and DataLoader's per-worker seeding fix; their order is
    the one of the float transform this replaced, so the images a network sees are bit for bit the same
    (zero padding commutes with x/255, and crop and flip only move values).
    """

    def __init__(self, *, pad: int = 0, flip: bool = False):
        self.pad, self.flip = pad, flip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        if self.pad:
            h, w = x.shape[-2:]
            i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = F.pad(x, (self.pad,) * 4)[:, i : i + h, j : j + w]
        if self.flip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return x


@dataclass(frozen=True)
class Source:
    """What a dataset builder returns: train and test storage, their uint8 transforms, shape and statistics."""

    train: TensorImages | ImageFiles
    test: TensorImages | ImageFiles
    train_transform: Callable
    eval_transform: Callable
    num_classes: int
    in_chans: int
    resolution: int
    mean: tuple[float, ...]  # per channel, of x/255: what the device normalises with
    std: tuple[float, ...]
    recal_size: int = 2048
    # the train transform as device ops on a decoded batch (ennas.data.augment), where data.decode=device exists
    device_train_transform: Callable | None = None


def few(names: Sequence[str], k: int = 3) -> str:
    """The first k names and how many more, for one-line messages."""
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more if names else "none"
