#!/usr/bin/env bash
# Runs every benchmark scenario against a suite it starts on its own ports and state dir
# (scripts/run.sh + a plain-HTTP fake provider in bench mode), writes bench/results/*.json
# and regenerates the summary in bench/README.md. Always tears everything down.
#   bench/run.sh                 all scenarios
#   bench/run.sh overhead turns streams services portkey   a subset, in that order
#   bench/run.sh http            the OpenAI-compatible HTTP path beside the gRPC path (not
#                                part of the default set yet: its numbers are not final)
# Knobs (environment): BENCH_DURATION (s, default 15), BENCH_CONCURRENCY (saturation and
# gateway comparison, default 64), BENCH_STREAMS (10000), BENCH_STREAM_RAMP (s, 90),
# BENCH_SERVICE_ENV (extra service settings, e.g. "AICHAT_WORKERS=32").
set -euo pipefail
source "$(dirname "$0")/suite_lib.sh"

RESULTS="$BENCH_DIR/results"
mkdir -p "$RESULTS"
DUR="${BENCH_DURATION:-15}"
CONC="${BENCH_CONCURRENCY:-64}"
STREAMS="${BENCH_STREAMS:-10000}"
RAMP="${BENCH_STREAM_RAMP:-90}"
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
PORTKEY_DIR="${BENCH_PORTKEY_DIR:-/tmp/aichat-bench-portkey}"
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(overhead turns streams services portkey failover)

for b in "$BENCH_BIN" "$FAKE_BIN" "$BUILD/services/ai-agent/aichat-agent"; do
  [[ -x "$b" ]] || die "no $b: build first (cmake --build build)"
done

# 10,000 streams: a socket each on the driver->agent side (multiplexed, so few) and the
# agent->provider side (one each), plus the fake's side. Raise the limit for all children.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"

export AICHAT_STATE_DIR="${BENCH_STATE_DIR:-/tmp/aichat-bench-run}"
PORTKEY_PID=""
cleanup() {
  [[ -n "$PORTKEY_PID" ]] && kill "$PORTKEY_PID" 2>/dev/null || true
  suite_down >/dev/null 2>&1 || true
}
trap cleanup EXIT
if [[ -n "${BENCH_SERVICE_ENV:-}" ]]; then
  for kv in $BENCH_SERVICE_ENV; do export "${kv?}"; done
fi
bench_ports
suite_up --instant >"$RESULTS/.suite-up.log" 2>&1 || { cat "$RESULTS/.suite-up.log"; die "suite did not start"; }

DRV=("$BENCH_BIN" --user_addr="127.0.0.1:$AICHAT_USER_PORT"
  --conversation_addr="127.0.0.1:$AICHAT_CONVERSATION_PORT"
  --agent_addr="127.0.0.1:$AICHAT_AGENT_PORT" --usage_addr="127.0.0.1:$AICHAT_USAGE_PORT"
  --keys_env="$AICHAT_STATE_DIR/keys.env")
# Contexts of a known, bounded size: each conversation takes TURNS_PER_CONV turns.
TURNS_PER_CONV="${BENCH_TURNS_PER_CONVERSATION:-4}"
BOUNDED=(--turns_per_conversation="$TURNS_PER_CONV")
# CPU over each measured window, per process: the four services, PostgreSQL (the
# postmaster and every backend) and the fake provider; the driver adds its own.
cpu_spec() {
  local pm
  pm=$(head -1 "$(readlink -f "$AICHAT_STATE_DIR/pg")/postmaster.pid")
  echo "agent:$(pid_of ai-agent),conversation:$(pid_of conversation),usage:$(pid_of usage),user:$(pid_of user),postgres:${pm}+,provider:$(cat "$AICHAT_STATE_DIR/fake-bench.pid")"
}
FAKE_URL="http://127.0.0.1:$AICHAT_FAKE_LLM_PORT/v1/chat/completions"
AGENT_METRICS="http://127.0.0.1:$((AICHAT_METRICS_PORT_BASE + 2))/metrics"
psql_q() { as_postgres psql -h 127.0.0.1 -p "$AICHAT_PG_PORT" -U postgres -tAq "$@"; }
load_note() { echo "{\"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"at\": \"$(date -u +%FT%TZ)\"}"; }

