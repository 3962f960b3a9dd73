"""Seeded samplers and loaders, so every epoch's data order is a function of (seed, epoch) on every rank."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ennas.seeding import generator


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


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler | None = None,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds come from ``seed``, with CPU-friendly settings."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        # Seeds the shuffle and each worker's base seed, hence the augmentation of every worker.
        generator=generator(seed),
        num_workers=num_workers,
        drop_last=drop_last,
        # Pinning only helps host-to-GPU copies; workers are kept alive because forking a
        # process holding a large in-memory dataset every epoch costs seconds on 2 cores.
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
