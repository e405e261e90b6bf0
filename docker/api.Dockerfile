# Slim image of the store service (FastAPI/uvicorn): no torch, no timm, no compilers.
# Build from the repository root with BuildKit (docs/docker.md):
#   DOCKER_BUILDKIT=1 docker build -f docker/api.Dockerfile -t distill-api:0.1.0 .
# Offline: --build-arg BASE_IMAGE=<a local Python image, docker/base-image.sh makes one>, and
# the package index and its CA as secrets: --secret id=pip_conf,src=FILE --secret id=pip_ca,src=FILE
#
# No `# syntax=` line: the engine's built-in Dockerfile frontend handles everything used here
# (RUN --mount, COPY --chmod), and a syntax line makes BuildKit pull a frontend image.
# The default base image is pinned by version tag. Pinning by digest was not possible where this
# file was written (no registry access); for bit-for-bit rebuilds, pass
# BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> from your registry.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# ---- deps: a virtual environment with the pinned runtime dependencies ----
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pip with the optional pip_conf / pip_ca secrets (docker/pip-install.sh); build stages only.
COPY --chmod=0755 docker/pip-install.sh /usr/local/bin/pip-install
# Dependencies first: this layer is rebuilt only when the pinned requirements change. The pip
# cache mount keeps downloads across rebuilds without leaving them in any layer.
COPY docker/requirements-api.txt /tmp/requirements-api.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_conf \
    --mount=type=secret,id=pip_ca \
    pip-install -r /tmp/requirements-api.txt
# ---- builder: the project itself, without its dependencies (torch, timm, ... are not needed
# to serve), installed under its own prefix (its bytecode compiled for its final place in
# /opt/venv) so that a source change rebuilds only that small layer of the final image ----
FROM deps AS builder
COPY pyproject.toml README.md ./
COPY teacher_store ./teacher_store
COPY api ./api
COPY student ./student
COPY models ./models
# Importing the app (from the merged environment) fails the build if it needs a package
# requirements-api.txt lacks (torch...).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_conf \
    --mount=type=secret,id=pip_ca \
    pip-install --no-deps --no-compile --prefix /opt/project . \
    && python -m compileall -q -s /opt/project -p /opt/venv /opt/project \
    && cp -a /opt/project/. /opt/venv/ \
    && python -c "import api.main"

# ---- final: the virtual environment (dependencies, then the project), unprivileged ----
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    DISTILL_ROOT=/stores
# Same uid/gid as the jobs image, so both can share named volumes.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /stores \
    && chown app:app /stores
COPY --from=deps /opt/venv /opt/venv
COPY --from=builder /opt/project /opt/venv
COPY --chmod=0755 docker/entrypoint-api.sh /usr/local/bin/distill-entrypoint
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
# python's urllib, so the image needs no curl; an HTTP error status or no answer fails it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/distill-entrypoint"]
# Settings come from the environment (DISTILL_ROOT, DISTILL_TOKEN_FILE, DISTILL_MAX_BLOCK, ...).
# uvicorn starts the app directly rather than `distill serve`: the app needs api/ and
# teacher_store/ only, while the `distill` dispatcher imports every layer's command module
# (student/, models/), which this torch-free image does not promise to import.
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--http", "api.protocol:GuardedH11Protocol", "--limit-concurrency", "512", "--timeout-keep-alive", "5", "--h11-max-incomplete-event-size", "16384"]
