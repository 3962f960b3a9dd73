"""EnNAS's ensemble teacher (Eq. 1-2): the weights that minimise the ensemble's cross-entropy on a batch.

Problem: given logits z_i (B, C) of m subnets and labels y, find w minimising the summed cross-entropy

    f(w) = sum_b [ logsumexp_c(sum_i w_i z_ibc) - sum_i w_i z_i,b,y_b ]

subject to sum(w) = 1 and, by default, w >= 0 (the simplex, as KDCL-Linear; docs/design.md §2).

Two solvers:
- ``newton`` (default): trust-region Newton with an active set, in float64 on the logits' device.
  f is convex and its derivatives in w are cheap (the Hessian is m x m: the per-sample covariances
  of the subnets' logits under the ensemble's softmax), so two or three Newton steps reach the
  optimum to machine precision. It stops only at a KKT point of the simplex (equal gradients on
  the support, no smaller ones off it), which for a convex problem is the global minimum.
- ``ecos``: the paper's way, cvxpy with ECOS; a slow reference (about a minute at B 256, C 1000).

With only sum(w) = 1 (the paper as printed) the minimum need not exist: if a direction d with
sum(d) = 0 never lowers any sample's correct-class margin and raises one, CE falls forever along
it. Newton's answer is accepted only with a proof that a minimum exists (a Stiemke certificate
built from the softmax at the solution, one extra pass); otherwise ``recession_direction``
decides exactly (a linear programme) and the solver falls back to the simplex with a warning
instead of returning huge weights.
"""

import torch

from ennas.method.newton import EnsembleSolverError, active_set_newton, shifted_logits
from ennas.method.sum_constraint import recession_direction, sum_weights

__all__ = [
    "CONSTRAINTS",
    "SOLVERS",
    "EnsembleSolverError",
    "ensemble_logits",
    "ensemble_objective",
    "ensemble_weights",
    "recession_direction",
]

SOLVERS = ("newton", "ecos")
CONSTRAINTS = ("simplex", "sum")


def ensemble_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The ensemble teacher's logits sum_i w_i z_i, (m, B, C) -> (B, C), in the logits' dtype."""
    return torch.einsum("i,ibc->bc", weights.to(logits), logits)


def ensemble_objective(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the weighted logit sum: the one definition the solvers and tests share."""
    return torch.nn.functional.cross_entropy(ensemble_logits(logits, weights), labels, reduction="sum")


def ensemble_weights(
    logits: torch.Tensor,
    labels: torch.Tensor,
    solver: str = "newton",
    constraint: str = "simplex",
) -> torch.Tensor:
    """Weights (m,) minimising the ensemble's summed CE on the batch: the teacher of Eq. 1-2.

    Detached, on the logits' device and in their dtype. ``constraint="sum"`` falls back to the
    simplex, with a logged warning, when the sum-only problem has no minimum.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}")
    if constraint not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {constraint!r}; known: {', '.join(CONSTRAINTS)}")
    if logits.dim() != 3 or labels.shape != logits.shape[1:2]:
        raise ValueError(f"expected logits (m, B, C) and labels (B,), got {tuple(logits.shape)}, {tuple(labels.shape)}")
    m = logits.shape[0]
    if m == 1:
        return torch.ones(1, dtype=logits.dtype, device=logits.device)
    if solver == "ecos":
        return _ecos_weights(logits, labels, constraint).to(logits)
    margins = shifted_logits(logits, labels)
    if constraint == "sum":
        w = sum_weights(margins)
        if w is not None:
            return w.to(logits)
    return active_set_newton(margins, simplex=True)[0].to(logits)  # to the logits' device and dtype


def _ecos_weights(logits: torch.Tensor, labels: torch.Tensor, constraint: str) -> torch.Tensor:
    """The paper's reference: cvxpy + ECOS on the summed (not mean) CE, built without DPP parameters."""
    import cvxpy as cp

    z = logits.detach().to(torch.float64).cpu().numpy()
    y = labels.cpu().numpy()
    m, b, c = z.shape
    w = cp.Variable(m)
    # Constants, not cp.Parameter: DPP compilation of parameters this large exhausts memory (docs/design.md §8).
    scores = cp.reshape(z.reshape(m, b * c).T @ w, (b, c), order="C")
    correct = z[:, range(b), y].T @ w
    objective = cp.Minimize(cp.sum(cp.log_sum_exp(scores, axis=1)) - cp.sum(correct))
    constraints = [cp.sum(w) == 1] + ([w >= 0] if constraint == "simplex" else [])
    problem = cp.Problem(objective, constraints)
    try:
        problem.solve(solver=cp.ECOS)
    except cp.error.SolverError as err:
        raise EnsembleSolverError(f"ECOS failed on the {constraint} problem (m={m}, B={b}, C={c}): {err}") from err
    if problem.status != cp.OPTIMAL:
        raise EnsembleSolverError(f"ECOS status {problem.status!r} on the {constraint} problem (m={m}, B={b}, C={c})")
    return torch.as_tensor(w.value, dtype=torch.float64, device=logits.device)
