#!/usr/bin/env bash
# CI smoke of the load driver (correctness, not speed): brings the suite up on free ports
# with scripts/run.sh and a plain-HTTP fake provider, runs aichat-bench for a few seconds
# against SendMessage and StreamMessage, and fails unless every call succeeded and some
# did. Always tears the suite down. Registered in CTest as bench_smoke (label bench-smoke).
#   bench/smoke.sh [BUILD_DIR]
set -euo pipefail
export AICHAT_BUILD_DIR="${1:-${AICHAT_BUILD_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build}}"
source "$(dirname "$0")/suite_lib.sh"

[[ -x "$BENCH_BIN" ]] || die "no $BENCH_BIN (build the aichat-bench target)"
for svc in user/aichat-user conversation/aichat-conversation ai-agent/aichat-agent \
  usage/aichat-usage; do
  [[ -x "$BUILD/services/$svc" ]] || die "no $BUILD/services/$svc (build the services)"
done

export AICHAT_STATE_DIR
AICHAT_STATE_DIR=$(mktemp -d /tmp/aichat-smoke.XXXXXX)
cleanup() {
  suite_down >/dev/null 2>&1 || true
  # run.sh keeps the cluster under /var/lib/aichat/<hash> when root; remove it too.
  local pg
  pg=$(readlink -f "$AICHAT_STATE_DIR/pg" 2>/dev/null || true)
  [[ -n "$pg" && "$pg" == /var/lib/aichat/* ]] && rm -rf "$(dirname "$pg")"
  rm -rf "$AICHAT_STATE_DIR"
}
trap cleanup EXIT
bench_ports
suite_up --instant >"$AICHAT_STATE_DIR/up.log" 2>&1 || {
  cat "$AICHAT_STATE_DIR/up.log" >&2
  die "the suite did not start"
}

common=(--user_addr="127.0.0.1:$AICHAT_USER_PORT"
  --conversation_addr="127.0.0.1:$AICHAT_CONVERSATION_PORT"
  --agent_addr="127.0.0.1:$AICHAT_AGENT_PORT" --usage_addr="127.0.0.1:$AICHAT_USAGE_PORT"
  --keys_env="$AICHAT_STATE_DIR/keys.env" --concurrency=4 --duration=4 --warmup=1)
fail=0
for target in send stream; do
  out="$AICHAT_STATE_DIR/$target.json"
  "$BENCH_BIN" --target="$target" "${common[@]}" --json_out="$out"
  # ok > 0, errors == 0 (and for streams: deltas arrived).
  if ! /usr/bin/python3 - "$out" "$target" <<'PY'; then
import json, sys
r = json.load(open(sys.argv[1]))
problems = []
if r["ok"] <= 0: problems.append("no successful calls")
if r["errors"] != 0: problems.append(f"errors: {r['errors_by_code']}")
if r["throughput_per_s"] <= 0: problems.append("zero throughput")
if sys.argv[2] == "stream" and r["first_delta"]["n"] <= 0: problems.append("no deltas")
if problems:
    print(f"bench smoke {sys.argv[2]}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
    fail=1
  fi
done
((fail == 0)) || { tail -n 20 "$AICHAT_STATE_DIR"/logs/ai-agent.log >&2 || true; exit 1; }
log "bench smoke passed"
