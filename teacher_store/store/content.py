"""The store's record of its images' content: per-sample digests, and how readers use them.

Generation computes :class:`~teacher_store.images.digests.SampleDigests` before the store is
created and records them twice: their sha256 in the attrs (``dataset.content``, part of what a
resume compares) and the digests themselves in
:data:`~teacher_store.store.layout.SAMPLE_DIGESTS`, written with the store (before its root
``zarr.json``) and listed in the manifest by finalize (so the service serves it, and ``verify``
checks it, like any committed file). A reader loads the file, checks it against the attrs'
record, and attaches it to its images (:func:`checked_folder`, any ImageSource): every image
read for replay is then checked. Stores made before digests were recorded have neither; they keep
working, their images checked by name and size only (:func:`size_only_note`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from teacher_store.errors import StoreDamaged

# SampleDigests is the record this module reads and writes: readers of stores (the reader
# room) take it from here, not from the image code.
from teacher_store.images.digests import SampleDigests
from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.layout import SAMPLE_DIGESTS, FileRecord

if TYPE_CHECKING:  # the service reads stores without Pillow: no image code at import
    from teacher_store.images.source import ImageSource

__all__ = [
    "SampleDigests",
    "checked_folder",
    "content_record",
    "dataset_difference",
    "digests_file_record",
    "first_changed",
    "load_sample_digests",
    "size_only_note",
    "write_sample_digests",
]


def content_record(attrs: Any) -> dict[str, Any] | None:
    """The attrs' record of the samples' content digests, None for a store made before."""
    record = (attrs.dataset or {}).get("content")
    return dict(record) if isinstance(record, dict) else None


def digests_file_record(digests: SampleDigests) -> FileRecord:
    """The file record (size, crc32c, sha256) of the digests file holding ``digests``."""
    return FileRecord.of(digests.to_bytes())


def write_sample_digests(loc: Location, digests: SampleDigests) -> None:
    """Write the digests file (atomically)."""
    layout.write_file(loc, SAMPLE_DIGESTS, digests.to_bytes())


def load_sample_digests(
    attrs: Any, read: Callable[[str], bytes], where: str
) -> SampleDigests | None:
    """The store's per-sample digests, read by ``read(key)`` and checked against the attrs'
    record (:class:`StoreDamaged` naming the file when missing or not the recorded one);
    None for a store made before they were recorded."""
    record = content_record(attrs)
    if record is None:
        return None
    try:
        data = read(SAMPLE_DIGESTS)
    except FileNotFoundError:
        raise StoreDamaged(
            SAMPLE_DIGESTS, "is missing", f"store {where}: {SAMPLE_DIGESTS} is missing; restore "
            "it or regenerate the store",
        ) from None  # fmt: skip
    try:
        digests = SampleDigests.from_bytes(bytes(data), str(record.get("algorithm")))
    except ValueError as e:
        raise StoreDamaged(
            SAMPLE_DIGESTS, str(e), f"store {where}: {SAMPLE_DIGESTS}: {e}"
        ) from None
    if len(digests) != attrs.num_samples or digests.sha256 != record.get("sha256"):
        why = "is not the record of this store's images (its sha256 differs from the attrs')"
        raise StoreDamaged(
            SAMPLE_DIGESTS, why, f"store {where}: {SAMPLE_DIGESTS} {why}; restore it or "
            "regenerate the store",
        )  # fmt: skip
    return digests


def _other_dataset(store_dataset: dict[str, Any], folder: ImageSource) -> bool:
    """Whether ``folder`` is not the store's dataset: its content record differs when both
    know one (names may differ: a folder and the shards packed from it), else its names and
    sizes."""
    have = folder.fingerprint()
    want = store_dataset.get("content")
    if isinstance(want, dict) and have.content is not None:
        return dict(want) != dict(have.content)
    return bool(store_dataset.get("sha256") != have.sha256)


def size_only_note(where: str) -> str:
    """The one-line note for a store made before stores recorded content digests."""
    return (
        f"note: store {where} records no content digests of its images (it was made before "
        "stores did): its images are checked by name and size only"
    )


def checked_folder(
    folder: ImageSource,
    digests: SampleDigests | None,
    where: str,
    store_dataset: dict[str, Any] | None = None,
) -> tuple[ImageSource, str | None]:
    """``folder`` (any image source: a folder, tar shards) with every read checked against
    the store's ``digests``, and None; or, for a store without digests, ``folder`` as it is
    and the note to show once.

    ``store_dataset`` (the store's fingerprint dict), when given, leaves unchecked images that
    are another dataset (``train --allow-dataset-mismatch``, whose sample i is not the store's
    sample i): by content when both record it, else by names and sizes.
    """
    if digests is None:
        return folder, size_only_note(where)
    if store_dataset is not None and _other_dataset(store_dataset, folder):
        return folder, None
    if len(digests) != len(folder):
        return folder, None
    return folder.with_content(digests), None


def first_changed(recorded: SampleDigests | None, source: ImageSource) -> str:
    """``: sample i, WHERE (and k more)`` naming the first sample whose content digest differs
    from the store's ``recorded`` ones, or ``""`` (no record, other counts, none differ).
    Call it when the source knows its digests (a tar index): a folder's are read whole."""
    if recorded is None or len(recorded) != len(source):
        return ""
    changed = recorded.differences(source.sample_digests())
    if not len(changed):
        return ""
    i = int(changed[0])
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    return f": sample {i}, {source.where(i)}{more}"


def dataset_difference(
    store_dataset: dict[str, Any],
    source: ImageSource,
    recorded: Callable[[], SampleDigests | None],
) -> str | None:
    """How ``source`` differs from the dataset a store was built from, in one phrase, or None.
    When both know their content and it differs, the phrase names the first changed sample
    (``recorded()`` gives the store's digests; it is called only then: a damaged digests
    file leaves the phrase unnamed, its damage is reported where the file is read)."""
    from teacher_store.images.dataset import DatasetFingerprint

    stored, have = DatasetFingerprint.from_dict(store_dataset), source.fingerprint()
    why = stored.mismatch(have)
    if why and stored.content and have.content and stored.content != have.content:
        # A damaged digests file leaves the phrase unnamed: its damage is reported where read.
        with contextlib.suppress(StoreDamaged):
            why += first_changed(recorded(), source)
    return why
