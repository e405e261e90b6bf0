"""The checks of `make docker-test` (docker/stack_test.py), run against compose.yaml's stack.

Every check reads real bytes: what the API serves through the published port is compared with
a local read (the venv's teacher_store) of the same store, copied out of its volume.
"""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from stack_engine import Engine, Log, StepFailed, clean_env

PROJECT = "distill-stacktest"
API_IMAGE = "distill-api:0.1.0"
JOBS_IMAGE = "distill-jobs:0.1.0"
# The demo at test size (compose.yaml's variables): 2 views at 64 px, one short epoch.
SMALL = {
    "DISTILL_DEMO_DEVICE": "cpu",
    "DISTILL_DEMO_VIEWS": "2",
    "DISTILL_DEMO_IMG_SIZE": "64",
    "DISTILL_GEN_WORKERS": "0",
    "DISTILL_GEN_BATCH_SIZE": "8",
    "DISTILL_EPOCHS": "1",
    "DISTILL_TRAIN_BATCH_SIZE": "4",
    "DISTILL_TRAIN_IMG_SIZE": "64",
}
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make")
KEEP_BUILD_CACHE = "12GB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET; HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Stack:
    """compose.yaml's stack in our engine, under its own project name and free ports."""

    def __init__(self, engine: Engine, log: Log, tmp: Path, repo: Path, sentinel: str) -> None:
        self.engine, self.log, self.tmp, self.repo = engine, log, tmp, repo
        self.sentinel = sentinel
        self.port, self.dashboard_port = free_port(), free_port()
        self.empty_env = tmp / "empty.env"  # keeps a developer's ./.env out of the test
        self.empty_env.write_text("")
        self.up = False

    def url(self, path: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}{path}"

    def compose(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600):
        """`docker compose` with only the test's DISTILL_* settings (none of the caller's)."""
        full = clean_env(
            **self.engine.env,
            **SMALL,
            DISTILL_PORT=str(self.port),
            DISTILL_DASHBOARD_PORT=str(self.dashboard_port),
            **(env or {}),
        )
        cmd = [self.engine.cli, "compose", "-p", PROJECT, "--project-directory", str(self.repo)]
        cmd += ["-f", str(self.repo / "compose.yaml"), "--env-file", str(self.empty_env)]
        return self.log.run([*cmd, *args], env=full, timeout=timeout)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-a", "-q", service).stdout.decode().split()
        if len(ids) != 1:
            raise StepFailed(f"expected one {service} container, found {len(ids)}")
        return ids[0]

    def inspect(self, ref: str) -> dict:
        return json.loads(self.engine.out("inspect", ref))[0]

    def wait_healthy(self, service: str, timeout: float = 240) -> None:
        ref = self.container(service)
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect(ref)["State"]
            health = state.get("Health", {}).get("Status")
            if health == "healthy":
                return
            if state["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                logs = self.engine.docker("logs", "--tail", "30", ref, check=False)
                tail = (logs.stdout + logs.stderr).decode(errors="replace")
                raise StepFailed(f"{service} is {state['Status']}/{health}, not healthy:\n{tail}")
            time.sleep(1)

    def run_image(self, image: str, *cmd: str, volume: str | None = None) -> str:
        """Run ``cmd`` in a throwaway container of ``image`` (no network, as root)."""
        args = ["run", "--rm", "--network", "none", "--user", "0", "--entrypoint", cmd[0]]
        if volume:
            args += ["-v", volume]
        done = self.engine.docker(*args, image, *cmd[1:], check=False, timeout=600)
        return done.stdout.decode(errors="replace")

    def teardown(self) -> None:
        """`docker compose down -v` over every profile (containers get 20 s to stop)."""
        if self.up:
            profiles = ("--profile", "train", "--profile", "dashboard")
            self.compose(*profiles, "down", "-v", "--remove-orphans", "--timeout", "20")
            self.up = False


# ---------------------------------------------------------------------------------------------
# the images


def check_image_hardening(s: Stack) -> None:
    """Non-root uid 10001, the API's /readyz healthcheck, no compilers in the API image."""
    for image in (API_IMAGE, JOBS_IMAGE):
        config = s.inspect(image)["Config"]
        assert config["User"] == "10001:10001", f"{image} runs as {config['User']!r}"
        size = s.inspect(image)["Size"] / 1e6
        s.log.say(f"{image}: {size:.0f} MB")
    health = s.inspect(API_IMAGE)["Config"]["Healthcheck"]["Test"]
    assert any("/readyz" in part for part in health), health
    found = s.run_image(
        API_IMAGE, "sh", "-c", f"for t in {' '.join(COMPILERS)}; do command -v $t; done; true"
    )
    assert not found.strip(), f"compilers in {API_IMAGE}: {found.split()}"


def extra_ca_lines() -> list[str]:
    """A base64 line from each extra CA certificate of this machine (none: an empty list)."""
    lines = []
    for crt in sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt")):
        body = [x for x in crt.read_text(errors="replace").splitlines() if len(x) == 64]
        if len(body) > 2:
            lines.append(body[2])
    return lines


def check_no_build_secrets(s: Stack) -> None:
    """The pip.conf (its sentinel line) and the machine's extra CA certificates, passed to the
    builds as secrets, are in no final image's environment, history or filesystem."""
    needles = [s.sentinel, *extra_ca_lines()]
    for image in (API_IMAGE, JOBS_IMAGE):
        env = "\n".join(s.inspect(image)["Config"]["Env"])
        for name in ("PIP_CERT", "PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
            assert name not in env, f"{image} sets {name}"
        history = s.engine.out("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        assert not any(n in history for n in needles), f"{image}: a build secret in its history"
        grep = ["grep", "-rlsF", "--exclude-dir=proc", "--exclude-dir=sys", "--exclude-dir=dev"]
        for needle in needles:
            grep += ["-e", needle]
        hits = s.run_image(image, *grep, "/")
        assert not hits.strip(), f"{image}: build secrets found in {hits.split()[:5]}"
    s.log.say(f"searched both images for {len(needles)} secret strings: none found")


# ---------------------------------------------------------------------------------------------
# the running stack


def check_up(s: Stack) -> None:
    """`docker compose up -d`: the demo-store job exits 0, then the API turns healthy."""
    s.up = True
    s.compose("up", "-d", "--no-build", "--pull", "never", timeout=1200)
    job = s.inspect(s.container("demo-store"))["State"]
    assert job["Status"] == "exited" and job["ExitCode"] == 0, f"demo-store: {job}"
    s.wait_healthy("api")
    status, _, body = http(s.url("/readyz"))
    assert status == 200, (status, body[:300])


def check_api_container(s: Stack) -> None:
    """The running API: uid 10001, every capability dropped, no-new-privileges, /stores
    mounted read-only (a write fails)."""
    info = s.inspect(s.container("api"))
    assert info["HostConfig"]["CapDrop"] == ["ALL"], info["HostConfig"]["CapDrop"]
    assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"]
    (mount,) = [m for m in info["Mounts"] if m["Destination"] == "/stores"]
    assert mount["RW"] is False, mount
    uid = s.engine.out("exec", info["Id"], "id", "-u")
    assert uid == "10001", uid
    write = s.engine.docker("exec", info["Id"], "touch", "/stores/x", check=False)
    assert write.returncode != 0, "the API could write into /stores"


def local_store(s: Stack) -> Path:
    """The demo store, copied out of the `stores` volume (through the finished demo-store job)."""
    dest = s.tmp / "local"
    if not (dest / "demo").is_dir():
        dest.mkdir(exist_ok=True)
        s.engine.docker("cp", f"{s.container('demo-store')}:/stores/demo", str(dest))
    return dest / "demo"


def check_bytes(s: Stack) -> None:
    """GET /v1/stores/demo, every view slot's block, every shard file and the zarr metadata
    keys equal a local read of the same store."""
    from teacher_store import Location, StoreReader
    from teacher_store.store.blockfmt import encode_block, store_identity

    path = local_store(s)
    local = StoreReader(Location.at(str(path)))
    identity = store_identity((path / "_distill" / "manifest.json").read_bytes())
    status, _, body = http(s.url("/v1/stores/demo"))
    assert status == 200, (status, body[:300])
    detail = json.loads(body)
    assert detail["complete"] and detail["identity"] == identity, detail
    assert detail["attrs"] == local.attrs.to_dict(), "served attrs differ from the store's"
    n = local.attrs.num_samples
    for slot in range(local.attrs.views):
        status, _, body = http(s.url(f"/v1/stores/demo/blocks/{slot}?start=0&stop={n}"))
        assert status == 200, (status, body[:300])
        assert body == encode_block(local.read_block(slot, 0, n), identity), f"block {slot}"
    assert local.manifest is not None
    # Every shard file, the metadata of the group and of each array, and the manifest itself.
    keys = [*sorted(local.manifest["files"]), "zarr.json", "_distill/manifest.json"]
    keys += [f"{name}/zarr.json" for name in local.group.array_keys()]
    for key in keys:
        status, _, body = http(s.url(f"/v1/stores/demo/zarr/{key}"))
        assert status == 200, (key, status, body[:300])
        assert body == (path / key).read_bytes(), f"zarr key {key} differs"
    s.log.say(f"{n} samples x {local.attrs.views} views and {len(keys)} zarr keys: equal bytes")


def check_dashboard(s: Stack) -> None:
    """The slim API's dashboard page and store fragment answer 200 (its views: 409, no torch);
    the dashboard service (jobs image) answers a view PNG with 200."""
    for path in ("/", "/ui/stores/demo", "/ui/fragments/stores/demo"):
        status, headers, body = http(s.url(path))
        assert status == 200 and headers.get("content-type", "").startswith("text/html"), path
    status, _, body = http(s.url("/v1/stores/demo/views/0/0.png"))
    assert status == 409 and json.loads(body)["error"] == "rendering_unavailable", (status, body)
    s.compose("--profile", "dashboard", "up", "-d", "--no-build", "--no-deps", "dashboard")
    s.wait_healthy("dashboard")
    for slot, sample in ((0, 0), (1, 5)):
        url = s.url(f"/v1/stores/demo/views/{slot}/{sample}.png", s.dashboard_port)
        status, headers, body = http(url)
        assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n", (url, status, body[:300])
        assert headers.get("content-type") == "image/png", headers


def check_train(s: Stack) -> None:
    """`docker compose --profile train run --rm train` streams from the API and writes
    finite per-epoch metrics into the `runs` volume."""
    s.compose("--profile", "train", "run", "--rm", "train", timeout=1200)
    text = s.run_image(
        API_IMAGE, "cat", "/runs/demo/metrics.jsonl", volume=f"{PROJECT}_runs:/runs:ro"
    )
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(rows) == int(SMALL["DISTILL_EPOCHS"]), f"metrics.jsonl: {text[:300]!r}"
    assert all(math.isfinite(r["loss"]) for r in rows), rows
    s.log.say(f"trained; metrics: {rows[-1]}")


def check_token(s: Stack) -> None:
    """With DISTILL_TOKEN_FILE set, the API answers 401 without the token, 200 with it."""
    token_file = s.tmp / "token"
    token_file.write_text("stack-test-token\n")
    token_file.chmod(0o644)  # bind-mounted as a secret: uid 10001 must read it
    env = {"DISTILL_TOKEN_FILE": str(token_file)}
    s.compose("up", "-d", "--no-build", "--no-deps", "api", env=env)
    s.wait_healthy("api")
    for path in ("/v1/stores", "/v1/stores/demo", "/v1/stores/demo/zarr/zarr.json"):
        assert http(s.url(path))[0] == 401, f"{path} without the token"
        assert http(s.url(path), "wrong-token")[0] == 401, f"{path} with a wrong token"
        assert http(s.url(path), "stack-test-token")[0] == 200, f"{path} with the token"


def check_down(s: Stack) -> None:
    """`docker compose down -v` leaves no container, network or volume of the project."""
    s.teardown()
    label = f"label=com.docker.compose.project={PROJECT}"
    left = {
        "containers": s.engine.out("ps", "-a", "-q", "--filter", label),
        "networks": s.engine.out("network", "ls", "-q", "--filter", label),
        "volumes": s.engine.out("volume", "ls", "-q", "--filter", label),
    }
    assert not any(left.values()), f"left behind: {left}"


CHECKS: list[tuple[Callable[[Stack], None], bool]] = [
    # (check, whether the checks after it need it to pass)
    (check_image_hardening, False),
    (check_no_build_secrets, False),
    (check_up, True),
    (check_api_container, False),
    (check_bytes, False),
    (check_dashboard, False),
    (check_train, False),
    (check_token, False),
    (check_down, False),
]


def run_checks(s: Stack) -> tuple[int, list[str]]:
    """(passed, failures); the stack is taken down in every case."""
    passed, failures = 0, []
    try:
        for check, needed in CHECKS:
            name = check.__name__.removeprefix("check_").replace("_", " ")
            with s.log.step(name):
                try:
                    check(s)
                except (AssertionError, StepFailed, OSError, ValueError, KeyError) as e:
                    failures.append(f"{name}: {e}")
                    s.log.say(f"FAIL {name}: {e}")
                    if needed:
                        break
                    continue
            passed += 1
            s.log.say(f"ok   {name}")
    finally:
        with s.log.step("clean up"):
            _clean_up(s, failures)
    return passed, failures


def _clean_up(s: Stack, failures: list[str]) -> None:
    """The stack down (if a check left it up), dangling images and old build cache pruned."""
    try:
        s.teardown()
    except StepFailed as e:
        failures.append(f"teardown: {e}")
    s.engine.docker("image", "prune", "-f", check=False)  # dangling images of rebuilds
    # Build cache, least recently used first, down to what a rebuild of the current images
    # reuses: the jobs image's 5.6 GB dependency layer and the final stage's copy of it
    # (11.5 GB; the image holds a third copy). Older dependency layers go.
    s.engine.docker("builder", "prune", "-f", "--keep-storage", KEEP_BUILD_CACHE, check=False)
