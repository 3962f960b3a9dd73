"""Cream: board admission, meta-matching pick, second-order meta gradient, loss mix, state, its smoke run's board.

Resume and the smoke pipeline itself are checked for every method in test_method_contract.py; cost in
benchmark.perf."""

import dataclasses
import io
import json

import pytest
import torch
from helpers import preset_config

from baselines.cream import Cream, Entry, admit, choose_teacher, meta_ratings, soft_target_ce
from ennas.core.context import RunContext
from ennas.core.loop import Step
from ennas.core.method import get_method
from spaces.supernet import SuperNet

A, B, C, D = (0,) * 8, (1,) * 8, (2,) * 8, (3,) * 8
GAP = 5.0  # the official entry margin (cream.acc_gap)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    cfg = preset_config("smoke", {"channels_last": False}, method="cream", space="s1")
    return RunContext(cfg, tmp_path_factory.mktemp("cream"), torch.device("cpu"))


@pytest.fixture(scope="module")
def batch(ctx):
    x, y = zip(*(ctx.data.train[i] for i in range(16)))
    return ctx.data.to_device(torch.stack(x), "cpu"), torch.tensor(y)


def filled_board(model, x, archs, dtype=torch.float32):
    """Board entries on consecutive 4-image slices of x, each storing its own path's softmax."""
    entries = []
    for i, arch in enumerate(archs):
        images = x[4 * i : 4 * i + 4].to(dtype)
        with torch.no_grad():
            probs = model(images, arch).softmax(1)
        entries.append(Entry(50.0 - i, 1000 + i, arch, images, probs))
    return entries


# --- board admission ------------------------------------------------------------------------------
def test_admit_not_full_enters_sorted():
    board = admit([], Entry(10.0, 5, A), 3, GAP)
    board = admit(board, Entry(30.0, 5, B), 3, GAP)
    board = admit(board, Entry(20.0, 5, C), 3, GAP)
    assert [e.arch for e in board] == [B, C, A]
    board = admit(board, Entry(1.0, 5, D), 4, GAP)  # not full at size 4: even a poor path enters, last
    assert [e.arch for e in board] == [B, C, A, D]


def test_admit_full_rules():
    board = [Entry(30.0, 100, A), Entry(20.0, 100, B), Entry(10.0, 100, C)]
    beaten = admit(board, Entry(15.1, 200, D), 3, GAP)  # > worst + 5 with more FLOPs: enters, worst dropped
    assert [e.arch for e in beaten] == [A, B, D] and len(beaten) == 3
    assert admit(board, Entry(14.9, 200, D), 3, GAP) == board  # < worst + 5 with more FLOPs: rejected
    assert admit(board, Entry(15.0, 200, D), 3, GAP) == board  # exactly +5 is not "beats by 5"
    cheaper = admit(board, Entry(10.5, 50, D), 3, GAP)  # beats worst with fewer FLOPs: enters
    assert [e.arch for e in cheaper] == [A, B, D]
    assert admit(board, Entry(10.0, 50, D), 3, GAP) == board  # ties the worst: not better, rejected
    assert admit(board, Entry(9.0, 1, D), 3, GAP) == board  # fewer FLOPs but worse: rejected
    assert board == [Entry(30.0, 100, A), Entry(20.0, 100, B), Entry(10.0, 100, C)]  # input untouched


def test_admit_ties_rank_fewer_flops_first():
    board = admit([Entry(20.0, 300, A)], Entry(20.0, 100, B), 2, GAP)
    assert [e.arch for e in board] == [B, A]


# --- meta-matching -----------------------------------------------------------------------------------
def test_meta_picks_highest_rating_and_its_weight():
    classes, n = 3, 4
    meta = torch.nn.Linear(4 * classes, 1)
    with torch.no_grad():  # rating = sum over the 4 images of (student − stored) probability of class 0
        meta.weight.zero_()
        meta.weight.view(4, classes)[:, 0] = 1.0
        meta.bias.fill_(0.25)
    student = torch.full((n, 4, classes), 1.0 / classes)
    stored = torch.full((n, 4, classes), 1.0 / classes)
    stored[:, :, 0] = torch.tensor([0.6, 0.1, 0.5, 0.3]).unsqueeze(1)  # entry 1 has the lowest class-0 mass
    ratings = meta_ratings(meta, student, stored)
    expected = 4 * (1.0 / classes - stored[:, 0, 0]) + 0.25
    assert torch.allclose(ratings, expected)
    idx, weight = choose_teacher(ratings)
    assert idx == 1
    assert weight.item() == pytest.approx(torch.sigmoid(-expected[1]).item())  # the chosen entry's, not the last's
    assert weight.item() != pytest.approx(torch.sigmoid(-expected[-1]).item())


