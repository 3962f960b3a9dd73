"""The run context: the resolved config and the objects every stage shares, built once per run."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from ennas.core import distributed as dist
from ennas.core.config import RunConfig
from ennas.core.probe import ProbeImages
from ennas.data import DataBundle, DeviceBatches, EpochSampler, FixedBatches, build_data, make_loader
from ennas.data.fixed import draw
from ennas.seeding import seed_torch, stream_seed
from spaces.flops import FlopsTable, flops_table
from spaces.registry import SpaceSpec, get_space
from spaces.supernet import SuperNet

# Table 1's budgets at ImageNet scale (MACs): s1 as SPOS (<= 330M), s2/s3 at the largest found there.
IMAGENET_BUDGETS = {"s1": 330e6, "s2": 480e6, "s3": 535e6, "spos": 330e6, "cream": 400e6}


def default_budget(space: SpaceSpec, table: FlopsTable) -> float:
    """The paper's budget at ImageNet scale; elsewhere, and for the reference spaces without one in the paper (dna),
    the middle of the space's FLOPs range."""
    if space.scale == "imagenet" and table.resolution == 224 and space.name in IMAGENET_BUDGETS:
        return IMAGENET_BUDGETS[space.name]
    low, high = table.bounds()
    return low + 0.5 * (high - low)


def open_data(cfg: RunConfig) -> DataBundle:
    """The run's dataset, cut into its seeded splits (also how a plan checks its data before any work)."""
    d = cfg.data
    return build_data(
        d.dataset,
        d.root,
        seed=cfg.seed,
        search_size=d.search_size,
        recal_size=d.recal_size,
        train_size=d.train_size,
        test_size=d.test_size,
        **d.options,
    )


@dataclass
class RunContext:
    """Config, space, data, device and output folder of one run, plus the supernet all stages share."""

    cfg: RunConfig
    out: Path
    device: torch.device
    space: SpaceSpec = field(init=False)
    data: DataBundle = field(init=False)
    table: FlopsTable = field(init=False)
    started: float = field(default_factory=time.time)
    # the training loop's EpochLoader (persistent workers), kept across its epochs by ennas.core.loop.epoch_loader
    loaders: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.space = get_space(cfg.space, cfg.scale)
        self.data = open_data(cfg)
        self.table = flops_table(
            self.space.name, self.space.scale, self.data.resolution, self.data.num_classes, self.data.in_chans
        )

    @functools.cached_property
    def supernet(self) -> SuperNet:
        """The weight-sharing supernet, initialised from the run's seed (built on first use)."""
        seed_torch(self.cfg.seed, "init")
        net = SuperNet(self.space, self.data.num_classes, self.data.in_chans, self.cfg.supernet.sharing)
        net = net.to(self.device)
        if self.cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    @property
    def flops_budget(self) -> float:
        """The search's FLOPs budget in MACs: the configured one or the space's default."""
        return self.cfg.search.flops_budget or default_budget(self.space, self.table)

    def shard_loader(self, dataset, batch_size: int, limit: int | None = None, seed_key: str = "search"):
        """A fixed, unshuffled loader over this rank's shard of the first `limit` items, normalised on the device."""
        return DeviceBatches(self._loader(dataset, batch_size, self._shard(dataset, limit), seed_key), *self._device)

    def _shard(self, dataset: Dataset, limit: int | None) -> list[int]:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        return list(EpochSampler(n, seed=self.cfg.seed, shuffle=False, rank=dist.rank(), world_size=dist.world_size()))

    def _loader(self, dataset: Dataset, batch_size: int, indices: list[int], seed_key: str = "search"):
        # Rank 0's worker seeds on every rank: where ranks load the same items they draw the same augmentation.
        seed = stream_seed(self.cfg.seed, seed_key)
        return make_loader(dataset, batch_size, sampler=indices, seed=seed, num_workers=self.cfg.data.num_workers)

    @property
    def _device(self) -> tuple:
        return self.data.normalize, self.device

    def fixed_batches(self, name: str, dataset: Dataset, batch_size: int, n: int) -> DeviceBatches:
        """The first n items of `dataset` in batches, drawn once and identical on every rank (not sharded).

        Held as uint8 in host memory up to `data.host_cache_gib`, else drawn by rank 0 into fixed/NAME.*.npy in
        the run folder and memory-mapped by every rank, so a candidate's recalibration and score do not depend
        on the world size.
        """
        n = min(n, len(dataset))
        size = n * self.data.in_chans * self.data.resolution**2
        if size <= self.cfg.data.host_cache_gib * 2**30:
            batches = draw(self._loader(dataset, batch_size, list(range(n))), n, batch_size)
        else:
            path = self.file(f"fixed/{name}")
            if dist.is_main():
                draw(self._loader(dataset, batch_size, list(range(n))), n, batch_size, path)
            dist.barrier()
            batches = FixedBatches.open(path, batch_size)
        return DeviceBatches(batches, *self._device)

    @functools.cached_property
    def search_batches(self) -> DeviceBatches:
        """The fixed subset of the search split that scores every candidate, the whole of it on every rank."""
        s = self.cfg.search
        return self.fixed_batches("search", self.data.search, s.eval_batch_size, s.eval_images)

    @functools.cached_property
    def recal_batches(self) -> DeviceBatches:
        """The fixed BN-recalibration batches (one seeded draw of augmentation, reused for every candidate).

        The same `search.recal_batches` batches on every rank, whatever the world size. The augmentation draws
        from torch's global RNG (num_workers = 0): it is forked, so drawing these batches changes no other
        stage's draws whenever they happen to be first needed.
        """
        s = self.cfg.search
        with torch.random.fork_rng(devices=[]):
            seed_torch(self.cfg.seed, "search", 1)
            return self.fixed_batches(
                "recal", self.data.recal, s.recal_batch_size, s.recal_batches * s.recal_batch_size
            )

    @functools.cached_property
    def probe_images(self) -> ProbeImages:
        """The fixed search-split images teachers and students are measured on every epoch: the first
        `distill.probe_fit_images` (default half) fit ensemble weights on every rank alike, the rest are scored,
        sharded over ranks."""
        d, batch = self.cfg.distill, self.cfg.search.eval_batch_size
        n = min(d.probe_images, len(self.data.search))
        fit = n // 2 if d.probe_fit_images is None else min(d.probe_fit_images, n - 1)
        fit_images = self.fixed_batches("probe_fit", Subset(self.data.search, range(fit)), batch, fit)
        part = Subset(self.data.search, range(fit, n))
        shard = self._shard(part, None)
        score = draw(self._loader(part, batch, shard), len(shard), batch)
        return ProbeImages(fit_images, DeviceBatches(score, *self._device))

    def file(self, name: str) -> Path:
        """A path inside the run's output folder."""
        return self.out / name
