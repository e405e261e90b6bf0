"""Shared fixtures: real bundled photos and the real offline teacher, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never reach for a hub in tests
# Before torch loads: spinning OpenMP threads starve the servers and workers tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from teacher_store.images.demo_data import write_demo_data

    root = tmp_path_factory.mktemp("demo") / "images"
    write_demo_data(root)
    return root


@pytest.fixture(scope="session")
def lite0():
    from models import create_teacher

    return create_teacher("efficientnet_lite0")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (moto, 127.0.0.1) with the AWS_* variables pointing at it
    for the rest of the session (restored after); see tests/s3_fixtures.py."""
    from tests.s3_fixtures import running_s3_server

    with running_s3_server(tmp_path_factory.mktemp("aws")) as server:
        yield server


@pytest.fixture
def store_address(s3_server) -> str:
    """Where multi-node tests write their stores: a fresh ``s3://bucket/prefix`` on the moto
    server, under which each test names its stores (``f"{store_address}/ref"``); launchers
    inherit the AWS variables the server fixture set."""
    return str(s3_server.url("multinode"))
