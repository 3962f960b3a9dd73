"""DNA (Li et al., CVPR 2020): blockwise distillation of the supernet from a trained teacher, then a traversal.

Following the official code (changlin31/DNA): the supernet is cut into blocks aligned with the teacher's
stages; block i learns to map the teacher's stage i-1 features to its stage i features (MSE), one uniform
random path per step, blocks trained one after another with Adam (lr 0.002 for the first and last block,
0.005 between, x0.9 per epoch, weight decay 1e-4). Every candidate path of every block is then rated by
mean|student - teacher| / std(teacher) on the search split after BN recalibration, and the architecture is
the one minimising the summed ratings under the FLOPs budget. Differences, by choice: the teacher is
trained by our own pipeline, once per dataset (`python -m benchmark.teacher`, loaded by every run as the paper
loads its pretrained one) or inside the run, or loaded from a local timm checkpoint, and frozen in eval mode;
the supernet's widths are fixed by the space, so 1x1 adapters map teacher widths to the block's input and its
output to the teacher's widths; block 0's input is the supernet's own stem on the image. The module layout:
`source` (which teacher, and whether it fits), `teacher` (build, align, train or load), `blocks` (the trained module and its step policy), `rating` (rating block
paths), `traverse` (the exact search); this module is the method that ties them together.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from baselines.dna.blocks import BlockDistillation, DNABlock
from baselines.dna.rating import RatingLog, calibrate
from baselines.dna.source import TeacherSource, teacher_source
from baselines.dna.teacher import (
    adapter,
    block_pairs,
    block_ranges,
    block_sizes,
    build_teacher,
    prepare_teacher,
    teacher_loop,
)
from baselines.dna.traverse import traverse
from ennas.core import distributed as dist
from ennas.core.config import Options
from ennas.core.evolution import run_evolution, search_record
from ennas.core.io import write_jsonl
from ennas.core.loop import EpochPlan, Loop, build_loop, train_epochs
from ennas.core.method import Method, register_method
from ennas.core.optim import param_groups
from ennas.core.search import check_budget
from ennas.seeding import seed_torch
from spaces.arch import Arch, encode
from spaces.supernet import SuperNet

if TYPE_CHECKING:
    from ennas.core.context import RunContext


@dataclass(frozen=True)
class DNAOptions(Options):
    """The `dna` config section: the teacher, block training and rating (official values where they exist)."""

    teacher: str = ""  # timm model name of the teacher ("" picks one for the scale)
    teacher_checkpoint: str | None = None  # local checkpoint of any timm model (dna.teacher); nothing is downloaded
    # the teachers trained once by `python -m benchmark.teacher`, as <dataset>.pt ({scale} filled in, relative to the
    # repository root); a run without dna.teacher_checkpoint loads the one for its dataset if there is one, else
    # trains its own; "none": always train inside the run
    teacher_dir: str = "results/{scale}/dna_teacher"
    teacher_epochs: int = 10  # epochs to train the teacher when it is trained here (inside a run or once)
    teacher_erasing: float = 0.0  # random erasing's probability per image while training the teacher (0: off)
    block_epochs: int = 20  # epochs per block
    block_lr: tuple[float, float] = (0.002, 0.005)  # first and last block, the others (official)
    lr_decay: float = 0.9  # per epoch
    weight_decay: float = 1e-4  # weights only, as timm's optimiser factory the official code uses
    rating_images: int = 1024  # search-split images each path is rated on (official: 19 batches of 64)
    rating_recal_batches: int = 4  # BN recalibration batches per rated path (official: one fixed training batch)
    exhaustive_limit: int = 20_000  # a block with at most this many paths is rated exhaustively (official: 1,296)

    def checks(self) -> list[tuple[bool, str]]:
        """Value rules of the section."""
        return [
            (self.block_epochs >= 1, "block_epochs must be >= 1"),
            (0 <= self.teacher_erasing <= 1, "teacher_erasing must be a probability in [0, 1]"),
            (len(self.block_lr) == 2 and min(self.block_lr) > 0, "block_lr must be [first/last, others], both > 0"),
            (self.rating_images >= 1, "rating_images must be >= 1"),
        ]


@register_method
class DNA(Method):
    """Blockwise distillation from a trained teacher, candidates rated per block, best sum under the budget."""

    name = "dna"
    supervised = True
    section = "dna"
    options = DNAOptions

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.ranges = block_ranges(ctx.space)
        self.teacher: nn.Module | None = None
        self.source: TeacherSource | None = None  # where the teacher comes from, decided in build()
        self.fingerprint: dict = {}
        self.info: dict = {}
        self.teacher_ready = False

    # --- set-up -----------------------------------------------------------------------------------
    def build(self) -> None:
        """The stride-adapted teacher (untrained) and the adapters, once; deterministic from the seed."""
        if self.teacher is not None:
            return
        ctx, space = self.ctx, self.ctx.space
        sizes = block_sizes(space, ctx.data.resolution)
        self.source = teacher_source(ctx)
        self.teacher, self.indices, widths, self.fingerprint = build_teacher(ctx, sizes, self.source)
        seed_torch(ctx.cfg.seed, "init", 1)
        modules = {}
        for i, (start, stop) in enumerate(self.ranges):
            if i > 0:
                modules[f"in{i}"] = adapter(widths[i - 1], space.layers[start].in_chs, norm=True)
            modules[f"out{i}"] = adapter(space.layers[stop - 1].out_chs, widths[i], norm=False)
        self.adapters = nn.ModuleDict(modules).to(ctx.device)
        if ctx.cfg.channels_last:
            self.adapters = self.adapters.to(memory_format=torch.channels_last)

    def ready_teacher(self) -> None:
        """Trained (or loaded) and frozen teacher weights; the first call may train it (a loaded teacher: no
        "teacher" stage in train_log, so DNA's cost holds no teacher training)."""
        self.build()
        if not self.teacher_ready:
            self.info = prepare_teacher(self.ctx, self.teacher, self.source, self.fingerprint)
            self.teacher_ready = True

    def block(self, model: SuperNet, i: int) -> DNABlock:
        """Block i of `model` with its adapters (the modules are shared, not copied)."""
        start, stop = self.ranges[i]
        entry = model.stem if i == 0 else self.adapters[f"in{i}"]
        return DNABlock(entry, model.layers[start:stop], self.adapters[f"out{i}"])

    def block_indices(self, i: int) -> tuple[int | None, int]:
        """The teacher features a block maps from and to (forward_intermediates indices; None: the image)."""
        return (None if i == 0 else self.indices[i - 1]), self.indices[i]

    # --- supernet stage ---------------------------------------------------------------------------
    def train_supernet(self, model: nn.Module) -> None:
        """Train (or load) the teacher, then each block in turn; every loop resumes from its own checkpoint."""
        self.ready_teacher()
        for i in range(len(self.ranges)):
            self.train_block(model, i)

    def train_block(self, model: SuperNet, i: int) -> list[dict]:
        """Train block i on the shared loop: stage 'dna_block{i}' records, checkpoint dna_block{i}_checkpoint.pt."""
        return train_epochs(self.ctx, self.block_loop(model, i))

    def block_loop(self, model: SuperNet, i: int) -> Loop:
        """The shared loop's description of block i's training (Adam, x0.9 per epoch, SPOS's data order)."""
        ctx, cfg, opts = self.ctx, self.ctx.cfg.supernet, self.opts
        start, stop = self.ranges[i]
        block = self.block(model, i)
        lr = opts.block_lr[0] if i in (0, len(self.ranges) - 1) else opts.block_lr[1]
        optimizer = torch.optim.Adam(param_groups(list(block.parameters()), opts.weight_decay), lr=lr)
        policy = BlockDistillation(i, ctx.space.num_choices[start:stop], self.teacher, self.block_indices(i))
        plan = EpochPlan(
            dataset=ctx.data.train,
            batch_size=cfg.batch_size,
            epochs=opts.block_epochs,
            stream="supernet",  # every block sees the data in the order SPOS's supernet does
            fraction=self.epoch_fraction(),
            max_steps_per_epoch=cfg.max_steps_per_epoch,
            checkpoint_steps=cfg.checkpoint_steps,
            accumulate=cfg.accumulate,
        )

        def schedule(optimizer, per_epoch: int):
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: opts.lr_decay ** (step // per_epoch))

        return build_loop(f"dna_block{i}", block, policy, optimizer, plan, schedule, grad_clip=cfg.grad_clip)

    def cost_loops(self, model: SuperNet) -> dict[str, Loop]:
        """Every block's loop (frozen eval-mode teacher, as in a run) and the teacher's own training loop.

        The teacher trained by that loop is a copy, untrained like the blocks' teacher, which changes no cost.
        """
        self.build()
        trainee = copy.deepcopy(self.teacher).train()
        self.teacher.eval().requires_grad_(False)
        loops = {"teacher": teacher_loop(self.ctx, trainee)}
        loops.update({f"block{i}": self.block_loop(model, i) for i in range(len(self.ranges))})
        return loops

    # --- search stage -----------------------------------------------------------------------------
    @torch.no_grad()
    def block_data(self, model: SuperNet, i: int) -> tuple[list, list, list]:
        """(recal inputs, search inputs, targets) of block i after its (recalibrated) entry, computed once.

        Block i's inputs are the frozen teacher's stage i-1 features (block 0: the images), the targets its
        stage i features, on the first `dna.rating_images` images of the search batches; the entry (stem or input
        adapter) comes before any choice, so it is recalibrated and run once for every path of the block.
        """
        ctx, indices = self.ctx, self.block_indices(i)

        def pairs(batches: Iterable, limit: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, _ in batches:
                if limit <= 0:
                    return
                x = x[:limit].to(ctx.device, non_blocking=True)
                limit -= len(x)
                if ctx.cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield block_pairs(self.teacher, x, indices)

        recal_limit = self.opts.rating_recal_batches * ctx.cfg.search.recal_batch_size
        recal = [h for h, _ in pairs(ctx.recal_batches, recal_limit)]
        inputs, targets = zip(*pairs(ctx.search_batches, self.opts.rating_images), strict=True)
        entry = copy.deepcopy(self.block(model, i).entry)
        return (*calibrate(entry, recal, list(inputs), ctx.device), list(targets))

    def path_macs(self, i: int, path: Sequence[int]) -> int:
        """MACs of block i's layers on `path` (the FLOPs table's per-layer counts)."""
        start, _ = self.ranges[i]
        return sum(self.ctx.table.layer_macs[start + j][c] for j, c in enumerate(path))

    def search(self, model: nn.Module) -> dict:
        """Rate block paths, then the exact traversal (or, for blocks too large to enumerate, evolution)."""
        ctx = self.ctx
        check_budget(ctx.space, ctx.table.flops, ctx.flops_budget, ctx.table.bounds())
        self.ready_teacher()
        t0 = time.time()
        ratings = RatingLog(ctx, self)
        counts = [math.prod(ctx.space.num_choices[a:b]) for a, b in self.ranges]
        if max(counts) <= self.opts.exhaustive_limit:
            arch, summed, block_ratings = self.traversal(model, ratings)
            mode = "traversal"
        else:
            arch, summed, block_ratings = self.evolution(model, ratings)
            mode = "evolution"
        ratings.flush()
        wall = time.time() - t0
        flops = ctx.table.flops(arch)
        if flops > ctx.flops_budget:
            raise AssertionError(f"DNA's search returned {encode(arch)} with {flops} MACs over the budget")
        return {
            "arch": encode(arch),
            "search_score": -summed,  # higher is better, as every method's search score
            "summed_rating": summed,
            "block_ratings": block_ratings,
            "flops": flops,
            "search_mode": mode,
            "rated_paths": len(ratings.cache),
            "search_wall_s": wall,
            "search_device_s": wall * dist.world_size(),
        }

    def traversal(self, model: SuperNet, ratings: RatingLog) -> tuple[Arch, float, list[float]]:
        """Rate every path of every block, then the exact traversal of summed ratings under the budget."""
        ctx = self.ctx
        paths, options = [], []
        for i, (a, b) in enumerate(self.ranges):
            block_paths = list(itertools.product(*(range(n) for n in ctx.space.num_choices[a:b])))
            rated = ratings.rate(model, i, block_paths)
            ratings.release(i)
            paths.append(block_paths)
            options.append([(r, self.path_macs(i, p)) for p, r in zip(block_paths, rated)])
        choice, summed, _ = traverse(options, ctx.flops_budget - ctx.table.fixed_macs)
        arch = tuple(c for i, k in enumerate(choice) for c in paths[i][k])
        record = {"arch": encode(arch), "score": -summed, "flops": ctx.table.flops(arch), "kind": "traversal"}
        if dist.is_main():
            write_jsonl(ctx.file("search.jsonl"), [search_record(ctx, record)])
        return arch, summed, [options[i][k][0] for i, k in enumerate(choice)]

    def block_paths(self, arch: Arch) -> list[tuple[int, ...]]:
        """The architecture's path through each block."""
        return [tuple(arch[a:b]) for a, b in self.ranges]

    def summed_score(self, model: SuperNet, ratings: RatingLog) -> Callable[[Arch], float]:
        """-(summed block ratings) of an architecture: the score DNA's search ranks candidates by."""
        return lambda arch: -sum(ratings.rate(model, i, [p])[0] for i, p in enumerate(self.block_paths(arch)))

    def evolution(self, model: SuperNet, ratings: RatingLog) -> tuple[Arch, float, list[float]]:
        """SPOS evolution on -(summed block ratings), rating block paths lazily (blocks too large to enumerate)."""
        res = run_evolution(self.ctx, self.summed_score(model, ratings), "search.jsonl", rng_key=4)
        per_block = [ratings.rate(model, i, [p])[0] for i, p in enumerate(self.block_paths(res.best_arch))]
        return res.best_arch, -res.best_score, per_block

    def arch_scorer(self, model: nn.Module) -> Callable[[Arch], float]:
        """DNA's own scorer for benchmark.fidelity: -(summed block ratings against the teacher), memoised in
        dna_ratings.jsonl with the search's own ratings (the traversal minimises the same sum exactly)."""
        self.ready_teacher()
        return self.summed_score(model, RatingLog(self.ctx, self))

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The adapters' weights and the teacher's record (the teacher itself is in teacher.pt)."""
        self.build()
        return {"adapters": self.adapters.state_dict(), "info": dict(self.info)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        if state:
            self.build()
            self.adapters.load_state_dict(state["adapters"])
            self.info = dict(state["info"])

    def final_extras(self) -> dict:
        """The teacher's name, source (kind, file), fingerprint hash, search-split and test top-1, its one-time training
        device seconds (reported beside DNA's cost) and the stages the blocks were aligned with."""
        return {**self.info, "teacher_stages": list(self.indices) if self.teacher is not None else None}
