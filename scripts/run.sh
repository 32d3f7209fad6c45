#!/usr/bin/env bash
# Runs the whole aichat suite on this machine.
#   scripts/run.sh [up]        install what is missing, build, start everything, stay in the
#                              foreground; Ctrl-C stops everything it started
#   scripts/run.sh up --detach start and return
#   scripts/run.sh down        stop what `up` started
#   scripts/run.sh status      what is running, and where
# State (PostgreSQL data, keys, logs) lives in $AICHAT_STATE_DIR (default: .state/ in the
# project). Ports: AICHAT_PG_PORT (5433), AICHAT_USER_PORT (50051), AICHAT_CONVERSATION_PORT
# (50052), AICHAT_AGENT_PORT (50053), AICHAT_USAGE_PORT (50054), AICHAT_METRICS_PORT_BASE
# (9101: user, +1 conversation, +2 ai-agent, +3 usage), AICHAT_FAKE_LLM_PORT (8089), and
# AICHAT_HTTP_PORT for ai-agent's OpenAI-compatible HTTP API (8080 when the agent has its default
# port; a copy on other ports serves HTTP only when given one, or AICHAT_HTTP_LISTEN).
# AICHAT_NO_BUILD=1 skips the build; AICHAT_START_TIMEOUT (60) seconds for each process to listen.
# Replicas: AICHAT_REPLICAS (1) replicas each of conversation, usage and ai-agent, or per service
# AICHAT_CONVERSATION_REPLICAS, AICHAT_USAGE_REPLICAS, AICHAT_AGENT_REPLICAS. Replica 1 is the
# single replica of old (same ports, pid file run/<service>.pid, log logs/<service>.log);
# replica k listens on its service's gRPC and metrics ports + (k-1) * AICHAT_REPLICA_PORT_STEP
# (100), pid file run/<service>-k.pid, log logs/<service>-k.log. Peers get every replica as an
# address list (ipv4:127.0.0.1:50052,127.0.0.1:50152) and spread their calls over it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STATE="${AICHAT_STATE_DIR:-$AICHAT_ROOT/.state}"
BUILD="${AICHAT_BUILD_DIR:-$AICHAT_ROOT/build}"
PG_PORT="${AICHAT_PG_PORT:-5433}"
declare -A PORT=(
  [user]="${AICHAT_USER_PORT:-50051}"
  [conversation]="${AICHAT_CONVERSATION_PORT:-50052}"
  [ai-agent]="${AICHAT_AGENT_PORT:-50053}"
  [usage]="${AICHAT_USAGE_PORT:-50054}"
)
MBASE="${AICHAT_METRICS_PORT_BASE:-9101}"
declare -A MPORT=([user]=$MBASE [conversation]=$((MBASE + 1)) [ai-agent]=$((MBASE + 2)) [usage]=$((MBASE + 3)))
declare -A BIN=(
  [user]="$BUILD/services/user/aichat-user"
  [conversation]="$BUILD/services/conversation/aichat-conversation"
  [ai-agent]="$BUILD/services/ai-agent/aichat-agent"
  [usage]="$BUILD/services/usage/aichat-usage"
)
declare -A DB=([user]=aichat_user [conversation]=aichat_conversation [ai-agent]=aichat_agent [usage]=aichat_usage)
ORDER=(user conversation usage ai-agent)
declare -A REPLICAS=(
  [user]=1
  [conversation]="${AICHAT_CONVERSATION_REPLICAS:-${AICHAT_REPLICAS:-1}}"
  [ai-agent]="${AICHAT_AGENT_REPLICAS:-${AICHAT_REPLICAS:-1}}"
  [usage]="${AICHAT_USAGE_REPLICAS:-${AICHAT_REPLICAS:-1}}"
)
STEP="${AICHAT_REPLICA_PORT_STEP:-100}"
for svc in "${ORDER[@]}"; do
  [[ "${REPLICAS[$svc]}" =~ ^[1-9][0-9]?$ ]] || die "replicas of $svc must be 1 to 99, not '${REPLICAS[$svc]}'"
done
[[ "$STEP" =~ ^[1-9][0-9]*$ ]] || die "AICHAT_REPLICA_PORT_STEP must be a positive number"
FAKE_PORT="${AICHAT_FAKE_LLM_PORT:-8089}"
# ai-agent's HTTP API: AICHAT_HTTP_LISTEN as given (empty: off), else AICHAT_HTTP_PORT on
# loopback; else 8080 for the default ports only, so that a second copy on chosen ports does
# not fight the first one for 8080.
if [[ -n "${AICHAT_HTTP_LISTEN+set}" ]]; then
  HTTP_LISTEN="$AICHAT_HTTP_LISTEN"
