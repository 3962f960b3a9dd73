"""Solver fixtures for benchmark.perf and the tests: realistic random ensemble problems and solve timings."""

import statistics
import time

import torch

from ennas.method.ensemble import EnsembleSolverError, ensemble_weights


def random_problem(
    batch: int, classes: int, m: int, seed: int = 0, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (m, B, C) of subnets that share a signal and disagree by noise: a realistic test problem."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (batch,), generator=gen)
    shared = torch.randn(batch, classes, generator=gen, dtype=torch.float64)
    shared[torch.arange(batch), labels] += 2.0
    noise = spread * torch.randn(m, batch, classes, generator=gen, dtype=torch.float64)
    return shared + noise, labels


def solver_timings(batch: int, classes: int, m: int, repeats: int = 5, include_ecos: bool = False) -> dict[str, float]:
    """Median seconds per solve of each solver/constraint on a random problem (for benchmark/perf.py).

    ECOS is run once per constraint (it takes about a minute at C 1000); a failed ECOS solve is NaN.
    """
    logits, labels = random_problem(batch, classes, m, seed=1)
    runs = [("newton", "simplex", repeats), ("newton", "sum", repeats)]
    if include_ecos:
        runs += [("ecos", "simplex", 1), ("ecos", "sum", 1)]
    out = {}
    ensemble_weights(logits, labels)  # warm-up: first calls pay for lazy initialisation (and imports)
    if include_ecos:
        ensemble_weights(logits[:, :2, :2], labels[:2].clamp(max=1), solver="ecos")
    for solver, constraint, n in runs:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            try:
                ensemble_weights(logits, labels, solver=solver, constraint=constraint)
            except EnsembleSolverError:
                times.append(float("nan"))
                continue
            times.append(time.perf_counter() - start)
        out[f"{solver}_{constraint}"] = statistics.median(times)
    return out
