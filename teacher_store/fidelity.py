"""Recorded fidelity checks: what `distill verify --record` measured, kept beside the store.

The record (``_distill/fidelity.json``, :class:`FidelityRecord`, version 1) holds what the
teacher spot check measured: the share of the store's views re-run, ids agreement, top-1
agreement, max |Δp|, KL(full teacher ‖ stored sparse target), the sha256 of the teacher
weights it ran, the device, the tolerance applied, the outcome and the date, and it names the
store identity it checked (the sha256 of the manifest). The manifest never lists it, so
writing it leaves the store's identity, ETags and blocks as they are; and since it names the
identity, a record of an earlier store (regenerated, replaced, copied over) is shown as
**stale**, never as the current store's. Readers: `distill info`, ``GET /v1/stores/NAME``
(``fidelity``) and the dashboard's store page, all through :func:`fidelity_status`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from teacher_store.errors import StoreChangedError, StoreError
from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.layout import FIDELITY
from teacher_store.store.schema import validation_message

RECORD_KIND: Literal["distill-fidelity-record"] = "distill-fidelity-record"
_MAX_BYTES = 64 << 10  # a record is < 2 KiB; anything larger is not one


class FidelityRecord(BaseModel):
    """``_distill/fidelity.json``: one recorded teacher spot check of one store identity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["distill-fidelity-record"] = RECORD_KIND
    version: Literal[1] = 1
    store_identity: str = Field(pattern=r"^[0-9a-f]{16}$")
    date: str  # ISO 8601, UTC, when the check ran
    ok: bool  # the check passed
    summary: str  # verify's one-line outcome
    fraction: float = Field(ge=0, le=1)  # the share of teacher batches asked for
    views_rerun: int = Field(ge=0)
    views_total: int = Field(ge=0)  # valid views of the store
    fraction_rerun: float = Field(ge=0, le=1)  # views_rerun / views_total
    batches_rerun: int = Field(ge=0)
    batches_total: int = Field(ge=0)
    ids_agreement: float = Field(ge=0, le=1)  # stored non-zero entries among fresh top-K ids
    top1_agreement: float = Field(ge=0, le=1)  # views whose stored top-1 is the fresh one
    max_dp: float = Field(ge=0)  # max over re-run views of max |p_stored - p_fresh|
    median_max_dp: float = Field(ge=0)
    kl: float = Field(ge=0)  # mean KL(fresh full distribution || stored sparse target), nats
    teacher_weights_sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    device: str  # the device type the teacher re-ran on
    tolerance: Literal["same-device", "cross-device"]
    dataset_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields (the file's contents)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FidelityRecord:
        """A validated record from :meth:`to_dict`'s fields."""
        return cls.model_validate(d)


@dataclass(frozen=True)
class FidelityStatus:
    """A store's recorded fidelity check as readers show it: ``current`` (it names the store
    as it is), ``stale`` (it names another identity: an earlier store at this address) or
    ``invalid`` (the file is unreadable or not a record; ``reason`` says why)."""

    state: Literal["current", "stale", "invalid"]
    record: FidelityRecord | None
    identity: str  # the store's identity now
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``info --json``, the service)."""
        return {
            "state": self.state,
            "identity": self.identity,
            "reason": self.reason,
            "record": None if self.record is None else self.record.to_dict(),
        }


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def record_check(
    address: str | os.PathLike[str], measured: dict[str, Any], ok: bool, summary: str
) -> FidelityRecord:
    """Write the record of a spot check (``measured``: :class:`~teacher_store.verify.
    VerifyReport`'s) into the store at ``address``, if the store still has the identity it
    checked (:class:`~teacher_store.errors.StoreChangedError` otherwise: nothing written)."""
    loc = Location.at(address)
    want = str(measured.get("identity") or "")
    now = _identity(loc)
    if now != want:
        raise StoreChangedError(loc.display, want, now)
    fields = {k: v for k, v in measured.items() if k in FidelityRecord.model_fields}
    fields.pop("identity", None)
    try:
        rec = FidelityRecord(
            store_identity=want, date=_now(), ok=ok, summary=summary[:2000], **fields
        )
    except ValidationError as e:  # only a bug makes a measured dict that is no record
        raise AssertionError(f"fidelity record: {validation_message(e)}") from None
    data = (json.dumps(rec.to_dict(), indent=1, sort_keys=True) + "\n").encode()
    layout.write_file(loc, FIDELITY, data)
    return rec


def _identity(loc: Location) -> str:
    from teacher_store.store.blockfmt import store_identity

    try:
        return store_identity(layout.manifest_bytes(loc))
    except FileNotFoundError:
        return ""


def read_status(loc: Location, identity: str) -> FidelityStatus | None:
    """The recorded check of the store at ``loc`` whose identity is ``identity`` ("" while
    unfinished); None when there is no record."""
    try:
        if not loc.is_file(FIDELITY):
            return None
        _, doc = layout.read_json(loc, FIDELITY, _MAX_BYTES)
    except (StoreError, OSError) as e:
        return FidelityStatus("invalid", None, identity, f"{FIDELITY} {_reason(e)}")
    try:
        rec = FidelityRecord.from_dict(doc)
    except ValidationError as e:
        why = f"{FIDELITY} is not a fidelity record: {validation_message(e)}"
        return FidelityStatus("invalid", None, identity, why)
    if rec.store_identity != identity:
        why = (
            f"recorded for store identity {rec.store_identity}, the store is now "
            f"{identity or 'unfinished'}; re-run `distill verify --data DIR --record`"
        )
        return FidelityStatus("stale", rec, identity, why)
    return FidelityStatus("current", rec, identity)


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", "")
    return str(reason or e)


def fidelity_status(address: str | os.PathLike[str]) -> FidelityStatus | None:
    """The recorded check of the store at ``address`` (a folder or an object-store URL)
    against its identity now; None when there is none."""
    loc = Location.at(address)
    return read_status(loc, _identity(loc))


def format_status(status: FidelityStatus | None) -> str:
    """One line for `distill info`."""
    if status is None:
        return "none recorded (`distill verify --data DIR --record` records one)"
    if status.record is None:
        return f"INVALID: {status.reason}"
    r = status.record
    outcome = "passed" if r.ok else "FAILED"
    line = (
        f"{outcome} on {r.date}: {r.views_rerun} of {r.views_total} views re-run "
        f"({100 * r.fraction_rerun:.1f}%) on {r.device} ({r.tolerance}), ids agreement "
        f"{r.ids_agreement:.3f}, top-1 {r.top1_agreement:.3f}, max |Δp| {r.max_dp:.1e}, "
        f"KL {r.kl:.4f} nats/view, teacher sha256 {(r.teacher_weights_sha256 or '?')[:16]}..."
    )
    if status.state == "stale":
        return f"STALE ({status.reason}): {line}"
    return line


__all__ = [
    "RECORD_KIND",
    "FidelityRecord",
    "FidelityStatus",
    "fidelity_status",
    "format_status",
    "read_status",
    "record_check",
]
