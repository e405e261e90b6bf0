"""Typed errors of store readers and writers.

Every class is a ``ValueError`` (through :class:`StoreError`), so code and CLIs that treat a
``ValueError`` as bad input (exit 2) behave as before; callers that care what went wrong (the
service maps each type to an HTTP status) catch the type instead of parsing the message.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any


class StoreError(ValueError):
    """A store cannot be read or written as asked."""


class StoreNotFound(StoreError):
    """There is no store at the address (no root ``zarr.json``, or not a distill store)."""


class StoreAccessError(StoreError):
    """The storage holding a store refused the credentials or cannot be reached."""


class StoreIncomplete(StoreError):
    """The store is unfinished: no manifest yet; the same ``distill generate`` finishes it."""


class StoreDamaged(StoreError):
    """A store file is missing, unreadable, malformed or fails its checksums.

    ``file`` is the file's key in the store (or its path), ``reason`` what is wrong with it.
    """

    def __init__(self, file: str, reason: str = "", message: str | None = None) -> None:
        super().__init__(f"{file} {reason}" if message is None else message)
        self.file = file
        self.reason = reason

    def __reduce__(self) -> tuple[type[StoreDamaged], tuple[str, str, str]]:
        # Rebuilt with all three fields (the default would call cls(message)).
        return type(self), (self.file, self.reason, str(self))


class DatasetMismatch(StoreError):
    """The store was built from another dataset than the one given or expected."""


class ImageChangedError(DatasetMismatch):
    """An image's bytes are not those the store recorded for its sample (a file replaced, even
    by one of the same size): its stored targets belong to other pixels. Raised where the image
    is read for replay; names the file (``path``) and the sample (``sample``)."""

    def __init__(self, message: str, path: str, sample: int) -> None:
        super().__init__(message)
        self.path, self.sample = path, sample

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), str(self), self.__dict__)


class UnsupportedStoreVersion(StoreError):
    """The store's schema or codec version (or its server) is one this code cannot read."""


class StoreConflict(StoreError):
    """The output folder holds another store or other data; writing would destroy it."""


class StoreChangedError(StoreError):
    """The store was regenerated or replaced while this client was reading it."""

    def __init__(self, url: str, old: str, new: str) -> None:
        super().__init__(
            f"store {url} changed while reading (identity {old} → {new or 'no manifest'}): it "
            "was regenerated or replaced; restart training against the new store"
        )
        self.url, self.old, self.new = url, old, new


class StoreMismatch(StoreError):
    """Work begun on one store (a training run's checkpoint, a loader's saved cursor) was
    given another store to go on with: its targets are another teacher's or another run's."""

    def __init__(self, message: str, old: str, new: str) -> None:
        """``old``, ``new``: the two stores' identities (the message names both)."""
        super().__init__(message)
        self.old, self.new = old, new

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), str(self), self.__dict__)


def _rebuild(cls: type[Exception], message: str, fields: dict[str, Any]) -> Exception:
    """An error rebuilt with its message and fields (across processes), whatever its __init__."""
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    e.__dict__.update(fields)
    return e


def causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and the exceptions behind it, outermost first (zarr wraps s3fs's errors, s3fs
    wraps botocore's; an OSError may hide behind any of them). Not in ``__all__``, which lists
    the error types."""
    seen: BaseException | None = e
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


__all__ = [
    "DatasetMismatch",
    "ImageChangedError",
    "StoreAccessError",
    "StoreChangedError",
    "StoreConflict",
    "StoreDamaged",
    "StoreError",
    "StoreIncomplete",
    "StoreMismatch",
    "StoreNotFound",
    "UnsupportedStoreVersion",
]


def portable(e: ValueError) -> ValueError:
    """``e`` fit to cross a process boundary: itself when it survives pickling with its type and
    message, else a plain ``ValueError`` of its message.

    A DataLoader worker returns a fatal error inside its item for the main process to raise:
    raised in the worker, it would reach the main process as a multi-line ``RuntimeError``
    quoting the worker's traceback, its type lost (a one-line error would become a traceback).
    """
    try:
        back = pickle.loads(pickle.dumps(e))
        if type(back) is type(e) and str(back) == str(e):
            return e
    except Exception:  # any failure to round-trip: fall back to the message
        pass
    return ValueError(str(e))
