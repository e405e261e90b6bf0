"""``distill serve``: run the store service with uvicorn (imports nothing heavy at import time)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.settings import ConnectionLimits


def _run_serve(args: argparse.Namespace) -> int:
    from api.registry import check_root

    _check_numbers(args)
    loc = check_root(args.root)
    root = str(Path(loc.root).resolve()) if loc.is_local else loc.display
    env = {"DISTILL_ROOT": root}
    if args.token_file:
        from api.settings import read_token

        read_token(Path(args.token_file))  # fail now, with a clear message, not in every worker
        env["DISTILL_TOKEN_FILE"] = str(Path(args.token_file).resolve())
    if args.data:
        env["DISTILL_DATA"] = _data_setting(args.data, loc)
    for flag, var in _PASSED:
        value = getattr(args, flag)
        if value is not None:
            env[f"DISTILL_{var}"] = str(value)
    os.environ.update(env)  # workers import api.main:app and read their settings from here
    limits = _settings(args)  # every setting checked here: one line, not a traceback per worker
    _check_listen(args.host, args.port)
    print(f"distill serve: {root} on http://{args.host}:{args.port}/v1/stores", flush=True)
    print(f"dashboard: http://{args.host}:{args.port}/", flush=True)
    import uvicorn

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


# Each uvicorn worker is a process with its own caches and render pool: more than this is a
# typo (``--workers 100000`` forked until the machine stalled), never a real configuration.
MAX_WORKERS = 256


def _check_numbers(args: argparse.Namespace) -> None:
    """ValueError naming a port or worker count out of range (before anything starts)."""
    if not 1 <= args.port <= 65535:
        raise ValueError(
            f"--port {args.port} is out of range: pick a TCP port from 1 to 65535 "
            "(0 would bind a random port that the printed URL could not name)"
        )
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ValueError(
            f"--workers {args.workers} is out of range: pick 1 to {MAX_WORKERS} worker processes "
            "(about one per CPU core; each holds its own caches)"
        )


def _check_listen(host: str, port: int) -> None:
    """ValueError when ``host:port`` cannot be listened on (unknown host, port in use, no
    permission): one line now, not a traceback from every uvicorn process."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(addr)
    except OSError as e:
        why = e.strerror or str(e)
        raise ValueError(f"cannot listen on --host {host} --port {port}: {why}") from None


def _data_setting(specs: list[str], root: Any) -> str:
    """``--data`` flags as DISTILL_DATA: each a NAME=DIR (a repeated NAME is refused by
    :func:`~api.settings.parse_data`), DIR a folder, a URL of one or a tar shard pattern (a
    local folder, or a local pattern's folder, must exist; a URL is checked when a view is
    first rendered), NAME a store name the service can serve; a NAME with no store under the
    root yet is warned about (it may still be generated)."""
    from api.registry import name_problem
    from api.settings import parse_data

    dirs = parse_data(",".join(specs))
    for name, folder in dirs.items():
        why = name_problem(name)
        if why is not None:
            raise ValueError(f"--data {name}={folder}: the service cannot serve a store so named: "
                             f"{why}")  # fmt: skip
        local = _local_images(folder)
        if local is not None and not local.is_dir():
            raise ValueError(f"--data {name}={folder}: not a directory; pass the store's images")
        if not root.is_dir(name):
            print(
                f"distill serve: warning: --data {name}={folder}: no store {name!r} under "
                f"{root.display} (yet); its views render once it is there",
                file=sys.stderr,
                flush=True,
            )
    return ",".join(f"{n}={_resolved(d)}" for n, d in dirs.items())


def _local_images(data: str) -> Path | None:
    """The local folder ``data`` names (a tar shard pattern: the shards' folder); None for a
    URL."""
    from teacher_store.images.source import is_shard_pattern

    if "://" in data:
        return None
    return Path(data).parent if is_shard_pattern(data) else Path(data)


def _resolved(data: str) -> str:
    """``data`` with a local folder (or a pattern's folder) made absolute: the renders run
    in other processes, whose working folder may differ."""
    local = _local_images(data)
    if local is None:
        return data
    return str(local.resolve() / Path(data).name) if local != Path(data) else str(local.resolve())


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
    ("render_workers", "RENDER_WORKERS"),
    ("render_queue", "RENDER_QUEUE"),
    ("render_cache_bytes", "RENDER_CACHE_BYTES"),
)


def _settings(args: argparse.Namespace) -> ConnectionLimits:
    """The service settings and connection limits from the environment (checked now, one line
    per bad value, not a traceback per worker); the limits for uvicorn. A value is named by
    its flag when given as one, else by its DISTILL_ variable."""
    from pydantic import ValidationError

    from api.settings import ConnectionLimits, Settings
    from teacher_store.options import OptionsError, option_problems

    flags = {var.lower(): flag for flag, var in _PASSED}

    def name(field: str) -> str:
        flag = flags.get(field)
        given = flag is not None and getattr(args, flag, None) is not None
        return "--" + flag.replace("_", "-") if given and flag else f"DISTILL_{field.upper()}"

    problems: list[str] = []
    limits = None
    for model in (Settings, ConnectionLimits):
        try:
            made = model()  # type: ignore[call-arg]
        except ValidationError as e:
            problems += option_problems(e, model, name=name)
            continue
        limits = made if isinstance(made, ConnectionLimits) else limits
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
        help="the images of store NAME, DIR an ImageFolder (folder or URL such as "
        "s3://b/train/) or tar shards (shard-{000000..000127}.tar): the dashboard and /views "
        "render its views (repeatable)",
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
    p.add_argument("--render-workers", type=int, help="worker processes rendering view PNGs (1)")
    p.add_argument(
        "--render-queue", type=int, help="view renders waiting beyond the running ones (8)"
    )
    p.add_argument(
        "--render-cache-bytes", type=int, help="cache of recently rendered view PNGs (32 MiB)"
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn log level (default info)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_run_serve)
