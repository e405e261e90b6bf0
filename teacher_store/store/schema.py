"""The store's schema: versions, self-describing attrs, and the value encodings.

A store is one Zarr v3 group with arrays ``ids`` [R, N, K] (uint16 or uint32 class ids in rank
order), ``values`` [R, N, K] (the teacher's top-K log-probabilities, encoded) and ``valid``
[R, N] (uint8, 1 where the view was computed). R = view slots, N = samples, K = top-K.

Version 2 (the default) keeps those arrays and their meaning but stores each view's entries in
``id_order="head-sorted-pad"``: the first ``head`` entries in rank order, the other K - head
sorted by their position in the store's ``class_order`` (a teacher-derived permutation of the
class ids) and stored as gaps, with zero-valued entries as trailing padding
(:mod:`teacher_store.store.id_order` converts both ways; docs/store-format.md gives the
decode for any zarr reader). Version 2 stores written before it (``id_order="head-sorted"``:
sorted by class id, no padding) stay readable. A chunk holds ``chunk_views`` slots x
``chunk_samples`` samples, stored sample-major by a zarr ``transpose`` codec. Version 1 stores
(rank order, one slot per chunk, ``logprob-f16`` by default) stay readable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from teacher_store.errors import StoreDamaged, StoreNotFound, UnsupportedStoreVersion
from teacher_store.options import MAX_IMG_SIZE
from teacher_store.options import MAX_TOPK as MAX_TOPK  # the commands' bound, re-exported
from teacher_store.options import MAX_VIEWS as MAX_VIEWS  # the commands' bound, re-exported
from teacher_store.store.value_encodings import VALUE_ENCODINGS as VALUE_ENCODINGS
from teacher_store.store.value_encodings import default_encoding as default_encoding
from teacher_store.store.value_encodings import encoding as _encoding

SCHEMA_VERSION = 2
"""The store schema version `distill generate` writes (``READABLE_VERSIONS`` are read)."""
READABLE_VERSIONS: tuple[int, ...] = (1, 2)
STORE_KIND: Literal["distill-teacher-store"] = "distill-teacher-store"

IdOrder = Literal["rank", "head-sorted", "head-sorted-pad"]

# Bounds on every attr that sets an allocation (a view's pixels, a block's entries, the list of
# shard units, a sampler's permutation): a store claiming more is refused before anything is
# allocated. Real stores are far inside them (ImageNet-22k: 14M samples, 21,841 classes).
# px, each side of the teacher's input (a 4096 px RGB view is 48 MiB): the commands' bound
MAX_IMAGE_SIZE = MAX_IMG_SIZE  # and K: MAX_TOPK, imported above
MAX_CLASSES = 1 << 20
MAX_SAMPLES = 1 << 31
MAX_UNITS = 1 << 20  # shard units (each is 3 files): a list of them is built in memory
MAX_CHUNK_ENTRIES = 1 << 24  # ids per inner chunk: the service decodes whole chunks
MAX_SHARD_ENTRIES = 1 << 28  # ids per shard unit: a writer holds a whole unit
MAX_BATCH = 1 << 16


def head_size(encoding: str) -> int:
    """Leading ranks kept in rank order by ``head-sorted`` (those whose scale is not the tail's)."""
    return _encoding(encoding).head


def _known_encoding(name: str) -> str:
    _encoding(name)  # UnknownEncoding (a ValueError) names the known ones
    return name


# A name in the value-encoding table (teacher_store.store.value_encodings), the one place
# that lists them.
ValueEncodingName = Annotated[str, AfterValidator(_known_encoding)]


_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_Pixels = Annotated[int, Field(ge=8, le=MAX_IMAGE_SIZE)]


class _Nested(BaseModel):
    """A nested attr object, validated strictly (no string for a number, no string for a
    list) since readers use the raw JSON values: what passes here is what they get."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class TeacherAttrs(_Nested):
    """``attrs.teacher``: the teacher's identity and preprocessing (models' ``TeacherInfo``)."""

    name: str = Field(min_length=1)
    architecture: str = Field(min_length=1)
    num_classes: int = Field(ge=1, le=MAX_CLASSES)
    # [3, H, W]: replay renders H x H RGB views (square at the teacher's height).
    input_size: list[int] = Field(min_length=3, max_length=3)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=3, max_length=3)
    interpolation: str
    weights_sha256: _Sha256 | None
    class_names: list[str]  # [] when the teacher has none; else one per class
    version: Literal[1]

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v: list[int]) -> list[int]:
        c, h, w = v
        if c != 3 or not all(8 <= x <= MAX_IMAGE_SIZE for x in (h, w)):
            raise ValueError(f"must be [3, H, W] with 8 <= H, W <= {MAX_IMAGE_SIZE}, got {v}")
        return v

    @model_validator(mode="after")
    def _names(self) -> TeacherAttrs:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        return self


class ContentAttrs(_Nested):
    """``attrs.dataset.content``: the record of the samples' content digests (their file,
    ``_distill/sample_digests.u64``, is the bytes whose sha256 this is)."""

    algorithm: Literal["xxh3_64"]
    sha256: _Sha256
    version: int = Field(ge=1)


class DatasetAttrs(_Nested):
    """``attrs.dataset``: the fingerprint of the image folder (``DatasetFingerprint``)."""

    num_samples: int = Field(ge=1, le=MAX_SAMPLES)
    sha256: _Sha256
    classes: list[str]
    version: int = Field(ge=1)
    content: ContentAttrs | None = None  # absent in stores made before content digests
    labels_sha256: _Sha256 | None = None  # absent in stores made before labels were recorded


class RecordedConfig(_Nested):
    """``attrs.config``: the generation options that decide the store's bytes. Readers rely on
    the fields typed here; the others are recorded for ``distill generate``'s resume check."""

    model_config = ConfigDict(extra="allow")

    teacher: str = Field(min_length=1)
    batch_size: int = Field(ge=1, le=MAX_BATCH)
    views: int | None = None
    topk: int | None = None
    seed: int | None = None
    img_size: _Pixels | None = None
    threads: int | None = Field(None, ge=1)
    max_image_pixels: int | None = Field(None, ge=1)
    decode: Literal["cpu", "gpu"] = "cpu"
    view_order: Literal["sample", "pairs"] = "sample"
    base_views: int | None = Field(None, ge=1)  # a grown store's (teacher_store.store.grow)