def test_method_pick_uses_meta_ratings(ctx, batch):
    model, (x, _) = ctx.supernet, batch
    method = Cream(ctx)
    method.board = filled_board(model, x, [A, B, C])
    student = D
    probs = method.student_probs(model, student)
    assert probs.shape == (3, 4, ctx.data.num_classes)
    with torch.no_grad():
        own = torch.stack([model(e.images, student).softmax(1) for e in method.board])
    assert torch.allclose(probs, own, atol=1e-6)  # each entry's images form their own BN batch
    stored = torch.stack([e.probs for e in method.board])
    diff = (probs - stored).flatten(1).double()
    solve = torch.linalg.pinv(diff)  # (4C, n): weights whose ratings are a chosen one-hot vector
    for target in range(3):  # a meta layer with known weights that rates `target` 1 and the others 0
        with torch.no_grad():
            method.meta.weight.copy_(solve[:, target].float().unsqueeze(0))
            method.meta.bias.fill_(-0.5)
        ratings = method.ratings(model, student)
        assert torch.allclose(ratings, torch.eye(3)[target] - 0.5, atol=1e-3)
        assert method.pick(model, student) == target


# --- loss ------------------------------------------------------------------------------------------
def test_loss_ce_before_start_or_empty_board_then_mix(ctx, batch):
    model, (x, y) = ctx.supernet, batch
    method = Cream(ctx)
    student = (4, 2, 7, 1, 0, 3, 5, 2)
    ce = method.criterion(model(x, student), y)
    loss0, _ = method.batch_loss(model, Step(x, y, [student], 0, 1, 0.1))  # before distill.start_epoch
    assert loss0.item() == pytest.approx(ce.item(), rel=1e-6)
    loss1, stats = method.batch_loss(model, Step(x, y, [student], 1, 1, 0.1))  # KD epoch, empty board
    assert loss1.item() == pytest.approx(ce.item(), rel=1e-6)
    method.after_step(model, Step(x, y, [student], 1, 1, 0.1), stats)
    assert len(method.board) == 1 and method.board[0].arch == student
    assert method.board[0].score == pytest.approx(100.0 * stats["correct"] / stats["count"])
    assert method.board[0].images.shape[0] == 4

    method.board = filled_board(model, x, [A, B, C])
    idx, v = choose_teacher(method.ratings(model, student))
    teacher = method.board[idx].arch
    assert method.opts.pick == "meta"  # the official default PICK_METHOD
    loss2, _ = method.batch_loss(model, Step(x, y, [student], 1, 1, 0.1))
    with torch.no_grad():
        kd = soft_target_ce(model(x, student), model(x, teacher), tau=1.0)
    v = v.item()
    assert 0 < v < 1 and abs(v - 0.5) > 1e-4  # a real matching value, not the fixed 0.5 of "top1"
    assert loss2.item() == pytest.approx((v * kd.item() + (2 - v) * ce.item()) / 2, rel=1e-5)
    # the stored softmax of a path admitted now is the teacher's on the first 4 images
    with torch.no_grad():
        assert torch.allclose(method._pending[1], model(x, teacher)[:4].softmax(1), atol=1e-6)
    method.opts = dataclasses.replace(method.opts, pick="top1")  # the official alternative: v fixed at kd_mix
    loss3, _ = method.batch_loss(model, Step(x, y, [student], 1, 1, 0.1))
    assert loss3.item() == pytest.approx(0.25 * kd.item() + 0.75 * ce.item(), rel=1e-5)


@pytest.mark.parametrize("pick", ["meta", "top1"])
def test_main_loss_trains_meta_layer_only_in_meta_pick(ctx, batch, pick):
    """Pick "meta": the main loss's gradient through v reaches the meta layer, which steps after the step (the
    official meta group in the main optimiser); pick "top1": the main loss never touches it."""
    model, (x, y) = ctx.supernet, batch
    method = Cream(ctx)
    # meta_lr 1: on an untrained supernet the gradient through v is ~1e-5, so the official 1e-4 moves the weights
    # by less than float32 resolution; the mechanism is what is checked here
    method.opts = dataclasses.replace(method.opts, pick=pick, meta_lr=1.0)
    method.board = filled_board(model, x, [A, B, C])
    student = (4, 2, 7, 1, 0, 3, 5, 2)
    before = method.meta.weight.detach().clone()
    step = Step(x, y, [student], 1, 1, ctx.cfg.supernet.lr)  # the schedule's start: the meta rate is meta_lr
    loss, stats = method.batch_loss(model, step)
    loss.backward()
    grad = method.meta.weight.grad
    assert (grad is not None) == (pick == "meta")
    method.after_step(model, step, stats)
    model.zero_grad(set_to_none=True)
    expected = before - 1.0 * grad if pick == "meta" else before  # SGD's first step: lr x gradient
    assert pick == "top1" or grad.abs().max() > 0
    assert torch.allclose(method.meta.weight.detach(), expected, atol=1e-8)
    assert method.meta.weight.grad is None  # cleared after its step


