#!/usr/bin/env bash
# Prints the aichat-jwt Secret with a fresh Ed25519 key pair and a service token for ai-agent,
# made by `aichat-user keygen` and `aichat-user mint-service-token`. Nothing is written to disk.
#   deploy/k8s/secrets/jwt-secret.sh [NAMESPACE] | kubectl apply -f -
# The aichat-user program comes from $AICHAT_USER_BIN, else build/services/user/aichat-user,
# else the image $AICHAT_USER_IMAGE (default localhost/aichat-user:latest) run with podman or
# docker. Run it once per cluster: a new key pair logs every user out (see deploy/README.md
# for rotation).
set -euo pipefail
ns=${1:-aichat-dev}
root="$(cd "$(dirname "$0")/../../.." && pwd)"
bin=${AICHAT_USER_BIN:-$root/build/services/user/aichat-user}
if [[ -x "$bin" ]]; then
  run() { "$bin" "$@"; }
else
  image=${AICHAT_USER_IMAGE:-localhost/aichat-user:latest}
  engine=$(command -v podman || command -v docker) || {
    echo "jwt-secret.sh: no aichat-user binary and no podman/docker" >&2
    exit 1
  }
  run() {
    local envs=()
    [[ -n "${AICHAT_JWT_SIGNING_KEY:-}" ]] && envs=(-e AICHAT_JWT_SIGNING_KEY)
    "$engine" run --rm --network=none "${envs[@]}" "$image" "$@"
  }
fi
keys=$(run keygen)
signing=$(sed -n 's/^AICHAT_JWT_SIGNING_KEY=//p' <<<"$keys")
public=$(sed -n 's/^AICHAT_JWT_PUBLIC_KEYS=//p' <<<"$keys")
[[ -n "$signing" && -n "$public" ]] || { echo "jwt-secret.sh: keygen printed no keys" >&2; exit 1; }
token=$(AICHAT_JWT_SIGNING_KEY=$signing run mint-service-token --service_name=ai-agent)
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: aichat-jwt
  namespace: $ns
  labels:
    app.kubernetes.io/part-of: aichat
type: Opaque
stringData:
  AICHAT_JWT_SIGNING_KEY: "$signing"
  AICHAT_JWT_PUBLIC_KEYS: "$public"
  AICHAT_SERVICE_TOKEN: "$token"
YAML