elif [[ -n "${AICHAT_HTTP_PORT:-}" ]]; then
  HTTP_LISTEN="127.0.0.1:$AICHAT_HTTP_PORT"
elif [[ "${PORT[ai-agent]}" == 50053 ]]; then
  HTTP_LISTEN="127.0.0.1:8080"
else
  HTTP_LISTEN=""
fi
FAKE_BIN="$BUILD/tests/fakes/aichat-fake-llm"
# Seconds each process may take to start listening (a loaded 2-core CI machine is slow).
START_TIMEOUT="${AICHAT_START_TIMEOUT:-60}"

# PostgreSQL refuses to run as root and needs every parent of its data directory to be
# traversable by the postgres user (a checkout under /root is not, and $STATE is 0700). As
# root the cluster therefore lives in /var/lib/aichat/<hash of $STATE>/ and $STATE/pg points
# at it; its log sits beside it, linked from $STATE/logs/postgres.log.
pg_data_dir() {
  if [[ -L "$STATE/pg" || -d "$STATE/pg" ]]; then
    readlink -f "$STATE/pg"
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "$STATE/pg"
    return
  fi
  local dir
  dir="/var/lib/aichat/$(echo -n "$STATE" | sha256sum | cut -c1-16)"
  mkdir -p "$dir"
  chmod 755 /var/lib/aichat
  chown postgres "$dir"
  chmod 700 "$dir"
  ln -sfn "$dir/pg" "$STATE/pg"
  echo "$dir/pg"
}

pidfile() { echo "$STATE/run/$1.pid"; }

# Replica k of a service: its name (pid file and log), gRPC port and metrics port. Replica 1
# is the service's own name and ports, as with a single replica.
replica_name() { if (($2 == 1)); then echo "$1"; else echo "$1-$2"; fi; }
replica_port() { echo $((PORT[$1] + ($2 - 1) * STEP)); }
replica_mport() { echo $((MPORT[$1] + ($2 - 1) * STEP)); }
# ai-agent replica k's OpenAI-compatible HTTP listener ("" when off): the port + (k-1) * STEP.
replica_http() {
  [[ -n "$HTTP_LISTEN" ]] || return 0
  echo "${HTTP_LISTEN%:*}:$((${HTTP_LISTEN##*:} + ($1 - 1) * STEP))"
}

# Where peers and clients reach a service: one host:port, or every replica as a list that
# gRPC's round_robin spreads calls over.
service_addr() {
  local svc=$1 n=${REPLICAS[$1]} k list=""
  if ((n == 1)); then
    echo "127.0.0.1:${PORT[$svc]}"
    return
  fi
  for ((k = 1; k <= n; k++)); do list+="${list:+,}127.0.0.1:$(replica_port "$svc" "$k")"; done
  echo "ipv4:$list"
}

# Every replica's gRPC and metrics ports, PostgreSQL's and the provider's: no two alike.
check_ports() {
  local -A seen=()
  local svc k p
  for p in "$PG_PORT" "$FAKE_PORT"; do seen[$p]=1; done
  for svc in "${ORDER[@]}"; do
    for ((k = 1; k <= REPLICAS[$svc]; k++)); do
      for p in "$(replica_port "$svc" "$k")" "$(replica_mport "$svc" "$k")"; do
        [[ -z "${seen[$p]:-}" ]] || die "port $p is taken twice ($(replica_name "$svc" "$k")); change AICHAT_REPLICA_PORT_STEP or the ports"
        ((p <= 65535)) || die "port $p of $(replica_name "$svc" "$k") is out of range"
        seen[$p]=1
      done
    done
  done
}

running() {
  local f
  f=$(pidfile "$1")
  [[ -f "$f" ]] && alive "$(cat "$f")"
}