class LikeAttrs(_Nested):
    """``attrs.like``: the store whose views these are (``distill generate --like``)."""

    view_identity: str = Field(pattern=r"^[0-9a-f]{16}$")
    teacher: str | None = None


def _nested(model: type[BaseModel], value: Any, field: str) -> None:
    """Validate a nested attr object; its problems become one ValueError naming their paths."""
    try:
        model.model_validate(value)
    except ValidationError as e:
        raise ValueError(validation_message(e, prefix=field)) from None


def _recipe(value: Any) -> None:
    """The recipe must be complete (every field recorded: a default filled in here might not
    be what generated the views) and valid."""
    from teacher_store.views.recipe import Recipe

    if not isinstance(value, dict):
        raise ValueError(f"recipe: must be an object, got {type(value).__name__}")
    missing = [k for k in Recipe.model_fields if k not in value]
    if missing:
        raise ValueError(f"recipe: missing {', '.join(missing)}")
    _nested(Recipe, value, "recipe")


class StoreAttrs(BaseModel):
    """Root attrs of a store. Everything a reader needs to interpret and trust the arrays.

    The whole tree is validated (nested objects by :class:`TeacherAttrs`, :class:`DatasetAttrs`,
    :class:`RecordedConfig` and the recipe), sizes that set allocations are bounded, and the
    attrs must agree with each other; they are kept as the raw JSON (a dict round-trip)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["distill-teacher-store"] = STORE_KIND
    schema_version: int = SCHEMA_VERSION
    codec_version: int
    num_samples: int
    views: int
    topk: int
    num_classes: int
    value_encoding: ValueEncodingName
    temperature: float = Field(
        default=1.0, gt=0
    )  # the stored log-probs: softmax(logits / temperature)
    store_seed: int = Field(ge=0, lt=1 << 64)
    device_type: str = "unknown"  # where the teacher ran: CPU and CUDA differ in float results
    chunk_samples: int
    shard_samples: int
    shard_views: int
    chunk_views: int = 1  # view slots per chunk (version 1: always 1)
    id_order: IdOrder = "rank"  # how a view's K entries are stored (version 1: always rank)
    # head-sorted-pad only: the class at each position of the order ids are sorted and
    # gap-coded in (a permutation of the class ids; None: the class ids themselves).
    class_order: list[int] | None = None
    teacher: dict[str, Any]
    dataset: dict[str, Any]
    recipe: dict[str, Any]
    config: dict[str, Any]
    libraries: dict[str, str]
    # A copy of a slot range A:B of another store (`distill copy --slots A:B`): slot r here
    # holds the views of the source's slot r + slot_offset (view seeds, mixing partners), and
    # the recipe's per-slot schedule spans slot_span slots counted from the views' slot 0.
    # None: 0 and ``views`` (every store generated here).
    slot_offset: int | None = Field(default=None, ge=0)
    slot_span: int | None = Field(default=None, ge=1)
    # What a copy was taken from (:class:`CopiedFrom`'s fields); None for a generated store.
    copied_from: dict[str, Any] | None = None
    # The view slots the store was created with, when it has grown since (None: ``views``):
    # the layout and the recipe's per-slot schedule are defined over them, so growing never
    # changes an existing slot (docs/store-format.md, "Growing a store").
    base_views: int | None = None
    # ``distill generate --like A``: A's view identity and address (the views are A's).
    like: dict[str, Any] | None = None

    @field_validator(
        "num_samples", "views", "topk", "num_classes", "chunk_samples", "shard_samples",
        "shard_views", "chunk_views",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v: int, info: ValidationInfo) -> int:
        if v < 1:  # 0 or negative counts would make empty ranges or divide by zero
            raise ValueError(f"must be >= 1, got {v}")
        bound = _BOUNDS.get(str(info.field_name))
        if bound is not None and v > bound:
            raise ValueError(f"must be <= {bound}, got {v}")
        return v

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: dict[str, Any]) -> dict[str, Any]:
        _nested(TeacherAttrs, v, "teacher")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: dict[str, Any]) -> dict[str, Any]:
        _nested(DatasetAttrs, v, "dataset")
        return v

    @field_validator("config")
    @classmethod
    def _config(cls, v: dict[str, Any]) -> dict[str, Any]:
        _nested(RecordedConfig, v, "config")
        return v

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: dict[str, Any]) -> dict[str, Any]:
        _recipe(v)
        return v

    @field_validator("like")
    @classmethod
    def _like(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            _nested(LikeAttrs, v, "like")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StoreAttrs:
        """The attrs agree with each other (and stay within the bounds as a whole)."""
        t, d, c = self.teacher, self.dataset, self.config
        if t["num_classes"] != self.num_classes:
            raise ValueError(
                f"teacher.num_classes {t['num_classes']} != num_classes {self.num_classes}"
            )
        if d["num_samples"] != self.num_samples:
            raise ValueError(
                f"dataset.num_samples {d['num_samples']} != num_samples {self.num_samples}"
            )
        for key, have in (("views", self.views), ("topk", self.topk), ("seed", self.store_seed)):
            if c.get(key) is not None and c[key] != have:
                raise ValueError(f"config.{key} {c[key]} contradicts the store's {have}")
        if self.topk > self.num_classes:
            raise ValueError(f"topk {self.topk} exceeds num_classes {self.num_classes}")
        for outer, inner in (("shard_samples", "chunk_samples"), ("shard_views", "chunk_views")):
            if getattr(self, outer) % getattr(self, inner):
                raise ValueError(f"{outer} is not a multiple of {inner}")
        chunk = self.chunk_views * self.chunk_samples * self.topk
        shard = self.shard_views * self.shard_samples * self.topk
        if chunk > MAX_CHUNK_ENTRIES or shard > MAX_SHARD_ENTRIES:
            raise ValueError(
                f"chunks of {chunk} or shards of {shard} entries exceed the bounds "
                f"({MAX_CHUNK_ENTRIES}, {MAX_SHARD_ENTRIES})"
            )
        if self.unit_count > MAX_UNITS:
            raise ValueError(f"{self.unit_count} shard units exceed the bound {MAX_UNITS}")
        return self

    @field_validator("copied_from")
    @classmethod
    def _copied_from(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                CopiedFrom.model_validate(v)
            except ValidationError as e:
                raise ValueError(f"copied_from: {validation_message(e)}") from None
        return v

    @model_validator(mode="after")
    def _base_within_views(self) -> StoreAttrs:
        if self.base_views is not None and not 1 <= self.base_views < self.views:
            raise ValueError(f"base_views {self.base_views} must be in [1, views={self.views})")
        recorded = self.config.get("base_views")
        if recorded is not None and recorded != self.base_views:
            raise ValueError(
                f"config.base_views {recorded} contradicts base_views {self.base_views}"
            )
        return self

    @model_validator(mode="after")
    def _order_is_permutation(self) -> StoreAttrs:
        if self.class_order is None:
            return self
        if self.id_order != "head-sorted-pad":
            raise ValueError(f"class_order needs id_order 'head-sorted-pad', not {self.id_order!r}")
        order = np.asarray(self.class_order, dtype=np.int64)
        if len(order) != self.num_classes or not np.array_equal(
            np.sort(order), np.arange(self.num_classes)
        ):
            raise ValueError(f"class_order is not a permutation of 0..{self.num_classes - 1}")
        return self

    @property
    def unit_count(self) -> int:
        """How many shard units the store has, by arithmetic (never by listing them)."""
        groups = -(-self.views // self.shard_views)
        return groups * -(-self.num_samples // self.shard_samples)

    @property
    def first_slot(self) -> int:
        """The views' slot of this store's slot 0 (a copy of slots A:B: A; else 0)."""
        return self.slot_offset or 0

    def view_slot(self, slot: int) -> int:
        """The slot whose seeds and mixing pairs this store's view slot ``slot`` replays."""
        return self.first_slot + slot

    @property
    def schedule_views(self) -> int:
        """The slots the recipe's per-slot schedule spans: a copy keeps its source's span, a
        grown store its ``base_views``; a slot at or past it takes the knobs of the last slot
        of the span (teacher_store.views.codec.decode)."""
        return self.slot_span or self.base_views or self.views

    def to_dict(self) -> dict[str, Any]:
        """The attrs as JSON-ready fields (the root ``zarr.json``'s attributes). Fields added
        after schema 2 appear only when set, so a store that uses none keeps its bytes."""
        out = self.model_dump(mode="json")
        for name in _OPTIONAL_FIELDS:
            if out.get(name) is None:
                out.pop(name, None)
        return out

    @classmethod
    def create(cls, **fields: Any) -> StoreAttrs:
        """The attrs of a new store; options that would make them invalid (a size past its
        bound, a teacher whose info does not fit) are one ValueError line, not a pydantic dump."""
        try:
            return cls(**fields)
        except ValidationError as e:
            raise ValueError(
                f"the store would have invalid attrs: {validation_message(e)}"
            ) from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreAttrs:
        """Validated attrs from :meth:`to_dict`'s fields."""
        return cls.model_validate(d)

    def check_block(self, slot: int, start: int, stop: int) -> None:
        """Raise ValueError unless slot and [start, stop) address stored views."""
        if not 0 <= slot < self.views:
            raise ValueError(f"view slot {slot} out of range [0, {self.views})")
        if not 0 <= start < stop <= self.num_samples:
            raise ValueError(f"sample range [{start}, {stop}) outside [0, {self.num_samples})")

    @property
    def ids_dtype(self) -> np.dtype:
        """The ``ids`` array's dtype: uint16, or uint32 above 65,535 classes."""
        return ids_dtype(self.num_classes)

    @property
    def values_dtype(self) -> np.dtype:
        """The ``values`` array's dtype for the store's value encoding."""
        return values_dtype(self.value_encoding)


