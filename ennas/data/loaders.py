"""Seeded samplers and loaders, so every epoch's data order is a function of (seed, epoch) on every rank.

Augmentation in worker processes is a function of (seed, rank, worker) and, for a training loop's
`EpochLoader`, of the epoch too; in the main process (num_workers = 0) it draws from torch's global RNG.
Batches of file bytes (data.decode=device) are augmented on the device instead, each from a seed of
(seed, epoch, step) the EpochLoader stamps on it: the same on every rank and with any number of workers.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ennas.data.jpeg import EncodedView
from ennas.seeding import generator

DEVICE_AUGMENT_KEY = 0xDEC0DE  # keeps the device augmentation's (seed, epoch, step) stream apart from the others


class EpochSampler(Sampler[int]):
    """Each epoch's slice of a seeded permutation, sharded across ranks like DistributedSampler.

    With ``fraction = 1/m``, epoch ``e`` takes chunk ``e % m`` of the permutation seeded by
    ``(seed, e // m)``, so m consecutive epochs cover the data exactly once (EnNAS sees 1/m of
    the training set per epoch). The chunk is padded by wrapping to a multiple of ``world_size``
    and rank ``r`` takes ``chunk[r::world_size]``, so every rank gets the same number of samples.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        fraction: float = 1.0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n <= 0:
            raise ValueError(f"EpochSampler needs a non-empty dataset, got n={n}")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        m = round(1 / fraction)
        if abs(m * fraction - 1) > 1e-6:
            raise ValueError(f"fraction must be 1/m for a whole number m, got {fraction}")
        if m > n:
            raise ValueError(f"fraction 1/{m} leaves empty epochs for a dataset of {n}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.n, self.seed, self.chunks, self.shuffle = n, seed, m, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose chunk the next iteration yields (call before every epoch)."""
        self.epoch = epoch

    def epoch_indices(self) -> list[int]:
        """The whole epoch's indices before sharding: chunk (epoch mod m) of the seeded permutation."""
        rnd = self.epoch // self.chunks
        if self.shuffle:
            order = torch.randperm(self.n, generator=generator(self.seed, rnd))
        else:
            order = torch.arange(self.n)
        lo, hi = self._chunk_bounds()
        return order[lo:hi].tolist()

    def _chunk_bounds(self) -> tuple[int, int]:
        # Balanced bounds (sizes differ by at most one), so the m chunks tile 0..n exactly.
        c = self.epoch % self.chunks
        return c * self.n // self.chunks, (c + 1) * self.n // self.chunks

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()
        total = len(self) * self.world_size
        # Pad by wrapping (repeating if the chunk is shorter than the padding), as DistributedSampler does.
        indices += (indices * math.ceil(total / len(indices)))[: total - len(indices)]
        return iter(indices[self.rank : total : self.world_size])

    def __len__(self) -> int:
        """Samples this rank yields in the current epoch (chunk sizes may differ by one between epochs)."""
        lo, hi = self._chunk_bounds()
        return math.ceil((hi - lo) / self.world_size)


def _mixed_seed(*keys: int) -> int:
    """A 63-bit seed mixing integer keys (SeedSequence spreads nearby keys apart)."""
    state = np.random.SeedSequence([k & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _seed_worker(rank: int, worker_id: int) -> None:
    """Re-seed a worker of rank r > 0, whose DataLoader seeds worker k exactly as on rank 0.

    Rank 0 keeps DataLoader's own seeds, so single-process runs augment as before.
    """
    if rank:
        seed = _mixed_seed(torch.initial_seed(), rank)
        torch.manual_seed(seed)
        random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler | None = None,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds come from ``seed`` (and ``rank``), with CPU-friendly settings.

    Pass the process's rank where ranks load different items with random augmentation, and 0 where every
    rank must draw the same images (fixed batches).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        # Seeds the shuffle and each worker's base seed, hence the augmentation of every worker.
        generator=generator(seed),
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=functools.partial(_seed_worker, rank) if num_workers and rank else None,
        # Pinning only helps host-to-GPU copies; workers are kept alive because forking a
        # process holding a large in-memory dataset every epoch costs seconds on 2 cores.
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )


class _Window(Sampler[tuple[int, int]]):
    """The (epoch, index) keys the next iteration of an EpochLoader yields; replaced before every epoch."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _EpochItems(Dataset):
    """Items looked up by (epoch, index); a worker re-seeds torch at its first item of every epoch.

    A persistent worker would otherwise carry its random stream from epoch to epoch, and a run resumed at an
    epoch boundary (new workers) would augment differently from the uninterrupted one. The seed is a function
    of (seed, epoch, rank, worker), so ranks differ and an epoch's augmentation does not depend on the earlier
    ones. In the main process nothing is re-seeded: with num_workers = 0 the draws come from torch's global
    RNG, whose state the checkpoints hold, which keeps mid-epoch resumes exact.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int) -> None:
        self.dataset, self.seed, self.rank = dataset, seed, rank
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        worker = get_worker_info()
        if worker is not None and epoch != self.epoch:
            seed = _mixed_seed(self.seed, epoch, self.rank, worker.id)
            torch.manual_seed(seed)
            random.seed(seed)
            self.epoch = epoch
        return self.dataset[i]


class EpochLoader:
    """One DataLoader for every epoch of a training loop, with persistent workers; `epoch()` aims it at an epoch.

    Building a DataLoader per epoch restarts its workers (seconds for a large in-memory dataset, and the
    warm-up of every worker's prefetch queue); this one keeps them and only swaps the indices it yields.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        seed: int,
        fraction: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.sampler = EpochSampler(len(dataset), seed=seed, fraction=fraction, rank=rank, world_size=world_size)
        self.window = _Window()
        items = _EpochItems(dataset, seed, rank)
        self.encoded = isinstance(dataset, EncodedView)
        self.seed, self.batch_size = seed, batch_size
        collate = EncodedView.collate if self.encoded else None
        self.loader = make_loader(
            items,
            batch_size,
            sampler=self.window,
            drop_last=True,
            seed=seed,
            num_workers=num_workers,
            collate_fn=collate,
        )

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> DataLoader | Iterable:
        """The loader, set to yield this rank's samples start..stop of `epoch` (a resumed epoch starts later).

        Over an EncodedView, its batches come stamped with the seed of their (epoch, step) instead.
        """
        self.sampler.set_epoch(epoch)
        self.window.keys = [(epoch, i) for i in list(self.sampler)[start:stop]]
        if self.encoded:
            return _Stamped(self.loader, self.seed, epoch, start // self.batch_size)
        return self.loader


class _Stamped:
    """An epoch's batches of file bytes, each given the seed of its augmentation from (seed, epoch, step).

    Stamped in the main process, so the seed depends on the step alone, not on the worker or rank that read the
    batch: a resume in the middle of an epoch (start > 0) augments exactly as the uninterrupted run.
    """

    def __init__(self, loader: DataLoader, seed: int, epoch: int, first_step: int) -> None:
        self.loader, self.seed, self.epoch, self.first_step = loader, seed, epoch, first_step

    def __iter__(self) -> Iterator:
        for step, (x, y) in enumerate(self.loader, start=self.first_step):
            yield x.seeded(_mixed_seed(self.seed, DEVICE_AUGMENT_KEY, self.epoch, step)), y

    def __len__(self) -> int:
        return len(self.loader)
