"""EnNAS's ensemble weights by exact trust-region Newton with an active set, in float64 on the logits' device.

f(w) = sum_b logsumexp_c(sum_i w_i zr_ibc) on the shifted logits zr = z - z_y is convex and its derivatives in
w are cheap (the Hessian is m x m: the per-sample covariances of the subnets' logits under the ensemble's
softmax), so two or three Newton steps reach the optimum to machine precision. The solver stops only at a
KKT point of the simplex (equal gradients on the support, no smaller ones off it), which for a convex
problem is the global minimum. `ennas.method.ensemble` is the entry point.
"""

import math

import torch

# Newton stops when the decrement (twice the predicted decrease) is this small relative to f: gradients
# then agree to ~1e-10. Purely relative: a batch classified with huge margins has f ~ 1e-40 and still
# a well-defined minimum.
_DECREMENT_RTOL = 1e-20
# A weight vector this large on the `sum` problem is treated as diverging (no finite optimum).
MAX_WEIGHT = 1e6


class EnsembleSolverError(RuntimeError):
    """Raised when a solver cannot return ensemble weights (e.g. ECOS reports a failure)."""


def shifted_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_ibc - z_i,b,y_b in float64, laid out (B, m, C): f(w) = sum_b logsumexp_c(sum_i w_i of these)."""
    z = logits.detach().transpose(0, 1)  # (B, m, C): per-sample blocks, so the solver's products are bmm
    zy = z.gather(2, labels.view(-1, 1, 1).expand(-1, z.shape[1], 1))
    out = torch.empty(z.shape, dtype=torch.float64, device=z.device)
    return torch.sub(z, zy, out=out)  # one pass: transpose, promotion to float64 and shift together


class Objective:
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


def sum_zero_basis(k: int, like: torch.Tensor) -> torch.Tensor:
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
    basis = sum_zero_basis(k, g)
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


def active_set_newton(
    zr: torch.Tensor, simplex: bool, max_iter: int = 500, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, bool]:
    """Minimise f over the simplex (or over sum(w) = 1) by trust-region Newton on the face of the free weights.

    Exactness: on a face, trust-region Newton converges to the face's minimum, quadratically once
    the Newton step fits the region; a step that would leave the simplex is cut at the boundary
    and that weight fixed at 0; at a face minimum the Lagrange multipliers of the fixed weights
    (g_j - nu, with nu the common gradient of the free ones) are checked and the most negative
    one released. The loop ends only at a KKT point: the global minimum of this convex problem.
    """
    obj = Objective(zr)
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
            radius = min(2.0 * radius, MAX_WEIGHT)
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
        if float(w.abs().max()) > MAX_WEIGHT:
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
