"""``GET /v1/stores`` and ``GET /v1/stores/{name}``: what is served and what each store holds."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.errors import ERROR_RESPONSES
from api.models import (
    ArrayInfo,
    Fidelity,
    Progress,
    SkippedFolder,
    StoreDetail,
    StoreList,
    StoreSummary,
)
from api.registry import StoreEntry
from api.service import Service, ServiceDep, StoreName, find_store
from teacher_store.store.schema import view_identity

router = APIRouter(prefix="/v1")


def _summary_fields(e: StoreEntry, request: Request) -> dict[str, object]:
    return {
        "name": e.name,
        "state": e.state,
        "complete": e.state == "complete",
        "progress": Progress(committed_units=e.committed_units, total_units=e.total_units),
        "error": e.error,
        "url": str(request.url_for("store_detail", name=e.name).path),
    }


def _arrays(e: StoreEntry) -> dict[str, ArrayInfo]:
    out = {}
    for name, meta in e.arrays.items():
        layout = e.layouts.get(name)
        prefix = f"{name}/"
        out[name] = ArrayInfo(
            shape=list(meta["shape"]),
            dtype=str(meta["data_type"]),
            shard_shape=list(layout.shard) if layout else None,
            chunk_shape=list(layout.inner) if layout else None,
            bytes=sum(r.size for k, r in e.files.items() if k.startswith(prefix)),
        )
    return out


def _detail(e: StoreEntry, svc: Service, request: Request) -> StoreDetail:
    fields = _summary_fields(e, request)
    a = e.attrs
    if a is None:
        return StoreDetail(max_block=svc.settings.max_block, **fields)  # type: ignore[arg-type]
    complete = e.state == "complete"
    total = e.data_bytes if complete else None
    base = str(fields["url"])
    return StoreDetail(
        **fields,  # type: ignore[arg-type]
        teacher_name=a.teacher.get("name"),
        teacher_architecture=a.teacher.get("architecture"),
        teacher_weights_sha256=a.teacher.get("weights_sha256"),
        topk=a.topk,
        views=a.views,
        num_samples=a.num_samples,
        num_classes=a.num_classes,
        value_encoding=a.value_encoding,
        temperature=a.temperature,
        recipe=a.recipe,
        dataset=a.dataset,
        bytes_on_disk=total,
        bytes_per_view=total / (a.views * a.num_samples) if total is not None else None,
        arrays=_arrays(e),
        bad_samples=e.bad_samples if complete else None,
        max_block=svc.settings.max_block,
        zarr_url=f"{base}/zarr/" if complete else None,
        blocks_url=f"{base}/blocks/{{view}}" if complete else None,
        attrs=a.to_dict(),
        identity=e.identity if complete else None,
        grown_from=e.grown_from if complete else None,
        view_identity=view_identity(a),
        fidelity=Fidelity(**e.fidelity.to_dict()) if e.fidelity is not None else None,
    )


@router.get("/stores", response_model=StoreList, responses=ERROR_RESPONSES)
async def list_stores(request: Request, svc: ServiceDep) -> StoreList:
    """Every store under the root: complete ones are served, unfinished ones show progress;
    store folders that are not served are listed under ``skipped`` with the reason."""
    summaries = [StoreSummary(**_summary_fields(e, request)) for e in svc.registry.list()]  # type: ignore[arg-type]
    skipped = [SkippedFolder(name=n, reason=why) for n, why in svc.registry.skipped()]
    return StoreList(root=svc.registry.name, stores=summaries, skipped=skipped)


@router.get(
    "/stores/{name}", response_model=StoreDetail, responses=ERROR_RESPONSES, name="store_detail"
)
async def store_detail(name: StoreName, request: Request, svc: ServiceDep) -> StoreDetail:
    """Teacher, K, views, samples, encoding, recipe, dataset fingerprint, bytes, completeness."""
    return _detail(find_store(svc, name), svc, request)