# ---------------------------------------------------------------- agent overhead
overhead() {
  log "scenario: agent overhead (instant provider, 1 caller) and the disk's own limits"
  fake_start --instant
  # The limits first, in the same run: one 8 kB fdatasync, and one-row commits.
  local pgdata
  pgdata=$(readlink -f "$AICHAT_STATE_DIR/pg")
  /usr/lib/postgresql/15/bin/pg_test_fsync -s 2 -f "$pgdata/bench_fsync.tmp" \
    >"$RESULTS/.pg_test_fsync.txt" 2>&1 || true
  rm -f "$pgdata/bench_fsync.tmp"
  "${DRV[@]}" --target=http --http_url="$FAKE_URL" --concurrency=1 --duration="$DUR" \
    --warmup=2 --label="provider direct" --json_out="$RESULTS/overhead_direct.json"
  curl -s "$AGENT_METRICS" >"$RESULTS/.metrics-before.txt"
  "${DRV[@]}" --target=stream --concurrency=1 --duration="$DUR" --warmup=2 "${BOUNDED[@]}" \
    --conversations=4000 --cpu="$(cpu_spec)" \
    --label="StreamMessage via aichat" --json_out="$RESULTS/overhead_stream.json"
  "${DRV[@]}" --target=send --concurrency=1 --duration="$DUR" --warmup=2 "${BOUNDED[@]}" \
    --conversations=4000 --cpu="$(cpu_spec)" \
    --label="SendMessage via aichat" --json_out="$RESULTS/overhead_agent.json"
  curl -s "$AGENT_METRICS" >"$RESULTS/.metrics-after.txt"
  /usr/bin/python3 "$BENCH_DIR/histogram_delta.py" aichat_agent_overhead_seconds \
    "$RESULTS/.metrics-before.txt" "$RESULTS/.metrics-after.txt" >"$RESULTS/overhead_metric.json"
  /usr/bin/python3 - "$RESULTS/.pg_test_fsync.txt" >"$RESULTS/overhead_fsync.json" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
# "one 8kB write": fdatasync line of the first "Compare file sync methods using one 8kB write".
m = re.search(r"one 8kB write.*?fdatasync\s+([\d.]+) ops/sec\s+([\d.]+) usecs/op", text, re.S)
print(json.dumps({"fdatasync_8kb_ops_per_s": float(m.group(1)) if m else 0,
                  "fdatasync_8kb_ms": float(m.group(2)) / 1000 if m else 0}, indent=2))
PY
  load_note >"$RESULTS/overhead_load.json"
}

# ---------------------------------------------------------------- persisted turns/s
commits() {
  psql_q -c "SELECT coalesce(sum(xact_commit),0) FROM pg_stat_database
             WHERE datname IN ('aichat_conversation','aichat_agent','aichat_usage','aichat_user')"
}
# Transaction ids handed out so far: one per transaction that wrote (read-only ones
# take none), cluster-wide; reading it takes none either.
xids() { psql_q -c "SELECT txid_snapshot_xmax(txid_current_snapshot())"; }
turns() {
  log "scenario: fully persisted turns/s at saturation ($CONC callers) and the pgbench ceiling"
  fake_start --instant
  local prompts0 prompts1 c0 c1
  "${DRV[@]}" --target=send --concurrency="$CONC" --duration=3 --warmup=1 --quiet  # warm pools
  sleep 12  # idle backends flush their statistics after 10 s
  prompts0=$(psql_q -d aichat_agent -c "SELECT count(*) FROM ai_prompts")
  c0=$(commits)
  x0=$(xids)
  "${DRV[@]}" --target=send --concurrency="$CONC" --duration="$DUR" --warmup=3 "${BOUNDED[@]}" \
    --conversations=$((CONC * 100)) --cpu="$(cpu_spec)" \
    --label="SendMessage, $CONC callers" --json_out="$RESULTS/turns.json"
  # Let the outbox deliver every usage event, then let the statistics flush.
  for _ in $(seq 1 30); do
    [[ $(psql_q -d aichat_agent -c "SELECT count(*) FROM usage_outbox") == 0 ]] && break
    sleep 1
  done
  sleep 12
  prompts1=$(psql_q -d aichat_agent -c "SELECT count(*) FROM ai_prompts")
  c1=$(commits)
  x1=$(xids)
  psql_q -c "DROP DATABASE IF EXISTS bench_pg" -c "CREATE DATABASE bench_pg"
  psql_q -d bench_pg -c "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, user_id bigint,
                         body text, created_at timestamptz NOT NULL DEFAULT now())"
  echo "INSERT INTO bench_insert (user_id, body) VALUES (1, 'hello from pgbench');" \
    >"$AICHAT_STATE_DIR/insert.sql"
  chmod 644 "$AICHAT_STATE_DIR/insert.sql"
  cp "$AICHAT_STATE_DIR/insert.sql" /tmp/aichat-bench-insert.sql
  as_postgres "$PGBENCH" -h 127.0.0.1 -p "$AICHAT_PG_PORT" -U postgres -n -c "$CONC" -j 2 \
    -T "$DUR" -f /tmp/aichat-bench-insert.sql bench_pg >"$RESULTS/.pgbench.txt" 2>&1
  rm -f /tmp/aichat-bench-insert.sql
  local tps
  tps=$(awk '/^tps = / {print $3}' "$RESULTS/.pgbench.txt" | tail -1)
  # The driver's own setup writes too: one Register and one CreateConversation each.
  local setup_writes=$((CONC * 100 + 1))
  /usr/bin/python3 - "$prompts0" "$prompts1" "$c0" "$c1" "$tps" "$CONC" "$x0" "$x1" \
    "$setup_writes" >"$RESULTS/turns_commits.json" <<'PY'
