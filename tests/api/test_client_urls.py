"""Service URLs with extras (issue 24 item 14): a query string, a fragment or credentials in a
store address are refused in one line that never shows a password, by ``open_store`` and by
the commands, against a live service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from teacher_store.client import StoreAddressError, open_store
from tests.store_fixtures import LiveServer

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-pw-9c1e"


def test_query_strings_and_fragments_are_refused(server: LiveServer) -> None:
    store = f"{server.url}/v1/stores/demo"
    assert open_store(store).attrs.num_samples == 1000  # the bare address reads
    for url in (f"{store}?x=1", f"{store}#top", f"{store}/?x=1", f"{store}/zarr/?x=1",
                f"{store}?token={PASSWORD}"):  # fmt: skip
        with pytest.raises(StoreAddressError) as err:
            open_store(url)
        message = str(err.value)
        assert ("query string" in message or "fragment" in message) and "\n" not in message
        assert PASSWORD not in message and "remove it" in message, message


def test_credentials_in_a_service_url_are_refused_unshown(
    token_server: tuple[LiveServer, str],
) -> None:
    live, token = token_server
    host = live.url.removeprefix("http://")
    for userinfo in (f"user:{PASSWORD}", PASSWORD, f"{token}:"):
        url = f"http://{userinfo}@{host}/v1/stores/demo"
        with pytest.raises(StoreAddressError) as err:
            open_store(url, token=token)
        message = str(err.value)
        assert "credentials in the URL are not accepted" in message and "\n" not in message
        assert PASSWORD not in message and token not in message and "***@" in message
    r = subprocess.run(
        [sys.executable, "-m", "teacher_store.cli", "info", f"http://u:{PASSWORD}@{host}/v1/stores/demo"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert PASSWORD not in r.stderr + r.stdout and "credentials" in r.stderr
