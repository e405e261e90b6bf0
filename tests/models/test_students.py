import pytest
import torch

from models import STUDENT_FAMILIES, create_student

_FIXED_224 = {"efficientformer_l1", "efficientformer_l3", "efficientformer_l7"}
ALL = [n for names in STUDENT_FAMILIES.values() for n in names]


@pytest.mark.parametrize("name", ALL)
def test_every_student_trains_a_step_on_cpu(name):
    size = 224 if name in _FIXED_224 else 64
    batch = 1 if name in _FIXED_224 else 2
    model = create_student(name, num_classes=5, img_size=size)
    model.train()
    x = torch.randn(batch, 3, size, size)
    out = model(x)
    assert out.shape == (batch, 5)
    out.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", ["efficientformer_l1", "efficientformer_l7"])
def test_efficientformer_v1_refuses_other_resolutions(name):
    with pytest.raises(ValueError, match="224"):
        create_student(name, num_classes=5, img_size=128)


def test_efficientformerv2_is_built_for_its_resolution():
    model = create_student("efficientformerv2_s0", num_classes=3, img_size=96)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 3)


def test_bad_student_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        create_student("tiny_vit_5m_224", num_classes=0)
    with pytest.raises(ValueError, match="unknown student"):
        create_student("not_a_model_xyz", num_classes=3)
