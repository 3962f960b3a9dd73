"""The method contract and registry: what differs between trainers lives in a small method object.

A method is a `StepPolicy` for the shared loop (how paths are sampled for a batch, how the batch loss is
formed, what it measures per epoch as "teacher" and "students", what state it keeps across a checkpoint)
with two explicit stages whose defaults are shared: `train_supernet` (the shared loop, one optimiser step
per batch) and `search` (SPOS evolution over supernet paths). A method whose training is not a per-batch
path loss (DNA) overrides those stages instead. It owns its options: a config section registered with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from ennas.core.config import register_options
from ennas.core.evaluate import score_path
from ennas.core.evolution import evolution_stage
from ennas.core.loop import EpochPlan, Loop, StepPolicy, build_loop, train_epochs
from ennas.core.optim import linear_schedule, supernet_optimizer

if TYPE_CHECKING:
    from ennas.core.context import RunContext
    from spaces.arch import Arch

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its `name` (to the CLI and `--method all`), with its options."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    if cls.options is not None:
        register_options(cls.section, cls.options)
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """A registered method class; unknown names fail with the list of known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


class Method(StepPolicy):
    """A trainer plugged into the shared pipeline: its per-batch policy and its supernet and search stages."""

    name: ClassVar[str] = "base"
    supervised: ClassVar[bool] = False  # uses an external trained teacher (Table 1's "Supervised")
    section: ClassVar[str] = ""  # name of its options section in the run config ("" for none)
    options: ClassVar[type | None] = None  # the frozen dataclass of that section

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.opts = ctx.cfg.options(self.section) if self.options is not None else None

    def paths_per_step(self) -> int:
        """Paths trained on each batch (EnNAS: its m subnets); an epoch covers 1/this of `supernet.fraction`."""
        return 1

    def epoch_fraction(self) -> float:
        """Fraction of the training set seen per supernet epoch: `supernet.fraction` over the paths per step, so
        every method makes as many per-path updates per epoch (the paper's fair-cost rule)."""
        return self.ctx.cfg.supernet.fraction / self.paths_per_step()

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules besides the supernet that the method owns (trained and saved with it)."""
        return {}

    def train_supernet(self, model: nn.Module) -> None:
        """Train the supernet: by default the shared loop with this method as its step policy."""
        train_epochs(self.ctx, supernet_loop(self.ctx, self, model))

    def search(self, model: nn.Module) -> dict:
        """Find the architecture: by default SPOS evolution over supernet paths under the FLOPs budget."""
        return evolution_stage(self.ctx, model)

    def cost_loops(self, model: nn.Module) -> dict[str, Loop]:
        """The loops that make up the supernet stage, by name, for benchmark.perf to time (default: one)."""
        return {"supernet": supernet_loop(self.ctx, self, model)}

    def final_extras(self) -> dict:
        """Method-specific entries for final.json (e.g. Cream's own board-best architecture)."""
        return {}

    def arch_scorer(self, model: nn.Module) -> Callable[[Arch], float]:
        """How this method's search scores a candidate of `model` (higher is better), for benchmark.fidelity to
        rank the ground truth exactly as the search would: path accuracy on the run's fixed batches by default."""
        ctx = self.ctx
        return lambda arch: score_path(model, arch, ctx.recal_batches, ctx.search_batches, ctx.device)


def supernet_loop(ctx: RunContext, method: Method, model: nn.Module) -> Loop:
    """The shared supernet loop: SGD on the supernet and the method's extra modules, linear lr to 0 per step."""
    cfg = ctx.cfg.supernet
    extra = method.extra_modules()
    params = list(model.parameters()) + [p for m in extra.values() for p in m.parameters()]
    plan = EpochPlan(
        dataset=ctx.data.train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        stream="supernet",
        fraction=method.epoch_fraction(),
        max_steps_per_epoch=cfg.max_steps_per_epoch,
        checkpoint_steps=cfg.checkpoint_steps,
        accumulate=cfg.accumulate,
    )

    def schedule(optimizer, steps: int):
        return linear_schedule(optimizer, cfg.epochs * steps)

    optimizer = supernet_optimizer(params, cfg)
    return build_loop(
        "supernet",
        model,
        method,
        optimizer,
        plan,
        schedule,
        grad_clip=cfg.grad_clip,
        extra_state=extra,
        snapshot_epochs=cfg.snapshot_epochs,
    )