_BOUNDS = {
    "num_samples": MAX_SAMPLES,
    "views": MAX_VIEWS,
    "topk": MAX_TOPK,
    "num_classes": MAX_CLASSES,
    "chunk_samples": MAX_SAMPLES,
    "shard_samples": MAX_SAMPLES,
    "shard_views": MAX_VIEWS,
    "chunk_views": MAX_VIEWS,
}


# What decides a store's views (not its teacher): two stores with the same view identity hold
# targets of the very same views in every slot both have (``distill generate --like``).
_VIEW_FIELDS = ("codec_version", "num_samples", "store_seed", "recipe", "dataset")


def view_fields(attrs: StoreAttrs) -> dict[str, Any]:
    """What decides a store's views, by name: the codec version, samples, store seed, recipe,
    dataset fingerprint, the schedule's span (staged recipes only), the decode path and the
    pixel limit (which decide the pixels and which views are valid), and a copy's first slot
    (its slot r is the views' slot A + r). The teacher, K, the encoding, the layout and the
    number of slots are not among them."""
    d = attrs.to_dict()
    doc = {k: d[k] for k in _VIEW_FIELDS}
    doc["decode"] = attrs.config.get("decode") or "cpu"
    doc["max_image_pixels"] = attrs.config.get("max_image_pixels")
    if int(attrs.recipe.get("stages", 1)) > 1:  # a staged recipe: the span sets each stage
        doc["schedule_views"] = attrs.schedule_views
    if attrs.first_slot:  # a copy of slots A:B: its slot r holds the views' slot A + r
        doc["first_slot"] = attrs.first_slot
    return doc