# --- the second-order meta update -------------------------------------------------------------------
def test_meta_gradient_matches_finite_difference_and_lowers_held_out_ce(ctx, batch, monkeypatch):
    torch.manual_seed(0)
    model = SuperNet(ctx.space, ctx.data.num_classes, ctx.data.in_chans).double()
    x, y = batch[0].double(), batch[1]
    method = Cream(ctx)
    method.meta.double()
    method.board = filled_board(model, x, [A, C, D], torch.float64)
    with torch.no_grad():  # a rated-differently board so the matching weight is far from saturation
        method.meta.weight.mul_(3.0)
    student, lr = B, 0.5
    before = {k: v.clone() for k, v in model.state_dict().items()}

    loss, idx = method.held_out_loss(model, x, y, student, lr)
    grads = torch.autograd.grad(loss, list(method.meta.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 1e-8

    def held_out(shift: float) -> float:
        saved = [p.detach().clone() for p in method.meta.parameters()]
        with torch.no_grad():
            for p, g in zip(method.meta.parameters(), grads):
                p.add_(shift * g / norm)
        value, chosen = method.held_out_loss(model, x, y, student, lr)
        with torch.no_grad():
            for p, s in zip(method.meta.parameters(), saved):
                p.copy_(s)
        assert chosen == idx
        return value.item()

    eps = 1e-5
    finite = (held_out(eps) - held_out(-eps)) / (2 * eps)
    assert finite == pytest.approx(norm.item(), rel=1e-4)  # the second-order gradient is the true derivative

    monkeypatch.setattr(method, "opts", dataclasses.replace(method.opts, meta_lr=1e-2))
    method.meta_update(model, x, y, student, lr)  # supernet lr at its base: meta lr = cream.meta_lr
    after, _ = method.held_out_loss(model, x, y, student, lr)
    assert after.item() < loss.item()  # the meta step lowered the simulated student's held-out CE
    for k, v in model.state_dict().items():  # and touched nothing but the meta layer
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


# --- state ------------------------------------------------------------------------------------------
def test_state_dict_round_trip_restores_board_and_meta(ctx, batch, monkeypatch):
    model, (x, y) = ctx.supernet, batch
    method = Cream(ctx)
    monkeypatch.setattr(method, "opts", dataclasses.replace(method.opts, meta_lr=10.0))  # steps that show in float32
    method.board = filled_board(model, x, [A, B, C])
    start = method.meta.weight.detach().clone()
    method.meta_update(model, x, y, D, 0.05)  # gives the meta optimiser a momentum buffer
    assert not torch.equal(start, method.meta.weight)
    method._add(kd_batches=2.0, kd=3.0, self_taught=0.0)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)

    other = Cream(ctx)
    monkeypatch.setattr(other, "opts", method.opts)
    other.load_state_dict(torch.load(buffer, weights_only=False))
    assert [e.summary() for e in other.board] == [e.summary() for e in method.board]
    for a, b in zip(other.board, method.board):
        assert torch.equal(a.images, b.images) and torch.equal(a.probs, b.probs) and a.arch == b.arch
    for a, b in zip(other.meta.parameters(), method.meta.parameters()):
        assert torch.equal(a, b)
    assert other.sums == method.sums
    # the restored method continues identically: same teacher, same meta step, same loss
    assert other.pick(model, D) == method.pick(model, D)
    method.meta_update(model, x, y, D, 0.05)
    other.meta_update(model, x, y, D, 0.05)
    for a, b in zip(other.meta.parameters(), method.meta.parameters()):
        assert torch.equal(a, b)
    assert other.final_extras() == method.final_extras()
    assert method.final_extras()["board_best_arch"] == "0-0-0-0-0-0-0-0"


def test_registered_unsupervised(ctx):
    assert get_method("cream") is Cream and Cream.supervised is False
    assert Cream(ctx).extra_modules() == {}  # the meta layer is never in the supernet optimiser


# --- its smoke run ---------------------------------------------------------------------------------------
def test_smoke_run_fills_the_board_from_the_kd_start_and_records_its_choice(smoke_run):
    out = smoke_run("cream")
    final = json.loads((out / "final.json").read_text())
    extras = final["extras"]
    assert extras["board_best_arch"] and extras["board_best_flops"] > 0
    result = json.loads((out / "search_result.json").read_text())
    assert result["board_best_arch"] == extras["board_best_arch"]
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    supernet = [r for r in records if r["stage"] == "supernet"]
    assert "teacher_acc" not in supernet[0] and supernet[0]["board_size_filled"] == 0  # before KD start
    last = supernet[-1]
    assert last["board_size_filled"] == 3 and last["meta_updates"] == 1
    assert last["gap"] == pytest.approx(last["teacher_acc"] - last["student_acc"])
