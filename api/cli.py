"""``distill serve``: run the store service with uvicorn (imports nothing heavy at import time)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.settings import ConnectionLimits


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.registry import check_root
    from teacher_store.options import MAX_WORKERS, check_int

    check_int("--workers", args.workers, 1, MAX_WORKERS)  # each one a process
    loc = check_root(args.root)
    root = str(Path(loc.root).resolve()) if loc.is_local else loc.display
    env = {"DISTILL_ROOT": root}
    if args.token_file:
        from api.settings import read_token

        read_token(Path(args.token_file))  # fail now, with a clear message, not in every worker
        env["DISTILL_TOKEN_FILE"] = str(Path(args.token_file).resolve())
    if args.data:
        from api.settings import parse_data

        dirs = parse_data(",".join(args.data))
        missing = [f"{n}={d}" for n, d in dirs.items() if not d.is_dir()]
        if missing:
            raise ValueError(f"--data {missing[0]}: not a directory; pass the store's images")
        env["DISTILL_DATA"] = ",".join(f"{n}={d.resolve()}" for n, d in dirs.items())
    for flag, var in _PASSED:
        value = getattr(args, flag)
        if value is not None:
            env[f"DISTILL_{var}"] = str(value)
    os.environ.update(env)  # workers import api.main:app and read their settings from here
    limits = _check_settings()
    print(f"distill serve: {root} on http://{args.host}:{args.port}/v1/stores", flush=True)
    print(f"dashboard: http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(
        "api.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        **limits.uvicorn_options(),
    )
    return 0


# flag attribute -> DISTILL_ variable read by api.settings (Settings or ConnectionLimits)
_PASSED = (
    ("max_block", "MAX_BLOCK"),
    ("cache_bytes", "CACHE_BYTES"),
    ("max_inflight", "MAX_INFLIGHT"),
    ("max_inflight_bytes", "MAX_INFLIGHT_BYTES"),
    ("max_body_bytes", "MAX_BODY_BYTES"),
    ("malloc_arenas", "MALLOC_ARENAS"),
    ("limit_concurrency", "LIMIT_CONCURRENCY"),
    ("timeout_keep_alive", "TIMEOUT_KEEP_ALIVE_S"),
    ("header_timeout", "HEADER_TIMEOUT_S"),
    ("send_timeout", "SEND_TIMEOUT_S"),
    ("max_header_bytes", "MAX_HEADER_BYTES"),
)


def _setting_name(field: str) -> str:
    """A setting as the user may have given it: its flag and variable, or the variable."""
    flag = next((f for f, var in _PASSED if var.lower() == field), None)
    var = f"DISTILL_{field.upper()}"
    return f"--{flag.replace('_', '-')} ({var})" if flag else var


def _check_settings() -> ConnectionLimits:
    """The service's settings and connection limits, checked here, one line per bad value,
    before uvicorn starts workers (each of which would print a traceback and stop)."""
    from pydantic import ValidationError

    from api.settings import ConnectionLimits, Settings
    from teacher_store.options import OptionsError, option_problems

    problems: list[str] = []
    limits = None
    for model in (Settings, ConnectionLimits):
        try:
            got = model()  # type: ignore[call-arg]
        except ValidationError as e:
            problems += option_problems(e, model, name=_setting_name)
            continue
        limits = got if isinstance(got, ConnectionLimits) else limits
    if problems or limits is None:
        raise OptionsError(problems)
    return limits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the stores under a folder over HTTP (FastAPI)")
    p.add_argument(
        "--root", required=True, help="folder (or s3://bucket/prefix) whose sub-folders are stores"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, 1..256")
    p.add_argument("--token-file", help="require 'Authorization: Bearer <token in this file>'")
    p.add_argument(
        "--data",
        action="append",
        metavar="NAME=DIR",
        help="image folder of store NAME: the dashboard and /views render its views (repeatable)",
    )
    p.add_argument(
        "--max-block", type=int, help="most samples per block request, 1..4194304 (131072)"
    )
    p.add_argument("--cache-bytes", type=int, help="cache budget in bytes (256 MiB)")
    p.add_argument("--max-inflight", type=int, help="requests in flight before 503 (64)")
    p.add_argument(
        "--max-inflight-bytes", type=int, help="response bytes not yet sent before 503 (256 MiB)"
    )
    p.add_argument("--max-body-bytes", type=int, help="largest request body, else 413 (1024)")
    p.add_argument(
        "--malloc-arenas", type=int, help="glibc malloc arenas per worker; 0: glibc's default (2)"
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        help="open connections + requests before uvicorn answers 503 (512)",
    )
    p.add_argument(
        "--timeout-keep-alive",
        type=float,
        help="seconds an idle connection stays open after a response (5)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        help="seconds for a whole request head, else the connection closes (10)",
    )
    p.add_argument(
        "--send-timeout",
        type=float,
        help="seconds a client may read nothing of a response, else abort (30)",
    )
    p.add_argument("--max-header-bytes", type=int, help="largest request head (16384)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_run_serve)
