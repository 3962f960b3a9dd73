"""EnNAS's ensemble teacher (Eq. 1-2): the weights that minimise the ensemble's cross-entropy on a batch.

Problem: given logits z_i (B, C) of m subnets and labels y, find w minimising the summed cross-entropy

    f(w) = sum_b [ logsumexp_c(sum_i w_i z_ibc) - sum_i w_i z_i,b,y_b ]

subject to sum(w) = 1 and, by default, w >= 0 (the simplex, as KDCL-Linear; DESIGN.md section 2).

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

import logging
import math
import statistics
import time

import torch

log = logging.getLogger(__name__)

SOLVERS = ("newton", "ecos")
CONSTRAINTS = ("simplex", "sum")

# Newton stops when the decrement (twice the predicted decrease) is this small relative to f: gradients
# then agree to ~1e-10. Purely relative: a batch classified with huge margins has f ~ 1e-40 and still
# a well-defined minimum.
_DECREMENT_RTOL = 1e-20
# A weight vector this large on the `sum` problem is treated as diverging (no finite optimum).
_MAX_WEIGHT = 1e6


class EnsembleSolverError(RuntimeError):
    """Raised when a solver cannot return ensemble weights (e.g. ECOS reports a failure)."""


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
    margins = _neg_margins(logits, labels)
    if constraint == "sum":
        w = _sum_weights(margins)
        if w is not None:
            return w.to(logits)
    return _active_set_newton(margins, simplex=True)[0].to(logits)  # to the logits' device and dtype


def recession_direction(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """A direction d (sum 0) along which the `sum` problem's CE falls forever, or None if it has a minimum.

    f has a minimiser on {sum(w) = 1} iff no d with sum(d) = 0 has every correct-class margin
    (sum_i d_i (z_i,b,y_b - z_i,b,c)) >= 0 and some > 0 (f's recession function is
    sum_b max_c(-margin_bc), so such d are exactly the directions along which f strictly
    decreases without bound on w). We maximise the summed margins over such d in the box
    [-1, 1]^m, a linear programme in m variables solved by HiGHS, and check the answer in float64.
    """
    d = _recession(_neg_margins(logits, labels))
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


def _neg_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_ibc - z_i,b,y_b in float64, laid out (B, m, C): f(w) = sum_b logsumexp_c(sum_i w_i of these)."""
    z = logits.detach().transpose(0, 1)  # (B, m, C): per-sample blocks, so the solver's products are bmm
    zy = z.gather(2, labels.view(-1, 1, 1).expand(-1, z.shape[1], 1))
    out = torch.empty(z.shape, dtype=torch.float64, device=z.device)
    return torch.sub(z, zy, out=out)  # one pass: transpose, promotion to float64 and shift together