def view_identity(attrs: StoreAttrs) -> str:
    """16 hex digits naming a store's views (:func:`view_fields`): two stores with the same
    view identity hold targets of the very same views in every slot both have."""
    import hashlib
    import json

    raw = json.dumps(view_fields(attrs), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


_OPTIONAL_FIELDS = ("slot_offset", "slot_span", "copied_from", "base_views", "like")


class CopiedFrom(BaseModel):
    """``attrs.copied_from``: the store a copy was taken from (`distill copy`), version 1.

    ``slots`` is the source's half-open slot range copied; ``topk``, ``value_encoding`` and
    ``shard_views`` are the source's (the copy's own are in the attrs; a copy whose units are
    its source's units re-runs the source's teacher batches exactly); ``encoding_kl`` is the
    mean nats per view the source's values add to its generation's float32 top-K, as recorded
    (None: unknown)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    version: Literal[1] = 1
    identity: str = Field(pattern=r"^[0-9a-f]{16}$")
    address: str
    views: int = Field(ge=1)
    slots: list[int] = Field(min_length=2, max_length=2)
    topk: int = Field(ge=1)
    value_encoding: ValueEncodingName
    shard_views: int = Field(ge=1)
    # The copy's shard units cut the views as its generation did (so `distill verify` can
    # re-run the very same teacher batches): the source's units, and the source's its own.
    batches_kept: bool = True
    encoding_kl: float | None = None

    @field_validator("slots")
    @classmethod
    def _range(cls, v: list[int]) -> list[int]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"must be [first, stop) with 0 <= first < stop, got {v}")
        return v

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields (what ``attrs.copied_from`` holds)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CopiedFrom:
        """A validated record from :meth:`to_dict`'s fields."""
        return cls.model_validate(d)


def ids_dtype(num_classes: int) -> np.dtype:
    return np.dtype("uint16") if num_classes <= 65535 else np.dtype("uint32")


def values_dtype(encoding: str) -> np.dtype:
    return _encoding(encoding).dtype


def encode_values(logprobs: np.ndarray, encoding: str) -> np.ndarray:
    """Encode float log-probabilities [..., K] (rank order, descending) for storage."""
    return _encoding(encoding).encode(logprobs)


def decode_values(values: np.ndarray, encoding: str) -> np.ndarray:
    """Stored values [..., K] -> float32 log-probabilities (``-inf`` for zero probability)."""
    return _encoding(encoding).decode(values)


def quant_step(encoding: str, k: int) -> np.ndarray:
    """The encoding's step in p per rank, [K] float64 (0 for logprob-f16); the worst
    |p_stored - p| is half of it, and entries closer than it may swap ranks when decoded."""
    return _encoding(encoding).quant_step(k)


def check_readable(
    attrs: dict[str, Any], where: str, codec_version: int | None = None
) -> StoreAttrs:
    """Validate a store's raw root attrs; refuse versions this code does not understand.

    ``codec_version`` defaults to this code's :data:`~teacher_store.views.codec.CODEC_VERSION`.
    """
    if codec_version is None:
        # Imported here: the service imports this module and keeps its import closure small.
        from teacher_store.views.codec import CODEC_VERSION

        codec_version = CODEC_VERSION
    if attrs.get("kind") != STORE_KIND:
        raise StoreNotFound(f"{where} is not a distill teacher store (no kind={STORE_KIND!r} attr)")
    if attrs.get("schema_version") not in READABLE_VERSIONS:
        known = ", ".join(map(str, READABLE_VERSIONS))
        raise UnsupportedStoreVersion(
            f"{where} has schema version {attrs.get('schema_version')}, this distill reads "
            f"{known}; upgrade distill or regenerate the store"
        )
    if attrs.get("codec_version") != codec_version:
        raise UnsupportedStoreVersion(
            f"{where} was written with view codec version {attrs.get('codec_version')}, this "
            f"distill replays version {codec_version}; views would not match the targets"
        )
    try:
        return StoreAttrs.from_dict(attrs)
    except ValidationError as e:
        msg = f"has invalid attrs: {validation_message(e)}"
        raise StoreDamaged("zarr.json", msg, f"{where} {msg}") from None


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class FileEntry(_Record):
    """What a unit record or the manifest says about one shard file (size 0: never written)."""

    size: int = Field(ge=0)
    crc32c: int = Field(ge=0, lt=1 << 32)
    sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")


def _check_keys(files: dict[str, FileEntry]) -> dict[str, FileEntry]:
    for key in files:
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"file key {key!r} is not a relative a/b/c path inside the store")
    return files


