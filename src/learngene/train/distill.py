"""Classification and knowledge-distillation losses (DeiT's definitions).

Every term is a *mean over the local batch* (the soft KD term divides by the number of
student logits, B*K, which is proportional to B). With equal per-rank batches, DDP's
gradient averaging over N ranks then gives exactly the gradient of the same loss over
the global batch -- one process with batch B and N processes with B/N each agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

_soft_target_ce = SoftTargetCrossEntropy()


def soft_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(teacher || student) on tau-softened distributions, as in DeiT's DistillationLoss.

    student_logits, teacher_logits: [B, K].
    = sum over batch and classes of KL, times tau^2 (keeps gradient scale independent of
    tau), divided by B*K (the numel of the student logits -- DeiT's normalisation).
    """
    s = F.log_softmax(student_logits.float() / tau, dim=1)
    t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    kl = F.kl_div(s, t, reduction="sum", log_target=True)
    return kl * (tau * tau) / student_logits.numel()


def hard_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's argmax labels (DeiT's hard distillation)."""
    return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=1))


def train_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float,
    distill: str = "none",
    teacher_logits: torch.Tensor | None = None,
    alpha: float = 0.5,
    tau: float = 1.0,
) -> torch.Tensor:
    """(1 - alpha) * CE(logits, labels) + alpha * KD, or plain CE when distill == "none".

    logits [B, K] (any float dtype; computed in float32); labels int64 [B], or soft targets
    float [B, K] (Mixup/CutMix, smoothing already in them: timm's SoftTargetCrossEntropy, the
    ``label_smoothing`` argument is then unused), as in DeiT, where the KD term sees the same
    mixed images.
    """
    if labels.is_floating_point():
        ce = _soft_target_ce(logits.float(), labels.float())
    else:
        ce = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if distill == "none":
        return ce
    assert teacher_logits is not None
    if distill == "soft":
        kd = soft_distill_loss(logits, teacher_logits, tau)
    else:
        kd = hard_distill_loss(logits, teacher_logits)
    return (1.0 - alpha) * ce + alpha * kd