stop_one() {
  local name=$1 f pid
  f=$(pidfile "$name")
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

ensure_keys() {
  local keys="$STATE/keys.env"
  if [[ ! -f "$keys" ]]; then
    log "generating token keys and a service token (first run) in $keys"
    umask 077
    "${BIN[user]}" keygen >"$keys.tmp"
    # shellcheck disable=SC1090
    source "$keys.tmp"
    echo "AICHAT_SERVICE_TOKEN=$(AICHAT_JWT_SIGNING_KEY=$AICHAT_JWT_SIGNING_KEY "${BIN[user]}" \
      mint-service-token --service_name=local-suite)" >>"$keys.tmp"
    mv "$keys.tmp" "$keys"
    chmod 600 "$keys"
  fi
  set -a
  # shellcheck disable=SC1090
  source "$keys"
  set +a
}

start_postgres() {
  local data
  data=$(pg_data_dir)
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "creating the PostgreSQL cluster in $data"
    pg_init "$data"
  fi
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    local pglog
    pglog="$(dirname "$data")/postgres.log"
    [[ $(id -u) -ne 0 ]] && pglog="$STATE/logs/postgres.log"
    [[ -e "$STATE/logs/postgres.log" ]] || ln -sfn "$pglog" "$STATE/logs/postgres.log"
    pg_start "$data" "$PG_PORT" "$pglog"
    touch "$STATE/run/postgres.started"
  fi
  for svc in "${ORDER[@]}"; do
    as_postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='${DB[$svc]}'" | grep -q 1 ||
      as_postgres createdb -h 127.0.0.1 -p "$PG_PORT" -U postgres "${DB[$svc]}"
  done
}

# The LLM provider: OpenAI (or OPENAI_BASE_URL) when the user set OPENAI_API_KEY, else the
# bundled fake. Either way ai-agent gets OPENAI_BASE_URL and OPENAI_API_KEY from here.
start_llm() {
  if [[ -n "${OPENAI_API_KEY:-}" ]] && ! running fake-llm; then
    export OPENAI_BASE_URL="${OPENAI_BASE_URL:-https://api.openai.com/v1}"
    echo "$OPENAI_BASE_URL (OPENAI_API_KEY is set)" >"$STATE/run/llm"
    log "LLM provider: $OPENAI_BASE_URL (OPENAI_API_KEY is set)"
    return 0
  fi
  if [[ -n "${OPENAI_API_KEY:-}" ]]; then
    # Services already running talk to the fake; mixing providers would be a surprise.
    log "note: OPENAI_API_KEY is set but the suite is already running with the fake provider;" \
      "run \`scripts/run.sh down\` first to switch"
  fi
  [[ -x "$FAKE_BIN" ]] || die "OPENAI_API_KEY is not set and the fake provider $FAKE_BIN is not built"
  if ! running fake-llm; then
    log "LLM provider: the FAKE provider (offline; set OPENAI_API_KEY to use OpenAI)"
    rm -f "$STATE/fake-llm-cert.pem"
    "$FAKE_BIN" --listen="127.0.0.1:$FAKE_PORT" --tls --cert_out="$STATE/fake-llm-cert.pem" \
      >"$STATE/logs/fake-llm.log" 2>&1 &
    echo $! >"$(pidfile fake-llm)"
    wait_port "$FAKE_PORT" "$START_TIMEOUT" || die "the fake LLM did not start; see $STATE/logs/fake-llm.log"
  fi
  echo "FAKE provider https://127.0.0.1:$FAKE_PORT/v1 (offline; set OPENAI_API_KEY for OpenAI)" \
    >"$STATE/run/llm"
  # The fake makes a new CA at every start; ai-agent trusts it through OpenSSL's SSL_CERT_FILE.
  export OPENAI_BASE_URL="https://127.0.0.1:$FAKE_PORT/v1" OPENAI_API_KEY="fake-key"
  export SSL_CERT_FILE="$STATE/fake-llm-cert.pem"
}

start_service() {
  local svc=$1 k
  [[ -x "${BIN[$svc]}" ]] || return 0
  for ((k = 1; k <= REPLICAS[$svc]; k++)); do start_replica "$svc" "$k"; done
}

start_replica() {
  local svc=$1 k=$2 name port mport user conv usage agent
  name=$(replica_name "$svc" "$k")
  port=$(replica_port "$svc" "$k")
  mport=$(replica_mport "$svc" "$k")
  running "$name" && return 0
  user=$(service_addr user) conv=$(service_addr conversation)
  usage=$(service_addr usage) agent=$(service_addr ai-agent)
  (
    export AICHAT_LISTEN="127.0.0.1:$port" AICHAT_METRICS_LISTEN="127.0.0.1:$mport"
    export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/${DB[$svc]}"
    export AICHAT_USER_ADDR="$user" AICHAT_CONVERSATION_ADDR="$conv"
    export AICHAT_USAGE_ADDR="$usage" AICHAT_AGENT_ADDR="$agent"
    if [[ $svc == ai-agent ]]; then export AICHAT_HTTP_LISTEN="$(replica_http "$k")"; fi
    # Each secret only where it is needed: the signing key to user, the service token and
    # the provider key to ai-agent.
    [[ $svc == user ]] || unset AICHAT_JWT_SIGNING_KEY
    [[ $svc == ai-agent ]] || unset AICHAT_SERVICE_TOKEN OPENAI_API_KEY
    exec "${BIN[$svc]}" >>"$STATE/logs/$name.log" 2>&1
  ) &
  echo $! >"$(pidfile "$name")"
  wait_port "$port" "$START_TIMEOUT" || die "$name did not start; see $STATE/logs/$name.log"
  if [[ $svc == ai-agent && -n "$HTTP_LISTEN" ]]; then
    local http
    http=$(replica_http "$k")
    wait_port "${http##*:}" "$START_TIMEOUT" ||
      die "$name's HTTP API did not start on $http; see $STATE/logs/$name.log"
  fi
}

down() {
  local f
  # Every replica that has a pid file, however many this environment asks for.
  for svc in ai-agent usage conversation user fake-llm; do
    stop_one "$svc"
    for f in "$STATE/run/$svc"-[0-9]*.pid; do
      [[ -f "$f" ]] && stop_one "$(basename "$f" .pid)"
    done
  done
  rm -f "$STATE/run/llm"
  if [[ -f "$STATE/run/postgres.started" ]]; then
    pg_stop "$(pg_data_dir)"
    rm -f "$STATE/run/postgres.started"
  fi
  log "stopped"
}

status() {
  for svc in postgres fake-llm "${ORDER[@]}"; do
    local state="stopped" where=""
    case $svc in
      postgres)
        if [[ -e "$STATE/pg" ]] && as_postgres "$PG_BIN/pg_ctl" -D "$(pg_data_dir)" status >/dev/null 2>&1; then
          state=running
        fi
        where="127.0.0.1:$PG_PORT" ;;
      fake-llm)
        running fake-llm && state=running
        where="https://127.0.0.1:$FAKE_PORT/v1"
        if [[ -f "$STATE/run/llm" ]]; then
          where="$(cat "$STATE/run/llm")"
          [[ $state == running ]] || { svc=llm; state=external; }
        fi ;;
      *)
        status_replicas "$svc"
        continue ;;
    esac
    printf '  %-16s %-8s %s\n' "$svc" "$state" "$where"
  done
}