class UnitRecord(_Record):
    """``_distill/shards/<unit>.json``: one committed shard unit."""

    unit: str
    files: dict[str, FileEntry]
    bad: list[dict[str, Any]] = []

    _keys = field_validator("files")(_check_keys)


class GrownFrom(_Record):
    """One store a grown store was grown from: its view slots and its identity then."""

    views: int = Field(ge=1)
    identity: str = Field(pattern=r"^[0-9a-f]{16}$")


class Manifest(_Record):
    """``_distill/manifest.json``: every committed file of a finished store."""

    units: int = Field(ge=1)
    files: dict[str, FileEntry]
    bad_samples: list[dict[str, Any]] = []
    grown_from: list[GrownFrom] = []  # a grown store's lineage (teacher_store.store.grow)
    # The metadata files (root and arrays' zarr.json) as finished: absent in older manifests.
    meta: dict[str, FileEntry] = {}

    _keys = field_validator("files", "meta")(_check_keys)


class NodeMeta(BaseModel):
    """One entry of the root's consolidated metadata (only what readers rely on is checked)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    node_type: Literal["array", "group"]
    shape: list[int] | None = None
    data_type: str | None = None


class ConsolidatedMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    metadata: dict[str, NodeMeta]


class RootMeta(BaseModel):
    """A store's root ``zarr.json``: attributes, and consolidated metadata once finalized."""

    model_config = ConfigDict(frozen=True, extra="allow")

    node_type: Literal["group"] = "group"
    attributes: dict[str, Any] = {}
    consolidated_metadata: ConsolidatedMeta | None = None


