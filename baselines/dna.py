"""DNA (Li et al., CVPR 2020): blockwise distillation of the supernet from a trained teacher, then a traversal.

Following the official code (changlin31/DNA): the supernet is cut into blocks aligned with the teacher's
stages; block i learns to map the teacher's stage i-1 features to its stage i features (MSE), one uniform
random path per step, blocks trained one after another with Adam (lr 0.002 for the first and last block,
0.005 between, x0.9 per epoch, weight decay 1e-4). Every candidate path of every block is then rated by
mean|student - teacher| / std(teacher) on the search split after BN recalibration, and the architecture is
the one minimising the summed ratings under the FLOPs budget. Differences, by choice: the teacher is
trained by our own pipeline (or loaded from a local checkpoint) and frozen in eval mode; the supernet's
widths are fixed by the space, so 1x1 adapters map teacher widths to the block's input and its output to
the teacher's widths; block 0's input is the supernet's own stem on the image.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from baselines.dna_teacher import adapter, block_pairs, block_ranges, block_sizes, build_teacher, prepare_teacher
from ennas import distributed as dist
from ennas.context import RunContext, stream_seed
from ennas.engine import Loop, steps_per_epoch, train_epochs
from ennas.evaluate import recalibrate_bn
from ennas.methods import Method, register_method
from ennas.optim import param_groups
from ennas.pipeline import run_evolution
from ennas.results import read_jsonl, write_jsonl
from ennas.search import check_budget
from spaces.arch import Arch, encode
from spaces.supernet import SuperNet

EXHAUSTIVE_LIMIT = 20_000  # a block with at most this many paths is rated exhaustively (official: 6^4 = 1,296)
RATING_RECAL_BATCHES = 4  # BN recalibration batches per rated path (official: one fixed training batch)
RATING_IMAGES = 1024  # search-split images each path is rated on (official: 19 batches of 64)
BLOCK_LR = (0.002, 0.005)  # first and last block, the others (official: [.002, .005, .005, .005, .005, .002])
LR_DECAY = 0.9  # per epoch
WEIGHT_DECAY = 1e-4  # weights only, as timm's optimiser factory the official code uses
FLUSH_EVERY = 256  # ratings between rewrites of dna_ratings.jsonl


class DNABlock(nn.Module):
    """One block as DNA trains it: entry (the stem for block 0, else the input adapter), its layers, output adapter."""

    def __init__(self, entry: nn.Module, layers: Sequence[nn.Module], exit: nn.Module):
        super().__init__()
        self.entry = entry
        self.layers = nn.ModuleList(layers)
        self.exit = exit

    def forward(self, h: torch.Tensor, path: Sequence[int]) -> torch.Tensor:
        h = self.entry(h)
        for layer, choice in zip(self.layers, path, strict=True):
            h = layer(h, choice)
        return self.exit(h)


class BlockDistillation:
    """The shared loop's method object for one block: a uniform path, MSE to the teacher's next stage."""

    def __init__(self, block: int, num_choices: Sequence[int], teacher: nn.Module, indices: tuple[int | None, int]):
        self.block, self.num_choices, self.teacher, self.indices = block, tuple(num_choices), teacher, indices
        self.criterion = nn.MSELoss()

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        pass

    def sample_paths(self, rng: np.random.Generator, epoch: int, step: int) -> list[tuple[int, ...]]:
        """One uniform path through the block's layers, from the step's (seed, epoch, step) generator."""
        return [tuple(int(rng.integers(n)) for n in self.num_choices)]

    def batch_loss(self, model, x, y, paths, epoch, step):
        inputs, targets = block_pairs(self.teacher, x, self.indices)
        loss = self.criterion(model(inputs, paths[0]), targets)
        return loss, {"count": len(y)}

    def after_step(self, model, x, y, paths, stats, epoch, step) -> None:
        pass

    def epoch_metrics(self, model, epoch) -> dict:
        # no classifier is trained here: a train_acc of 0 would read as a measurement
        return {"train_acc": None, "block": self.block, "teacher_index": self.indices[1]}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def pareto_front(options: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the options no other option beats in both rating and cost, by rating ascending, cost descending."""
    front, cheapest = [], math.inf
    for i in sorted(range(len(options)), key=lambda i: (options[i][0], options[i][1], i)):
        if options[i][1] < cheapest:
            front.append(i)
            cheapest = options[i][1]
    return front