# One line per replica: those asked for, and any other still running from an earlier `up`.
status_replicas() {
  local svc=$1 k name state f
  local -a ks=()
  for ((k = 1; k <= REPLICAS[$svc]; k++)); do ks+=("$k"); done
  for f in "$STATE/run/$svc"-[0-9]*.pid; do
    [[ -f "$f" ]] || continue
    k=${f##*-}
    k=${k%.pid}
    ((k > REPLICAS[$svc])) && ks+=("$k")
  done
  for k in "${ks[@]}"; do
    name=$(replica_name "$svc" "$k")
    state=stopped
    running "$name" && state=running
    local where="127.0.0.1:$(replica_port "$svc" "$k") (metrics :$(replica_mport "$svc" "$k"))"
    if [[ $svc == ai-agent && -n "$HTTP_LISTEN" ]]; then
      where+=", OpenAI-compatible HTTP http://$(replica_http "$k")/v1"
    fi
    printf '  %-16s %-8s %s\n' "$name" "$state" "$where"
  done
}

# The environment the CLI needs when the ports are not the defaults.
cli_env() {
  local -A var=([user]=AICHAT_USER_ADDR [conversation]=AICHAT_CONVERSATION_ADDR
    [ai-agent]=AICHAT_AGENT_ADDR [usage]=AICHAT_USAGE_ADDR)
  local -A def=([user]=50051 [conversation]=50052 [ai-agent]=50053 [usage]=50054)
  for svc in "${ORDER[@]}"; do
    if [[ "${PORT[$svc]}" != "${def[$svc]}" || ${REPLICAS[$svc]} -gt 1 ]]; then
      echo "  export ${var[$svc]}=$(service_addr "$svc")"
    fi
  done
  echo "  export PATH=$BUILD/cli:\$PATH"
}

up() {
  local detach=${1:-}
  install_deps
  [[ -n "${AICHAT_NO_BUILD:-}" ]] || build "$BUILD"
  mkdir -p "$STATE/logs" "$STATE/run"
  chmod 700 "$STATE"
  check_ports
  ensure_keys
  start_postgres
  start_llm
  for svc in "${ORDER[@]}"; do start_service "$svc"; done
  cat >&2 <<MSG

aichat is running. Logs: $STATE/logs/<service>.log
$(status)

Try it (the CLI is $BUILD/cli/aichat):
$(cli_env)
  aichat register you@example.com "Your Name"   # then: aichat login you@example.com; aichat chat
OpenAI-compatible HTTP API${HTTP_LISTEN:+ (http://$HTTP_LISTEN/v1)}: \`aichat keys create NAME\`, then any
OpenAI SDK with that key as its API key and that base URL (README, "The OpenAI-compatible HTTP API").
First admin:
  DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/aichat_user \\
    $BUILD/services/user/aichat-user set-role you@example.com admin
MSG
  if [[ "$detach" != "--detach" ]]; then
    trap 'echo; down; exit 0' INT TERM
    log "Ctrl-C stops everything started here"
    while true; do sleep 1; done
  fi
}

case "${1:-up}" in
  up) up "${2:-}" ;;
  down | stop) down ;;
  status) status ;;
  *) die "usage: scripts/run.sh [up [--detach] | down | status]" ;;
esac
