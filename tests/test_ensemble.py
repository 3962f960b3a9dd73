"""The ensemble teacher's weights: the Newton solver against the paper's ECOS, KKT optimality, edge cases."""

import logging
import math

import pytest
import torch

from benchmark.solver_fixtures import random_problem, solver_timings
from ennas.method.ensemble import (
    EnsembleSolverError,
    ensemble_logits,
    ensemble_objective,
    ensemble_weights,
    recession_direction,
)


def _problem(kind: str, m: int, batch: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test problems: random subnets, identical ones, one dominating the others, or huge logits."""
    logits, labels = random_problem(batch, classes, m, seed=seed)
    if kind == "identical":  # weights not unique: any point of the optimal face will do
        logits[1] = logits[0]
    elif kind == "dominant":  # the others are subnet 0 made worse: lower correct-class logits, plus noise
        gen = torch.Generator().manual_seed(seed)
        worse = logits[:1] + torch.randn(m - 1, batch, classes, generator=gen, dtype=torch.float64)
        worse[:, torch.arange(batch), labels] -= 2.0
        logits = torch.cat([logits[:1], worse])
    elif kind == "large":  # saturated softmax: f is nearly piecewise linear in w
        logits = 40.0 * logits
    return logits, labels


def _ecos_or_skip(logits: torch.Tensor, labels: torch.Tensor, constraint: str) -> torch.Tensor:
    """The ECOS reference, or skip: we compare only where ECOS succeeds."""
    try:
        return ensemble_weights(logits, labels, solver="ecos", constraint=constraint)
    except EnsembleSolverError as err:
        pytest.skip(f"ECOS failed: {err}")


def _gradient(logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """df/dw_i = sum_b,c p_bc (z_ibc - z_i,b,y_b), p the ensemble's softmax, written without cancellation."""
    p = torch.softmax(ensemble_logits(logits, w), dim=1)
    return torch.einsum("bc,ibc->i", p, logits - logits.gather(2, labels.expand(len(logits), -1)[..., None]))


def _assert_kkt_simplex(logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> None:
    """KKT on the simplex, from a gradient computed apart from the solver: equal on the support, no smaller off it."""
    assert torch.all(w >= 0) and math.isclose(float(w.sum()), 1.0, abs_tol=1e-12)
    g = _gradient(logits, labels, w)
    support = w > 1e-9
    nu = g[support].mean()
    tol = 1e-6 * (float(g.abs().max()) + 1e-300)
    assert float((g[support] - nu).abs().max()) <= tol, (g, w)
    assert torch.all(g[~support] >= nu - tol), (g, w)


def test_gradient_helper_matches_autograd() -> None:
    logits, labels = random_problem(32, 7, 3, seed=4)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ensemble_objective(logits, labels, w), w)
    assert torch.allclose(_gradient(logits, labels, w.detach()), g, rtol=1e-10, atol=0)


# (kind, m, B, C, seed): covers m in {2,3,4,6}, B in {8,64,256}, C in {2,10,100} and the degenerate kinds.
CASES = [
    ("random", 2, 8, 2, 0),
    ("random", 3, 64, 10, 1),
    ("random", 4, 256, 10, 2),
    ("random", 6, 64, 100, 3),
    ("random", 4, 256, 100, 4),  # the moderate ECOS case (about 2 s)
    ("random", 6, 256, 2, 5),
    ("random", 3, 8, 10, 6),
    ("identical", 3, 64, 10, 7),
    ("identical", 4, 256, 2, 8),
    ("dominant", 3, 64, 10, 9),
    ("dominant", 4, 64, 2, 10),
    ("large", 3, 64, 10, 11),
]


@pytest.mark.parametrize("constraint", ["simplex", "sum"])
@pytest.mark.parametrize(("kind", "m", "batch", "classes", "seed"), CASES)
def test_newton_agrees_with_ecos(kind: str, m: int, batch: int, classes: int, seed: int, constraint: str) -> None:
    logits, labels = _problem(kind, m, batch, classes, seed)
    if constraint == "sum" and recession_direction(logits, labels) is not None:
        pytest.skip("sum-only problem without a minimum: covered by the fallback test")
    w_newton = ensemble_weights(logits, labels, constraint=constraint)
    w_ecos = _ecos_or_skip(logits, labels, constraint)
    f_newton = float(ensemble_objective(logits, labels, w_newton))
    f_ecos = float(ensemble_objective(logits, labels, w_ecos))
    assert math.isclose(float(w_newton.sum()), 1.0, abs_tol=1e-12)
    assert abs(f_newton - f_ecos) <= 1e-6 * abs(f_ecos) + 1e-12, (f_newton, f_ecos)
    if kind != "identical":
        assert torch.allclose(w_newton, w_ecos, atol=1e-4, rtol=0), (w_newton, w_ecos)
    if constraint == "simplex":
        _assert_kkt_simplex(logits, labels, w_newton)


def test_dominant_subnet_gets_the_whole_weight() -> None:
    logits, labels = _problem("dominant", 4, 64, 10, 0)
    w = ensemble_weights(logits, labels)
    assert torch.equal(w, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=w.dtype)), w
    _assert_kkt_simplex(logits, labels, w)


@pytest.mark.parametrize("seed", range(12))
def test_kkt_on_the_simplex(seed: int) -> None:
    m, batch, classes = [(2, 8, 2), (3, 32, 5), (4, 64, 10), (6, 16, 3)][seed % 4]
    logits, labels = random_problem(batch, classes, m, seed=100 + seed, spread=[0.3, 1.0, 3.0][seed % 3])
    _assert_kkt_simplex(logits, labels, ensemble_weights(logits, labels))