def traverse(options: Sequence[Sequence[tuple[float, float]]], budget: float) -> tuple[list[int], float, float]:
    """The choice per block minimising the summed rating with summed cost <= budget (exact); options: (rating, cost).

    As the official traversal, each block's budget is what the earlier choices left minus the cheapest cost
    of the blocks after it; candidates are visited best-rated first, and a branch stops as soon as even the
    best ratings of the remaining blocks cannot beat the best sum found. Only each block's Pareto front
    (rating vs cost) can be part of an optimum, which keeps the search small.
    """
    fronts = [pareto_front(block) for block in options]
    n = len(options)
    min_cost = [min(c for _, c in block) for block in options] + [0.0]
    min_rating = [min(r for r, _ in block) for block in options] + [0.0]
    rest_cost = [sum(min_cost[i:]) for i in range(n + 1)]
    rest_rating = [sum(min_rating[i:]) for i in range(n + 1)]
    best: list = [math.inf, None, None]
    chosen: list[int] = []

    def visit(i: int, rating: float, cost: float) -> None:
        if i == n:
            if rating < best[0]:
                best[:] = [rating, list(chosen), cost]
            return
        for k in fronts[i]:
            r, c = options[i][k]
            if rating + r + rest_rating[i + 1] >= best[0]:
                break  # later candidates rate worse still
            if cost + c + rest_cost[i + 1] > budget:
                continue  # over this block's budget; cheaper ones follow
            chosen.append(k)
            visit(i + 1, rating + r, cost + c)
            chosen.pop()

    visit(0, 0.0, 0.0)
    if best[1] is None:
        raise ValueError(f"no combination of block candidates fits the budget {budget:.0f}")
    return best[1], best[0], best[2]


@torch.no_grad()
def calibrate(module: nn.Module, recal: list[torch.Tensor], inputs: list[torch.Tensor], device) -> tuple[list, list]:
    """Recalibrate `module`'s BN on `recal`; return its train-mode outputs there and its eval outputs on `inputs`.

    The train-mode outputs are what the next layer sees while it is recalibrated, so recalibrating a path
    layer by layer gives the statistics of recalibrating the whole path at once.
    """
    recal_out: list[torch.Tensor] = []
    recalibrate_bn(module, [(h, None) for h in recal], forward=lambda h: recal_out.append(module(h)), device=device)
    module.eval()
    return recal_out, [module(h) for h in inputs]


@torch.no_grad()
def feature_rating(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], device) -> dict[str, float]:
    """DNA's rating: mean|student - teacher| / std(teacher) per batch, image-weighted, over all ranks (and the MSE)."""
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # rating sum, MSE sum, images
    for out, target in zip(outputs, targets, strict=True):
        diff, n = out - target, float(len(out))
        rating = diff.abs().mean() / target.std().clamp_min(1e-12)
        totals += torch.stack([rating.double() * n, diff.pow(2).mean().double() * n, totals.new_tensor(n)])
    totals = dist.all_sum(totals)
    return {"rating": (totals[0] / totals[2]).item(), "mse": (totals[1] / totals[2]).item()}


def rate_block(block: DNABlock, paths: Iterable[tuple[int, ...]], data: tuple, device) -> Iterator[tuple[tuple, dict]]:
    """Yield (path, rating) for the wanted paths of a block, each prefix recalibrated and run once (depth first).

    `data` = (recal inputs, search inputs, targets) after the block's entry, from `DNA.block_data`. Every
    candidate is recalibrated on its own copy, so the supernet's statistics are untouched.
    """
    wanted = {tuple(p) for p in paths}
    prefixes = {p[:k] for p in wanted for k in range(len(p) + 1)}
    recal, inputs, targets = data

    def visit(prefix: tuple, recal: list, inputs: list) -> Iterator[tuple[tuple, dict]]:
        if len(prefix) == len(block.layers):
            _, outputs = calibrate(copy.deepcopy(block.exit), recal, inputs, device)
            yield prefix, feature_rating(outputs, targets, device)
            return
        for c, candidate in enumerate(block.layers[len(prefix)].candidates):
            if prefix + (c,) in prefixes:
                yield from visit(prefix + (c,), *calibrate(copy.deepcopy(candidate), recal, inputs, device))

    yield from visit((), recal, inputs)


