"""One registry of datasets, each cut into seeded train / search / BN-recalibration / test splits."""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ennas.loaders import generator

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FIX = "apt-get install dataset-fashion-mnist, or pass --data ROOT"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)  # measured on its 60,000 training images
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SEARCH_FRACTION = 50_000 / 1_281_167  # SPOS and the paper hold out 50,000 of ImageNet's training images
SPLIT_KEY = 0xDA7A  # keeps data draws apart from the EpochSampler's (seed, round) streams
# What PIL raises on a truncated, corrupt or hostile file.
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DataError(Exception):
    """A data problem the user can fix; the CLI prints it as one line, without a traceback."""

    def __init__(self, message: str) -> None:
        # DataLoader re-raises a worker's error with the worker's traceback; keep our one line.
        if message.startswith("Caught DataError"):
            message = message.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]
        super().__init__(message)


# ---- storage: the data once in memory or on disk; views add indices and transforms ----


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
                f"empty class folder(s) in {folder}: {_few(empty)}; each needs at least one image "
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
        except _UNREADABLE as err:
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
            except _UNREADABLE:
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
    """Per-item augmentation of a uint8 CHW tensor, cheap on 2 cores: padded random crop, flip, normalise.

    Draws come from torch's RNG, which torch.manual_seed and DataLoader's per-worker seeding fix.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, pad: int = 0, flip: bool = False):
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self.pad, self.flip = pad, flip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float().div_(255)
        if self.pad:
            h, w = x.shape[-2:]
            i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = F.pad(x, (self.pad,) * 4)[:, i : i + h, j : j + w]
        if self.flip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class Source:
    """What a dataset builder returns: train and test storage, their transforms and their shape."""

    train: TensorImages | ImageFiles
    test: TensorImages | ImageFiles
    train_transform: Callable
    eval_transform: Callable
    num_classes: int
    in_chans: int
    resolution: int
    recal_size: int = 2048


# ---- Fashion-MNIST: the embedded default ----


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes with numpy, checking the header against the length."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}); {FASHION_MNIST_FIX}") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    if ndim == 0 or raw[:3] != b"\0\0\x08" or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad header); {FASHION_MNIST_FIX}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + math.prod(dims)
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {expected:,} bytes, it has {len(raw):,}; "
            f"{FASHION_MNIST_FIX}"
        )
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_idx_pair(folder: Path, prefix: str) -> TensorImages:
    files = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte"
        found = [folder / f for f in (f"{name}.gz", name) if (folder / f).is_file()]
        if not found:
            raise DataError(f"{folder} has no {name}.gz (nor {name}); {FASHION_MNIST_FIX}")
        files.append(found[0])
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DataError(
            f"{files[0].name} {images.shape} and {files[1].name} {labels.shape} do not form a "
            f"Fashion-MNIST split; {FASHION_MNIST_FIX}"
        )
    # Copies: frombuffer views are read-only, which torch warns about.
    return TensorImages(torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64)))


def fashion_mnist(root: str | Path | None = None) -> Source:
    """The embedded default: Debian's dataset-fashion-mnist IDX files, held in memory as uint8 tensors."""
    folder = Path(root) if root is not None else FASHION_MNIST_ROOT
    if not folder.is_dir():
        where = "not found at" if root is None else "root does not exist:"
        raise DataError(f"Fashion-MNIST {where} {folder}; {FASHION_MNIST_FIX}")
    train, test = _read_idx_pair(folder, "train"), _read_idx_pair(folder, "t10k")
    stats = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return Source(
        train=train,
        test=test,
        train_transform=TensorTransform(*stats, pad=2, flip=True),
        eval_transform=TensorTransform(*stats),
        num_classes=10,
        in_chans=1,
        resolution=28,
    )


# ---- ImageNet: ILSVRC2012 in ImageFolder layout ----


def _few(names: Sequence[str], k: int = 3) -> str:
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more if names else "none"


def _imagenet_classes(root: str | Path | None) -> tuple[Path, list[str]]:
    """Check the train/<wnid>/, val/<wnid>/ layout and return the root and the class folders."""
    if root is None:
        raise DataError("imagenet needs --data ROOT, the ILSVRC2012 folder holding train/ and val/")
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"ImageNet root {folder} does not exist; pass --data ROOT holding train/ and val/")
    classes = {}
    for split in ("train", "val"):
        path = folder / split
        if not path.is_dir():
            raise DataError(f"{folder} has no {split}/ folder; expected {split}/<wnid>/*.JPEG under it")
        entries = list(os.scandir(path))
        classes[split] = sorted(e.name for e in entries if e.is_dir())
        if not classes[split]:
            files = sum(e.is_file() for e in entries)
            raise DataError(
                f"{path} holds {files} file(s) but no class folders; sort its images into "
                f"{split}/<wnid>/ folders (for val/, e.g. with the usual valprep.sh)"
            )
    train, val = set(classes["train"]), set(classes["val"])
    if train != val:
        raise DataError(
            f"class folders differ between train/ and val/ (only in train: {_few(sorted(train - val))}; "
            f"only in val: {_few(sorted(val - train))}); both need the same <wnid> folders"
        )
    return folder, classes["train"]


def imagenet(
    root: str | Path | None = None,
    *,
    resolution: int = 224,
    crop_pct: float = 0.875,
    verify: bool = False,
    max_bad: int | None = None,
    bad_fraction: float = 0.01,
) -> Source:
    """ILSVRC2012 as train/<wnid>/ and val/<wnid>/ folders, with the standard SPOS/timm transforms."""
    folder, classes = _imagenet_classes(root)
    train, test = (ImageFiles(folder / split, max_bad=max_bad, bad_fraction=bad_fraction) for split in ("train", "val"))
    if verify:
        train.verify()
        test.verify()
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_transform = T.Compose(
        [
            T.RandomResizedCrop(resolution),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            T.ToTensor(),
            normalize,
        ]
    )
    eval_size = int(resolution / crop_pct)  # 256 for 224, as timm floors it
    eval_transform = T.Compose([T.Resize(eval_size), T.CenterCrop(resolution), T.ToTensor(), normalize])
    return Source(
        train=train,
        test=test,
        train_transform=train_transform,
        eval_transform=eval_transform,
        num_classes=len(classes),
        in_chans=3,
        resolution=resolution,
        recal_size=200 * 128,  # SPOS: 200 batches of 128
    )


# ---- synthetic: small, deterministic and learnable, for fast tests ----


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
    stats = pixels.mean(1).tolist(), pixels.std(1).tolist()
    return Source(
        train=train,
        test=test,
        train_transform=TensorTransform(*stats, pad=shift),  # no flip: prototypes are not symmetric
        eval_transform=TensorTransform(*stats),
        num_classes=num_classes,
        in_chans=in_chans,
        resolution=resolution,
    )


DATASETS: dict[str, Callable[..., Source]] = {
    "fashion-mnist": fashion_mnist,
    "imagenet": imagenet,
    "synthetic": synthetic,
}
