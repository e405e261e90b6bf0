"""A live service on 127.0.0.1 for tests and benches: in this process (:class:`LiveServer`, a
uvicorn thread serving any ASGI app) or as a subprocess (:class:`ServiceProcess`: ``distill
serve`` or a uvicorn command line), each on a free port and ready when it returns.

uvicorn is imported only when a server starts: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server on 127.0.0.1 (random free port) in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        """``config``: more ``uvicorn.Config`` options (``ConnectionLimits.uvicorn_options()``)."""
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "lifespan": "on", "access_log": False, **config}
        uv_config = uvicorn.Config(app, **options)
        self.server = uvicorn.Server(uv_config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class ServiceProcess:
    """A service command line run as a subprocess (in its own process group) that listens on
    ``port`` of 127.0.0.1; ready once ``GET /readyz`` answers 200, stopped by :meth:`close`
    (SIGTERM to the group, SIGKILL after ``stop_s``)."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log: Path | None = None,
        ready_s: float = 60.0,
        stop_s: float = 30.0,
    ) -> None:
        self.port, self.stop_s = port, stop_s
        self.url = f"http://127.0.0.1:{port}"
        self._log: IO[bytes] | None = log.open("wb") if log is not None else None
        out = self._log if self._log is not None else None
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        try:
            self._wait_ready(ready_s, log)
        except BaseException:
            self.close()
            raise

    @classmethod
    def serve(
        cls,
        root: str | os.PathLike[str],
        port: int | None = None,
        workers: int = 1,
        log_level: str = "warning",
        options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> ServiceProcess:
        """``distill serve --root ROOT`` (``options``: more flags, ``{"cache_bytes": N}`` for
        ``--cache-bytes N``); ``kw``: :class:`ServiceProcess`'s own arguments."""
        port = free_port() if port is None else port
        cmd = [sys.executable, "-m", "teacher_store.cli", "serve", "--root", str(root)]
        cmd += ["--port", str(port), "--workers", str(workers), "--log-level", log_level]
        for name, value in (options or {}).items():
            cmd += [f"--{name.replace('_', '-')}", str(value)]
        return cls(cmd, port, **kw)

    @classmethod
    def uvicorn(
        cls,
        root: str | os.PathLike[str],
        port: int | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> ServiceProcess:
        """``uvicorn api.main:app`` (one worker, warnings only, no access log) serving ``root``
        (``DISTILL_ROOT``); ``args``: more uvicorn flags, ``env``: more variables."""
        port = free_port() if port is None else port
        cmd = [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
               "--workers", "1", "--log-level", "warning", "--no-access-log", *args]  # fmt: skip
        return cls(cmd, port, env={"DISTILL_ROOT": str(root), **(env or {})}, **kw)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def store_url(self, name: str) -> str:
        """The service URL of store ``name``."""
        return f"{self.url}/v1/stores/{name}"

    def _wait_ready(self, ready_s: float, log: Path | None) -> None:
        import requests

        where = f"; see {log}" if log is not None else ""
        deadline = time.monotonic() + ready_s
        while True:
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                if requests.get(f"{self.url}/readyz", timeout=5).ok:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited {self.proc.returncode}{where}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not become ready in {ready_s:g} s{where}")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the service and its workers (idempotent)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["LiveServer", "ServiceProcess", "free_port"]
