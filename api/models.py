"""Response schemas of the JSON endpoints (frozen pydantic models, shown in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Progress(_Frozen):
    committed_units: int = Field(description="shard units committed so far")
    total_units: int | None = Field(description="shard units of the whole store")


class StoreSummary(_Frozen):
    name: str
    state: Literal["complete", "incomplete", "invalid"]
    complete: bool
    progress: Progress
    error: str | None = Field(None, description="why an invalid store cannot be served")
    url: str = Field(description="this store's metadata URL")


class ArrayInfo(_Frozen):
    shape: list[int]
    dtype: str
    shard_shape: list[int] | None
    chunk_shape: list[int] | None
    bytes: int = Field(description="bytes on disk of its committed shard files")


class Fidelity(_Frozen):
    state: Literal["current", "stale", "invalid"] = Field(
        description="current: the record names this store's identity; stale: it names another "
        "(an earlier store at this address); invalid: the record is unreadable"
    )
    identity: str = Field(description="the store's identity now")
    reason: str = Field(description="why the record is stale or invalid ('' when current)")
    record: dict[str, Any] | None = Field(
        description="what `distill verify --record` measured (teacher_store.fidelity."
        "FidelityRecord): views re-run, ids agreement, max |Δp|, KL, teacher weights digest, "
        "date, and the store identity it checked"
    )


class StoreDetail(StoreSummary):
    teacher_name: str | None = None
    teacher_architecture: str | None = None
    teacher_weights_sha256: str | None = None
    topk: int | None = None
    views: int | None = None
    num_samples: int | None = None
    num_classes: int | None = None
    value_encoding: str | None = None
    temperature: float | None = None
    recipe: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = Field(None, description="dataset fingerprint")
    bytes_on_disk: int | None = Field(None, description="committed shard bytes")
    bytes_per_view: float | None = Field(None, description="bytes_on_disk / (views * samples)")
    arrays: dict[str, ArrayInfo] = Field(default_factory=dict)
    bad_samples: int | None = Field(None, description="samples whose image was unreadable")
    max_block: int = Field(description="most samples one block request may ask for")
    zarr_url: str | None = Field(None, description="prefix of the zarr key space")
    blocks_url: str | None = Field(None, description="block endpoint, {view} to fill in")
    attrs: dict[str, Any] | None = Field(None, description="the store's full root attrs")
    identity: str | None = Field(
        None,
        description="16 hex digits of sha256(_distill/manifest.json): every block and zarr "
        "ETag carries it; it changes when the store is regenerated or replaced",
    )
    grown_from: list[dict[str, Any]] | None = Field(
        None,
        description="the stores this one was grown from (view slots appended), oldest first: "
        "[{views, identity}]; a reader that opened one of them keeps reading its slots",
    )
    view_identity: str | None = Field(
        None,
        description="16 hex digits naming the store's views (dataset, seed, recipe, schedule): "
        "stores of other teachers with the same view identity hold targets of the same views",
    )
    fidelity: Fidelity | None = Field(
        None, description="the last recorded fidelity check (`distill verify --record`)"
    )


class SkippedFolder(_Frozen):
    name: str = Field(description="the folder's name (bytes that are not UTF-8 as \\xNN)")
    reason: str = Field(description="why the service does not serve it")


class StoreList(_Frozen):
    root: str = Field(description="served folder (its name only)")
    stores: list[StoreSummary]
    skipped: list[SkippedFolder] = Field(
        default_factory=list,
        description="store folders under the root that are not served (a name the API cannot "
        "address, a link out of the root), with the reason",
    )


class Health(_Frozen):
    status: Literal["ok", "starting"]
    stores: int | None = None
