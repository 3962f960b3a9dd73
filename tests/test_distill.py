"""Distillation losses: zero at agreement, no gradient to the teacher, hand-computed values, tau^2 scaling."""

import math

import pytest
import torch

from baselines.cream import soft_target_ce
from ennas.method.distill import kd_loss
from ennas.method.ennas import EnNASOptions


def _logits(seed: int, shape: tuple[int, int] = (8, 10)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("tau", [1.0, 3.0, 10.0])
def test_kd_is_zero_when_student_equals_teacher(tau: float) -> None:
    z = _logits(0)
    assert abs(float(kd_loss(z, z.clone(), tau))) < 1e-12
    assert float(kd_loss(z, _logits(1), tau)) > 0


@pytest.mark.parametrize("loss", [kd_loss, soft_target_ce])
def test_no_gradient_reaches_the_teacher(loss) -> None:
    student = _logits(0).requires_grad_(True)
    teacher = _logits(1).requires_grad_(True)
    loss(student, teacher, 2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_kd_matches_a_hand_computation() -> None:
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[3.0, 0.0], [0.0, math.log(3.0) * 2.0]], dtype=torch.float64)
    tau = 2.0
    total = 0.0
    for z, t in zip(student.tolist(), teacher.tolist(), strict=True):
        p = [math.exp(v / tau) / sum(math.exp(u / tau) for u in t) for v in t]
        q = [math.exp(v / tau) / sum(math.exp(u / tau) for u in z) for v in z]
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = tau**2 * total / 2  # batchmean over 2 samples
    assert math.isclose(float(kd_loss(student, teacher, tau)), expected, rel_tol=1e-12)
    # Second sample by eye: p = (1/4, 3/4), q = (1/2, 1/2).
    second = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert math.isclose(float(kd_loss(student[1:], teacher[1:], tau)), 4.0 * second, rel_tol=1e-12)


def test_kd_carries_the_tau_squared_factor() -> None:
    z, t = _logits(0), _logits(1)
    for tau in (1.0, 2.0, 4.0):
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(z / tau, -1), torch.softmax(t / tau, -1), reduction="batchmean"
        )
        assert math.isclose(float(kd_loss(z, t, tau)), tau**2 * float(kl), rel_tol=1e-10)


def test_tau_squared_keeps_gradients_comparable() -> None:
    # Soft-target gradients shrink like 1/tau^2 at high temperature; tau^2 scaling restores the scale.
    z, t = _logits(0, (64, 10)), _logits(1, (64, 10))
    norms = []
    for tau in (2.0, 8.0, 32.0):
        s = z.clone().requires_grad_(True)
        kd_loss(s, t, tau).backward()
        norms.append(float(s.grad.norm()))
    assert max(norms) / min(norms) < 4.0


def test_soft_target_ce_is_cross_entropy_with_soft_labels() -> None:
    z, t = _logits(0), _logits(1)
    expected = torch.nn.functional.cross_entropy(z, torch.softmax(t, -1))
    assert math.isclose(float(soft_target_ce(z, t)), float(expected), rel_tol=1e-12)
    # Equals the teacher's entropy plus the KL: minimal at student == teacher.
    entropy = -(torch.softmax(t, -1) * torch.log_softmax(t, -1)).sum(-1).mean()
    assert math.isclose(float(soft_target_ce(t, t)), float(entropy), rel_tol=1e-12)
    assert math.isclose(float(soft_target_ce(z, t) - soft_target_ce(t, t)), float(kd_loss(z, t, 1.0)), rel_tol=1e-10)


def test_documented_defaults() -> None:
    assert (EnNASOptions().lam, EnNASOptions().tau) == (1.0, 3.0)
