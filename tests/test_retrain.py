"""Retraining's recipe details not visible in a smoke run: the EMA copy is what gets evaluated and saved."""

import pytest
import torch
from helpers import preset_config

import ennas.core.retrain as retrain_module
from ennas.core.context import RunContext
from ennas.core.io import load_torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_retrain_evaluates_and_saves_the_ema_copy_when_configured(tmp_path, monkeypatch):
    made = []

    class RecordingEma(retrain_module.ModelEmaV2):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(retrain_module, "ModelEmaV2", RecordingEma)
    overrides = {"retrain": {"epochs": 1, "max_steps_per_epoch": 3, "ema_decay": 0.5}, "threads": 1}
    cfg = preset_config("smoke", overrides, method="spos", space="s1")
    ctx = RunContext(cfg, tmp_path, torch.device("cpu"))
    result = retrain_module.retrain(ctx, (0,) * len(ctx.space.layers))
    assert result["ema"] is True and len(made) == 1
    saved = load_torch(tmp_path / "retrained.pt")["state_dict"]
    ema_state = made[0].module.state_dict()
    assert all(torch.equal(saved[k], ema_state[k]) for k in ema_state)
    trained = ctx.file("retrain_checkpoint.pt")
    raw = load_torch(trained)["model"]  # the trained weights themselves differ from their average
    assert any(not torch.equal(raw[k], ema_state[k]) for k in raw if raw[k].is_floating_point())