def _unbounded_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """Subnet 0 equals subnet 1 with its correct-class logit raised: it wins on every sample."""
    logits, labels = random_problem(64, 10, 3, seed=3)
    logits[0] = logits[1]
    logits[0, torch.arange(64), labels] += 0.5
    return logits, labels


def test_unbounded_sum_falls_back_to_the_simplex(caplog: pytest.LogCaptureFixture) -> None:
    logits, labels = _unbounded_problem()
    d = recession_direction(logits, labels)
    assert d is not None and abs(float(d.sum())) < 1e-12
    margins = ensemble_logits(logits, d)
    assert torch.all(margins.gather(1, labels[:, None]) >= margins - 1e-9)
    with caplog.at_level(logging.WARNING, logger="ennas.method.ensemble"):
        w = ensemble_weights(logits, labels, constraint="sum")
    assert "falling back to the simplex" in caplog.text
    assert torch.isfinite(w).all() and torch.all(w >= 0) and math.isclose(float(w.sum()), 1.0, abs_tol=1e-12)
    assert torch.allclose(w, ensemble_weights(logits, labels, constraint="simplex"))


def test_recession_criterion_on_random_small_problems() -> None:
    # With few samples in many dimensions the sum-only problem often has no minimum (Wendel's theorem).
    found = 0
    for seed in range(20):
        logits, labels = random_problem(4, 2, 4, seed=seed, spread=2.0)
        d = recession_direction(logits, labels)
        if d is None:
            w = ensemble_weights(logits, labels, constraint="sum")
            assert float(w.abs().max()) < 1e3
            continue
        found += 1
        margins = ensemble_logits(logits, d)
        gap = margins.gather(1, labels[:, None]) - margins  # >= 0 everywhere, > 0 somewhere
        assert gap.min() >= -1e-9 and gap.max() > 1e-9
        f = [
            float(ensemble_objective(logits, labels, torch.full((4,), 0.25, dtype=torch.float64) + t * d))
            for t in (0, 5, 50)
        ]
        assert f[0] > f[1] > f[2]
    assert found > 0


@pytest.mark.parametrize("constraint", ["simplex", "sum"])
def test_all_identical_subnets(constraint: str) -> None:
    # Every weight vector is optimal; the solver must not wander along the flat directions.
    logits, labels = random_problem(32, 5, 4, seed=2)
    logits[:] = logits[0]
    w = ensemble_weights(logits, labels, constraint=constraint)
    assert float(w.abs().max()) <= 1.0 and math.isclose(float(w.sum()), 1.0, abs_tol=1e-12)
    single = ensemble_objective(logits[:1], labels, torch.ones(1, dtype=torch.float64))
    assert math.isclose(float(ensemble_objective(logits, labels, w)), float(single), rel_tol=1e-12)


def test_one_subnet_and_shapes() -> None:
    logits, labels = random_problem(16, 5, 1)
    for constraint in ("simplex", "sum"):
        assert torch.equal(ensemble_weights(logits, labels, constraint=constraint), torch.ones(1, dtype=torch.float64))
    logits, labels = random_problem(16, 5, 3)
    w = ensemble_weights(logits.float(), labels)
    assert w.dtype == torch.float32 and w.shape == (3,)
    assert ensemble_logits(logits, w).shape == (16, 5)
    with pytest.raises(ValueError, match="known: newton, ecos"):
        ensemble_weights(logits, labels, solver="bfgs")


def test_objective_is_the_summed_cross_entropy() -> None:
    logits, labels = random_problem(8, 4, 2)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    t = 0.3 * logits[0] + 0.7 * logits[1]
    by_hand = sum(torch.logsumexp(t[b], 0) - t[b, labels[b]] for b in range(8))
    assert math.isclose(float(ensemble_objective(logits, labels, w)), float(by_hand), rel_tol=1e-12)


def test_large_and_shifted_logits_are_stable() -> None:
    logits, labels = random_problem(64, 10, 4, seed=5)
    w = ensemble_weights(logits, labels)
    # A per-sample offset changes no cross-entropy: the weights must not move.
    shifted = logits + 1e4 * torch.randn(1, 64, 1, dtype=torch.float64)
    assert torch.allclose(ensemble_weights(shifted, labels), w, atol=1e-9)
    for scale in (30.0, 300.0):
        big = scale * logits
        wb = ensemble_weights(big, labels)
        assert torch.isfinite(wb).all()
        _assert_kkt_simplex(big, labels, wb)


def test_weights_do_not_carry_gradients() -> None:
    logits, labels = random_problem(8, 4, 3)
    logits.requires_grad_(True)
    assert not ensemble_weights(logits, labels).requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_the_logits_device() -> None:
    logits, labels = random_problem(256, 1000, 4)
    w_cpu = ensemble_weights(logits, labels)
    w_gpu = ensemble_weights(logits.cuda(), labels.cuda())
    assert w_gpu.device.type == "cuda"
    assert torch.allclose(w_gpu.cpu(), w_cpu, atol=1e-9)


def test_solver_timings_reports_medians() -> None:
    out = solver_timings(32, 10, 3, repeats=3, include_ecos=False)
    assert set(out) == {"newton_simplex", "newton_sum"}
    assert all(0 < t < 5 for t in out.values())
