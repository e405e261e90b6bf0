"""A served root with real stores, a live uvicorn server over it, and a secret outside it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from teacher_store.store.schema import StoreAttrs
from tests.store_fixtures import V1_FIXTURE, LiveServer, build_store, make_attrs

SECRET = b"TOP-SECRET-outside-the-root-3f9a1c"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base/secret.txt (outside), base/root/{demo,wide,partial} and a pristine copy of demo."""
    base = tmp_path_factory.mktemp("served")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "root"
    root.mkdir()
    build_store(root / "demo", make_attrs())
    wide = make_attrs(300, views=2, topk=3, num_classes=70000, encoding="prob-u8", chunk=64)
    build_store(root / "wide", wide, seed=1)
    build_store(root / "partial", make_attrs(600), seed=2, units=3)
    # Schema version 2: 2 view slots per chunk (transposed), prob-u8x3, entries head-sorted in
    # a class order with zero-valued entries as padding (what generate writes).
    v2 = make_attrs(500, views=5, topk=20, num_classes=1000, encoding="prob-u8x3", chunk=64,
                    shard=128, shard_views=4)  # fmt: skip
    order = np.random.default_rng(5).permutation(1000).tolist()
    v2 = StoreAttrs.from_dict(
        {**v2.to_dict(), "chunk_views": 2, "id_order": "head-sorted-pad", "class_order": order}
    )
    build_store(root / "v2", v2)
    shutil.copytree(V1_FIXTURE, root / "v1")  # a real version-1 store, as the old code wrote it
    (root / "not-a-store").mkdir()
    (root / "not-a-store" / "zarr.json").write_text('{"attributes": {}}')
    return {"base": base, "root": root, "demo": root / "demo", "secret": base / "secret.txt"}


@pytest.fixture(scope="session")
def server(served: dict[str, Path]) -> Iterator[LiveServer]:
    from api.main import create_app
    from api.settings import Settings

    settings = Settings(root=served["root"], max_block=512, rescan_interval_s=0.0)
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture(scope="session")
def token_server(served: dict[str, Path]) -> Iterator[tuple[LiveServer, str]]:
    from api.main import create_app
    from api.settings import Settings

    token = "s3cret-token-for-tests"
    token_file = served["base"] / "token.txt"
    token_file.write_text(token + "\n")
    settings = Settings(root=served["root"], token_file=token_file)
    with LiveServer(create_app(settings)) as live:
        yield live, token


@pytest.fixture(scope="session")
def photo_root(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """A served root holding ``demo``: a real store of the 17 demo photos (Lite0, 2 views)."""
    from tests.store_fixtures import generate_small

    root = tmp_path_factory.mktemp("photos") / "root"
    root.mkdir()
    generate_small(demo_data, root / "demo")
    return root


@pytest.fixture(scope="session")
def photo_server(photo_root: Path, demo_data: Path) -> Iterator[LiveServer]:
    """The service over ``photo_root`` with the demo photos as ``demo``'s dataset."""
    from api.main import create_app
    from api.settings import Settings

    settings = Settings(root=photo_root, data=f"demo={demo_data}", rescan_interval_s=0.0)
    with LiveServer(create_app(settings)) as live:
        yield live
