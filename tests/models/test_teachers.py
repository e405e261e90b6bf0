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


def test_save_teacher_checkpoint_is_what_create_teacher_loads(tmp_path):
    from models import save_teacher_checkpoint

    torch.manual_seed(3)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    names = ["ant", "bee", "cat"]
    path = save_teacher_checkpoint(
        tmp_path / "sub" / "t.pth", model, names, (3, 40, 48), extra={"train_time_s": 1.5}
    )
    assert path == tmp_path / "sub" / "t.pth" and [p.name for p in path.parent.iterdir()] == [
        "t.pth"
    ]
    loaded, info = create_teacher("resnet10t", checkpoint=path)
    assert info.class_names == tuple(names) and info.num_classes == 3
    assert info.input_size == (3, 40, 48)
    assert info.mean == tuple(model.pretrained_cfg["mean"])  # the model's own normalization
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert torch.load(path, weights_only=True)["train_time_s"] == 1.5
    own = save_teacher_checkpoint(
        tmp_path / "n.pth", model, names, (3, 32, 32), (0.5,) * 3, (0.25,) * 3
    )
    _, info = create_teacher("resnet10t", checkpoint=own)
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.25, 0.25, 0.25)


def test_save_teacher_checkpoint_needs_one_name_per_class(tmp_path):
    from models import save_teacher_checkpoint

    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        save_teacher_checkpoint(tmp_path / "t.pth", model, ["a", "b"], (3, 32, 32))
    with pytest.raises(ValueError, match=r"input_size must be \[C, H, W\]"):
        save_teacher_checkpoint(tmp_path / "t.pth", model, ["a", "b", "c"], (32, 32))
    assert not list(tmp_path.iterdir())
