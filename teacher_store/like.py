"""`distill generate --like STORE_A --teacher B --out STORE_B`: B's targets on A's very views.

A store's views are a pure function of its dataset, store seed, recipe, schedule span, decode
path and pixel limit (:func:`~teacher_store.store.schema.view_identity`). ``--like A`` takes
all of them from A (any address: a folder, ``s3://``, a service URL), and A's slots (``views``,
``base_views``) and A's teacher input size (unless ``--img-size`` is given: the same views, in
normalized coordinates, rendered at another size), and records A's view identity and teacher in
B's attrs (``like``). An option given that contradicts A's is refused in one line, and so is
``--data`` that is not A's dataset. Two stores of one view identity train a student against
their teachers' ensemble (``distill train --store A --store B``).
"""

from __future__ import annotations

from typing import Any

from teacher_store.errors import DatasetMismatch
from teacher_store.store.schema import StoreAttrs, view_identity

# GenerateConfig field -> its command-line flag, for the fields --like takes from the store.
_FLAGS = {
    "seed": "--seed",
    "recipe": "--recipe",
    "views": "--views",
    "base_views": "--base-views",
    "max_image_pixels": "--max-image-pixels",
    "decode": "--decode",
}


class LikeConflict(ValueError):
    """An option of ``generate --like`` contradicts the views of the store it names."""


def like_fields(attrs: StoreAttrs) -> dict[str, Any]:
    """The GenerateConfig fields that make a store's views those of the store ``attrs``."""
    from teacher_store.views.recipe import Recipe

    out: dict[str, Any] = {
        "seed": attrs.store_seed,
        "recipe": Recipe.from_dict(attrs.recipe),
        "views": attrs.views,
        "base_views": attrs.base_views,
        "decode": attrs.config.get("decode") or "cpu",
    }
    if attrs.config.get("max_image_pixels") is not None:
        out["max_image_pixels"] = int(attrs.config["max_image_pixels"])
    return out


def apply_like(cfg: Any) -> tuple[Any, dict[str, Any], StoreAttrs]:
    """(``cfg`` with the view fields of the store ``cfg.like``, the ``like`` record for the new
    store's attrs, that store's attrs). ``cfg`` is a
    :class:`~teacher_store.generate.GenerateConfig`."""
    from teacher_store.client import open_store

    with open_store(cfg.like, prefetch=0, max_cache_blocks=0) as source:
        attrs = source.attrs
    if attrs.first_slot or attrs.slot_span:
        raise LikeConflict(
            f"--like {cfg.like} is a copy of another store's slots (distill copy): generate "
            "--like the store it was copied from"
        )
    fields = like_fields(attrs)
    given = cfg.model_fields_set
    for name, value in fields.items():
        mine = getattr(cfg, name)
        if name in given and mine is not None and mine != value:
            shown = getattr(value, "name", value)
            raise LikeConflict(
                f"--like {cfg.like}: {_FLAGS[name]} {getattr(mine, 'name', mine)} is not the "
                f"store's {shown}; drop {_FLAGS[name]} (--like takes the store's views)"
            )
    if cfg.img_size is None:
        fields["img_size"] = int(attrs.teacher["input_size"][1])
    record = {"view_identity": view_identity(attrs), "teacher": attrs.teacher.get("name")}
    return cfg.model_copy(update=fields), record, attrs


def check_like(attrs: StoreAttrs, source: StoreAttrs) -> None:
    """Refuse, in one line, a store about to be written with ``--like`` whose views are not
    the source's after all (``--data`` another dataset: its fingerprint differs)."""
    if view_identity(attrs) == view_identity(source):
        return
    if attrs.dataset != source.dataset:
        raise DatasetMismatch(
            f"--data is not the dataset of the --like store ({_dataset_why(attrs, source)}); "
            "pass the images that store was built from"
        )
    raise LikeConflict(
        f"the views would not be the --like store's (view identity {view_identity(attrs)}, "
        f"the store's {view_identity(source)}); drop the options that change them"
    )


def _dataset_why(attrs: StoreAttrs, source: StoreAttrs) -> str:
    from teacher_store.images.dataset import DatasetFingerprint

    try:
        have = DatasetFingerprint.from_dict(attrs.dataset)
        why = DatasetFingerprint.from_dict(source.dataset).mismatch(have)
    except (KeyError, TypeError, ValueError):
        why = None
    return why or "its fingerprint differs"


__all__ = ["LikeConflict", "apply_like", "check_like", "like_fields"]
