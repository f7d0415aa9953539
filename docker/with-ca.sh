#!/bin/sh
# Run a command (pip) trusting pip's own CA bundle plus the build secret `ca` when the
# build was given one. The joined bundle is removed before the RUN ends, so no layer
# holds it; without the secret the command runs unchanged.
set -eu
secret=/run/secrets/ca
if [ ! -s "$secret" ]; then
  exec "$@"
fi
bundle=$(mktemp)
trap 'rm -f "$bundle"' EXIT
cat "$(python3 -c 'import pip._vendor.certifi as c; print(c.where())')" "$secret" > "$bundle"
PIP_CERT="$bundle" "$@"
