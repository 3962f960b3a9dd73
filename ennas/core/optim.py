"""Optimisers and schedules of the two recipes: SPOS's supernet SGD and the EfficientNet-style retraining."""

from __future__ import annotations

import contextlib
import logging

import torch
from timm.optim import RMSpropTF
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from torch import nn

from ennas.core.config import RetrainConfig, SupernetConfig


def param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weight decay on weights with more than one dimension only (SPOS, Cream): not on BN or biases."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def supernet_optimizer(params: list[nn.Parameter], cfg: SupernetConfig) -> torch.optim.SGD:
    """SGD with momentum (the paper's and SPOS's supernet optimiser)."""
    return torch.optim.SGD(
        param_groups(params, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
    )


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear annealing from the initial rate to 0 over `total_steps` optimiser steps (SPOS, per step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))


def retrain_optimizer(params: list[nn.Parameter], cfg: RetrainConfig) -> torch.optim.Optimizer:
    """timm's RMSpropTF (eps 1e-3, momentum 0.9) as the paper's baselines retrain with, or plain SGD."""
    groups = param_groups(params, cfg.weight_decay)
    if cfg.optimizer == "rmsproptf":
        return RMSpropTF(groups, lr=cfg.lr, alpha=0.9, eps=1e-3, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


class PerStep:
    """Drive a timm epoch-based scheduler once per optimiser step (fractional epochs), with state."""

    def __init__(self, scheduler, steps_per_epoch: int):
        self.scheduler, self.steps_per_epoch, self.count = scheduler, steps_per_epoch, 0
        self.scheduler.step(0)

    def step(self) -> None:
        self.count += 1
        self.scheduler.step(self.count / self.steps_per_epoch)

    def state_dict(self) -> dict:
        return {"count": self.count, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.step(self.count / self.steps_per_epoch)


def retrain_schedule(optimizer: torch.optim.Optimizer, cfg: RetrainConfig, steps_per_epoch: int) -> PerStep:
    """Warmup then step decay (EfficientNet/Cream/DNA: x0.97 every 2.4 epochs), or cosine when lr_decay = 0."""
    common = {"warmup_t": cfg.warmup_epochs, "warmup_lr_init": cfg.warmup_lr, "t_in_epochs": True}
    if cfg.lr_decay:
        sched = StepLRScheduler(optimizer, decay_t=cfg.decay_epochs, decay_rate=cfg.lr_decay, **common)
    else:
        # timm warns that a one-epoch cosine "will have no effect", but PerStep steps it in fractions of an epoch,
        # so it does anneal: the warning is wrong here and is kept off the console
        with _quiet("timm.scheduler.cosine_lr"):
            sched = CosineLRScheduler(optimizer, t_initial=max(cfg.epochs, 1), lr_min=0.0, **common)
    return PerStep(sched, steps_per_epoch)


@contextlib.contextmanager
def _quiet(logger: str):
    """Silence one library logger's warnings for the duration of the block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
