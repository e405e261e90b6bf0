"""`distill show`: replay one stored view and write a PNG with the teacher's top-5 beside it.

The pixels come from :mod:`teacher_store.views.shown` (the dashboard's too); ``ViewRenderer``
and ``ShownView`` stay importable from here for one release.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from teacher_store.views.shown import ShownView, ViewRenderer, check_view_request

_LINE_H, _PAD, _PANEL_W = 20, 12, 420  # text panel: line height, padding, width (px)


def _render_panel(img: Any, lines: list[str]) -> Any:
    """``img`` with a white text panel of ``lines`` on its right."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font: Any = ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    height = max(img.height, 2 * _PAD + _LINE_H * len(lines))
    canvas = Image.new("RGB", (img.width + _PANEL_W, height), "white")
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for n, text in enumerate(lines):
        draw.text((img.width + _PAD, _PAD + n * _LINE_H), text, fill="black", font=font)
    return canvas


def show_view(
    path: str, data: str, sample: int, view: int, out: str, size: int | None = None
) -> list[tuple[str, float]]:
    """Replay view ``view`` of ``sample`` and write a PNG with the teacher's top-5 beside it.

    Returns the top-5 (class name, probability) pairs as stored. The view is drawn at ``size``
    (default: the teacher's input size), enlarged by an integer nearest-neighbour factor to at
    least 224 px for legibility.
    """
    from teacher_store.store.arrays import LocalStore

    if Path(out).suffix.lower() != ".png":  # the picture is a PNG: never under another name
        raise ValueError(f"--out {out}: the picture is written as PNG; name it NAME.png")
    a = LocalStore(path, require_complete=False).attrs
    check_view_request(a, sample, view, size)  # bad numbers fail before the dataset is scanned
    renderer = ViewRenderer(path, data)
    if renderer.note:  # a store without content digests: its images checked by size only
        print(renderer.note, file=sys.stderr)
    shown = renderer.render(sample, view, size)
    canvas = _render_panel(shown.image, shown.lines)
    out_path = Path(out)
    if out_path.parent and not out_path.parent.exists():
        raise ValueError(f"output folder {out_path.parent} does not exist")
    canvas.save(out_path, format="PNG")
    return shown.top


__all__ = ["ShownView", "ViewRenderer", "show_view"]