@register_method
class DNA(Method):
    """Blockwise distillation from a trained teacher, candidates rated per block, best sum under the budget."""

    name = "dna"
    supervised = True

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.ranges = block_ranges(ctx.space)
        self.teacher: nn.Module | None = None
        self.info: dict = {}
        self.teacher_ready = False

    # --- set-up -----------------------------------------------------------------------------------
    def build(self) -> None:
        """The stride-adapted teacher (untrained) and the adapters, once; deterministic from the seed."""
        if self.teacher is not None:
            return
        ctx, space = self.ctx, self.ctx.space
        sizes = block_sizes(space, ctx.data.resolution)
        self.teacher, self.indices, widths = build_teacher(ctx, sizes)
        torch.manual_seed(stream_seed(ctx.cfg.seed, "init", 1))
        modules = {}
        for i, (start, stop) in enumerate(self.ranges):
            if i > 0:
                modules[f"in{i}"] = adapter(widths[i - 1], space.layers[start].in_chs, norm=True)
            modules[f"out{i}"] = adapter(space.layers[stop - 1].out_chs, widths[i], norm=False)
        self.adapters = nn.ModuleDict(modules).to(ctx.device)
        if ctx.cfg.channels_last:
            self.adapters = self.adapters.to(memory_format=torch.channels_last)

    def ready_teacher(self) -> None:
        """Trained (or loaded) and frozen teacher weights; the first call may train it."""
        self.build()
        if not self.teacher_ready:
            self.info = prepare_teacher(self.ctx, self.teacher)
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
    def train_supernet(self, model: SuperNet) -> None:
        """Train (or load) the teacher, then each block in turn; every loop resumes from its own checkpoint."""
        self.ready_teacher()
        for i in range(len(self.ranges)):
            self.train_block(model, i)

    def train_block(self, model: SuperNet, i: int) -> list[dict]:
        """Train block i on the shared loop: stage 'dna_block{i}' records, checkpoint dna_block{i}_checkpoint.pt."""
        return train_epochs(self.ctx, self.block_loop(model, i))

    def block_loop(self, model: SuperNet, i: int) -> Loop:
        """The shared loop's description of block i's training (Adam, x0.9 per epoch, SPOS's data order)."""
        ctx, cfg = self.ctx, self.ctx.cfg.supernet
        start, stop = self.ranges[i]
        block = self.block(model, i)
        lr = BLOCK_LR[0] if i in (0, len(self.ranges) - 1) else BLOCK_LR[1]
        optimizer = torch.optim.Adam(param_groups(list(block.parameters()), WEIGHT_DECAY), lr=lr)
        method = BlockDistillation(i, ctx.space.num_choices[start:stop], self.teacher, self.block_indices(i))
        loop = Loop(
            name=f"dna_block{i}",
            model=block,
            method=method,
            optimizer=optimizer,
            scheduler=None,
            dataset=ctx.data.train,
            batch_size=cfg.batch_size,
            epochs=ctx.cfg.distill.block_epochs,
            fraction=self.epoch_fraction(),
            max_steps_per_epoch=cfg.max_steps_per_epoch,
            checkpoint_steps=cfg.checkpoint_steps,
            grad_clip=cfg.grad_clip,
            stream="supernet",  # every block sees the data in the order SPOS's supernet does
        )
        per_epoch = steps_per_epoch(loop, len(ctx.data.train))
        loop.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: LR_DECAY ** (step // per_epoch))
        return loop

    # --- search stage -----------------------------------------------------------------------------
    @torch.no_grad()
    def block_data(self, model: SuperNet, i: int) -> tuple[list, list, list]:
        """(recal inputs, search inputs, targets) of block i after its (recalibrated) entry, computed once.

        Block i's inputs are the frozen teacher's stage i-1 features (block 0: the images), the targets its
        stage i features, on the first RATING_IMAGES images of the search batches; the entry (stem or input
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

        recal_limit = RATING_RECAL_BATCHES * ctx.cfg.search.recal_batch_size
        recal = [h for h, _ in pairs(ctx.recal_batches, recal_limit)]
        inputs, targets = zip(*pairs(ctx.search_batches, RATING_IMAGES), strict=True)
        entry = copy.deepcopy(self.block(model, i).entry)
        return (*calibrate(entry, recal, list(inputs), ctx.device), list(targets))

    def path_macs(self, i: int, path: Sequence[int]) -> int:
        """MACs of block i's layers on `path` (the FLOPs table's per-layer counts)."""
        start, _ = self.ranges[i]
        return sum(self.ctx.table.layer_macs[start + j][c] for j, c in enumerate(path))

    def search(self, model: SuperNet) -> dict:
        """Rate block paths, then the exact traversal (or, for blocks too large to enumerate, evolution)."""
        ctx = self.ctx
        check_budget(ctx.space, ctx.table.flops, ctx.flops_budget, ctx.table.bounds())
        self.ready_teacher()
        t0 = time.time()
        ratings = RatingLog(ctx, self)
        counts = [math.prod(ctx.space.num_choices[a:b]) for a, b in self.ranges]
        if max(counts) <= EXHAUSTIVE_LIMIT:
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
            write_jsonl(ctx.file("search.jsonl"), [{**record, "method": ctx.cfg.method, "space": ctx.cfg.space}])
        return arch, summed, [options[i][k][0] for i, k in enumerate(choice)]

    def evolution(self, model: SuperNet, ratings: RatingLog) -> tuple[Arch, float, list[float]]:
        """SPOS evolution on -(summed block ratings), rating block paths lazily (blocks too large to enumerate)."""

        def split(arch: Arch) -> list[tuple[int, ...]]:
            return [tuple(arch[a:b]) for a, b in self.ranges]

        def score(arch: Arch) -> float:
            return -sum(ratings.rate(model, i, [p])[0] for i, p in enumerate(split(arch)))

        res = run_evolution(self.ctx, score, "search.jsonl", rng_key=4)
        per_block = [ratings.rate(model, i, [p])[0] for i, p in enumerate(split(res.best_arch))]
        return res.best_arch, -res.best_score, per_block

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self.build()
        return {"adapters": self.adapters.state_dict(), "info": dict(self.info)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.build()
            self.adapters.load_state_dict(state["adapters"])
            self.info = dict(state["info"])

    def final_extras(self) -> dict:
        return {**self.info, "teacher_stages": list(self.indices) if self.teacher is not None else None}


class RatingLog:
    """Ratings of block paths, memoised and written to dna_ratings.jsonl, so a resumed search rates only the rest."""

    def __init__(self, ctx: RunContext, dna: DNA):
        self.ctx, self.dna = ctx, dna
        self.path = ctx.file("dna_ratings.jsonl")
        self.records = read_jsonl(self.path)
        self.cache = {(r["block"], r["path"]): r["rating"] for r in self.records}
        self.unsaved = 0
        self.data: dict[int, tuple] = {}

    def rate(self, model: SuperNet, i: int, paths: Sequence[Sequence[int]]) -> list[float]:
        """Ratings of `paths` through block i, computing only those not rated before (the block's data kept)."""
        keys = [encode(p) for p in paths]
        todo = [tuple(p) for p, k in zip(paths, keys) if (i, k) not in self.cache]
        if todo:
            if i not in self.data:
                self.data[i] = self.dna.block_data(model, i)
            for path, result in rate_block(self.dna.block(model, i), todo, self.data[i], self.ctx.device):
                self.cache[(i, encode(path))] = result["rating"]
                a, b = self.dna.ranges[i]
                macs = self.dna.path_macs(i, path)
                self.records.append({"block": i, "path": encode(path), "layers": [a, b], **result, "macs": macs})
                self.unsaved += 1
                if self.unsaved >= FLUSH_EVERY:
                    self.flush()
        return [self.cache[(i, k)] for k in keys]

    def release(self, i: int) -> None:
        """Drop block i's cached features and save the ratings so far."""
        self.data.pop(i, None)
        self.flush()

    def flush(self) -> None:
        """Rewrite dna_ratings.jsonl with every rating so far (rank 0)."""
        if self.unsaved and dist.is_main():
            write_jsonl(self.path, self.records)
        self.unsaved = 0
