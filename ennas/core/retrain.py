"""Retraining the found architecture from scratch, shared by every method, on the same loop as the supernet."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.utils import ModelEmaV2
from torch import nn

from ennas.core import distributed as dist
from ennas.core.config import RetrainConfig
from ennas.core.context import RunContext
from ennas.core.erasing import erase, step_generator
from ennas.core.evaluate import evaluate
from ennas.core.io import load_torch, save_torch
from ennas.core.loop import EpochPlan, Loop, Step, StepPolicy, build_loop, train_epochs
from ennas.core.optim import retrain_optimizer, retrain_schedule
from ennas.core.precision import amp_dtype, autocast
from ennas.seeding import seed_torch
from spaces.arch import Arch
from spaces.supernet import build_network


class PlainTraining(StepPolicy):
    """The policy of retraining: one fixed network, cross-entropy with label smoothing, an EMA copy."""

    def __init__(self, label_smoothing: float, ema: ModelEmaV2 | None, erasing: float = 0.0, seed: int = 0):
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.ema = ema
        self.erasing, self.seed = erasing, seed  # random erasing's probability per image (0: off), its seed

    def batch_loss(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict]:
        """Cross-entropy of the network on the batch (randomly erased first where `erasing` is on)."""
        x = step.x
        if self.erasing:
            x = erase(x, self.erasing, step_generator(self.seed, step.epoch, step.index, step.micro, dist.rank()))
        logits = model(x)
        loss = self.criterion(logits, step.y)
        return loss, {"correct": int((logits.argmax(1) == step.y).sum()), "count": len(step.y)}

    def after_step(self, model: nn.Module, step: Step, stats: dict) -> None:
        """Update the EMA copy after every optimiser step."""
        if self.ema is not None:
            self.ema.update(model)


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout layer's rate (the retraining recipe's classifier dropout)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def plain_loop(
    ctx: RunContext,
    name: str,
    net: nn.Module,
    cfg: RetrainConfig,
    ema: ModelEmaV2 | None = None,
    on_epoch_end: Callable[[int], dict] | None = None,
    stream_keys: tuple[int, ...] = (),
    erasing: float = 0.0,
) -> Loop:
    """The shared loop training one stand-alone network on the training split with a retraining recipe `cfg`.

    Used for the found architecture and for DNA's teacher, so both follow one recipe implementation. `name`
    names the checkpoint and log stage; the data order's stream is the name's stage kind (retrain, teacher),
    refined by `stream_keys` for a further retraining seed. `erasing` turns on random erasing (DNA's teacher).
    """
    plan = EpochPlan(
        ctx.data.train,
        cfg.batch_size,
        cfg.epochs,
        stream="retrain" if name.startswith("retrain") else name,
        stream_keys=stream_keys,
        max_steps_per_epoch=cfg.max_steps_per_epoch,
        accumulate=cfg.accumulate,
    )

    def schedule(optimizer, steps: int):
        return retrain_schedule(optimizer, cfg, steps)

    policy = PlainTraining(cfg.label_smoothing, ema, erasing, ctx.cfg.seed)
    optimizer = retrain_optimizer(list(net.parameters()), cfg)
    extra = {"ema": ema} if ema is not None else {}
    return build_loop(name, net, policy, optimizer, plan, schedule, extra_state=extra, on_epoch_end=on_epoch_end)


def retrain_name(index: int) -> str:
    """The stage name of retraining seed `index`: `retrain` for the run's own, `retrain<k>` for further ones."""
    return "retrain" if index == 0 else f"retrain{index}"


def is_retrain_stage(stage: object) -> bool:
    """Whether a train_log stage is a retraining seed's (not the supernet, DNA's teacher or blocks)."""
    return isinstance(stage, str) and stage.startswith("retrain")


def retrain(ctx: RunContext, arch: Arch, index: int = 0) -> dict:
    """Train `arch` from scratch with the preset's recipe; return top-1/top-5 (%) on the real test set.

    `index` 0 is the run's own retraining; index k > 0 is a further retraining seed of the same architecture
    (initialisation and data order from the stream (retrain, k)), which measures the retrain-to-retrain noise.
    """
    cfg = ctx.cfg.retrain
    keys = (index,) if index else ()  # index 0 keeps the stream every earlier run used
    name = retrain_name(index)
    seed_torch(ctx.cfg.seed, "retrain", *keys)
    net = build_network(ctx.space, arch, ctx.data.num_classes, ctx.data.in_chans)
    set_dropout(net, cfg.dropout)
    net = net.to(ctx.device)
    if ctx.cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = ModelEmaV2(net, decay=cfg.ema_decay) if cfg.ema_decay else None
    loop = plain_loop(ctx, name, net, cfg, ema, stream_keys=keys)
    records = train_epochs(ctx, loop)
    final_model = ema.module if ema is not None else net
    final_model.eval()
    with autocast(ctx.device, amp_dtype(ctx.cfg.amp, ctx.device)):
        metrics = evaluate(final_model, ctx.shard_loader(ctx.data.test, ctx.cfg.search.eval_batch_size), ctx.device)
    if dist.is_main():
        weights = "retrained.pt" if index == 0 else f"retrained{index}.pt"
        save_torch(ctx.file(weights), {"arch": arch, "state_dict": final_model.state_dict()})
    return {
        "index": index,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "test_loss": metrics["loss"],
        "ema": ema is not None,
        "retrain_device_s": sum(r["device_s"] for r in records),
    }


def load_retrained(ctx: RunContext) -> nn.Module:
    """The retrained network saved by `retrain` (for reuse outside the pipeline)."""
    state = load_torch(ctx.file("retrained.pt"))
    net = build_network(ctx.space, tuple(state["arch"]), ctx.data.num_classes, ctx.data.in_chans)
    net.load_state_dict(state["state_dict"])
    return net
