"""``distill serve``: run the store service with uvicorn (imports nothing heavy at import time)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    root = Path(args.root)
    if not root.is_dir():
        raise ValueError(f"--root {root} is not a directory")
    env = {"DISTILL_ROOT": str(root.resolve())}
    if args.token_file:
        from api.settings import read_token

        read_token(Path(args.token_file))  # fail now, with a clear message, not in every worker
        env["DISTILL_TOKEN_FILE"] = str(Path(args.token_file).resolve())
    if args.max_block is not None:
        env["DISTILL_MAX_BLOCK"] = str(args.max_block)
    if args.cache_bytes is not None:
        env["DISTILL_CACHE_BYTES"] = str(args.cache_bytes)
    if args.max_inflight is not None:
        env["DISTILL_MAX_INFLIGHT"] = str(args.max_inflight)
    os.environ.update(env)  # workers import api.main:app and read their settings from here
    print(f"distill serve: {root} on http://{args.host}:{args.port}/v1/stores", flush=True)
    uvicorn.run(
        "api.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the stores under a folder over HTTP (FastAPI)")
    p.add_argument("--root", required=True, help="folder whose sub-folders are stores")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--token-file", help="require 'Authorization: Bearer <token in this file>'")
    p.add_argument("--max-block", type=int, help="most samples per block request (131072)")
    p.add_argument("--cache-bytes", type=int, help="cache budget in bytes (256 MiB)")
    p.add_argument("--max-inflight", type=int, help="requests in flight before 503 (64)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_run_serve)
