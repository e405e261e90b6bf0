"""The web dashboard: server-rendered pages (Jinja2) and a little vanilla JS, all served here.

Pages (``/``, ``/ui/stores/{name}``, ``/ui/stores/{name}/views``) are open shells that say
only whether a token is needed; their content comes from ``/ui/fragments/...``, HTML rendered
here under the same bearer-token rule as ``/v1`` (the page asks for the token once and sends
it as a header). Assets live under ``/ui/static``: no CDN, no build step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from api.dashboard import check_view
from api.registry import StoreEntry
from api.service import Service, ServiceDep, StoreName, data_store, find_store

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
pages = APIRouter(include_in_schema=False)
fragments = APIRouter(prefix="/ui/fragments", include_in_schema=False)
REFRESH_MS = 2000  # the stores page re-reads progress this often (?refresh_ms= overrides)


def _shell(request: Request, title: str, fragment: str, refresh_ms: int = 0) -> HTMLResponse:
    context = {
        "title": title,
        "fragment": fragment,
        "refresh_ms": refresh_ms,
        "token_required": request.app.state.token is not None,
    }
    return templates.TemplateResponse(request, "shell.html", context)


@pages.get("/", response_class=HTMLResponse)
@pages.get("/ui", response_class=HTMLResponse)
async def stores_page(
    request: Request, refresh_ms: Annotated[int, Query(ge=100, le=60000)] = REFRESH_MS
) -> HTMLResponse:
    return _shell(request, "stores", "/ui/fragments/stores", refresh_ms)


@pages.get("/ui/stores/{name}", response_class=HTMLResponse)
async def store_page(name: StoreName, request: Request) -> HTMLResponse:
    return _shell(request, f"store {name}", f"/ui/fragments/stores/{name}")


@pages.get("/ui/stores/{name}/views", response_class=HTMLResponse)
async def views_page(name: StoreName, request: Request) -> HTMLResponse:
    return _shell(request, f"views of {name}", f"/ui/fragments/stores/{name}/view")


def _row(e: StoreEntry) -> dict[str, Any]:
    a = e.attrs
    row: dict[str, Any] = {"name": e.name, "state": e.state, "error": e.error, "attrs": a}
    row["committed"], row["total"] = e.committed_units, e.total_units or 0
    if a is not None:
        from teacher_store.store.schema import view_identity

        row["view_identity"] = view_identity(a)
        row["tinyvit"] = 4 + 4 * a.topk  # int32 seed + K int16 ids + K float16 probabilities
        done = e.state == "complete"
        row["bytes_per_view"] = e.data_bytes / (a.views * a.num_samples) if done else None
    return row


@fragments.get("/stores", response_class=HTMLResponse)
async def stores_fragment(request: Request, svc: ServiceDep) -> HTMLResponse:
    rows = [_row(e) for e in svc.registry.list()]
    context = {"rows": rows, "skipped": svc.registry.skipped()}
    return templates.TemplateResponse(request, "stores.html", context)


def _array_bytes(e: StoreEntry) -> list[tuple[str, int]]:
    return [
        (name, sum(r.size for k, r in e.files.items() if k.startswith(f"{name}/")))
        for name in e.arrays
    ]


def _store_context(svc: Service, e: StoreEntry) -> dict[str, Any]:
    """Blocking: reads the store's targets once per identity for the charts."""
    from teacher_store.info import recipe_schedule

    a = e.attrs
    assert a is not None
    recipe_name, schedule = recipe_schedule(a.recipe, a.views, a.first_slot, a.schedule_views)
    context: dict[str, Any] = {"row": _row(e), "recipe_name": recipe_name, "schedule": schedule}
    context["fidelity"] = e.fidelity  # the last `distill verify --record`, current or stale
    if e.state == "complete":
        context["arrays"] = _array_bytes(e)
        context["stats"] = svc.dashboard.stats(e)
    return context


@fragments.get("/stores/{name}", response_class=HTMLResponse)
async def store_fragment(name: StoreName, request: Request, svc: ServiceDep) -> HTMLResponse:
    e = find_store(svc, name)
    if e.attrs is None:
        return templates.TemplateResponse(request, "store.html", {"row": _row(e)})
    context = await run_in_threadpool(_store_context, svc, e)
    return templates.TemplateResponse(request, "store.html", context)


def _top5(svc: Service, e: StoreEntry, slot: int, sample: int) -> tuple[bool, list[Any]]:
    """Blocking: (whether the view has targets, its stored top-5 as (class name, p))."""
    import numpy as np

    a = e.attrs
    assert a is not None
    block = svc.dashboard.store(e).read_block(slot, sample, sample + 1)
    names = [str(n) for n in (a.teacher.get("class_names") or [])]
    top = [
        (names[int(i)] if int(i) < len(names) else f"class {int(i)}", float(np.exp(lp)))
        for i, lp in zip(block.ids[0][:5], block.logprobs()[0][:5], strict=True)
        if np.isfinite(lp)  # zero-probability entries carry no class in a head-sorted-pad store
    ]
    return bool(block.valid[0]), top


def _peers(svc: Service, e: StoreEntry, slot: int, sample: int) -> list[dict[str, Any]]:
    """Blocking: the other served stores of the same views (one view identity: another
    teacher on them, `distill generate --like`) that have this slot, with their top-5."""
    from teacher_store.store.schema import view_identity

    assert e.attrs is not None
    mine = view_identity(e.attrs)
    out = []
    for other in svc.registry.list():
        a = other.attrs
        if other.name == e.name or other.state != "complete" or a is None:
            continue
        if slot >= a.views or sample >= a.num_samples or view_identity(a) != mine:
            continue
        valid, top = _top5(svc, other, slot, sample)
        out.append(
            {"name": other.name, "teacher": a.teacher.get("name"), "valid": valid, "top": top}
        )
    return out


def _view_context(svc: Service, e: StoreEntry, slot: int, sample: int) -> dict[str, Any]:
    """Blocking: the view's stored top-5 (and that of every other teacher on the same views),
    its decoded parameters, and whether it renders."""
    from teacher_store.views.codec import decode
    from teacher_store.views.recipe import Recipe

    a = e.attrs
    assert a is not None
    valid, top = _top5(svc, e, slot, sample)
    recipe = Recipe.from_dict(a.recipe)
    params = decode(
        a.store_seed, a.view_slot(slot), sample, a.num_samples, recipe, a.schedule_views
    )
    shown = (sample,) if params.mix is None else (sample, params.mix.partner)  # images it replays
    return {
        "name": e.name,
        "attrs": a,
        "slot": slot,
        "sample": sample,
        "valid": valid,
        "top": top,
        "peers": _peers(svc, e, slot, sample),
        "params": params,
        "problem": svc.dashboard.problem_text(e) or svc.dashboard.image_problem(e, shown),
        "png": f"/v1/stores/{e.name}/views/{slot}/{sample}.png",
    }


@fragments.get("/stores/{name}/view", response_class=HTMLResponse)
async def view_fragment(
    name: StoreName,
    request: Request,
    svc: ServiceDep,
    slot: Annotated[int, Query(ge=0, le=2**31)] = 0,
    sample: Annotated[int, Query(ge=0, le=2**40)] = 0,
) -> HTMLResponse:
    e = data_store(svc, name)
    assert e.attrs is not None
    check_view(e.attrs, slot, sample)
    context = await run_in_threadpool(_view_context, svc, e, slot, sample)
    return templates.TemplateResponse(request, "view.html", context)
