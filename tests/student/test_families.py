"""One short training run per student family, streaming targets from a real uvicorn service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from student.config import TrainConfig
from student.train import run_train
from tests.store_fixtures import LiveServer


@pytest.fixture(scope="module")
def service(small_store: Path) -> Iterator[str]:
    from api.main import create_app
    from api.settings import Settings

    with LiveServer(create_app(Settings(root=small_store.parent))) as live:
        yield f"{live.url}/v1/stores/{small_store.name}"


@pytest.mark.parametrize(
    "model", ["tiny_vit_5m_224", "efficientformerv2_s0", "tf_efficientnetv2_b0"]
)
def test_family_trains_from_the_service(service, demo_data, tmp_path, model):
    cfg = TrainConfig(
        store=service, data=str(demo_data), model=model, out=str(tmp_path), epochs=1,
        batch_size=4, img_size=64, workers=0, max_steps=2, val_fraction=0.2, progress=False,
        tensorboard=False,
    )  # fmt: skip
    summary = run_train(cfg)
    assert summary["step"] == 2 and summary["loss"] > 0
    state = torch.load(tmp_path / "last.pth", map_location="cpu", weights_only=False)
    assert state["config"]["store"] == service and state["num_classes"] == 1000
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= record["teacher_agreement"] <= 100.0


def test_service_and_local_store_give_the_same_training(service, small_store, demo_data, tmp_path):
    """Targets streamed through the service are the stored ones: identical weights after 2 steps."""
    weights = []
    for name, store in (("http", service), ("local", str(small_store))):
        cfg = TrainConfig(
            store=store, data=str(demo_data), model="tf_efficientnetv2_b0",
            out=str(tmp_path / name), epochs=1, batch_size=4, img_size=64, workers=0,
            max_steps=2, val_fraction=0.2, progress=False, tensorboard=False,
        )  # fmt: skip
        run_train(cfg)
        state = torch.load(tmp_path / name / "last.pth", map_location="cpu", weights_only=False)
        weights.append(state["model"])
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_efficientformer_v1_forward_backward_at_224():
    from models import create_student
    from student.loss import sparse_kd_loss

    model = create_student("efficientformer_l1", num_classes=10, img_size=224)
    logits = model(torch.randn(2, 3, 224, 224))
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.1], [0.6, 0.3, 0.05]]))
    loss = sparse_kd_loss(logits, ids, logp)
    loss.backward()
    assert torch.isfinite(loss) and model.stem.conv1.weight.grad is not None
