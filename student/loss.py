"""Sparse knowledge-distillation loss from stored top-K teacher outputs (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sparse_teacher_logprobs(
    topk_ids: torch.Tensor, topk_logp: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Rebuild a dense teacher log-distribution [B, C] from its top-K (TinyViT's rule).

    The probability mass outside the top-K, ``1 - sum(p_topk)``, is spread uniformly over the
    other ``C - K`` classes. ``topk_logp`` are log-probabilities at temperature 1 (``-inf`` for
    entries the encoding rounded to zero). With K == C this is exactly the teacher's softmax.
    """
    logp = topk_logp.float()
    kept = torch.isfinite(logp)  # entries rounded to p = 0 count as tail, not top-K
    mass = torch.where(kept, logp.exp(), 0.0).sum(-1).clamp(max=1.0)  # [B]
    rest = (num_classes - kept.sum(-1)).clamp(min=1)  # [B] classes sharing the residual
    tail = torch.log((1.0 - mass).clamp(min=1e-12) / rest)  # [B]
    dense = tail[:, None].expand(logp.shape[0], num_classes)
    return dense.scatter(1, topk_ids.long(), torch.where(kept, logp, tail[:, None]))


def sparse_kd_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logp: torch.Tensor,
    temperature: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, batch mean, from sparse targets.

    Matches timm's online logit distillation (``LogitDistillationTask``: ``kl_div(log_softmax(
    s / T), log_softmax(t / T), log_target=True, reduction='batchmean') * T**2``) when K equals
    the number of classes. ``weight`` [B] (0/1) masks views the store marks missing.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    num_classes = student_logits.shape[-1]
    teacher = sparse_teacher_logprobs(topk_ids, topk_logp, num_classes)  # [B, C] at T = 1
    if temperature != 1.0:
        teacher = torch.log_softmax(teacher / temperature, dim=-1)
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_q, teacher, reduction="none", log_target=True).sum(-1)  # [B]
    if weight is None:
        return kl.mean() * temperature**2
    w = weight.float()
    return (kl * w).sum() / w.sum().clamp(min=1.0) * temperature**2


def mixed_label_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    partner_labels: torch.Tensor,
    lam: torch.Tensor,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Hard-label cross-entropy for (possibly) mixed views: lam * CE(y) + (1 - lam) * CE(y')."""
    ce_a = F.cross_entropy(student_logits, labels, reduction="none", label_smoothing=smoothing)
    ce_b = F.cross_entropy(
        student_logits, partner_labels, reduction="none", label_smoothing=smoothing
    )
    return (lam * ce_a + (1.0 - lam) * ce_b).mean()
