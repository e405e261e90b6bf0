"""Teacher store: images → views → teacher → store → readers, and the commands over them.

The folders follow the data flow:

- ``images/``: the dataset walk (``ImageFolder``), image decode paths (Pillow, batched nvJPEG),
  the bundled demo photos;
- ``views/``: the seed → augmentation codec, recipes, and ``Replayer``, the one replay entry
  point (generation, the student, verify and show all call it);
- ``teacher.py`` and ``generate.py``: the teacher runner and the generation job;
- ``storage/``: where bytes live (``Location``: local disk, object stores, fsspec memory),
  change signatures and storage failures; the only room that knows storage providers;
- ``store/``: the attrs schema, the metadata checks every reader runs (``integrity``), the key
  space (``layout``: manifest, unit records, file checksums), the block wire format, and the
  zarr arrays (writer; ``StoreReader``, the one direct reader of a store);
- ``reader/`` (``address``, ``backends``, ``client``, ``retry``): the reading side —
  ``open_store`` turns any address (folder, fsspec URL, distill service) into a
  ``StoreClient``; ``teacher_store.address``, ``.backends``, ``.client`` and ``.retry``
  re-export it for one release;
- ``info.py``, ``verify.py``, ``show.py``: one command each; ``diff.py``: two stores of one
  config compared; ``errors.py``: typed store errors (``ValueError`` subclasses; the service
  maps them to HTTP statuses in one table);
- ``testing/``: synthetic stores, a live service, a moto S3 server and the storage contract
  suite, for tests and benches (imported by them only).

Re-exports resolve lazily (PEP 562): the service imports store-reading modules from here and
must not pull in torch, which only the generation and replay modules need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CopyConfig": "teacher_store.store_copy",
    "run_copy": "teacher_store.store_copy",
    "SourceChangedError": "teacher_store.copy_source",
    "CopiedFrom": "teacher_store.store.schema",
    "FidelityRecord": "teacher_store.fidelity",
    "FidelityStatus": "teacher_store.fidelity",
    "fidelity_status": "teacher_store.fidelity",
    "record_check": "teacher_store.fidelity",
    "CODEC_VERSION": "teacher_store.views.codec",
    "ViewParams": "teacher_store.views.codec",
    "decode": "teacher_store.views.codec",
    "view_seed": "teacher_store.views.codec",
    "pair_partner": "teacher_store.views.codec",
    "slot_partners": "teacher_store.views.pairing",
    "Recipe": "teacher_store.views.recipe",
    "RECIPES": "teacher_store.views.recipe",
    "get_recipe": "teacher_store.views.recipe",
    "render_view": "teacher_store.views.replay",
    "Replayer": "teacher_store.views.replay",
    "ReplayedView": "teacher_store.views.replay",
    "view_to_float": "teacher_store.views.replay",
    "SCHEMA_VERSION": "teacher_store.store.schema",
    "StoreAttrs": "teacher_store.store.schema",
    "decode_values": "teacher_store.store.schema",
    "encode_values": "teacher_store.store.schema",
    "rank_to_stored": "teacher_store.store.id_order",
    "stored_to_rank": "teacher_store.store.id_order",
    "ClassIdError": "teacher_store.store.id_order",
    "check_store": "teacher_store.store.integrity",
    "CheckedStore": "teacher_store.store.integrity",
    "ImageFolder": "teacher_store.images.dataset",
    "DatasetFingerprint": "teacher_store.images.dataset",
    "CorruptImageError": "teacher_store.images.dataset",
    "SampleDigests": "teacher_store.images.digests",
    "content_digest": "teacher_store.images.digests",
    "LocalStore": "teacher_store.store.arrays",
    "TargetBlock": "teacher_store.store.store_reader",
    "StoreReader": "teacher_store.store.store_reader",
    "GenerateConfig": "teacher_store.generate",
    "run_generate": "teacher_store.generate",
    "Teacher": "teacher_store.teacher",
    "StoreClient": "teacher_store.reader.client",
    "ShardUnit": "teacher_store.store.layout",
    "shard_units": "teacher_store.store.layout",
    "Location": "teacher_store.storage.location",
    "FileRecord": "teacher_store.store.layout",
    "StoreError": "teacher_store.errors",
    "StoreNotFound": "teacher_store.errors",
    "StoreIncomplete": "teacher_store.errors",
    "StoreDamaged": "teacher_store.errors",
    "DatasetMismatch": "teacher_store.errors",
    "UnsupportedStoreVersion": "teacher_store.errors",
    "StoreConflict": "teacher_store.errors",
    "StoreChangedError": "teacher_store.errors",
    "ImageChangedError": "teacher_store.errors",
    "StoreMismatch": "teacher_store.errors",
    "view_identity": "teacher_store.store.schema",
    "open_store": "teacher_store.reader.client",
    "StoreAddressError": "teacher_store.reader.client",
    "DatasetMismatchError": "teacher_store.reader.client",
    "write_demo_data": "teacher_store.images.demo_data",
    "compare_stores": "teacher_store.diff",
    "StoreAgreement": "teacher_store.diff",
    "ViewRenderer": "teacher_store.views.shown",
    "ShownView": "teacher_store.views.shown",
    "OptionsError": "teacher_store.options",
    "validate_options": "teacher_store.options",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'teacher_store' has no attribute {name!r}")
