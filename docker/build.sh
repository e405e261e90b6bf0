#!/usr/bin/env bash
# Build the images with BuildKit, with compose.yaml's build settings, from the repository root:
#
#   docker/build.sh [api] [jobs]        (default: both)
#
# For engines where `docker compose build` cannot (no buildx plugin: Compose then falls back to
# the classic builder, which lacks RUN --mount and build secrets). Reads the same variables as
# compose.yaml: DISTILL_BASE_IMAGE, DISTILL_PIP_CONF, DISTILL_PIP_CA, DISTILL_BUILD_NETWORK,
# DISTILL_API_IMAGE, DISTILL_JOBS_IMAGE; DOCKER names the docker CLI (default `docker`).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
args=(--network "${DISTILL_BUILD_NETWORK:-default}"
      --build-arg "BASE_IMAGE=${DISTILL_BASE_IMAGE:-python:3.11.14-slim-bookworm}")
# pip's settings travel as BuildKit secrets: mounted for the pip steps only, never in a layer.
for pair in "pip_conf:${DISTILL_PIP_CONF:-}" "pip_ca:${DISTILL_PIP_CA:-}"; do
    id=${pair%%:*} src=${pair#*:}
    if [ -n "$src" ]; then
        [ -r "$src" ] || { echo "build.sh: $id file $src is not readable" >&2; exit 2; }
        args+=(--secret "id=$id,src=$src")
    fi
done

# A docker CLI of version 23 or later runs BuildKit builds through the buildx plugin only.
if ! "$DOCKER" buildx version > /dev/null 2>&1; then
    major=$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ "${major:-0}" -ge 23 ] 2>/dev/null; then
        echo "build.sh: $DOCKER (client $major.x) needs the buildx plugin for BuildKit builds;" \
            "install docker-buildx, or set DOCKER to a docker CLI 20.10 (Debian's docker.io)" >&2
        exit 2
    fi
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(api jobs)
for target in "${targets[@]}"; do
    case "$target" in
        api) tag=${DISTILL_API_IMAGE:-distill-api:0.1.0} ;;
        jobs) tag=${DISTILL_JOBS_IMAGE:-distill-jobs:0.1.0} ;;
        *) echo "build.sh: unknown image $target (api or jobs)" >&2; exit 2 ;;
    esac
    start=$SECONDS
    DOCKER_BUILDKIT=1 "$DOCKER" build "${args[@]}" -f "docker/$target.Dockerfile" -t "$tag" .
    echo "build.sh: built $tag in $((SECONDS - start)) s"
done
