#!/usr/bin/env bash
# Prints the four aichat-<service>-tls Secrets the tls component (prod overlay) mounts, made
# with openssl: a fresh CA, and per service an ECDSA P-256 certificate for its Service names
# and its headless Service's (aichat-user, aichat-user-headless, each also .NAMESPACE, .svc and
# .svc.cluster.local: peers dial dns:///aichat-usage-headless:50054), good for serving and
# for calling peers (mutual TLS). Keys in the layout cert-manager writes: tls.crt, tls.key,
# ca.crt. Then, for the gateway component: the Secret aichat-gateway-client-tls (the client
# certificate the Gateway presents to the services) and the ConfigMap aichat-ca (the CA it
# verifies them with). Use cert-manager instead where you can (it renews; then
# `kubectl rollout restart`).
#   deploy/k8s/secrets/tls-secrets.sh [NAMESPACE [CA_DIR]] | kubectl apply -f -
# CA_DIR (default: a new private temporary directory, named on stderr) keeps ca.crt and
# ca.key, plus client.crt/client.key: a client certificate for the CLI (aichat --ca ca.crt
# --cert client.crt --key client.key) or a gateway, since every listener requires one. Keep
# that directory secret; an existing ca.crt/ca.key there is reused.
set -euo pipefail
ns=${1:-aichat}
dir=${2:-$(mktemp -d /tmp/aichat-tls-XXXXXX)}
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
days=${AICHAT_TLS_DAYS:-365}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -s "$dir/ca.crt" || ! -s "$dir/ca.key" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$((days * 3))" \
    -subj "/CN=aichat internal CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi

# issue NAME SAN... -> $tmp/NAME.crt, $tmp/NAME.key
issue() {
  local name=$1
  shift
  local san
  san=$(printf 'DNS:%s,' "$@")
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$tmp/$name.key" -out "$tmp/$name.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=${san%,}" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" >"$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -extfile "$tmp/$name.ext" -out "$tmp/$name.crt" 2>/dev/null
}

indent() { sed 's/^/    /' "$1"; }

# secret NAME CERT_NAME: a kubernetes.io/tls Secret with $tmp/CERT_NAME.crt/.key and the CA.
secret() {
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $ns
  labels:
    app.kubernetes.io/part-of: aichat
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(indent "$tmp/$2.crt")
  tls.key: |
$(indent "$tmp/$2.key")
  ca.crt: |
$(indent "$dir/ca.crt")
YAML
}

for svc in user conversation agent usage; do
  name=aichat-$svc
  sans=()
  for host in "$name" "$name-headless"; do
    sans+=("$host" "$host.$ns" "$host.$ns.svc" "$host.$ns.svc.cluster.local")
  done
  issue "$name" "${sans[@]}"
  secret "$name-tls" "$name"
  echo "---"
done
issue aichat-gateway aichat-gateway
secret aichat-gateway-client-tls aichat-gateway
cat <<YAML
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: aichat-ca
  namespace: $ns
  labels:
    app.kubernetes.io/part-of: aichat
data:
  ca.crt: |
$(indent "$dir/ca.crt")
YAML
issue client aichat-client
cp "$tmp/client.crt" "$tmp/client.key" "$dir/"
echo "tls-secrets.sh: CA and a client certificate in $dir (keep it private)" >&2
