"""The dashboard's and `distill show`'s pixels: one stored view replayed, with its stored top-5.

:class:`ViewRenderer` opens a store and the image folder it was built from once, then renders
views on request (the service keeps a few of them); `distill show` draws its PNG from the
same :class:`ShownView`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from teacher_store.errors import DatasetMismatch, StoreIncomplete
from teacher_store.options import MAX_IMG_SIZE, MIN_IMG_SIZE, check_int
from teacher_store.store import layout
from teacher_store.store.content import checked_folder
from teacher_store.store.layout import shard_units

_MIN_VIEW_PX = 224  # the view is enlarged by an integer factor to at least this, for legibility


def _class_name(names: list[str], i: int) -> str:
    return str(names[i]) if 0 <= i < len(names) else f"class {i}"


def check_view_request(a: Any, sample: int, view: int, size: int | None) -> None:
    if not 0 <= sample < a.num_samples:
        raise ValueError(
            f"--sample {sample} out of range: the store has samples 0..{a.num_samples - 1}"
        )
    if not 0 <= view < a.views:
        raise ValueError(f"--view {view} out of range: the store has view slots 0..{a.views - 1}")
    if size is not None:
        check_int("--size", size, MIN_IMG_SIZE, MAX_IMG_SIZE)


def _matching_folder(a: Any, data: Any, recorded: Any = lambda: None) -> Any:
    """The images at ``data`` (a folder, URL or shard pattern, or an open ImageSource);
    :class:`DatasetMismatch` unless the store was built from them (``recorded()``: the store's
    content digests, to name a changed sample)."""
    from teacher_store.images.source import open_images
    from teacher_store.store.content import dataset_difference

    folder = open_images(data, a.config.get("max_image_pixels"))
    shown = getattr(folder, "location", data) if not isinstance(data, str) else data
    diff = dataset_difference(a.dataset, folder, recorded)
    if diff:
        raise DatasetMismatch(
            f"dataset {shown} does not match the store ({diff}); pass the --data it was built from"
        )
    return folder


def _valid_block(store: Any, folder: Any, view: int, sample: int) -> Any:
    """The stored targets of the view; a one-line error when it has none (not generated yet,
    or its image was unreadable)."""
    from teacher_store.images.dataset import printable_path

    a = store.attrs
    block = store.read_block(view, sample, sample + 1)
    if block.valid[0]:
        return block
    unit = next(
        u
        for u in shard_units(a)
        if u.slot_start <= view < u.slot_stop and u.start <= sample < u.stop
    )
    if not store.complete and not layout.has_unit_record(store.location, unit.name):
        raise StoreIncomplete(
            f"view {view} of sample {sample} is not generated yet: the store is unfinished; "
            "re-run the same `distill generate`"
        )
    raise ValueError(
        f"view {view} of sample {sample} has no targets: its image "
        f"{printable_path(folder.key(sample))} (or its mixing partner) was unreadable "
        "when the store was made"
    )


def _view_image(pixels: Any) -> Any:
    """The replayed [3, H, W] uint8 view as a PIL image, enlarged to at least 224 px."""
    from PIL import Image

    img = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    factor = max(1, -(-_MIN_VIEW_PX // max(img.size)))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    return img


def _labels(
    a: Any, folder: Any, sample: int, view: int, params: Any, top: list[tuple[str, float]]
) -> list[str]:
    """The text panel's lines: the view's image, slot, mixing partner, and the top-5."""
    from teacher_store.images.dataset import printable_path

    lines = [
        f"sample {sample}: {printable_path(folder.key(sample))}",
        f"view slot {view} (slots 0..{a.views - 1})",
    ]
    if params.mix is not None:
        lines.append(
            # "lambda", not the Greek letter: Pillow's default font has no glyph for it
            f"mixed with sample {params.mix.partner} ({params.mix.mode}, "
            f"lambda={params.mix.lam:.2f})"
        )
    lines += ["", f"teacher {a.teacher.get('name')} top-{len(top)}:"]
    lines += [f"{p:6.3f}  {name[:44]}" for name, p in top]
    return lines


@dataclass(frozen=True)
class ShownView:
    """One replayed view as ``distill show`` draws it (the dashboard serves the same pixels)."""

    image: Any  # PIL RGB image: the view enlarged by an integer factor to >= 224 px
    top: list[tuple[str, float]]  # the stored top-5 (class name, probability), rank order
    params: Any  # the view's ViewParams (augmentation ops, mixing partner and ratio)
    lines: list[str]  # the text panel's lines


class ViewRenderer:
    """A store and the image folder it was built from, ready to replay views.

    Raises :class:`DatasetMismatch` when ``data`` is not the store's dataset (its fingerprint
    differs); ``render`` raises :class:`~teacher_store.errors.ImageChangedError` for an image
    whose bytes are not those the store recorded (its per-sample content digest). ``note``:
    the one-line note for a store without content digests (images checked by name and size
    only), else None. ``render`` is not thread-safe: callers serialise it.
    """

    def __init__(self, path: str, data: Any, cache_size: int = 0) -> None:
        """``data``: the images (folder, URL, shard pattern, or an open ImageSource);
        ``cache_size``: decoded images kept (a long-lived renderer reuses them)."""
        from teacher_store.store.arrays import LocalStore
        from teacher_store.views.replay import Replayer

        self.path = path
        self.store = LocalStore(path, require_complete=False)
        self.attrs = self.store.attrs
        # Every image read is checked against the store's per-sample content digests.
        self.folder, self.note = checked_folder(
            _matching_folder(self.attrs, data, self.store.sample_digests),
            self.store.sample_digests(),
            self.store.address,
        )
        self.replayer = Replayer(self.folder, self.attrs, cache_size=cache_size)

    def render(self, sample: int, view: int, size: int | None = None) -> ShownView:
        """View ``view`` of ``sample`` at ``size`` (default: the teacher's input size)."""
        a = self.attrs
        check_view_request(a, sample, view, size)
        block = _valid_block(self.store, self.folder, view, sample)
        replayed = self.replayer.render(view, sample, size)
        names = list(a.teacher.get("class_names", []) or [])
        logp = block.logprobs()[0]
        # Zero-probability entries are left out: in a head-sorted-pad store they carry no class.
        top = [
            (_class_name(names, int(i)), float(np.exp(lp)))
            for i, lp in zip(block.ids[0][:5], logp[:5], strict=True)
            if np.isfinite(lp)
        ]
        lines = _labels(a, self.folder, sample, view, replayed.params, top)
        return ShownView(_view_image(replayed.pixels), top, replayed.params, lines)


__all__ = ["ShownView", "ViewRenderer", "check_view_request"]
