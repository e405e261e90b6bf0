"""A real S3-compatible server for tests and benches: moto's server mode on 127.0.0.1, in this
process (``ThreadedMotoServer``) or in its own (``python -m moto.server``: its CPU is not the
client's).

:func:`running_s3_server` starts one, points the standard AWS variables at it (``AWS_ENDPOINT_URL``,
dummy keys, a region; no profile or config file of the machine is read) and restores them at
the end; the tests' session fixture ``s3_server`` (tests/conftest.py) is one. Tests parametrized
over storage use :func:`store_location`: a local folder or a fresh ``s3://BUCKET/PREFIX``.

Credentials: moto accepts any keys until authentication is switched on; :meth:`S3Server.
refusing_credentials` switches it on for a block (moto then knows no key at all, so every
request is refused as it would be with wrong credentials). :meth:`S3Server.read_only_keys`
switches it on too and yields the keys of an IAM user that may read and list but not write
(moto enforces IAM policies on S3 requests while authentication is on).

Faults moto has no switch for: :func:`relay` puts an endpoint in front of the server that can
answer every PUT with a server error (500, 503) or go away (connections refused).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from teacher_store.testing.services import free_port

BUCKET = "distill-tests"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")
_names = itertools.count()


class S3Server:
    """A moto server: its endpoint, a default bucket, and helpers. ``process``: run it as a
    subprocess (``python -m moto.server``) rather than a thread of this process."""

    def __init__(self, process: bool = False) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = BUCKET
        self.process = process
        self._server: Any = None
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self, tmp: Path) -> dict[str, str]:
        """The AWS variables a client (or a child process) needs for this server; the machine's
        own AWS config and credential files are replaced by absent ones under ``tmp``."""
        return {
            **_ENV,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        }

    def start(self) -> None:
        """Start the server; it answers requests when this returns."""
        if not self.process:
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
            return
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(60.0)

    def _wait_ready(self, seconds: float) -> None:
        import requests

        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(requests.ConnectionError):
                requests.get(self.endpoint, timeout=1)
                return
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server on {self.endpoint} did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)

    def fs(self) -> Any:
        """A fresh s3fs filesystem on this server (no listing cache)."""
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint,
            key=_ENV["AWS_ACCESS_KEY_ID"],
            secret=_ENV["AWS_SECRET_ACCESS_KEY"],
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    def make_bucket(self, name: str) -> str:
        self.fs().mkdir(name)
        return name

    def url(self, prefix: str) -> str:
        """``s3://BUCKET/PREFIX-N`` in the default bucket, a fresh prefix per call."""
        return f"s3://{self.bucket}/{prefix}-{next(_names)}"

    def objects(self, url: str) -> dict[str, bytes]:
        """Every object under ``url`` by key relative to it (what a store holds)."""
        fs = self.fs()
        root = url.removeprefix("s3://").rstrip("/")
        return {p[len(root) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(root))}

    @contextlib.contextmanager
    def refusing_credentials(self) -> Iterator[None]:
        """Inside the block the server authenticates requests and knows no key: any
        credentials are wrong."""
        import requests

        reset = f"{self.endpoint}/moto-api/reset-auth"
        requests.post(reset, data=b"0", timeout=10).raise_for_status()
        try:
            yield
        finally:
            requests.post(reset, data=b"inf", timeout=10).raise_for_status()

    @contextlib.contextmanager
    def read_only_keys(self) -> Iterator[dict[str, str]]:
        """Inside the block only these keys (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``)
        are accepted, and they may read and list but never PUT or DELETE."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, **_KEYS)
        user = f"reader-{next(_names)}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=_READ_ONLY)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        with self.refusing_credentials():
            yield {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }


_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_READ_ONLY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"],
                "Resource": "*",
            }
        ],
    }
)


class _FailPuts(http.server.BaseHTTPRequestHandler):
    """Relays requests to the moto server, but answers every PUT with ``server.status``
    (unless 0)."""

    # HTTP/1.1 for "Expect: 100-continue" (botocore's PUTs wait for it), but one request per
    # connection ("Connection: close"): once the relay stops, no kept-alive connection works.
    protocol_version = "HTTP/1.1"
    server: _Relay

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else None
        if self.command == "PUT" and self.server.status:
            code = http.client.responses[self.server.status].replace(" ", "")
            xml = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            self._reply(self.server.status, [("Content-Type", "application/xml")], xml)
            return
        conn = http.client.HTTPConnection(self.server.target, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=dict(self.headers))
            resp = conn.getresponse()
            data = resp.read()
            headers = resp.getheaders()
            if self.command == "HEAD":  # keep the object's own length
                self.send_response(resp.status)
                for name, value in headers:
                    if name.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                return
            self._reply(resp.status, headers, data)
        finally:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay


class _Relay(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _FailPuts)
        self.target, self.status = target, status
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def stop(self) -> None:
        """Stop answering: the endpoint refuses connections from now on."""
        if self.thread.is_alive():
            self.shutdown()
            self.server_close()
            self.thread.join(timeout=10)


@contextlib.contextmanager
def relay(s3: S3Server, put_status: int = 0) -> Iterator[_Relay]:
    """An endpoint in front of ``s3`` (``.endpoint``; ``.stop()`` takes it away) that relays
    every request, but answers every PUT with HTTP ``put_status`` unless it is 0 (500
    InternalServerError, 503 ServiceUnavailable)."""
    server = _Relay(f"127.0.0.1:{s3.port}", put_status)
    server.thread.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def failing_puts(s3: S3Server, status: int) -> Iterator[str]:
    """An endpoint that reads and lists ``s3``'s objects but answers every PUT with ``status``."""
    with relay(s3, status) as server:
        yield server.endpoint


def local_objects(root: Path) -> dict[str, bytes]:
    """Every file under a store folder by relative key (compare with :meth:`S3Server.objects`;
    the temporary names of interrupted atomic writes are left out)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".tmp" not in p.name
    }


def store_location(kind: str, name: str, tmp_path: Path, s3: S3Server | None) -> str:
    """Where a test's store goes: ``tmp_path/name`` for ``local``, a fresh
    ``s3://BUCKET/name-N`` for ``s3`` (then ``s3`` is the ``s3_server`` fixture)."""
    if kind == "local":
        return str(tmp_path / name)
    if kind != "s3" or s3 is None:
        raise ValueError(f"store_location({kind!r}, ...): want 'local', or 's3' with a server")
    return s3.url(name)


@contextlib.contextmanager
def environment(values: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """Set these environment variables (an empty value unsets one) and unset ``unset`` for
    the block; restore them all after."""
    names = {*values, *unset}
    old = {k: os.environ.get(k) for k in names}
    try:
        for k in names:
            os.environ.pop(k, None)
        os.environ.update({k: v for k, v in values.items() if v})
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def running_s3_server(tmp: Path, process: bool = False) -> Iterator[S3Server]:
    """Start a server with the default bucket, set the AWS variables, restore them after
    (``process``: the server in a subprocess, see :class:`S3Server`)."""
    server = S3Server(process)
    server.start()
    try:
        with environment(server.env(tmp), _UNSET):
            server.make_bucket(server.bucket)
            yield server
    finally:
        server.stop()


__all__ = [
    "BUCKET",
    "S3Server",
    "environment",
    "failing_puts",
    "local_objects",
    "relay",
    "running_s3_server",
    "store_location",
]