class _Objective:
    """f(w), its gradient and Hessian on the shifted logits zr (B, m, C), in one pass over the data."""

    def __init__(self, zr: torch.Tensor, chunk_bytes: int = 1 << 20):
        self.zr = zr
        batch, m, classes = zr.shape
        # Why chunks on the CPU: each block of samples is read from memory once and then reused from
        # cache by every product; on a GPU one block avoids many small kernel launches.
        per_sample = m * classes * zr.element_size()
        self.chunk = batch if zr.is_cuda else max(1, min(batch, chunk_bytes // per_sample))
        self.buf = torch.empty((self.chunk, m, classes), dtype=zr.dtype, device=zr.device)

    def evaluate(
        self, w: torch.Tensor, hessian: bool = True, centred: bool = True
    ) -> tuple[float, torch.Tensor, torch.Tensor | None]:
        """f, gradient sum_b E_p[zr_b] and (if asked) Hessian sum_b Cov_p(zr_b), all on the CPU.

        With centred=False the last is the raw second moment sum_b E_p[zr_b zr_b^T] instead.
        """
        w = w.to(self.zr.device)
        m = self.zr.shape[1]
        acc = torch.zeros(1 + m + m * m, dtype=self.zr.dtype, device=self.zr.device)  # f, g, H
        for lo in range(0, self.zr.shape[0], self.chunk):
            zr = self.zr[lo : lo + self.chunk]
            s = torch.matmul(w, zr)  # (k, C)
            top, arg = s.max(1, keepdim=True)
            e = torch.exp(s - top).scatter_(1, arg, 0.0)
            rest = e.sum(1, keepdim=True)
            # Why log1p of the non-top terms: a well-classified sample's CE (1e-20, say) vanishes in 1 + rest.
            acc[0] += (top + torch.log1p(rest)).sum()
            p = e.div_(1.0 + rest).scatter_(1, arg, 1.0 / (1.0 + rest)).unsqueeze(1)  # (k, 1, C)
            mean = torch.bmm(zr, p.transpose(1, 2))  # (k, m, 1)
            acc[1 : 1 + m] += mean.sum((0, 2))
            if hessian:
                buf = self.buf[: zr.shape[0]]
                # sum_c p (zr - mean)(zr - mean)^T = sum_c p (zr - mean) zr^T. Why centred on one side:
                # the raw second moment minus the means' product cancels catastrophically for large logits.
                x = torch.sub(zr, mean, out=buf).mul_(p) if centred else torch.mul(zr, p, out=buf)
                acc[1 + m :] += torch.bmm(x, zr.transpose(1, 2)).sum(0).view(-1)
        small = acc.cpu()  # one transfer per evaluation
        h = small[1 + m :].view(m, m)
        return float(small[0]), small[1 : 1 + m], (h + h.T) / 2 if hessian else None


def _sum_zero_basis(k: int, like: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (k, k-1) of the sum-zero vectors: there the constrained step is unconstrained."""
    return torch.linalg.qr(torch.ones(k, 1, dtype=like.dtype, device=like.device), mode="complete")[0][:, 1:]


def _model_step(g: torch.Tensor, h: torch.Tensor, radius: float) -> tuple[torch.Tensor, float]:
    """Trust-region Newton step on {sum(d) = 0} for gradient g, Hessian h, and the Newton decrement.

    The step minimises g.d + d.H.d / 2 over sum-zero d with |d| <= radius (exactly, through H's
    eigenvectors): the Newton step when it fits, else (H + mu I)^-1 g with mu found by bisection.
    Why a trust region: with large logits the softmax saturates, f is nearly piecewise linear and
    H nearly zero away from the kinks, so the pure Newton step is absurdly long.
    """
    k = g.shape[0]
    if k == 1:
        return torch.zeros_like(g), 0.0
    basis = _sum_zero_basis(k, g)
    evals, evecs = torch.linalg.eigh(basis.T @ h @ basis)
    lam = evals.clamp(min=0.0).tolist()  # H is positive semidefinite; negative values are rounding
    coef = (evecs.T @ (basis.T @ g)).tolist()
    # Identical subnets make H singular, and the gradient along such flat directions is rounding
    # (both measured against the full g and H): drop it, or the step wanders along them. A real
    # gradient there is left to the trust region.
    floor = max(float(h.abs().max()) * 1e-12, 1e-300)
    noise = 1e-10 * float(g.abs().max())
    coef = [0.0 if v <= floor and abs(c) <= noise else c for c, v in zip(coef, lam, strict=True)]
    decrement = sum(c * c / max(v, floor) for c, v in zip(coef, lam, strict=True))

    def length(mu: float) -> float:
        return math.hypot(*(c / max(v + mu, floor) for c, v in zip(coef, lam, strict=True)))

    mu = 0.0
    if length(0.0) > radius:
        lo, hi = 0.0, math.hypot(*coef) / radius  # length(hi) <= radius
        for _ in range(100):
            mu = (lo + hi) / 2 if lo > 0 or hi < 1e-300 else hi * 1e-3  # geometric start, then bisect
            if length(mu) > radius:
                lo = mu
            else:
                hi = mu
            if lo > 0 and hi - lo <= 1e-3 * hi:
                break
        mu = hi
    shift = torch.tensor([1.0 / max(v + mu, floor) for v in lam], dtype=g.dtype, device=g.device)
    step = -(basis @ (evecs @ (torch.tensor(coef, dtype=g.dtype, device=g.device) * shift)))
    return step, decrement


def _active_set_newton(
    zr: torch.Tensor, simplex: bool, max_iter: int = 500, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, bool]:
    """Minimise f over the simplex (or over sum(w) = 1) by trust-region Newton on the face of the free weights.

    Exactness: on a face, trust-region Newton converges to the face's minimum, quadratically once
    the Newton step fits the region; a step that would leave the simplex is cut at the boundary
    and that weight fixed at 0; at a face minimum the Lagrange multipliers of the fixed weights
    (g_j - nu, with nu the common gradient of the free ones) are checked and the most negative
    one released. The loop ends only at a KKT point: the global minimum of this convex problem.
    """
    obj = _Objective(zr)
    m = zr.shape[1]
    # The m-sized algebra runs on the CPU in float64; only the passes over the data use the device.
    w = torch.full((m,), 1.0 / m, dtype=torch.float64) if start is None else start.cpu()
    free = torch.ones(m, dtype=torch.bool)
    stuck = torch.zeros(m, dtype=torch.bool)  # released weights that at once wanted to go negative
    radius = 1.0  # the simplex's scale; grows on the sum-only problem when steps succeed
    f, g, h = obj.evaluate(w)
    h_fresh = True
    for _ in range(max_iter):
        idx = free.nonzero().squeeze(1)
        step_free, decrement = _model_step(g[idx], h[idx][:, idx], radius)
        if not h_fresh and decrement > _DECREMENT_RTOL * f:
            _, _, h = obj.evaluate(w)
            h_fresh = True
            step_free, decrement = _model_step(g[idx], h[idx][:, idx], radius)
        # Converged: a negligible decrement, or a small one whose step is below rounding (the floor).
        at_floor = decrement <= 1e-10 * f and float(step_free.abs().max()) <= 1e-13 * (1 + float(w.abs().max()))
        if decrement <= _DECREMENT_RTOL * f or at_floor:
            if not simplex:
                return w + (1.0 - w.sum()) / m, True
            # Face minimum reached: release the fixed weight whose multiplier g_j - nu is most negative.
            mult = (g - g[idx].mean()).masked_fill(free | stuck, float("inf"))
            j = int(mult.argmin())
            if mult[j] < -1e-10 * (float(g.abs().max()) + 1e-300):
                free[j] = True
                continue
            return w, True
        step = torch.zeros_like(w)
        step[idx] = step_free
        alpha, block = _ratio_test(w, step, free) if simplex else (1.0, -1)
        if alpha <= 0.0:
            # A just-released weight whose step points outside: keep it at 0.
            free[block], stuck[block] = False, True
            continue
        predicted = -float(alpha * (g @ step) + 0.5 * alpha**2 * (step @ h @ step))
        trial = _trial(w, step, alpha, block, simplex)
        # Why skip the Hessian deep in Newton's quadratic region: the old one is as good for the
        # convergence test at the next point, which then usually ends the loop.
        f_new, g_new, h_new = obj.evaluate(trial, hessian=decrement > 1e-8 * f)
        # Why a noise allowance: near the optimum f's change is below its float64 rounding.
        noise = 64 * torch.finfo(torch.float64).eps * f
        ratio = (f - f_new) / predicted if predicted > noise else (1.0 if f - f_new >= -noise else -1.0)
        length = alpha * float(step.norm())
        if ratio < 0.25:
            radius = 0.25 * length
        elif ratio > 0.75 and length >= 0.9 * radius:
            radius = min(2.0 * radius, _MAX_WEIGHT)
        if ratio <= 1e-4:
            if radius <= 1e-15 * (1.0 + float(w.abs().max())):  # no progress possible at this precision
                return w, decrement <= 1e-8 * f
            continue
        if block >= 0:
            free[block] = False
        stuck[:] = False
        w, f, g = trial, f_new, g_new
        h_fresh = h_new is not None
        if h_fresh:
            h = h_new
        if float(w.abs().max()) > _MAX_WEIGHT:
            break
    return w, False


def _ratio_test(w: torch.Tensor, step: torch.Tensor, free: torch.Tensor) -> tuple[float, int]:
    """The longest fraction (<= 1) of the step that keeps w >= 0, and the weight that blocks it (or -1)."""
    shrinking = (step < 0) & free
    if not shrinking.any():
        return 1.0, -1
    ratios = (w / -step).masked_fill(~shrinking, float("inf"))
    block = int(ratios.argmin())
    limit = float(ratios[block])
    return (1.0, -1) if limit > 1.0 else (limit, block)


def _trial(w: torch.Tensor, step: torch.Tensor, alpha: float, block: int, simplex: bool) -> torch.Tensor:
    """w + alpha * step, with the blocking weight set to exactly 0 and rounding kept on the simplex."""
    out = w + alpha * step
    if block >= 0:
        out[block] = 0.0
    if simplex:
        out = torch.clamp(out, min=0.0)
        out = out / out.sum()
    return out


def _sum_weights(zr: torch.Tensor) -> torch.Tensor | None:
    """Newton on {sum(w) = 1}, or None (with a warning) when that problem has no finite minimum."""
    # Newton converges in a handful of steps when a minimum exists; without one it creeps forever.
    w, converged = _active_set_newton(zr, simplex=False, max_iter=30)
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
        w, converged = _active_set_newton(zr, simplex=False, start=w)
    if not converged or float(w.abs().max()) > _MAX_WEIGHT:
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
    obj = _Objective(zr)
    _, g, second_moment = obj.evaluate(w, centred=False)
    basis = _sum_zero_basis(m, g)
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


def _ecos_weights(logits: torch.Tensor, labels: torch.Tensor, constraint: str) -> torch.Tensor:
    """The paper's reference: cvxpy + ECOS on the summed (not mean) CE, built without DPP parameters."""
    import cvxpy as cp

    z = logits.detach().to(torch.float64).cpu().numpy()
    y = labels.cpu().numpy()
    m, b, c = z.shape
    w = cp.Variable(m)
    # Constants, not cp.Parameter: DPP compilation of parameters this large exhausts memory (DESIGN 8).
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
