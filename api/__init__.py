"""The shard service: stores under one root over HTTP (FastAPI/uvicorn).

``uvicorn api.main:app`` (settings from ``DISTILL_*``) or ``distill serve --root DIR``.
Endpoints, all errors JSON ``{"status", "error", "detail"}``:

- ``GET /v1/stores``, ``GET /v1/stores/{name}``: listing and metadata (unfinished stores show
  their progress);
- ``GET|HEAD /v1/stores/{name}/zarr/{key}``: the store's zarr key space (Range, ETag, 304, 416),
  readable by stock zarr-python over fsspec;
- ``GET /v1/stores/{name}/blocks/{view}?start=&stop=``: one view slot's targets for a sample
  range in the binary format of :mod:`teacher_store.store.blockfmt`;
- ``GET /v1/stores/{name}/views/{slot}/{sample}.png``: a replayed view (needs ``--data``);
- ``GET /``, ``/ui/...``: the web dashboard (open page shells; their data comes from
  ``/ui/fragments/...`` under the token rule of ``/v1``);
- ``GET /healthz``, ``/readyz``, ``/metrics`` (Prometheus), open without a token.

This package imports ``teacher_store`` (never ``student``/``models``) and never torch: view
PNGs are rendered in worker processes (:mod:`api.renders`), which import the replay path.
"""
