"""EnNAS's distillation term (Eq. 3): the temperature-scaled KL from the detached ensemble teacher.

EnNAS trains each sampled subnet i on L_i = CE(z_i, y) + lambda * tau^2 * KL(softmax(t / tau) || softmax(z_i / tau)),
t the detached ensemble teacher (docs/design.md §2; the printed "-tau^2 KL" is an extraction error). The
values of lambda and tau, and why, are the `ennas` options' (ennas.method.ennas.EnNASOptions).
"""

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(t/tau) || softmax(z/tau)), batch mean: EnNAS's distillation term; no gradient to t."""
    log_q = F.log_softmax(student_logits / tau, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    # log_target: exact zero when student == teacher, and no 0 * log 0 for saturated teachers.
    return tau * tau * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