import json, sys
p0, p1, c0, c1 = (int(x) for x in sys.argv[1:5])
tps, conc = float(sys.argv[5] or 0), int(sys.argv[6])
x0, x1, setup = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
turns = p1 - p0
per = (c1 - c0 - setup) / turns if turns else 0
writes = (x1 - x0 - setup) / turns if turns else 0
print(json.dumps({"turns": turns, "xact_commits": c1 - c0 - setup, "commits_per_turn": round(per, 2),
                  "writing_transactions_per_turn": round(writes, 2),
                  "pgbench_single_insert_tps": tps, "pgbench_clients": conc,
                  "ceiling_turns_per_s": round(tps / per, 1) if per else 0}, indent=2))
PY
  load_note >"$RESULTS/turns_load.json"
}

# ---------------------------------------------------------------- 10,000 open streams
streams() {
  log "scenario: $STREAMS concurrent streams, provider at one delta per second"
  # Long answers: every stream stays open through the measured window.
  local tokens=$((RAMP + 35))
  fake_start --tokens_per_second=1 --answer_tokens="$tokens" --split=none
  "${DRV[@]}" --target=send --concurrency=1 --duration=1 --warmup=0 --quiet \
    --content="[[fake:tokens=1]] warm up" || true
  local pid rss0 rss1 fpid
  pid=$(pid_of ai-agent)
  sleep 1
  rss0=$(rss_kb "$pid")
  "${DRV[@]}" --target=stream --concurrency="$STREAMS" --ramp="$RAMP" --warmup=$((RAMP + 5)) \
    --duration=20 --deadline=$((tokens + RAMP + 120)) --conversations="$STREAMS" \
    --cpu="$(cpu_spec)" \
    --label="$STREAMS streams, 1 delta/s" --json_out="$RESULTS/streams.json" &
  local drv=$!
  # Sample the agent's RSS once every stream is open (the driver first creates the
  # conversations, then ramps the streams up over $RAMP s).
  local open=0 deadline=$((SECONDS + RAMP + 240))
  while ((SECONDS < deadline)) && kill -0 "$drv" 2>/dev/null; do
    open=$(curl -s "$AGENT_METRICS" | awk '/^aichat_active_streams/ {print int($2)}' | head -1)
    ((${open:-0} >= STREAMS * 99 / 100)) && break
    sleep 2
  done
  sleep 5
  rss1=$(rss_kb "$pid")
  open=$(curl -s "$AGENT_METRICS" | awk '/^aichat_active_streams/ {print int($2)}' | head -1)
  log "agent RSS ${rss0} kB -> ${rss1} kB with ${open} streams open"
  wait "$drv"
  /usr/bin/python3 - "$rss0" "$rss1" "$STREAMS" "${open:-0}" >"$RESULTS/streams_memory.json" <<'PY'
import json, sys
r0, r1, n, active = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print(json.dumps({"agent_rss_before_kb": r0, "agent_rss_open_kb": r1, "streams": n,
                  "active_streams_metric": active,
                  "kb_per_stream": round((r1 - r0) / (active or n), 2)}, indent=2))
PY
  load_note >"$RESULTS/streams_load.json"
  fake_start --instant
}

