"""``distill images``: pack an ImageFolder into WebDataset tar shards, index shards made elsewhere.

Nothing heavy is imported at module level: `distill --help` must stay fast.
"""

from __future__ import annotations

import argparse
import sys

MAX_SHARD_BYTES = 1 << 40


def _shard_bytes(text: str) -> int:
    """``1e9``, ``500000000`` or ``500_000_000`` bytes, in [1, 2**40]."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = 0.0
    if not (1 <= value <= MAX_SHARD_BYTES) or value != int(value):
        raise argparse.ArgumentTypeError(
            f"must be a whole number of bytes in [1, {MAX_SHARD_BYTES}] (1e9 is one GB)"
        )
    return int(value)


def _progress(args: argparse.Namespace) -> object:
    if args.quiet:
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


def _run_pack(args: argparse.Namespace) -> int:
    from teacher_store.images.pack import pack_images

    if not 1 <= args.threads <= 256:
        raise ValueError(f"--threads {args.threads}: must be in [1, 256]")
    r = pack_images(
        args.dir,
        args.out,
        args.shard_bytes,
        overwrite=args.overwrite,
        threads=args.threads,
        log=_progress(args),  # type: ignore[arg-type]
    )
    print(
        f"packed {r.samples} images into {r.shards} shards ({r.bytes:,} bytes) with their index "
        f"{r.index}; read them as --data {r.pattern}"
    )
    return 0


def _run_index(args: argparse.Namespace) -> int:
    from teacher_store.images.pack import index_shards
    from teacher_store.images.shard_index import ShardPattern

    index = index_shards(args.pattern, args.classes, log=_progress(args))  # type: ignore[arg-type]
    parsed = ShardPattern.parse(args.pattern)
    print(
        f"indexed {len(index)} samples in {len(index.shards)} shards, {len(index.classes)} "
        f"classes (labels from {index.labels_from}): {parsed.url(parsed.index_name)}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``distill images pack`` and ``distill images index``."""
    group = sub.add_parser(
        "images",
        help="move images to WebDataset tar shards (pack a folder, index shards made elsewhere)",
        description="Tar shards are read with --data PATTERN (a .tar, or a brace pattern such "
        "as s3://bucket/in22k/shard-{000000..001023}.tar) by every command, through the index "
        "beside them (PATTERN.index.npz).",
    )
    actions = group.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "pack",
        help="write an ImageFolder as tar shards plus their index, in sample order",
        description="Each image becomes the member named by its relative path (cls/img.jpg) "
        "followed by cls/img.cls holding its label; shards are OUT/shard-000000.tar, ..., "
        "byte for byte the same for the same folder.",
    )
    p.add_argument("dir", help="the ImageFolder (root/<class>/<image>): a folder or a URL")
    p.add_argument(
        "out",
        help="where the shards go: a folder or an object-store prefix "
        "(s3://bucket/prefix), outside DIR",
    )
    p.add_argument(
        "--shard-bytes",
        type=_shard_bytes,
        default=10**9,
        help="a shard ends before the image that would take it past this size (default 1e9)",
    )
    p.add_argument("--overwrite", action="store_true", help="write into an OUT that is not empty")
    p.add_argument("--threads", type=int, default=8, help="threads reading images ahead")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run_pack)
    p = actions.add_parser(
        "index",
        help="index WebDataset tar shards made elsewhere, so that they can be read by sample",
        description="One streamed pass over each shard. A sample's image is its first member "
        'with an image extension; its label the number in its .cls member, else the "label" '
        '(or "cls") field of its .json member. The index is written beside the shards '
        "(PATTERN.index.npz); rerun this when the shards change.",
    )
    p.add_argument(
        "pattern", help="the shards: a .tar or a brace pattern (DIR/shard-{000000..000099}.tar)"
    )
    p.add_argument(
        "--classes",
        metavar="FILE",
        help="class names, one per line: label j is line j (default: the PATTERN.classes.json "
        "beside the shards, else the label numbers)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run_index)
