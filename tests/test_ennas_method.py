"""EnNAS and EnNAS w/o DS: loss before/after KD start, detached teacher, m-path gradients, sampling, state,
what their smoke runs log (resume and the pipeline itself: test_method_contract.py)."""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from helpers import preset_config

from ennas.core.context import RunContext
from ennas.core.loop import Step
from ennas.core.method import get_method
from ennas.method.distill import kd_loss
from ennas.method.ennas import EnNAS, EnNASWithoutDS
from ennas.method.ensemble import ensemble_logits, ensemble_weights
from ennas.method.headroom import LOG_KEYS, headroom_record
from ennas.seeding import path_rng

M = 3


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    cfg = preset_config(
        "smoke",
        {"ennas": {"m": M, "diversity_images": 32}, "distill": {"start_epoch": 1}, "channels_last": False},
        method="ennas",
        space="s1",
    )
    return RunContext(cfg, tmp_path_factory.mktemp("ennas"), torch.device("cpu"))


@pytest.fixture(scope="module")
def batch(ctx):
    x, y = zip(*(ctx.data.train[i] for i in range(12)))
    return ctx.data.to_device(torch.stack(x), "cpu"), torch.tensor(y)


@pytest.fixture(scope="module")
def ennas(ctx):
    method = EnNAS(ctx)
    method.on_epoch_start(ctx.supernet, 0)
    return method


def test_registered_and_fraction(ctx):
    assert get_method("ennas") is EnNAS and get_method("ennas-wo-ds") is EnNASWithoutDS
    assert EnNASWithoutDS(ctx).epoch_fraction() == pytest.approx(1 / M)
    assert EnNAS(ctx).epoch_fraction() == pytest.approx(1 / M)
    half = RunContext(
        dataclasses.replace(ctx.cfg, supernet=dataclasses.replace(ctx.cfg.supernet, fraction=0.5)), ctx.out, ctx.device
    )
    assert EnNAS(half).epoch_fraction() == pytest.approx(0.5 / M)  # supernet.fraction is per path, for every method
    assert get_method("spos")(half).epoch_fraction() == 0.5


def test_loss_is_sum_of_ces_before_kd_start(ctx, batch):
    method, model, (x, y) = EnNASWithoutDS(ctx), ctx.supernet, batch
    paths = method.sample_paths(path_rng(0, 0, 0), 0, 0)
    loss, stats = method.batch_loss(model, Step(x, y, paths, 0, 0, 0.1))
    expected = sum(method.criterion(model(x, p), y) for p in paths)
    assert len(paths) == M and stats["count"] == M * len(y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert "kd_batches" not in method.sums  # no solve before KD starts


def test_loss_after_kd_start_adds_detached_ensemble_kd(ctx, batch):
    method, model, (x, y) = EnNASWithoutDS(ctx), ctx.supernet, batch
    d = ctx.cfg.options("ennas")
    paths = method.sample_paths(path_rng(0, 1, 0), 1, 0)
    model.zero_grad(set_to_none=True)
    loss, _ = method.batch_loss(model, Step(x, y, paths, 1, 0, 0.1))
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # Reference: the teacher built from detached logits, so no gradient flows through w or t.
    model.zero_grad(set_to_none=True)
    logits = torch.stack([model(x, p) for p in paths])
    ce = sum(method.criterion(z, y) for z in logits)
    t = ensemble_logits(logits.detach(), ensemble_weights(logits.detach(), y)).detach()
    kd = sum(kd_loss(z, t, d.tau) for z in logits)
    (ce + d.lam * kd).backward()
    assert kd.item() > 1e-6 and loss.item() == pytest.approx((ce + d.lam * kd).item(), rel=1e-6)
    assert loss.item() > ce.item()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-7)

    # A teacher that is not detached would send gradient through t: the gradients must differ then.
    model.zero_grad(set_to_none=True)
    logits = torch.stack([model(x, p) for p in paths])
    w = ensemble_weights(logits.detach(), y)
    t_live = torch.einsum("i,ibc->bc", w, logits)
    live = sum(method.criterion(z, y) for z in logits) + d.lam * sum(
        d.tau**2
        * torch.nn.functional.kl_div(
            torch.log_softmax(z / d.tau, -1), torch.softmax(t_live / d.tau, -1), reduction="batchmean"
        )
        for z in logits
    )
    live.backward()
    assert any(not torch.allclose(got[n], p.grad) for n, p in model.named_parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("cls", [EnNASWithoutDS, EnNAS])
def test_paths_are_a_function_of_seed_epoch_step(ctx, ennas, cls):
    method = ennas if cls is EnNAS else cls(ctx)
    first = method.sample_paths(path_rng(0, 2, 5), 2, 5)
    assert first == method.sample_paths(path_rng(0, 2, 5), 2, 5)
    assert len(first) == M and all(len(p) == len(ctx.space.layers) for p in first)
    assert first != method.sample_paths(path_rng(0, 2, 6), 2, 6)


def test_sampler_state_survives_a_checkpoint(ctx, ennas):
    assert ctx.file("diversity_epoch0.json").exists()
    assert len(ennas.zetas) == len(ctx.space.layers)
    buffer = io.BytesIO()
    torch.save(ennas.state_dict(), buffer)
    buffer.seek(0)
    resumed = EnNAS(ctx)
    with pytest.raises(RuntimeError):
        resumed.sample_paths(path_rng(0, 0, 0), 0, 0)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    for z, r in zip(ennas.zetas, resumed.zetas):
        np.testing.assert_array_equal(z, r)
    for step in range(20):
        rng_a, rng_b = path_rng(0, 0, step), path_rng(0, 0, step)
        assert ennas.sample_paths(rng_a, 0, step) == resumed.sample_paths(rng_b, 0, step)


def test_zeta_metrics_log_the_headroom_without_touching_sampling(ennas):
    before = [ennas.sample_paths(path_rng(0, 1, step), 1, step) for step in range(5)]
    metrics = ennas.zeta_metrics()
    assert set(metrics) == set(LOG_KEYS.values()) and metrics == headroom_record(ennas.zetas, M, ennas.opts.beta)
    assert metrics["min_norepeat_set_zeta"] <= metrics["norepeat_set_zeta"] <= metrics["set_zeta"]
    assert (
        metrics["uniform_set_zeta"] <= metrics["norepeat_set_zeta"] and metrics["set_zeta"] <= metrics["max_set_zeta"]
    )
    assert before == [ennas.sample_paths(path_rng(0, 1, step), 1, step) for step in range(5)]


def test_diversity_estimate_is_reproducible(ctx, ennas):
    again = EnNAS(ctx)
    again.on_epoch_start(ctx.supernet, 0)
    for z, r in zip(ennas.zetas, again.zetas):
        np.testing.assert_array_equal(z, r)


@pytest.mark.parametrize("method", ["ennas", "ennas-wo-ds"])
def test_smoke_run_logs_teachers_students_and_diversity(smoke_run, method):
    out = smoke_run(method)
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    last = [r for r in records if r["stage"] == "supernet"][-1]
    for key in ("teacher_acc", "student_acc", "gap", "diversity", "solve_share", "teacher_w_max"):
        assert isinstance(last[key], float), key
    assert last["gap"] == pytest.approx(last["teacher_acc"] - last["student_acc"])
    assert last["diversity"] > 0
    if method == "ennas":
        assert (out / "diversity_epoch1.json").exists() and last["set_zeta"] >= last["uniform_set_zeta"] - 1e-9
        assert last["min_norepeat_set_zeta"] <= last["set_zeta"] <= last["max_set_zeta"]
