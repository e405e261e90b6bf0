"""bench/pictures.py makes the docs' pictures from the store `make demo` builds: the two must
build it with the same `distill generate` options."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pictures_use_the_demo_s_generate_options() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import pictures
    finally:
        sys.path.remove(str(REPO / "bench"))
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if "distill generate" in x and "stores/demo" in x]
    words = shlex.split(re.sub(r"\$\$\w+|\$\(\w+\)", "X", line))
    opts = words[words.index("generate") + 1 :]
    for flag in ("--data", "--out"):  # paths differ: everything else is the store's identity
        del opts[opts.index(flag) : opts.index(flag) + 2]
    assert opts == pictures.DEMO_GENERATE
    assert tuple(opts[opts.index("--topk") : opts.index("--topk") + 2]) == ("--topk", "10")
