"""Deprecated import path (one release): the id-order module is
:mod:`teacher_store.store.id_order`; the value encodings are
:mod:`teacher_store.store.value_encodings`."""

from teacher_store.store.id_order import (
    PADDED,
    ClassIdError,
    check_class_ids,
    encoding_kl,
    rank_to_stored,
    stored_to_rank,
)

__all__ = [
    "PADDED",
    "ClassIdError",
    "check_class_ids",
    "encoding_kl",
    "rank_to_stored",
    "stored_to_rank",
]
