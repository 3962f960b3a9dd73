"""Retraining the found architecture from scratch, shared by every method, on the same loop as the supernet."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.utils import ModelEmaV2
from torch import nn

from ennas import distributed as dist
from ennas.config import RetrainConfig
from ennas.context import RunContext, stream_seed
from ennas.engine import Loop, steps_per_epoch, train_epochs
from ennas.evaluate import evaluate
from ennas.optim import retrain_optimizer, retrain_schedule
from ennas.results import load_torch, save_torch
from spaces.arch import Arch
from spaces.supernet import build_network


class PlainTraining:
    """The 'method' of retraining: one fixed network, cross-entropy with label smoothing, an EMA copy."""

    def __init__(self, label_smoothing: float, ema: ModelEmaV2 | None):
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.ema = ema

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        pass

    def sample_paths(self, rng, epoch: int, step: int) -> list:
        return []

    def batch_loss(self, model, x, y, paths, epoch, step):
        logits = model(x)
        return self.criterion(logits, y), {"correct": int((logits.argmax(1) == y).sum()), "count": len(y)}

    def after_step(self, model, x, y, paths, stats, epoch, step) -> None:
        if self.ema is not None:
            self.ema.update(model)

    def epoch_metrics(self, model, epoch) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


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
) -> Loop:
    """The shared loop training one stand-alone network on the training split with a retraining recipe `cfg`.

    Used for the found architecture and for DNA's teacher, so both follow one recipe implementation.
    """
    optimizer = retrain_optimizer(list(net.parameters()), cfg)
    loop = Loop(
        name=name,
        model=net,
        method=PlainTraining(cfg.label_smoothing, ema),
        optimizer=optimizer,
        scheduler=None,
        dataset=ctx.data.train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        max_steps_per_epoch=cfg.max_steps_per_epoch,
        extra_state={"ema": ema} if ema is not None else {},
        on_epoch_end=on_epoch_end,
    )
    loop.scheduler = retrain_schedule(optimizer, cfg, steps_per_epoch(loop, len(ctx.data.train)))
    return loop


def retrain(ctx: RunContext, arch: Arch) -> dict:
    """Train `arch` from scratch with the preset's recipe; return top-1/top-5 (%) on the real test set."""
    cfg = ctx.cfg.retrain
    torch.manual_seed(stream_seed(ctx.cfg.seed, "retrain"))
    net = build_network(ctx.space, arch, ctx.data.num_classes, ctx.data.in_chans)
    set_dropout(net, cfg.dropout)
    net = net.to(ctx.device)
    if ctx.cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = ModelEmaV2(net, decay=cfg.ema_decay) if cfg.ema_decay else None
    loop = plain_loop(ctx, "retrain", net, cfg, ema)
    records = train_epochs(ctx, loop)
    final_model = ema.module if ema is not None else net
    final_model.eval()
    metrics = evaluate(final_model, ctx.shard_loader(ctx.data.test, ctx.cfg.search.eval_batch_size), ctx.device)
    if dist.is_main():
        save_torch(ctx.file("retrained.pt"), {"arch": arch, "state_dict": final_model.state_dict()})
    return {
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