# ---------------------------------------------------------------- failover
failover() {
  log "scenario: failover between two deployments, one provider killed under load"
  fake_start --instant
  local port2 pid2
  port2=$(free_port)
  "$FAKE_BIN" --listen="127.0.0.1:$port2" --plain --instant >>"$AICHAT_STATE_DIR/fake-two.log" 2>&1 &
  pid2=$!
  wait_port "$port2" 20 || die "the second provider did not start"
  # The default model on two deployments (the agent's model cache refreshes every 2 s).
  psql_q -d aichat_agent -c "UPDATE ai_model_configs SET deployments = jsonb_build_array(
      jsonb_build_object('name', 'one', 'base_url', 'http://127.0.0.1:$AICHAT_FAKE_LLM_PORT/v1'),
      jsonb_build_object('name', 'two', 'base_url', 'http://127.0.0.1:$port2/v1'))
    WHERE is_default" >/dev/null
  sleep 3
  "${DRV[@]}" --target=stream --concurrency=16 --duration=20 --warmup=2 "${BOUNDED[@]}" \
    --conversations=4000 --label="streams over two deployments, one killed" \
    --json_out="$RESULTS/failover.json" &
  local drv=$!
  # Kill it once it has taken its share of a few hundred turns.
  for _ in $(seq 1 600); do
    curl -s "$AGENT_METRICS" | awk '/^aichat_llm_deployment_requests_total\{deployment="two",.*result="ok"/ \
      {if ($2 >= 300) found=1} END {exit !found}' && break
    sleep 0.05
  done
  curl -s "$AGENT_METRICS" | grep '^aichat_llm_deployment_requests_total' \
    >"$RESULTS/.failover-before.txt" || true
  kill -9 "$pid2"
  local t_kill t_open=""
  t_kill=$(date +%s.%N)
  # Until this replica's circuit for "two" is open: no turn is sent there any more.
  for _ in $(seq 1 300); do
    if curl -s "$AGENT_METRICS" |
      grep -q 'aichat_llm_deployment_circuit_state{deployment="two",model="[^"]*"} 2'; then
      t_open=$(date +%s.%N)
      break
    fi
    sleep 0.05
  done
  wait "$drv" || true
  curl -s "$AGENT_METRICS" | grep '^aichat_llm_deployment_requests_total' \
    >"$RESULTS/.failover-metrics.txt" || true
  psql_q -d aichat_agent -c "UPDATE ai_model_configs SET deployments = '[]' WHERE is_default" \
    >/dev/null
  /usr/bin/python3 - "$t_kill" "${t_open:-0}" "$RESULTS/.failover-metrics.txt" \
    "$RESULTS/.failover-before.txt" >"$RESULTS/failover_result.json" <<'PY'
import json, re, sys
t_kill, t_open = float(sys.argv[1]), float(sys.argv[2])
def calls(path):
    by = {}
    for line in open(path):
        m = re.match(r'aichat_llm_deployment_requests_total\{(.*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("deployment") not in ("one", "two"):
                continue  # the model's single deployment of the scenarios before
            by["%s/%s" % (labels.get("deployment"), labels.get("result"))] = float(m.group(2))
    return by
print(json.dumps({"seconds_until_circuit_open": round(t_open - t_kill, 3) if t_open else None,
                  "provider_calls_before_the_kill": calls(sys.argv[4]),
                  "provider_calls_by_deployment_and_result": calls(sys.argv[3])}, indent=2))
PY
  load_note >"$RESULTS/failover_load.json"
}

# ---------------------------------------------------------------- per-service RPCs
services() {
  log "scenario: per-service RPC throughput (32 callers each)"
  for t in getme append list record; do
    "${DRV[@]}" --target="$t" --concurrency=32 --duration="$DUR" --warmup=2 \
      --json_out="$RESULTS/service_$t.json"
  done
  load_note >"$RESULTS/services_load.json"
}

