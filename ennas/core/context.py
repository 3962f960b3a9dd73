"""The run context: the resolved config and the objects every stage shares, built once per run."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Subset

from ennas.core import distributed as dist
from ennas.core.config import RunConfig
from ennas.core.evaluate import materialize
from ennas.core.probe import ProbeImages
from ennas.data import DataBundle, EpochSampler, build_data, make_loader
from ennas.seeding import seed_torch, stream_seed
from spaces.flops import FlopsTable, flops_table
from spaces.registry import SpaceSpec, get_space
from spaces.supernet import SuperNet

# Table 1's budgets at ImageNet scale (MACs): s1 as SPOS (<= 330M), s2/s3 at the largest found there.
IMAGENET_BUDGETS = {"s1": 330e6, "s2": 480e6, "s3": 535e6, "spos": 330e6, "cream": 400e6}


def default_budget(space: SpaceSpec, table: FlopsTable) -> float:
    """The paper's budget at ImageNet scale; elsewhere the middle of the space's FLOPs range."""
    if space.scale == "imagenet" and table.resolution == 224:
        return IMAGENET_BUDGETS[space.name]
    low, high = table.bounds()
    return low + 0.5 * (high - low)


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

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.space = get_space(cfg.space, cfg.scale)
        dcfg = cfg.data
        self.data = build_data(
            dcfg.dataset,
            dcfg.root,
            seed=cfg.seed,
            search_size=dcfg.search_size,
            recal_size=dcfg.recal_size,
            train_size=dcfg.train_size,
            **dcfg.options,
        )
        self.table = flops_table(
            self.space.name, self.space.scale, self.data.resolution, self.data.num_classes, self.data.in_chans
        )

    @functools.cached_property
    def supernet(self) -> SuperNet:
        """The weight-sharing supernet, initialised from the run's seed (built on first use)."""
        seed_torch(self.cfg.seed, "init")
        net = SuperNet(self.space, self.data.num_classes, self.data.in_chans).to(self.device)
        if self.cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    @property
    def flops_budget(self) -> float:
        """The search's FLOPs budget in MACs: the configured one or the space's default."""
        return self.cfg.search.flops_budget or default_budget(self.space, self.table)

    def shard_loader(self, dataset, batch_size: int, limit: int | None = None, seed_key: str = "search"):
        """A fixed, unshuffled loader over this rank's shard of the first `limit` items of `dataset`."""
        n = len(dataset) if limit is None else min(limit, len(dataset))
        sampler = EpochSampler(n, seed=self.cfg.seed, shuffle=False, rank=dist.rank(), world_size=dist.world_size())
        return make_loader(
            dataset,
            batch_size,
            sampler=list(sampler),
            seed=stream_seed(self.cfg.seed, seed_key),
            num_workers=self.cfg.data.num_workers,
        )

    @functools.cached_property
    def search_batches(self):
        """The fixed subset of the search split that scores every candidate (held in memory when small)."""
        s = self.cfg.search
        return materialize(self.shard_loader(self.data.search, s.eval_batch_size, s.eval_images))

    @functools.cached_property
    def recal_batches(self):
        """The fixed BN-recalibration batches (one seeded draw of augmentation, reused for every candidate).

        The augmentation draws from torch's global RNG: it is forked, so drawing these batches changes no
        other stage's draws whenever they happen to be first needed.
        """
        s = self.cfg.search
        limit = s.recal_batches * s.recal_batch_size * dist.world_size()
        with torch.random.fork_rng(devices=[]):
            seed_torch(self.cfg.seed, "search", 1)
            return materialize(self.shard_loader(self.data.recal, s.recal_batch_size, limit, "search"))

    @functools.cached_property
    def probe_images(self) -> ProbeImages:
        """The fixed search-split images teachers and students are measured on every epoch: the first
        `distill.probe_fit_images` (default half) fit ensemble weights on every rank alike, the rest are scored,
        sharded over ranks."""
        d, batch = self.cfg.distill, self.cfg.search.eval_batch_size
        n = min(d.probe_images, len(self.data.search))
        fit = n // 2 if d.probe_fit_images is None else min(d.probe_fit_images, n - 1)
        search_seed = stream_seed(self.cfg.seed, "search")
        fit_loader = make_loader(
            Subset(self.data.search, range(fit)), batch, sampler=list(range(fit)), seed=search_seed
        )
        score = self.shard_loader(Subset(self.data.search, range(fit, n)), batch)
        return ProbeImages(materialize(fit_loader), materialize(score))

    def file(self, name: str) -> Path:
        """A path inside the run's output folder."""
        return self.out / name