_MAX_PROBLEMS = 3


def validation_message(e: ValidationError, prefix: str = "") -> str:
    """A one-line summary of a pydantic error: ``where: what`` for each problem (the first
    three; missing fields of one object as one ``where: missing a, b``), ``where`` starting
    with ``prefix`` (a nested object's field name)."""
    parts: list[str | list[str]] = []  # a message, or the names missing from one object
    missing: dict[str, list[str]] = {}
    for err in e.errors():
        loc = [str(p) for p in (prefix, *err.get("loc", ())) if p != ""]
        if err.get("type") == "missing" and loc:
            parent = ".".join(loc[:-1])
            if parent not in missing:
                missing[parent] = [f"{parent}: missing " if parent else "missing "]
                parts.append(missing[parent])
            missing[parent].append(loc[-1])
            continue
        where = ".".join(loc)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        # A nested object's own message (see _nested) already starts with its path.
        if not where or msg.startswith((f"{where}.", f"{where}:")):
            parts.append(msg)
        else:
            parts.append(f"{where}: {msg}")
    text = [p if isinstance(p, str) else p[0] + ", ".join(p[1:]) for p in parts]
    if len(text) > _MAX_PROBLEMS:
        text[_MAX_PROBLEMS:] = [f"and {len(text) - _MAX_PROBLEMS} more"]
    return " ".join("; ".join(text).split())  # one line, whatever the messages hold
