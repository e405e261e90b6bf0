"""Edits of a finished store's metadata that every reader must refuse, naming the file.

One table for the service's tests and every command's: attributes that fail the schema (wrong
types, empty nested objects, sizes past their bounds), attributes that contradict the arrays,
and edits that keep the attrs consistent but change what the store means (caught by the
metadata digests in the manifest). Each edit rewrites one file of a store folder in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Edit = Callable[[Path], None]


def _edit_attrs(change: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(store: Path) -> None:
        doc = json.loads((store / "zarr.json").read_text())
        change(doc["attributes"])
        (store / "zarr.json").write_text(json.dumps(doc))

    return edit


def _set(path: str, value: Any) -> Edit:
    """Set the attr at a dotted ``path`` (``teacher.class_names``)."""

    def change(attrs: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = attrs
        for p in parents:
            node = node[p]
        node[last] = value

    return _edit_attrs(change)


def _consistent(key: str, value: Callable[[dict[str, Any]], Any], config: str = "") -> Edit:
    """Set attr ``key`` (and ``config.<config>`` and ``dataset.<key>`` where recorded) so that
    the attrs still agree with each other: only the arrays or the digests can tell."""

    def change(attrs: dict[str, Any]) -> None:
        new = value(attrs)
        attrs[key] = new
        if config and attrs["config"].get(config) is not None:
            attrs["config"][config] = new
        if key in attrs["dataset"]:
            attrs["dataset"][key] = new

    return _edit_attrs(change)


def _letters(attrs: dict[str, Any]) -> str:
    """A string as long as the class list: only its type is wrong."""
    return "".join(chr(97 + i % 26) for i in range(attrs["num_classes"]))


def _swap_class_order(attrs: dict[str, Any]) -> None:
    order = attrs["class_order"]
    order[0], order[1] = order[1], order[0]


def _other_dtype(attrs: dict[str, Any]) -> str:
    return "prob-u8" if attrs["value_encoding"] == "logprob-f16" else "logprob-f16"


def _edit_array_meta(store: Path) -> None:
    path = store / "ids" / "zarr.json"
    doc = json.loads(path.read_text())
    doc["attributes"] = {"edited": True}
    path.write_text(json.dumps(doc))


# name -> (edit, the file the one-line error must name); any finished store.
ATTR_EDITS: dict[str, tuple[Edit, str]] = {
    # the schema: types, complete nested objects, bounds on sizes that set allocations
    "class-names-int": (_set("teacher.class_names", 5), "zarr.json"),
    "class-names-str": (
        _edit_attrs(lambda a: a["teacher"].update(class_names=_letters(a))),
        "zarr.json",
    ),
    "dataset-empty": (_set("dataset", {}), "zarr.json"),
    "input-size-short": (_set("teacher.input_size", [3]), "zarr.json"),
    "input-size-str": (_set("teacher.input_size", "abc"), "zarr.json"),
    "input-size-huge": (_set("teacher.input_size", [3, 100000, 100000]), "zarr.json"),
    "recipe-empty": (_set("recipe", {}), "zarr.json"),
    "teacher-empty": (_set("teacher", {}), "zarr.json"),
    "topk-huge": (_consistent("topk", lambda a: 10**6, "topk"), "zarr.json"),
    # attrs that contradict the arrays (K, N, R, the values' dtype)
    "topk-under-K": (_consistent("topk", lambda a: a["topk"] - 1, "topk"), "zarr.json"),
    "num-samples-under-N": (_consistent("num_samples", lambda a: 10), "zarr.json"),
    "views-under-R": (_consistent("views", lambda a: 1, "views"), "zarr.json"),
    "value-encoding-dtype": (_consistent("value_encoding", _other_dtype), "zarr.json"),
    # consistent edits that change what the store means: the manifest's digests
    "store-seed": (_consistent("store_seed", lambda a: a["store_seed"] + 1, "seed"), "zarr.json"),
    "temperature": (_set("temperature", 2.0), "zarr.json"),
    "array-meta": (_edit_array_meta, "ids/zarr.json"),
}

# Edits that need what `distill generate` writes (a teacher class order, uint8 values).
GENERATED_EDITS: dict[str, tuple[Edit, str]] = {
    "class-order": (_edit_attrs(_swap_class_order), "zarr.json"),
    "value-encoding-u8x3": (_set("value_encoding", "prob-u8x3"), "zarr.json"),
}


def one_line(text: str) -> bool:
    """Whether ``text`` is a single line of error (no traceback, no multi-line dump)."""
    return text.count("\n") <= 1 and "Traceback" not in text and text.strip() != ""
