"""Subcommands of the teacher-store layer: demo-data, generate, info, verify, show.

Nothing heavy is imported at module level: `distill --help` must stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys

from teacher_store.options import (
    DATA_HELP,
    DEFAULT_READ_THREADS,
    MAX_BATCH,
    MAX_CHUNK_SAMPLES,
    MAX_IMG_SIZE,
    MAX_READ_THREADS,
    MAX_THREADS,
    MAX_TOPK,
    MAX_VIEWS,
    MAX_WORKERS,
)


def _run_demo_data(args: argparse.Namespace) -> int:
    from teacher_store.images.demo_data import write_demo_data

    files = write_demo_data(args.dir)
    classes = sorted({f.parent.name for f in files})
    print(f"wrote {len(files)} real photos in {len(classes)} classes to {args.dir}")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.options import validate_options
    from teacher_store.views.recipe import get_recipe

    fields = {
        k: v
        for k, v in vars(args).items()
        if k in GenerateConfig.model_fields and v is not None and k != "recipe"
    }
    if args.recipe is not None:  # given: --like refuses one that is not its store's
        fields["recipe"] = get_recipe(args.recipe)
    fields["progress"] = not args.quiet
    # Every option is checked here, before the teacher loads or the store is created.
    cfg = validate_options(GenerateConfig, fields)
    s = run_generate(cfg)
    if s["world_size"] > 1 and int(__import__("os").environ.get("RANK", "0")) != 0:
        return 0
    state = "complete" if s["complete"] else "INCOMPLETE"
    print(
        f"store {s['store']}: {state}; {s['units_written']} shard units written, "
        f"{s['units_skipped']} already committed, {s['views_computed']} views at "
        f"{s['views_per_s']:.1f} views/s on {s['device']} x{s['world_size']}"
    )
    for b in s["bad_samples"]:
        print(f"  unreadable image (its views are marked missing): {b['path']}: {b['error']}")
    return 0 if s["complete"] else 1


def _run_info(args: argparse.Namespace) -> int:
    from teacher_store.info import format_info, store_info

    info = store_info(args.store)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from teacher_store.verify import verify_store

    if (args.data is None) != args.checksums_only:  # bad options: one line, exit status 2
        raise ValueError(
            "pass --data DATA (the images the store was built from), or --checksums-only "
            "to check the shard files alone"
            if args.data is None
            else "--checksums-only checks the files alone: drop --data, or drop --checksums-only"
        )
    if args.record and (args.checksums_only or args.fraction == 0):
        raise ValueError(
            "--record records a teacher spot check: pass --data DATA and a --fraction above 0"
        )
    report = verify_store(
        args.store,
        args.data,
        fraction=args.fraction,
        device=args.device,
        checkpoint=args.checkpoint,
    )
    if report.ok:
        print(f"store {args.store}: OK ({report.summary})")
    else:
        print(f"distill verify: FAILED: {report.reason}", file=sys.stderr)
    if args.record:
        _record(args.store, report)
    return 0 if report.ok else 1


def _record(store: str, report: object) -> None:
    """``verify --record``: write what the spot check measured beside the store."""
    from teacher_store.fidelity import record_check
    from teacher_store.store.layout import FIDELITY
    from teacher_store.verify import VerifyReport

    assert isinstance(report, VerifyReport)
    if report.measured is None or "views_rerun" not in report.measured:
        print(
            "distill verify: nothing recorded: the teacher spot check did not run", file=sys.stderr
        )
        return
    line = report.summary if report.ok else report.reason
    rec = record_check(store, report.measured, report.ok, line)
    print(
        f"recorded in {store.rstrip('/')}/{FIDELITY} for store identity {rec.store_identity} "
        "(the identity is unchanged: the manifest does not list this record)"
    )


def _run_copy(args: argparse.Namespace) -> int:
    from teacher_store.options import validate_options
    from teacher_store.store_copy import CopyConfig, parse_slots, run_copy

    fields = {
        "src": args.src,
        "dst": args.dst,
        "slots": None if args.slots is None else parse_slots(args.slots),
        "topk": args.topk,
        "encoding": args.encoding,
        "token_file": args.token_file,
        "overwrite": args.overwrite,
        "workers": args.workers,
        "progress": not args.quiet,
    }
    cfg = validate_options(CopyConfig, fields)
    s = run_copy(cfg)
    a, b = s["slots"]
    (k, k2), (e, e2) = s["topk"], s["value_encoding"]
    print(
        f"store {s['store']}: complete; copy of {s['source']} (identity {s['identity']}) slots "
        f"{a}:{b}, top-{k2} of top-{k}, {e2}; {s['units_written']} shard units written "
        f"({s['units_byte_copied']} byte for byte), {s['units_skipped']} already committed, "
        f"{s['bytes_written']} bytes in {s['seconds']:.1f} s"
    )
    print(
        f"  KL cost per view: top-{k2} of top-{k} +{s['topk_kl']:.4f} nats, "
        f"{e} -> {e2} +{s['encoding_kl']:.4f} nats (recorded; `distill info` shows them)"
    )
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from teacher_store.show import show_view

    top = show_view(args.store, args.data, args.sample, args.view, args.out, size=args.size)
    print(f"wrote {args.out}: sample {args.sample}, view {args.view}")
    for name, p in top:
        print(f"  {p:6.3f}  {name}")
    return 0


def _pixel_limit(text: str) -> int:
    from teacher_store.images.dataset import PILLOW_HARD_LIMIT

    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if not 1 <= value <= PILLOW_HARD_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, {PILLOW_HARD_LIMIT}]")
    return value


def _add_generate(sub: argparse._SubParsersAction) -> None:
    # The choices come from the value-encoding table (it imports numpy, ~0.1 s: only here).
    from teacher_store.store.value_encodings import (
        FINE_TAIL_FROM_K,
        VALUE_ENCODINGS,
        default_encoding,
    )

    p = sub.add_parser("generate", help="run the teacher over augmented views into a Zarr store")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--out", required=True, help="output store: a folder or s3://bucket/prefix")
    p.add_argument("--teacher", default="efficientnet_lite0", help="builtin or timm model name")
    p.add_argument("--checkpoint", help="local weights file for --teacher")
    p.add_argument(
        "--views",
        type=int,
        help=f"view slots R per sample, 1..{MAX_VIEWS} (default 8); more than a complete store "
        "of the same config has grows it: only the new slots are computed",
    )
    p.add_argument(
        "--base-views",
        type=int,
        help="the slots the store was created with, over which its layout and recipe "
        "schedule are defined (default: set by growing a store; give it only to make from "
        "scratch a store equal to a grown one)",
    )
    p.add_argument(
        "--topk", type=int, help=f"top-K outputs kept per view, 1..{MAX_TOPK} (default 10)"
    )
    p.add_argument(
        "--seed", type=int, help="store seed, 0..2**64-1; view seeds derive from it (default 0)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"teacher batch, 1..{MAX_BATCH} (part of the config: default 32)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help=f"DataLoader workers rendering views, 0..{MAX_WORKERS} (default 2)",
    )
    p.add_argument(
        "--read-threads",
        type=int,
        help=f"threads per rendering process reading the coming images ahead, "
        f"0..{MAX_READ_THREADS} (0: none; default {DEFAULT_READ_THREADS}); hides object-storage "
        "latency, never changes the store",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    p.add_argument(
        "--decode",
        choices=("cpu", "gpu"),
        help="image decode: cpu (Pillow, default) or gpu (batched nvJPEG on the CUDA device; "
        "part of the store's identity: bit-exact replay needs the same path)",
    )
    p.add_argument("--recipe", help="augmentation preset name or JSON/YAML file (default: default)")
    p.add_argument(
        "--like",
        metavar="STORE",
        help="take the views of STORE (folder, s3:// or service URL): its dataset, seed, "
        "recipe, slots, decode path, pixel limit and input size; run --teacher on exactly "
        "those views (a store for `distill train --store STORE --store OUT`)",
    )
    p.add_argument(
        "--img-size",
        type=int,
        help=f"teacher input size, 8..{MAX_IMG_SIZE} px (default: the teacher's)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=_pixel_limit,
        help="images with more pixels are bad samples (default: $DISTILL_MAX_IMAGE_PIXELS, "
        "else Pillow's 89478485); part of the store's config",
    )
    p.add_argument(
        "--value-encoding",
        choices=("auto", *VALUE_ENCODINGS),
        help=f"default auto: {default_encoding(1)} below K={FINE_TAIL_FROM_K}, "
        f"else {default_encoding(FINE_TAIL_FROM_K)}",
    )
    big, views = MAX_CHUNK_SAMPLES, MAX_VIEWS
    p.add_argument("--chunk-samples", type=int, help=f"samples per chunk, 1..{big} (default 64)")
    p.add_argument("--chunk-views", type=int, help=f"view slots per chunk, 1..{views} (default 16)")
    p.add_argument("--shard-samples", type=int, help=f"samples per shard, 1..{big} (default 4096)")
    p.add_argument(
        "--shard-views", type=int, help=f"view slots per shard, 1..{views} (default: a chunk's)"
    )
    p.add_argument(
        "--view-order",
        choices=("pairs", "sample"),
        help="how a shard unit's views are rendered and batched: pairs (a view beside its "
        "partner's, one decode per image for both; default for a new store) or sample "
        "(sample-major, the order before); part of the store's config (default: a resumed "
        "store's own)",
    )
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no autocast")
    p.add_argument(
        "--threads",
        type=int,
        help=f"torch CPU threads, 1..{MAX_THREADS} (part of the store's identity)",
    )
    p.add_argument("--overwrite", action="store_true", default=None, help="replace another store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_generate)


def _add_copy(sub: argparse._SubParsersAction) -> None:
    from teacher_store.store.value_encodings import VALUE_ENCODINGS

    p = sub.add_parser(
        "copy",
        help="copy a store, or a slot range of it at a smaller K or another encoding "
        "(folders, s3://, a service URL as the source)",
    )
    p.add_argument("src", help="source store: a folder, s3://BUCKET/PREFIX or a service URL")
    p.add_argument("dst", help="destination store: a folder or s3://BUCKET/PREFIX")
    p.add_argument("--slots", help="the source's view slots A:B to copy (default: all)")
    p.add_argument("--topk", type=int, help="keep the top K2 of the source's K (default: all)")
    p.add_argument(
        "--encoding",
        choices=VALUE_ENCODINGS,
        help="value encoding of the copy (default: the source's)",
    )
    p.add_argument("--token-file", help="bearer token for a service source")
    p.add_argument("--workers", type=int, default=4, help="threads fetching source files")
    p.add_argument("--overwrite", action="store_true", help="replace another store at DST")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_copy)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write a small ImageFolder of real bundled photos")
    p.add_argument("dir", help="output directory (created if missing)")
    p.set_defaults(func=_run_demo_data)
    _add_generate(sub)
    p = sub.add_parser("info", help="summarize a store: size, bytes per view, teacher, recipe")
    p.add_argument("store")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run_info)
    p = sub.add_parser("verify", help="check shard checksums, dataset, and re-run the teacher")
    p.add_argument("store")
    p.add_argument("--data", help=f"the images the store was built from: {DATA_HELP}")
    p.add_argument(
        "--checksums-only",
        action="store_true",
        help="check every shard file's size, crc32c and sha256 against the manifest, nothing "
        "else (no --data, no teacher)",
    )
    p.add_argument("--fraction", type=float, default=0.05, help="share of teacher batches redone")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--checkpoint", help="the teacher's weights, for a non-builtin teacher")
    p.add_argument(
        "--record",
        action="store_true",
        help="write what the spot check measured into the store's _distill/fidelity.json "
        "(named by the store identity, which it does not change)",
    )
    p.set_defaults(func=_run_verify)
    _add_copy(sub)
    p = sub.add_parser("show", help="render one stored view with the teacher's top-5")
    p.add_argument("store")
    p.add_argument(
        "--data", required=True, help=f"the images the store was built from: {DATA_HELP}"
    )
    p.add_argument("--sample", type=int, required=True)
    p.add_argument("--view", type=int, required=True)
    p.add_argument("--out", required=True, help="PNG file to write (NAME.png)")
    p.add_argument(
        "--size",
        type=int,
        help=f"render size, 8..{MAX_IMG_SIZE} px (default: the teacher's input size)",
    )
    p.set_defaults(func=_run_show)
