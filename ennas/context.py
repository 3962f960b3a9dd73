"""The run context: the resolved config and the objects every stage shares, built once per run."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ennas import distributed as dist
from ennas.config import RunConfig
from ennas.data import DataBundle, EpochSampler, build_data, make_loader
from ennas.datasets import View
from ennas.evaluate import materialize
from spaces.flops import FlopsTable, flops_table
from spaces.registry import SpaceSpec, get_space
from spaces.supernet import SuperNet

# Keys that separate the random streams of the stages (see `stage_seed`).
STREAMS = {"init": 0, "paths": 1, "supernet": 2, "search": 3, "retrain": 4, "probe": 5, "diversity": 6, "teacher": 7}


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed for one named random stream of a run, so stages do not depend on each other's draws."""
    state = np.random.SeedSequence([seed, STREAMS[stream], *keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


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
            **dcfg.options,
        )
        if dcfg.train_size is not None:  # proxy runs train on a fixed prefix of the (seeded) train split
            train = self.data.train
            subset = View(train.base, train.indices[: dcfg.train_size], train.transform)
            self.data = dataclasses.replace(self.data, train=subset)
        self.table = flops_table(
            self.space.name, self.space.scale, self.data.resolution, self.data.num_classes, self.data.in_chans
        )

    @functools.cached_property
    def supernet(self) -> SuperNet:
        """The weight-sharing supernet, initialised from the run's seed."""
        torch.manual_seed(stream_seed(self.cfg.seed, "init"))
        net = SuperNet(self.space, self.data.num_classes, self.data.in_chans).to(self.device)
        if self.cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    @property
    def flops_budget(self) -> float:
        """The search's FLOPs budget in MACs: the configured one or the space's default."""
        return self.cfg.search.flops_budget or default_budget(self.space, self.table)

    def path_rng(self, epoch: int, step: int) -> np.random.Generator:
        """The generator that samples the paths of one step: a function of (seed, epoch, step) only."""
        return np.random.default_rng([self.cfg.seed, STREAMS["paths"], epoch, step])

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
        """The fixed BN-recalibration batches (one draw of augmentation, reused for every candidate)."""
        s = self.cfg.search
        torch.manual_seed(stream_seed(self.cfg.seed, "search", 1))
        limit = s.recal_batches * s.recal_batch_size * dist.world_size()
        return materialize(self.shard_loader(self.data.recal, s.recal_batch_size, limit, "search"))

    @functools.cached_property
    def probe_batches(self):
        """The fixed search-split images on which teachers and students are measured every epoch."""
        d = self.cfg.distill
        return materialize(self.shard_loader(self.data.search, self.cfg.search.eval_batch_size, d.probe_images))

    def file(self, name: str) -> Path:
        """A path inside the run's output folder."""
        return self.out / name
