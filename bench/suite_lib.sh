# Shared by bench/run.sh and bench/smoke.sh: bring the suite up on free ports with our own
# plain-HTTP fake provider in bench mode, and always take it down. Source it; do not run it.
# shellcheck shell=bash

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$BENCH_DIR/../scripts/lib.sh"
BUILD="${AICHAT_BUILD_DIR:-$AICHAT_ROOT/build}"
BENCH_BIN="$BUILD/bench/aichat-bench"
FAKE_BIN="$BUILD/tests/fakes/aichat-fake-llm"

# bench_ports: free ports for everything, exported for scripts/run.sh.
bench_ports() {
  export AICHAT_PG_PORT=$(free_port) AICHAT_USER_PORT=$(free_port)
  export AICHAT_CONVERSATION_PORT=$(free_port) AICHAT_AGENT_PORT=$(free_port)
  export AICHAT_USAGE_PORT=$(free_port) AICHAT_FAKE_LLM_PORT=$(free_port)
  export AICHAT_HTTP_PORT=$(free_port)  # ai-agent's OpenAI-compatible HTTP API
  # Four consecutive free metrics ports.
  local base
  for _ in $(seq 1 50); do
    base=$((20000 + RANDOM % 30000))
    if /usr/bin/python3 - "$base" <<'PY'; then break; fi
import socket, sys
b = int(sys.argv[1]); socks = []
try:
    for p in range(b, b + 4):
        s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
except OSError:
    sys.exit(1)
PY
  done
  export AICHAT_METRICS_PORT_BASE=$base
}

# fake_start ARGS... — (re)start the plain-HTTP fake provider on $AICHAT_FAKE_LLM_PORT.
fake_start() {
  fake_stop
  "$FAKE_BIN" --listen="127.0.0.1:$AICHAT_FAKE_LLM_PORT" --plain "$@" \
    >>"$AICHAT_STATE_DIR/fake-bench.log" 2>&1 &
  echo $! >"$AICHAT_STATE_DIR/fake-bench.pid"
  wait_port "$AICHAT_FAKE_LLM_PORT" 20 || die "the fake provider did not start"
}

fake_stop() {
  local f="$AICHAT_STATE_DIR/fake-bench.pid"
  [[ -f "$f" ]] || return 0
  local pid
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

# suite_up FAKE_ARGS... — PostgreSQL, the fake, the four services. Needs AICHAT_STATE_DIR.
suite_up() {
  mkdir -p "$AICHAT_STATE_DIR"
  fake_start "$@"
  # An API key in the environment makes run.sh use OPENAI_BASE_URL instead of its TLS fake.
  export OPENAI_API_KEY=bench-key OPENAI_BASE_URL="http://127.0.0.1:$AICHAT_FAKE_LLM_PORT/v1"
  # The bench measures the services, not the per-user append limiter.
  export AICHAT_APPEND_RATE=0
  AICHAT_NO_BUILD=1 "$AICHAT_ROOT/scripts/run.sh" up --detach
}

suite_down() {
  AICHAT_NO_BUILD=1 "$AICHAT_ROOT/scripts/run.sh" down || true
  fake_stop
}

# pid_of SERVICE — the pid run.sh recorded.
pid_of() { cat "$AICHAT_STATE_DIR/run/$1.pid"; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
