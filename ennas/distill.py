"""Distillation losses: EnNAS's temperature-scaled KL to the ensemble teacher (Eq. 3) and Cream's soft-target CE.

EnNAS trains each sampled subnet i on L_i = CE(z_i, y) + lambda * tau^2 * KL(softmax(t / tau) || softmax(z_i / tau)),
t the detached ensemble teacher (DESIGN.md section 2; the printed "-tau^2 KL" is an extraction error).
The paper prints lambda and tau but gives no values. Our defaults, held by the run configuration:

- lambda = 1.0 (``DEFAULT_LAMBDA``): KDCL and ONE weight the distillation term about equally with CE.
- tau = 3.0 (``DEFAULT_TAU``): ONE uses 3 and related online-distillation work 2-4. The tau^2 factor
  keeps the soft-target gradients, which shrink as 1/tau^2, comparable to CE's whatever tau is.
"""

import torch
import torch.nn.functional as F

DEFAULT_LAMBDA = 1.0
DEFAULT_TAU = 3.0


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """tau^2 * KL(softmax(t/tau) || softmax(z/tau)), batch mean: EnNAS's distillation term; no gradient to t."""
    log_q = F.log_softmax(student_logits / tau, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    # log_target: exact zero when student == teacher, and no 0 * log 0 for saturated teachers.
    return tau * tau * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def soft_target_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """-sum_c p_t log q_s at temperature tau, batch mean: Cream's KD loss (used there at tau = 1, unscaled)."""
    p = F.softmax(teacher_logits.detach() / tau, dim=-1)
    return -(p * F.log_softmax(student_logits / tau, dim=-1)).sum(-1).mean()
