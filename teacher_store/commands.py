"""Subcommands of the teacher-store layer: demo-data, generate, info, verify, show."""

from __future__ import annotations

import argparse


def _run_demo_data(args: argparse.Namespace) -> int:
    from teacher_store.demo_data import write_demo_data

    files = write_demo_data(args.dir)
    classes = sorted({f.parent.name for f in files})
    print(f"wrote {len(files)} real photos in {len(classes)} classes to {args.dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write a small ImageFolder of real bundled photos")
    p.add_argument("dir", help="output directory (created if missing)")
    p.set_defaults(func=_run_demo_data)
