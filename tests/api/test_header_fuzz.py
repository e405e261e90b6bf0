"""Fuzzing ``Range``, ``If-None-Match`` and ``If-Range`` on zarr keys of a live server.

Every answer is checked against the key's bytes on disk: a 200 carries exactly the whole file,
a 206 exactly the bytes its ``Content-Range`` names (and, for a well-formed single range, the
bytes RFC 9110 says), a 304 only a matching validator, a 416 ``bytes */TOTAL``; never a 5xx.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability import full_scale, record
from tests.store_fixtures import LiveServer

KEYS = ("zarr.json", "ids/c/0/0/0", "values/c/1/1/0", "valid/c/0/1")
EXAMPLES = 3000 if full_scale() else 100
_num = st.one_of(
    st.integers(0, 5000).map(str),
    st.integers(0, 2**70).map(str),
    st.text("0123456789", min_size=1, max_size=6000),  # beyond Python's int() digit limit
)


@st.composite
def _range(draw: st.DrawFn) -> str:
    a, b = draw(_num), draw(_num)
    form = draw(st.sampled_from(["a-b", "a-", "-b", "a-b,a-", "-", "", "units"]))
    spec = {"a-b": f"{a}-{b}", "a-": f"{a}-", "-b": f"-{b}", "a-b,a-": f"{a}-{b},{a}-",
            "-": "-", "": "", "units": f"{a}-{b}"}[form]  # fmt: skip
    unit = "items" if form == "units" else draw(st.sampled_from(["bytes", "BYTES", "bytes "]))
    return f"{unit}={spec}"


# requests refuses a header value with leading whitespace: strip it
_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    str.lstrip
)
_ranges = st.one_of(st.none(), _range(), _header_text)


def _validators(etag: str) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.sampled_from([etag, f"W/{etag}", "*", f'"x", {etag}', '"other"', etag[:-2] + '"']),
        st.just("Wed, 21 Oct 2015 07:28:00 GMT"),
        _header_text,
    )


def _value(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 30 else 10**30


def _expected(spec: str | None, size: int) -> tuple[int, int] | bool | None:
    """RFC 9110 for the forms the service promises: (start, stop), False (416), None (200)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)-(\d*)\s*", spec or "", re.IGNORECASE)
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if not first:
        n = _value(last)
        return False if n == 0 or size == 0 else (max(0, size - n), size)
    a = _value(first)
    b = _value(last) if last else size - 1
    if last and b < a:
        return None
    return False if a >= size else (a, min(b, size - 1) + 1)


def _check(resp: requests.Response, data: bytes, etag: str, hdrs: dict[str, str]) -> None:
    status, size = resp.status_code, len(data)
    inm, if_range = hdrs.get("If-None-Match"), hdrs.get("If-Range")
    assert status in (200, 206, 304, 416), (status, hdrs, resp.text[:200])
    if status == 304:
        assert inm is not None and resp.content == b"" and resp.headers["etag"] == etag
        return
    want = _expected(hdrs.get("Range"), size)
    if if_range is not None and if_range.strip() != etag:
        want = None  # a validator that does not match: the whole body
    if status in (200, 206):
        assert resp.headers["etag"] == etag
    if status == 200:
        assert resp.content == data and want is None, hdrs
    elif status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers["content-range"])
        assert m is not None and int(m.group(3)) == size
        a, b = int(m.group(1)), int(m.group(2)) + 1
        assert resp.content == data[a:b] and want == (a, b), (hdrs, a, b, want)
    else:
        assert resp.headers["content-range"] == f"bytes */{size}" and want is False, hdrs
        assert resp.json()["status"] == 416


@pytest.mark.reliability
def test_range_and_validators_fuzzed(server: LiveServer, served: dict[str, Path]) -> None:
    tried: list[int] = []
    session = requests.Session()
    files = {key: (served["demo"] / key).read_bytes() for key in KEYS}
    base = f"{server.url}/v1/stores/demo/zarr"
    etags = {k: session.head(f"{base}/{k}", timeout=10).headers["etag"] for k in KEYS}

    @given(data=st.data())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(KEYS))
        hdrs = {"Range": data.draw(_ranges), "If-None-Match": data.draw(_validators(etags[key])),
                "If-Range": data.draw(_validators(etags[key]))}  # fmt: skip
        sent = {k: v for k, v in hdrs.items() if v is not None}
        resp = session.get(f"{base}/{key}", headers=sent, timeout=10)
        tried.append(resp.status_code)
        _check(resp, files[key], etags[key], sent)

    key = KEYS[1]  # one request of each outcome first, so every branch of _check runs
    for sent in ({}, {"Range": "bytes=0-9"}, {"If-None-Match": etags[key]},
                 {"Range": "bytes=999999999-"}):  # fmt: skip
        resp = session.get(f"{base}/{key}", headers=sent, timeout=10)
        tried.append(resp.status_code)
        _check(resp, files[key], etags[key], sent)
    try:
        fuzz()
    finally:
        record("fuzz: Range / If-None-Match / If-Range", inputs_tried=len(tried),
               data_lost=sum(s >= 500 for s in tried))  # fmt: skip
    assert set(tried) >= {200, 206, 304, 416}


def test_range_with_thousands_of_digits(server: LiveServer, served: dict[str, Path]) -> None:
    """Numbers past Python's int() digit limit (4300) are just large: 416 or the whole tail."""
    data = (served["demo"] / "zarr.json").read_bytes()
    url = f"{server.url}/v1/stores/demo/zarr/zarr.json"
    r = requests.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"}, timeout=10)
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = requests.get(url, headers={"Range": "bytes=0-" + "9" * 5000}, timeout=10)
    assert r.status_code == 206 and r.content == data
    r = requests.get(url, headers={"Range": "bytes=-" + "9" * 5000}, timeout=10)
    assert r.status_code == 206 and r.content == data
