from pathlib import Path

import pytest
import timm
import torch
import torchvision.transforms.functional as F
from PIL import Image

from models import create_teacher
from models.teachers import _map_by_order


def _top1(model, info, path: Path) -> str:
    size = info.input_size[1:]
    im = Image.open(path).convert("RGB").resize(size[::-1], Image.BICUBIC)
    x = F.normalize(F.to_tensor(im), info.mean, info.std)[None]
    with torch.no_grad():
        idx = int(model(x).argmax(-1))
    return info.class_names[idx]


@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("coffee/coffee.png", {"espresso", "cup", "coffee mug"}),
        ("cat/chelsea.png", {"Egyptian cat", "tiger cat", "tabby, tabby cat"}),
        ("vehicle/motorcycle_left.png", {"moped", "motor scooter, scooter"}),
    ],
)
def test_real_teacher_predicts_real_photos(lite0, demo_data, photo, expected):
    model, info = lite0
    assert _top1(model, info, demo_data / photo) in expected


def test_teacher_info_identity(lite0):
    _, info = lite0
    assert info.architecture == "tf_efficientnet_lite0"
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    assert info.num_classes == 1000 and len(info.class_names) == 1000
    assert len(info.weights_sha256) == 64
    assert type(info).from_dict(info.to_dict()) == info


def test_unknown_teacher_without_checkpoint_is_a_clear_error():
    with pytest.raises(ValueError, match="--checkpoint"):
        create_teacher("resnet50")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        create_teacher("resnet18", checkpoint=tmp_path / "nope.pth")


def test_own_checkpoint_roundtrip(tmp_path):
    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    ckpt = tmp_path / "t.pth"
    names = [f"c{i}" for i in range(7)]
    torch.save({"model": model.state_dict(), "num_classes": 7, "class_names": names}, ckpt)
    loaded, info = create_teacher("resnet18", checkpoint=ckpt)
    assert info.num_classes == 7 and info.class_names == tuple(names)
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_map_by_order_rejects_shape_mismatch():
    small = timm.create_model("resnet18", pretrained=False, num_classes=3)
    other = timm.create_model("resnet18", pretrained=False, num_classes=4)
    with pytest.raises(ValueError, match="does not fit"):
        _map_by_order(small.state_dict(), other)
