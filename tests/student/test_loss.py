import math

import pytest
import timm
import torch
from timm.task.distillation import LogitDistillationTask

from student.loss import mixed_label_loss, sparse_kd_loss, sparse_teacher_logprobs


def _tiny(num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = timm.create_model("resnet10t", pretrained=False, num_classes=num_classes)
    return m.eval()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_sparse_kd_with_all_classes_equals_timm_online_kd(temperature):
    c = 7
    student, teacher = _tiny(c, 0), _tiny(c, 1)
    task = LogitDistillationTask(
        student, teacher, temperature=temperature, distill_loss_weight=1.0, verbose=False
    )
    task.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = task(x, torch.zeros(4, dtype=torch.long))
        # The teacher sees the input re-normalized from the student's to its own statistics.
        t_in = task.teacher.normalize_input(x, task.student_mean, task.student_std)
        t_logits = task.teacher(t_in, return_features=False)
    t_logp = torch.log_softmax(t_logits, -1)
    vals, ids = t_logp.topk(c, -1)  # K == C: the sparse target is the whole distribution
    ours = sparse_kd_loss(out["output"], ids, vals, temperature=temperature)
    torch.testing.assert_close(ours, out["kd_loss"], rtol=1e-5, atol=1e-6)


def test_residual_mass_is_spread_uniformly():
    ids = torch.tensor([[2, 0]])
    logp = torch.log(torch.tensor([[0.5, 0.3]]))
    dense = sparse_teacher_logprobs(ids, logp, 5).exp()[0]
    torch.testing.assert_close(dense, torch.tensor([0.3, 0.2 / 3, 0.5, 0.2 / 3, 0.2 / 3]))
    assert math.isclose(float(dense.sum()), 1.0, rel_tol=1e-6)


def test_zero_probability_entries_from_u8_encoding_are_handled():
    ids = torch.tensor([[1, 3, 0]])
    logp = torch.tensor([[math.log(0.9), -math.inf, -math.inf]])
    loss = sparse_kd_loss(torch.zeros(1, 4, requires_grad=True), ids, logp)
    assert torch.isfinite(loss)
    loss.backward()


def test_loss_is_zero_when_student_matches_teacher_and_positive_otherwise():
    c = 6
    logits = torch.randn(3, c)
    logp = torch.log_softmax(logits, -1)
    vals, ids = logp.topk(c, -1)
    assert float(sparse_kd_loss(logits, ids, vals)) == pytest.approx(0.0, abs=1e-6)
    assert float(sparse_kd_loss(logits.flip(-1), ids, vals)) > 0.01


def test_weight_masks_missing_views():
    c = 5
    good = torch.randn(2, c)
    vals, ids = torch.log_softmax(good, -1).topk(3, -1)
    student = torch.cat([good, torch.randn(1, c) * 10])
    ids3 = torch.cat([ids, ids[:1]])
    vals3 = torch.cat([vals, vals[:1]])
    masked = sparse_kd_loss(student, ids3, vals3, weight=torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(masked, sparse_kd_loss(good, ids, vals))


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        sparse_kd_loss(torch.zeros(1, 3), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1), 0)


def test_mixed_label_loss_interpolates():
    logits = torch.randn(2, 4)
    ya, yb = torch.tensor([0, 1]), torch.tensor([2, 3])
    full = mixed_label_loss(logits, ya, yb, torch.ones(2))
    torch.testing.assert_close(full, torch.nn.functional.cross_entropy(logits, ya))
    half = mixed_label_loss(logits, ya, yb, torch.full((2,), 0.5))
    ce_b = torch.nn.functional.cross_entropy(logits, yb)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * ce_b)
