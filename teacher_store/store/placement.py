"""Where a store may be written: never onto, inside or around the images it is made from.

``distill generate --overwrite`` empties its ``--out`` first, and a store written inside the
dataset folder becomes one of its class folders on the next scan (a store that can never be
used with its own images). So an ``--out`` that is the ``--data`` folder, lies inside it or
contains it is refused before anything is created or deleted (:func:`check_apart`, called by
every entry to generation: the CLI, ``run_generate`` and each torchrun rank).

Local paths are compared after resolving links, and folders by device and inode as well as by
path (a bind mount or a case-insensitive filesystem can name one folder twice). Two fsspec URLs
of the same kind of storage (``s3://`` and ``s3a://`` are one) are compared by bucket/prefix.
A ``--data`` of tar shards (a ``.tar`` or a brace pattern) is placed at the shards' folder
(their index lies beside them): a store there, or around it, is refused the same way.
"""

from __future__ import annotations

import os

from teacher_store.errors import StoreConflict
from teacher_store.images.source import is_shard_pattern
from teacher_store.storage.location import Location

__all__ = ["OutputOverlapsData", "check_apart", "overlap"]

_LOCAL = "file"
# Protocol spellings that name the same storage.
_SAME_STORAGE = {"s3a": "s3", "gcs": "gs", "local": "file"}


class OutputOverlapsData(StoreConflict):
    """``--out`` is the dataset folder, lies inside it or contains it."""


def _where(address: str) -> tuple[str, str]:
    """(storage kind, path) of a folder or fsspec URL; local paths fully resolved."""
    try:
        loc = Location.at(address)
    except ValueError:  # a service URL or a scheme no reader has: its own check says so
        return address.split("://", 1)[0], address
    if loc.is_local:
        return _LOCAL, os.path.realpath(loc.root)
    protocols = loc.fs.protocol
    proto = protocols if isinstance(protocols, str) else protocols[0]
    return _SAME_STORAGE.get(proto, proto), "/" + loc.root.strip("/")


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): only the paths can say
        return False


def _below(child: str, parent: str, local: bool) -> bool:
    """Whether ``child`` lies strictly below ``parent`` (an ancestor of it is ``parent``)."""
    cur = child
    while True:
        up = os.path.dirname(cur) if local else cur.rsplit("/", 1)[0] or "/"
        if up == cur:
            return False
        cur = up
        if cur == parent or (local and _same_dir(cur, parent)):
            return True


def _place(data: str) -> str:
    """Where the dataset ``data`` lies: the folder itself, or tar shards' folder."""
    if not is_shard_pattern(data):
        return data
    if "://" in data:
        scheme, _, path = data.partition("://")
        head = path.rsplit("/", 1)[0] if "/" in path else path
        return f"{scheme}://{head}"
    return os.path.dirname(data) or "."


def _relation(data: str, out: str) -> tuple[str, str, str] | None:
    """How ``out`` overlaps ``data`` ("is", "inside", "contains") and both resolved paths."""
    (dkind, d), (okind, o) = _where(_place(data)), _where(out)
    if dkind != okind:
        return None
    local = dkind == _LOCAL
    if d == o or (local and _same_dir(d, o)):
        return "is", d, o
    if _below(o, d, local):
        return "inside", d, o
    if _below(d, o, local):
        return "contains", d, o
    return None


def overlap(data: str | os.PathLike[str], out: str | os.PathLike[str]) -> str | None:
    """How folder (or URL) ``out`` overlaps ``data``: "is" (the same folder), "inside" (below
    it), "contains" (above it), or None when they are apart (same rules as
    :func:`check_apart`)."""
    found = _relation(os.fspath(data), os.fspath(out))
    return None if found is None else found[0]


def check_apart(data: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Refuse (:class:`OutputOverlapsData`, one line) an ``out`` that is the dataset folder
    ``data``, lies inside it or contains it; nothing is read but the two paths' folders."""
    data, out = os.fspath(data), os.fspath(out)
    found = _relation(data, out)
    if found is None:
        return
    how, d, o = found
    resolved = "" if (d, o) == (data, out) else f" (resolved: --data {d}, --out {o})"
    if how == "is":
        what = "is the dataset folder"
        why = "--overwrite would delete the images, and a store there becomes part of the data"
    elif how == "inside":
        what = "lies inside the dataset folder"
        why = (
            "the store would be scanned as one of its class folders, so it could never be "
            "used with its own images"
        )
    else:
        what = "contains the dataset folder"
        why = "--overwrite would delete the images"
    raise OutputOverlapsData(
        f"--out {out} {what} --data {data}{resolved}: {why}; write the store to a folder "
        "outside the dataset"
    )
