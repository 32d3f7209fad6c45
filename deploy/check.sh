#!/usr/bin/env bash
# Checks everything under deploy/ without a cluster or an image registry (scripts/test.sh runs
# it after ctest; the image build is deploy/build-images.sh, too slow for every test run).
#   1. kubectl kustomize renders deploy/k8s/base and every overlay;
#   2. every rendered object (and the Secret templates) validates against the strict JSON
#      schemas in ../shared/k8s-schemas (skipped, with a message, only when that folder is
#      absent; AICHAT_K8S_SCHEMAS points elsewhere);
#   3. pod-security and wiring rules the schemas can not express (tools/policy_k8s.py); how
#      calls reach the replicas (tools/check_routing.py: in prod, peers dialled as dns:/// on a
#      headless Service per peer, a Gateway and one GRPCRoute per service, certificates that
#      name what is dialled); the Gateway API objects, which have no schema there, against
#      the npm package @kubernetes-models/gateway-api's validators and, for unknown fields,
#      its TypeScript interfaces (tools/validate_gateway_api.mjs);
#   4. promtool check config, check rules and test rules;
#   5. a real Prometheus scrapes the running suite (scripts/run.sh up --detach on free ports in
#      a temporary state dir, built binaries only), a python client drives chat turns through
#      the fake LLM provider, over gRPC and over the OpenAI-compatible HTTP API (as an admin,
#      also a model whose one deployment is down, so that its turns fall back), and every
#      metric and query of the Grafana dashboard returns data.
# Prints "deploy: N passed, N failed"; exits non-zero if anything failed. AICHAT_DASHBOARD=FILE
# checks another dashboard JSON (e.g. to see a renamed metric fail).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

DEPLOY="$AICHAT_ROOT/deploy"
SCHEMAS="${AICHAT_K8S_SCHEMAS:-$AICHAT_ROOT/../shared/k8s-schemas}"
PY=/usr/bin/python3 # Debian's python, which sees python3-yaml, -jsonschema and -grpcio
BUILD="${AICHAT_BUILD_DIR:-$AICHAT_ROOT/build}"

install_deps prometheus python3-yaml python3-jsonschema python3-grpcio python3-protobuf \
  protobuf-compiler-grpc curl
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  install_deps nodejs npm # the Gateway API check (npm packages, installed per run)
fi
if ! command -v kubectl >/dev/null; then
  # Debian 12 packages kubectl 1.20 as kubernetes-client; newer kubectl is on the machine image.
  install_deps kubernetes-client
fi

TMP=$(mktemp -d /tmp/aichat-deploy-check-XXXXXX)
chmod 755 "$TMP"
PROM_PID=""
SUITE_STARTED=""
passed=0
failed=0
failures=()

suite_env() {
  export AICHAT_STATE_DIR="$TMP/state" AICHAT_NO_BUILD=1 AICHAT_BUILD_DIR="$BUILD"
  export AICHAT_PG_PORT=$PG_PORT AICHAT_USER_PORT=$USER_PORT AICHAT_CONVERSATION_PORT=$CONV_PORT
  export AICHAT_AGENT_PORT=$AGENT_PORT AICHAT_USAGE_PORT=$USAGE_PORT
  export AICHAT_METRICS_PORT_BASE=$MBASE AICHAT_FAKE_LLM_PORT=$FAKE_PORT AICHAT_HTTP_PORT=$HTTP_PORT
  unset OPENAI_API_KEY OPENAI_BASE_URL # the fake provider, always
}

