#!/bin/sh
# `pip install` inside an image build, with the build's optional BuildKit secrets:
#   pip_conf  a pip.conf (index-url, extra-index-url, trusted-host, ...): PIP_CONFIG_FILE
#   pip_ca    the CA bundle pip trusts (e.g. the host's /etc/ssl/certs/ca-certificates.crt
#             when a proxy or a private index signs with its own CA): PIP_CERT
# Secrets are mounted under /run/secrets for one RUN step only, so neither file lands in a
# layer, the image's environment or its history. An absent or empty secret is skipped.
set -eu
if [ -s /run/secrets/pip_conf ]; then
    export PIP_CONFIG_FILE=/run/secrets/pip_conf
fi
if [ -s /run/secrets/pip_ca ]; then
    export PIP_CERT=/run/secrets/pip_ca
fi
exec python -m pip install "$@"
