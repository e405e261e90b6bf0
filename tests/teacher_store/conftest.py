"""Real stores for the `distill info` / `verify` / `show` tests (real photos, Lite0, CPU).

Each fixture is built once per test module that asks for it; modules using them run on one
torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.store_fixtures import generate_small


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread here: on 2 busy cores, 2 threads can run the teacher 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(one_thread, tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    return generate_small(demo_data, tmp_path_factory.mktemp("insp") / "store")


@pytest.fixture(scope="module")
def broken(
    one_thread, tmp_path_factory: pytest.TempPathFactory, demo_data: Path
) -> tuple[Path, Path]:
    """(data with an unreadable cat/broken.jpg, its store)."""
    root = tmp_path_factory.mktemp("broken")
    data = root / "data"
    shutil.copytree(demo_data, data)
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage" * 20)
    return data, generate_small(data, root / "store")


@pytest.fixture(scope="module")
def replaced(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, int]:
    """(a copy of the demo photos whose sample 3 is other pixels in a file of the same size,
    3): names and sizes, the dataset fingerprint, are those of the demo photos."""
    from teacher_store.images.dataset import ImageFolder
    from tests.store_fixtures import replace_same_size

    data = tmp_path_factory.mktemp("replaced") / "data"
    shutil.copytree(demo_data, data)
    replace_same_size(data / ImageFolder.scan(data).paths[3])
    return data, 3
