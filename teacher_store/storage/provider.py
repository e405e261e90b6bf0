"""What the storage room knows about one object store: :class:`Provider`.

Each object store that fsspec reaches has one module in this room (:mod:`.s3`) defining its
:class:`Provider`, listed once in :data:`teacher_store.storage.failures.PROVIDERS`. A folder on
local disk, fsspec's memory filesystem or any other protocol without a provider is plain
storage: no bucket to probe, no provider failures to name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# (what went wrong, what to do), each one line: a storage failure explained to the user.
Failure = tuple[str, str]


@dataclass(frozen=True)
class Provider:
    """An object store: how to reach it, how to name its failures.

    ``classify(e, endpoint, bucket)`` explains one exception of the chain behind a failed
    request (its own client library's types), or returns None for an exception it does not
    know; ``endpoint(fs)`` says where the filesystem sends its requests.
    """

    name: str
    protocols: frozenset[str]  # fsspec protocols it serves
    credentials: str  # where its credentials come from, for messages
    endpoint_variable: str  # the environment variable that names its endpoint
    endpoint: Callable[[Any], str]
    classify: Callable[[BaseException, str, str], Failure | None]
    # fsspec options for its filesystems. No listing cache: other ranks and processes write
    # the same prefix.
    options: Mapping[str, Any] = field(default_factory=lambda: {"use_listings_cache": False})


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


__all__ = ["Failure", "Provider", "first_line"]