# ---------------------------------------------------------------- HTTP path beside gRPC
# The same turn through the gRPC StreamMessage path and through the OpenAI-compatible HTTP
# API, against the same instant provider, at 1 and $CONC callers: streamed chat completions
# bound to conversations (the same work as StreamMessage: context read, both messages saved,
# bounded contexts) and stateless ones (no conversation service at all), each request with its
# user's token. The provider straight is the floor; overhead = path p50 - provider p50.
http_path() {
  log "scenario: the OpenAI-compatible HTTP path beside the gRPC path (1 and $CONC callers)"
  fake_start --instant
  local url="http://127.0.0.1:$AICHAT_HTTP_PORT/v1/chat/completions" c
  for c in 1 "$CONC"; do
    "${DRV[@]}" --target=http --http_url="$FAKE_URL" --concurrency="$c" --duration="$DUR" \
      --warmup=2 --label="provider direct" --json_out="$RESULTS/http_direct_c$c.json"
    "${DRV[@]}" --target=stream --concurrency="$c" --duration="$DUR" --warmup=3 "${BOUNDED[@]}" \
      --conversations=$((c * 100 + 1000)) --cpu="$(cpu_spec)" \
      --label="gRPC StreamMessage" --json_out="$RESULTS/http_grpc_c$c.json"
    "${DRV[@]}" --target=http --http_aichat=bound --http_url="$url" --concurrency="$c" \
      --duration="$DUR" --warmup=3 "${BOUNDED[@]}" --conversations=$((c * 100 + 1000)) \
      --cpu="$(cpu_spec)" --label="HTTP chat completion in a conversation" \
      --json_out="$RESULTS/http_bound_c$c.json"
    "${DRV[@]}" --target=http --http_aichat=stateless --http_url="$url" --concurrency="$c" \
      --duration="$DUR" --warmup=3 --users="$c" --cpu="$(cpu_spec)" \
      --label="HTTP chat completion, stateless" --json_out="$RESULTS/http_stateless_c$c.json"
  done
  load_note >"$RESULTS/http_load.json"
  /usr/bin/python3 - "$RESULTS" 1 "$CONC" <<'PY'
import json, os, sys
res, counts = sys.argv[1], sys.argv[2:]
print("\n| callers | path | calls/s | p50 ms | p99 ms | first byte p50 ms | overhead p50 ms | agent CPU ms/call | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for c in counts:
    runs = [json.load(open(os.path.join(res, f"http_{k}_c{c}.json")))
            for k in ("direct", "grpc", "bound", "stateless")]
    floor = runs[0]["latency"]["p50_ms"]
    for r in runs:
        ok = max(r["ok"], 1)
        cpu = r.get("cpu_ms", {}).get("agent")
        over = "–" if r is runs[0] else "%.2f" % (r["latency"]["p50_ms"] - floor)
        print("| %s | %s | %.0f | %.2f | %.2f | %.2f | %s | %s | %d |" % (
            c, r["label"], r["throughput_per_s"], r["latency"]["p50_ms"], r["latency"]["p99_ms"],
            r["first_delta"]["p50_ms"], over, "%.2f" % (cpu / ok) if cpu is not None else "–",
            r["errors"]))
PY
}

# ---------------------------------------------------------------- Portkey side by side
portkey() {
  log "scenario: side by side with @portkey-ai/gateway 1.15.2 ($CONC callers)"
  fake_start --instant
  if [[ ! -f "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js" ]]; then
    mkdir -p "$PORTKEY_DIR"
    (cd "$PORTKEY_DIR" && npm init -y >/dev/null && npm install --no-audit --no-fund \
      @portkey-ai/gateway@1.15.2 >/dev/null 2>&1) || die "npm install @portkey-ai/gateway failed"
  fi
  local port
  port=$(free_port)
  node --import "$BENCH_DIR/portkey/loopback.mjs" \
    "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js" --port="$port" \
    --headless >"$AICHAT_STATE_DIR/portkey.log" 2>&1 &
  PORTKEY_PID=$!
  wait_port "$port" 30 || die "Portkey did not start"
  ss -ltn "sport = :$port" | grep -q "127.0.0.1:$port" || die "Portkey is not on loopback only"
  local pk=(--http_header="x-portkey-provider:openai"
    --http_header="x-portkey-custom-host:http://127.0.0.1:$AICHAT_FAKE_LLM_PORT/v1"
    --http_header="authorization:Bearer bench-key")
  for c in 1 "$CONC"; do
    "${DRV[@]}" --target=http --http_url="$FAKE_URL" --concurrency="$c" --duration="$DUR" \
      --warmup=2 --label="provider direct, $c" --json_out="$RESULTS/gateway_direct_c$c.json"
    "${DRV[@]}" --target=http --http_url="http://127.0.0.1:$port/v1/chat/completions" "${pk[@]}" \
      --concurrency="$c" --duration="$DUR" --warmup=3 --label="Portkey, $c" \
      --json_out="$RESULTS/gateway_portkey_c$c.json"
    "${DRV[@]}" --target=stream --concurrency="$c" --duration="$DUR" --warmup=3 "${BOUNDED[@]}" \
      --conversations=$((c * 100 + 1000)) --cpu="$(cpu_spec)" \
      --label="aichat StreamMessage, $c" --json_out="$RESULTS/gateway_aichat_c$c.json"
  done
  kill "$PORTKEY_PID" 2>/dev/null || true
  wait "$PORTKEY_PID" 2>/dev/null || true
  PORTKEY_PID=""
  load_note >"$RESULTS/portkey_load.json"
}

for s in "${SCENARIOS[@]}"; do
  case $s in
    overhead | turns | streams | services | portkey | failover) "$s" ;;
    http) http_path ;;
    *) die "unknown scenario $s" ;;
  esac
done
/usr/bin/python3 "$BENCH_DIR/summarize.py" "$RESULTS" "$BENCH_DIR/README.md" "$CONC"
log "results in $RESULTS; summary in bench/README.md"
