"""The images of a generation job: their content digests, and the verdict on a job that read
none of them.

Before the store is created, rank 0 reads every image once and computes its content digest
(:meth:`~teacher_store.images.source.ImageSource.sample_digests`: xxh3_64, see
:mod:`teacher_store.images.digests`); every rank gets rank 0's digests, so the store's attrs
(``dataset.content``) and every rank's reads are checked against one record, and a resume whose
images changed is refused as another dataset. Finalize writes the digests into the store.
"""

from __future__ import annotations

import sys
from typing import Any

from models.runtime import share_from_main
from teacher_store.cli import CommandError
from teacher_store.images.dataset import printable_path
from teacher_store.images.source import ImageSource
from teacher_store.store import layout
from teacher_store.store.content import size_only_note
from teacher_store.store.layout import Location

__all__ = ["NoImageRead", "check_read_some", "with_content"]


class NoImageRead(CommandError):
    """The store was finished, but not one of its images could be read: it holds no targets,
    so the job failed (exit 1), whatever its shard units say."""


def _resumes_store_without_digests(out: str, overwrite: bool) -> bool:
    """Whether the job resumes a store begun before stores recorded content digests (its
    attrs, which a resume must match, record none)."""
    if overwrite:
        return False
    old = layout.read_root_attrs(Location.at(out))
    return old is not None and "content" not in (old.get("dataset") or {})


def with_content(
    folder: ImageSource, out: str, overwrite: bool, progress: bool, rank: int, world: int
) -> ImageSource:
    """``folder`` with its per-sample content digests attached (rank 0 reads every image once,
    in threads; every rank gets its digests), or as it is when resuming a store begun before
    digests were recorded (with a note). A collective: every rank calls it."""
    digests = None
    if rank == 0:
        if _resumes_store_without_digests(out, overwrite):
            print(size_only_note(Location.at(out).display), file=sys.stderr)
        else:
            from tqdm import tqdm

            with tqdm(
                total=len(folder), unit="img", desc="content digests", disable=not progress,
                file=sys.stderr,
            ) as bar:  # fmt: skip
                digests = folder.sample_digests(progress=bar.update)
    digests = share_from_main(digests, world)
    return folder if digests is None else folder.with_content(digests)


def check_read_some(
    data: str, out: str, num_samples: int, manifest: dict[str, Any] | None, world: int
) -> None:
    """:class:`NoImageRead` on every rank when the finished store's every sample is unreadable
    (rank 0's ``manifest``, None elsewhere or while unfinished). A collective."""
    bad = (manifest or {}).get("bad_samples") or []
    # Only rank 0 finalizes: its verdict goes to every rank.
    unreadable = share_from_main(bad[:1] if len(bad) >= num_samples else None, world)
    if unreadable:
        first = unreadable[0]
        raise NoImageRead(
            f"no image of --data {printable_path(data)} could be read: all {num_samples} "
            f"samples are unreadable (first: {first['path']}: {first['error']}); the store "
            f"{Location.at(out).display} holds no teacher targets: fix the images and re-run "
            "with --overwrite"
        )
