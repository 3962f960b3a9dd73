"""The data layer: one registry of datasets, each cut once into seeded train / search / recal / test views.

Storage and views live in ennas.data.storage, one module per dataset beside it, samplers and loaders in
ennas.data.loaders.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ennas.data import fashion_mnist, imagenet, synthetic
from ennas.data.loaders import EpochSampler, make_loader
from ennas.data.storage import DataError, Source, View
from ennas.seeding import SPLIT_KEY, generator

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "EpochSampler",
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
SEARCH_FRACTION = 50_000 / 1_281_167  # SPOS and the paper hold out 50,000 of ImageNet's training images


@dataclass(frozen=True)
class DataBundle:
    """Everything a run takes from a dataset; only final evaluation touches `test`."""

    train: View  # the training set minus the search split (its first `train_size` items), train transforms
    search: View  # held out of the training set for architecture search, eval transforms
    recal: View  # a fixed subset of `train` for BN recalibration, train transforms (as SPOS)
    test: View  # the real test / validation set, eval transforms
    num_classes: int
    in_chans: int
    resolution: int
    name: str = ""


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


def build_data(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    search_size: int | None = None,
    recal_size: int | None = None,
    train_size: int | None = None,
    **kw: Any,
) -> DataBundle:
    """Load dataset `name` from the registry and cut it into seeded train / search / recal / test views.

    `train_size` keeps only the first n items of the (seeded) train split, after recal was drawn from all of
    it: proxy runs train on a fixed prefix.
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
    search_size = round(n * SEARCH_FRACTION) if search_size is None else search_size
    if recal_size is None:
        recal_size = min(src.recal_size, n - search_size)
    train, search, recal = split_indices(n, seed=seed, search_size=search_size, recal_size=recal_size)
    return DataBundle(
        train=View(src.train, train[:train_size], src.train_transform),
        search=View(src.train, search, src.eval_transform),
        recal=View(src.train, recal, src.train_transform),
        test=View(src.test, torch.arange(len(src.test)), src.eval_transform),
        num_classes=src.num_classes,
        in_chans=src.in_chans,
        resolution=src.resolution,
        name=name,
    )
