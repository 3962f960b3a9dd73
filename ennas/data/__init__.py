"""The data layer: one registry of datasets, each cut once into seeded train / search / recal / test views.

Storage and views live in ennas.data.storage, one module per dataset beside it, samplers and loaders in
ennas.data.loaders, batches drawn once in ennas.data.fixed, and what happens on the device (normalising the
uint8 images every view returns) in ennas.data.device. With data.decode=device, ImageNet's training images
travel as file bytes (ennas.data.jpeg) and are decoded and augmented on the device (ennas.data.augment).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ennas.data import fashion_mnist, imagenet, synthetic
from ennas.data.device import DeviceBatches, Normalize
from ennas.data.fixed import FixedBatches
from ennas.data.jpeg import EncodedBatch, EncodedView
from ennas.data.loaders import EpochLoader, EpochSampler, make_loader
from ennas.data.storage import DataError, ImageFiles, Source, View
from ennas.seeding import SPLIT_KEY, generator

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "DeviceBatches",
    "EncodedBatch",
    "EncodedView",
    "EpochLoader",
    "EpochSampler",
    "FixedBatches",
    "Normalize",
    "View",
    "build_data",
    "make_loader",
    "split_indices",
]


DATASETS: dict[str, Callable[..., Source]] = {
    "fashion-mnist": fashion_mnist.fashion_mnist,
    "imagenet": imagenet.imagenet,
    "synthetic": synthetic.synthetic,
}
DECODE = ("cpu", "device")  # where training images are decoded and augmented (data.decode)
SEARCH_FRACTION = 50_000 / 1_281_167  # SPOS and the paper hold out 50,000 of ImageNet's training images


@dataclass(frozen=True)
class DataBundle:
    """Everything a run takes from a dataset; only final evaluation touches `test`.

    Views return uint8 images; `to_device` (or `normalize` on a batch already there) turns them into the
    network's input, the one place that happens.
    """

    train: View  # the training set minus the search split (its first `train_size` items), train transforms
    search: View  # held out of the training set for architecture search, eval transforms
    recal: View  # a fixed subset of `train` for BN recalibration, train transforms (as SPOS)
    test: View  # the real test / validation set, eval transforms
    num_classes: int
    in_chans: int
    resolution: int
    normalize: Normalize
    name: str = ""
    device_train: Callable | None = None  # the train transform on a decoded batch (data.decode=device), if any

    def to_device(
        self, x: torch.Tensor | EncodedBatch, device: torch.device | str, non_blocking: bool = True
    ) -> torch.Tensor:
        """A batch of uint8 images moved to `device` and normalised there (float images are taken as normalised).

        An EncodedBatch (data.decode=device) is decoded and augmented on `device` first, from its own seed.
        """
        if isinstance(x, EncodedBatch):
            return self.normalize(self.device_train(x.decode(device), x.generator()))
        return self.normalize(x.to(device, non_blocking=non_blocking))

    def loader_view(self, view: Dataset, decode: str = "cpu") -> Dataset:
        """What a training loop's workers load for `view`: the view itself, or its files' bytes (data.decode=device).

        Only the training view changes; search, recal and test batches are drawn once per run and keep the CPU
        path. Device decoding exists where the dataset gives a device transform (ImageNet's image files).
        """
        if decode not in DECODE:
            raise DataError(f"data.decode must be one of {', '.join(DECODE)}, got {decode!r}")
        if decode == "cpu" or view is not self.train:
            return view
        if self.device_train is None or not isinstance(view, View) or not isinstance(view.base, ImageFiles):
            raise DataError(
                f"data.decode=device decodes ImageNet's JPEG files on the device; dataset '{self.name}' has no "
                "such path (use data.decode=cpu)"
            )
        return EncodedView(view.base, view.indices)


def split_indices(
    n: int, *, seed: int, search_size: int, recal_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, search, recal) indices into a training set of n, a function of (seed, n) alone."""
    if not 0 <= search_size < n:
        raise DataError(f"search_size={search_size} must be in [0, {n}) for a training set of {n}")
    perm = torch.randperm(n, generator=generator(seed, SPLIT_KEY, 0))
    search, train = perm[:search_size], perm[search_size:].sort().values
    if not 0 <= recal_size <= len(train):
        raise DataError(f"recal_size={recal_size} must be in [0, {len(train)}], the size of the train split")
    # Recal keeps its random order, so sequential batches mix classes (ImageFolder sorts by class).
    recal = train[torch.randperm(len(train), generator=generator(seed, SPLIT_KEY, 1))[:recal_size]]
    return train, search, recal


TOO_LARGE_SHARE = 0.5  # a search split over this share of the training set was not meant for it: it is scaled
MAX_SEARCH_SHARE = 0.25  # down to this share
MIN_SEARCH_PER_CLASS = 2  # the floor: below it a candidate's score cannot tell classes apart


def fit_splits(n: int, num_classes: int, search_size: int | None, recal_size: int) -> tuple[int, int]:
    """Search and recal split sizes that fit a training set of n images.

    The presets' sizes are set for the full dataset; on a small one (a test folder, a subset) a search split over a
    half of the images is cut to a quarter, down to a floor of two images per class, with a note; a training
    set too small even for the floor (and three times as many training images) is a one-line DataError naming the
    setting. Recal takes at most the train split. The default search split is SPOS's share of ImageNet.
    """
    floor = MIN_SEARCH_PER_CLASS * num_classes
    if search_size is None:
        search_size = max(round(n * SEARCH_FRACTION), min(floor, int(n * MAX_SEARCH_SHARE)))
    elif search_size > n * TOO_LARGE_SHARE and search_size > floor:
        if n * MAX_SEARCH_SHARE < floor:
            raise DataError(
                f"the training set has {n} images, too few for a search split of at least {floor} ({MIN_SEARCH_PER_CLASS} "
                f"per class) with three times as many left to train on; use at least {4 * floor} training images, "
                f"or set data.search_size (now {search_size}) below {n}"
            )
        scaled = max(floor, int(n * MAX_SEARCH_SHARE))
        print(
            f"note: data.search_size {search_size} is over half of the {n} training images; using {scaled} "
            "(set data.search_size to choose)",
            file=sys.stderr,
        )
        search_size = scaled
    return search_size, min(recal_size, max(n - search_size, 0))


def build_data(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    search_size: int | None = None,
    recal_size: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    **kw: Any,
) -> DataBundle:
    """Load dataset `name` from the registry and cut it into seeded train / search / recal / test views.

    `train_size` keeps only the first n items of the (seeded) train split, after recal was drawn from all of
    it: proxy runs train on a fixed prefix. `test_size` keeps the first n test images, for checks that need a
    finite accuracy rather than a precise one (a full test pass is most of a short run on a slow CPU).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    builder = DATASETS[name]
    options = [p for p in inspect.signature(builder).parameters if p != "root"]
    unknown = sorted(set(kw) - set(options))
    if unknown:
        known = ", ".join(options)
        raise DataError(f"dataset '{name}' has no option {', '.join(unknown)}; its options: {known}")
    src = builder(root, **kw)
    n = len(src.train)
    search_size, recal_size = fit_splits(
        n, src.num_classes, search_size, src.recal_size if recal_size is None else recal_size
    )
    train, search, recal = split_indices(n, seed=seed, search_size=search_size, recal_size=recal_size)
    return DataBundle(
        train=View(src.train, train[:train_size], src.train_transform),
        search=View(src.train, search, src.eval_transform),
        recal=View(src.train, recal, src.train_transform),
        test=View(src.test, torch.arange(len(src.test))[:test_size], src.eval_transform),
        num_classes=src.num_classes,
        in_chans=src.in_chans,
        resolution=src.resolution,
        normalize=Normalize(tuple(src.mean), tuple(src.std)),
        name=name,
        device_train=src.device_train_transform,
    )
