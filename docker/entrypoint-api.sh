#!/bin/sh
# Entrypoint of the API image. Compose can only pass a variable as empty, not leave it out
# (`DISTILL_TOKEN_FILE: ${DISTILL_TOKEN_FILE:+...}` is "" when auth is off); an empty DISTILL_*
# setting means "not set", so drop those before the settings loader sees them.
set -eu
for name in $(env | sed -n 's/^\(DISTILL_[A-Za-z0-9_]*\)=$/\1/p'); do
    unset "$name"
done
exec "$@"
