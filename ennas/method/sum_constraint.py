"""The sum-only ensemble problem (w summing to 1, no sign constraint): when it has a minimum, and finding it.

With only sum(w) = 1 (the paper as printed) the minimum need not exist: if a direction d with sum(d) = 0
never lowers any sample's correct-class margin and raises one, CE falls forever along it. Newton's answer
is accepted only with a proof that a minimum exists (a Stiemke certificate built from the softmax at the
solution, one extra pass); otherwise `recession_direction` decides exactly (a linear programme) and the
caller falls back to the simplex with a warning instead of returning huge weights.
"""

import logging

import torch

from ennas.method.newton import (
    MAX_WEIGHT,
    EnsembleSolverError,
    Objective,
    active_set_newton,
    shifted_logits,
    sum_zero_basis,
)

log = logging.getLogger("ennas.method.ensemble")


def recession_direction(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """A direction d (sum 0) along which the `sum` problem's CE falls forever, or None if it has a minimum.

    f has a minimiser on {sum(w) = 1} iff no d with sum(d) = 0 has every correct-class margin
    (sum_i d_i (z_i,b,y_b - z_i,b,c)) >= 0 and some > 0 (f's recession function is
    sum_b max_c(-margin_bc), so such d are exactly the directions along which f strictly
    decreases without bound on w). We maximise the summed margins over such d in the box
    [-1, 1]^m, a linear programme in m variables solved by HiGHS, and check the answer in float64.
    """
    d = _recession(shifted_logits(logits, labels))
    return None if d is None else d.to(logits)


def _recession(zr: torch.Tensor) -> torch.Tensor | None:
    """recession_direction on the shifted logits zr = z - z_y (float64)."""
    from scipy.optimize import linprog  # cvxpy depends on scipy; imported here as only `sum` needs it

    rows = -zr.transpose(1, 2).reshape(-1, zr.shape[1])  # (B*C, m): the margins along d are rows @ d
    rows = rows[rows.abs().amax(1) > 0]
    scale = rows.abs().max() if rows.numel() else rows.new_zeros(())
    if scale == 0:
        return None  # all subnets give the same margins: f is constant along every direction
    rows = rows / scale
    a = rows.cpu().numpy()
    m = a.shape[1]
    res = linprog(
        c=-a.sum(0),
        A_ub=-a,
        b_ub=[0.0] * a.shape[0],
        A_eq=[[1.0] * m],
        b_eq=[0.0],
        bounds=[(-1.0, 1.0)] * m,
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    if res.status != 0:
        raise EnsembleSolverError(f"recession LP failed: {res.message}")
    d = torch.as_tensor(res.x, dtype=torch.float64, device=rows.device)
    d = d - d.mean()  # exact sum zero after the solver's rounding
    margin = rows @ d
    # Why these tolerances: rows are scaled to max |entry| 1 and |d| <= 1, so a margin below -1e-9 is
    # a real decrease in that sample's margin, and one above 1e-7 is a real gain.
    if margin.min() >= -1e-9 and margin.max() > 1e-7:
        return d
    return None


def sum_weights(zr: torch.Tensor) -> torch.Tensor | None:
    """Newton on {sum(w) = 1}, or None (with a warning) when that problem has no finite minimum."""
    # Newton converges in a handful of steps when a minimum exists; without one it creeps forever.
    w, converged = active_set_newton(zr, simplex=False, max_iter=30)
    if converged and _certifies_minimum(zr, w):
        return w
    # No cheap certificate: decide exactly (the LP), then say why we give up on the sum-only problem.
    direction = _recession(zr)
    if direction is not None:
        log.warning(
            "ensemble weights: the sum-only problem has no minimum (CE falls forever along d = %s); "
            "falling back to the simplex",
            [round(x, 4) for x in direction.tolist()],
        )
        return None
    if not converged:
        w, converged = active_set_newton(zr, simplex=False, start=w)
    if not converged or float(w.abs().max()) > MAX_WEIGHT:
        log.warning("ensemble weights: Newton did not converge on the sum-only problem; falling back to the simplex")
        return None
    return w


def _certifies_minimum(zr: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the softmax at w proves that the sum-only problem has a minimum (cheap, one pass).

    By Stiemke's lemma the minimum exists iff some y > 0 (one per sample and class) has
    sum_r y_r P a_r = 0, with a_r = z_bc - z_by the rows and P the projection onto sum-zero
    vectors. At a near-stationary w the softmax y = p gives sum_r p_r P a_r = P g (small). The
    correction delta_r = -p_r a_r.u, with u solving (sum_r p_r P a_r a_r^T P) u = P g, cancels it,
    and keeps y + delta > 0 iff a_r.u < 1 for every row: one matrix product over the data.
    """
    m = zr.shape[1]
    obj = Objective(zr)
    _, g, second_moment = obj.evaluate(w, centred=False)
    basis = sum_zero_basis(m, g)
    evals, evecs = torch.linalg.eigh(basis.T @ second_moment @ basis)
    keep = evals > 1e-12 * evals.max()
    if not keep.all():
        # Flat directions are fine only if no sample's margin moves along them (e.g. identical subnets).
        flat = (basis @ evecs[:, ~keep]).to(zr.device)
        if float(torch.matmul(flat.T, zr).abs().max()) > 1e-12 * float(zr.abs().max()):
            return False
    v = evecs[:, keep]
    u = basis @ (v @ ((v.T @ (basis.T @ g)) / evals[keep]))
    return float(torch.matmul(u.to(zr.device), zr).max()) < 0.5  # slack for rounding; the exact bound is 1