cleanup() {
  local rc=$?
  if [[ -n "$PROM_PID" ]]; then
    kill "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
  fi
  if [[ -n "$SUITE_STARTED" ]]; then
    local pgdir
    pgdir=$(readlink -f "$TMP/state/pg" 2>/dev/null || true)
    (suite_env && "$AICHAT_ROOT/scripts/run.sh" down) >/dev/null 2>&1 || true
    # As root, run.sh keeps the cluster under /var/lib/aichat/<hash>/pg: remove ours.
    if [[ "$pgdir" == /var/lib/aichat/*/pg ]]; then rm -rf "$(dirname "$pgdir")"; fi
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT

# check NAME COMMAND... — runs one check, its output indented, and counts it.
check() {
  local name=$1
  shift
  log "deploy check: $name"
  if "$@" >"$TMP/out" 2>&1; then
    passed=$((passed + 1))
    sed 's/^/    /' "$TMP/out" | tail -n 12
  else
    failed=$((failed + 1))
    failures+=("$name")
    sed 's/^/    /' "$TMP/out" | tail -n 40
    printf '    \033[31mFAILED: %s\033[0m\n' "$name"
  fi
}

# ---------------------------------------------------------------- 1-3. Kubernetes manifests
render() { kubectl kustomize "$DEPLOY/k8s/$1" >"$TMP/render-${1//\//-}.yaml"; }
KDIRS=(base overlays/dev overlays/prod)
for k in "${KDIRS[@]}"; do
  check "kubectl kustomize deploy/k8s/$k" render "$k"
done

validate() {
  local files=()
  for k in "${KDIRS[@]}"; do files+=("$TMP/render-${k//\//-}.yaml"); done
  "$PY" "$DEPLOY/tools/validate_k8s.py" --elsewhere gateway.networking.k8s.io "$SCHEMAS" \
    "${files[@]}" "$DEPLOY/k8s/secrets/secrets.template.yaml" | grep -v '^ok' || return 1
  # No schema for the Operator's ServiceMonitor: parse it and check its shape only.
  "$PY" -c 'import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
assert d["apiVersion"] == "monitoring.coreos.com/v1" and d["kind"] == "ServiceMonitor", d
assert all(e["port"] == "metrics" for e in d["spec"]["endpoints"])
print("ServiceMonitor (no schema): shape ok")' "$DEPLOY/k8s/optional/servicemonitor.yaml" || return 1
  if [[ -x "$BUILD/services/user/aichat-user" ]]; then
    AICHAT_USER_BIN="$BUILD/services/user/aichat-user" "$DEPLOY/k8s/secrets/jwt-secret.sh" aichat-dev \
      >"$TMP/jwt-secret.yaml"
    "$PY" "$DEPLOY/tools/validate_k8s.py" "$SCHEMAS" "$TMP/jwt-secret.yaml" | tail -n 1 || return 1
  fi
  "$DEPLOY/k8s/secrets/tls-secrets.sh" aichat "$TMP/tls-ca" >"$TMP/tls-secrets.yaml" 2>/dev/null
  "$PY" "$DEPLOY/tools/validate_k8s.py" "$SCHEMAS" "$TMP/tls-secrets.yaml" | tail -n 1 || return 1
}
if [[ -d "$SCHEMAS" ]]; then
  check "rendered objects validate against the strict schemas in $SCHEMAS" validate
else
  log "SKIPPED: schema validation — no Kubernetes schemas at $SCHEMAS (set AICHAT_K8S_SCHEMAS)"
fi
for o in dev prod; do
  check "pod security and wiring rules (overlays/$o)" \
    "$PY" "$DEPLOY/tools/policy_k8s.py" "$TMP/render-overlays-$o.yaml"
done

routing() {
  "$DEPLOY/k8s/secrets/tls-secrets.sh" aichat "$TMP/routing-ca" >"$TMP/routing-tls.yaml" 2>/dev/null
  "$PY" "$DEPLOY/tools/check_routing.py" "$TMP/render-overlays-prod.yaml" --scale-out \
    --tls-secrets "$TMP/routing-tls.yaml" || return 1
  "$PY" "$DEPLOY/tools/check_routing.py" "$TMP/render-overlays-dev.yaml" | tail -n 1
}
check "replicas: headless Service per peer, dns:/// peers, Gateway + GRPCRoutes (prod)" routing

# Gateway API kinds have no schema in ../shared/k8s-schemas: the npm package's validators
# (types, required fields, patterns) and its TypeScript interfaces (unknown fields).
gateway_api() {
  local dir="$TMP/gateway-api" k files=()
  mkdir -p "$dir"
  for k in "${KDIRS[@]}"; do files+=("$TMP/render-${k//\//-}.yaml"); done
  "$PY" - "$dir/objects.json" "${files[@]}" <<'PYEOF' || return 1
import json, sys, yaml
objs = []
for path in sys.argv[2:]:
    objs += [o for o in yaml.safe_load_all(open(path))
             if o and o.get("apiVersion", "").startswith("gateway.networking.k8s.io/")]
json.dump(objs, open(sys.argv[1], "w"))
print(f"{len(objs)} Gateway API objects rendered")
PYEOF
  (cd "$dir" && echo '{"private": true}' >package.json &&
    npm install --no-audit --no-fund --loglevel=error --prefer-offline \
      @kubernetes-models/gateway-api@2.0.0 typescript@5.9.3 >npm.log 2>&1) ||
    { cat "$dir/npm.log"; return 1; }
  cp "$DEPLOY/tools/validate_gateway_api.mjs" "$dir/"
  (cd "$dir" && node validate_gateway_api.mjs objects.json)
}
check "Gateway API objects: @kubernetes-models/gateway-api validators + TypeScript (no unknown fields)" \
  gateway_api

# ---------------------------------------------------------------- 4. promtool
# Debian's Prometheus is built without Kubernetes service discovery, so promtool checks a copy
# of prometheus.yml whose kubernetes_sd_configs are swapped for static targets (relabelling
# and everything else unchanged).
promtool_config() {
  "$PY" - "$DEPLOY/prometheus/prometheus.yml" "$TMP/prometheus-static.yml" <<'PYEOF' || return 1
import os, sys, yaml
src, dst = sys.argv[1:]
c = yaml.safe_load(open(src))
for sc in c["scrape_configs"]:
    if sc.pop("kubernetes_sd_configs", None) is not None:
        sc["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
c["rule_files"] = [os.path.join(os.path.dirname(src), f) for f in c.get("rule_files", [])]
yaml.safe_dump(c, open(dst, "w"))
PYEOF
  promtool check config "$TMP/prometheus-static.yml"
}
check "promtool check config deploy/prometheus/prometheus.yml" promtool_config
check "promtool check rules deploy/prometheus/rules.yml" promtool check rules "$DEPLOY/prometheus/rules.yml"
check "promtool test rules deploy/prometheus/rules_test.yml" \
  bash -c "cd '$DEPLOY/prometheus' && promtool test rules rules_test.yml"

# ---------------------------------------------------------------- 5. live scrape
live() {
  local svc
  for svc in user/aichat-user conversation/aichat-conversation ai-agent/aichat-agent usage/aichat-usage; do
    [[ -x "$BUILD/services/$svc" ]] || { echo "missing $BUILD/services/$svc: build first"; return 1; }
  done
  [[ -x "$BUILD/tests/fakes/aichat-fake-llm" ]] || { echo "missing the fake LLM provider: build first"; return 1; }

  PG_PORT=$(free_port) USER_PORT=$(free_port) CONV_PORT=$(free_port) AGENT_PORT=$(free_port)
  USAGE_PORT=$(free_port) FAKE_PORT=$(free_port) PROM_PORT=$(free_port) HTTP_PORT=$(free_port)
  # Four consecutive free ports for the metrics endpoints.
  local try p ok
  for try in $(seq 1 50); do
    MBASE=$((20000 + RANDOM % 30000))
    ok=1
    for p in 0 1 2 3; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$((MBASE + p))") 2>/dev/null; then ok=0; fi
    done
    ((ok)) && break
  done
  mkdir -p "$TMP/state"
  SUITE_STARTED=1
  (suite_env && "$AICHAT_ROOT/scripts/run.sh" up --detach) >"$TMP/run.log" 2>&1 || {
    cat "$TMP/run.log"
    tail -n 20 "$TMP"/state/logs/*.log 2>/dev/null
    return 1
  }
  echo "suite up: gRPC $USER_PORT/$CONV_PORT/$AGENT_PORT/$USAGE_PORT, metrics $MBASE..$((MBASE + 3))"

  cat >"$TMP/prometheus-live.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $DEPLOY/prometheus/rules.yml
scrape_configs:
  - job_name: aichat
    static_configs:
      - targets: ["127.0.0.1:$MBASE"]
        labels: {service: aichat-user, pod: aichat-user-local, namespace: local}
      - targets: ["127.0.0.1:$((MBASE + 1))"]
        labels: {service: aichat-conversation, pod: aichat-conversation-local, namespace: local}
      - targets: ["127.0.0.1:$((MBASE + 2))"]
        labels: {service: aichat-agent, pod: aichat-agent-local, namespace: local}
      - targets: ["127.0.0.1:$((MBASE + 3))"]
        labels: {service: aichat-usage, pod: aichat-usage-local, namespace: local}
YAML
  promtool check config "$TMP/prometheus-live.yml" >/dev/null || return 1
  prometheus --config.file="$TMP/prometheus-live.yml" --storage.tsdb.path="$TMP/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$TMP/prometheus.log" 2>&1 &
  PROM_PID=$!
  local url="http://127.0.0.1:$PROM_PORT" up=0 deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    up=$(curl -fsS "$url/api/v1/query?query=sum(up%7Bjob%3D%22aichat%22%7D)" 2>/dev/null |
      "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)' \
        2>/dev/null || echo 0)
    [[ "$up" == 4 ]] && break
    sleep 1
  done
  if [[ "$up" != 4 ]]; then
    echo "Prometheus sees $up of 4 targets up"
    curl -fsS "$url/api/v1/targets" || tail -n 20 "$TMP/prometheus.log"
    return 1
  fi
  echo "Prometheus on $url scrapes 4 of 4 targets"
  "$PY" "$DEPLOY/tools/drive_suite.py" "$AICHAT_ROOT/proto" "127.0.0.1:$USER_PORT" "127.0.0.1:$CONV_PORT" \
    "127.0.0.1:$AGENT_PORT" "127.0.0.1:$USAGE_PORT" 3 "127.0.0.1:$HTTP_PORT" \
    --admin "$BUILD/services/user/aichat-user" "postgresql://postgres@127.0.0.1:$PG_PORT/aichat_user" ||
    return 1
  "$PY" "$DEPLOY/tools/check_dashboard.py" "$url" "${AICHAT_DASHBOARD:-$DEPLOY/grafana/aichat.json}" 40
}
check "Prometheus scrapes the running suite; every dashboard metric and query has data" live

echo
if ((failed)); then
  printf '\033[31mdeploy checks failed:\033[0m %s\n' "${failures[*]}"
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0))
