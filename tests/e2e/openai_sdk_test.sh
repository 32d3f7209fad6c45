#!/usr/bin/env bash
# The OpenAI-compatible HTTP API end to end, with the official `openai` npm SDK as the client:
# scripts/run.sh brings the suite up (PostgreSQL, the TLS fake provider, the four services,
# ai-agent's HTTP listener) on free ports in a throwaway state directory; the CLI makes the
# accounts and API keys; openai_sdk_test.mjs drives the SDK (models, chat completions
# streaming and not, conversations, responses, every error class, the SDK's own retries) and
# checks answers against the fake provider and the usage ledger in PostgreSQL. Then, with curl
# and raw sockets: a stream read with `curl -N`, a client that leaves mid-stream (the turn is
# CANCELLED, its partial answer saved and charged), and slow or hostile requests.
# The SDK is installed with npm into $AICHAT_OPENAI_SDK_DIR (default /tmp/aichat-openai-sdk),
# once. Every wait polls with a deadline. Everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${AICHAT_BUILD_DIR:-$ROOT/build}"
CLI="$BUILD/cli/aichat"
RUN="$ROOT/scripts/run.sh"
SDK_DIR="${AICHAT_OPENAI_SDK_DIR:-/tmp/aichat-openai-sdk}"
SDK_VERSION="${AICHAT_OPENAI_SDK_VERSION:-6.49.0}"
# shellcheck source=../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for bin in "$CLI" "$BUILD/tests/fakes/aichat-fake-llm" "$BUILD/services/user/aichat-user" \
  "$BUILD/services/conversation/aichat-conversation" "$BUILD/services/usage/aichat-usage" \
  "$BUILD/services/ai-agent/aichat-agent"; do
  [[ -x "$bin" ]] || { echo "FAIL: $bin is not built"; exit 1; }
done
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "FAIL: node and npm are needed (apt-get install nodejs npm)"; exit 1; }

STEP=""
step() { STEP="$*"; echo "==> [${SECONDS}s] $*"; }
fail() { echo "FAIL ($STEP): $*" >&2; exit 1; }

step "the openai SDK ($SDK_VERSION) in $SDK_DIR"
if [[ ! -f "$SDK_DIR/node_modules/openai/package.json" ]] ||
  ! grep -q "\"version\": \"$SDK_VERSION\"" "$SDK_DIR/node_modules/openai/package.json"; then
  mkdir -p "$SDK_DIR"
  (cd "$SDK_DIR" && { [[ -f package.json ]] || npm init -y >/dev/null; } &&
    npm install --no-audit --no-fund "openai@$SDK_VERSION" >/dev/null 2>&1) ||
    fail "npm install openai@$SDK_VERSION failed"
fi

WORK=$(mktemp -d /tmp/aichat-sdk-e2e-XXXXXX)
chmod 755 "$WORK"
unset OPENAI_API_KEY OPENAI_BASE_URL SSL_CERT_FILE
export AICHAT_STATE_DIR="$WORK/state" AICHAT_NO_BUILD=1 AICHAT_BUILD_DIR="$BUILD"
read -r AICHAT_PG_PORT AICHAT_USER_PORT AICHAT_CONVERSATION_PORT AICHAT_AGENT_PORT \
  AICHAT_USAGE_PORT AICHAT_FAKE_LLM_PORT AICHAT_HTTP_PORT AICHAT_METRICS_PORT_BASE \
  < <(python3 "$ROOT/scripts/free_ports.py" 7 4)
export AICHAT_PG_PORT AICHAT_USER_PORT AICHAT_CONVERSATION_PORT AICHAT_AGENT_PORT \
  AICHAT_USAGE_PORT AICHAT_FAKE_LLM_PORT AICHAT_HTTP_PORT AICHAT_METRICS_PORT_BASE
[[ -n "$AICHAT_METRICS_PORT_BASE" ]] || fail "no free ports"
export AICHAT_USER_ADDR="127.0.0.1:$AICHAT_USER_PORT"
export AICHAT_CONVERSATION_ADDR="127.0.0.1:$AICHAT_CONVERSATION_PORT"
export AICHAT_AGENT_ADDR="127.0.0.1:$AICHAT_AGENT_PORT"
export AICHAT_USAGE_ADDR="127.0.0.1:$AICHAT_USAGE_PORT"
# Short listener timeouts so that the slow-client checks finish quickly.
export AICHAT_HTTP_READ_TIMEOUT=2s AICHAT_HTTP_IDLE_TIMEOUT=5s AICHAT_HTTP_MAX_BODY_BYTES=1048576
BASE="http://127.0.0.1:$AICHAT_HTTP_PORT/v1"

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    echo "---- logs (last lines) ----"
    for f in "$AICHAT_STATE_DIR"/logs/*.log; do
      [[ -e "$f" ]] || continue
      echo "== $f"
      tail -n 20 "$f" || true
    done
  fi
  "$RUN" down >/dev/null 2>&1 || true
  local data
  data=$(readlink -f "$AICHAT_STATE_DIR/pg" 2>/dev/null || true)
  [[ "$data" == /var/lib/aichat/* ]] && rm -rf "$(dirname "$data")"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "run.sh up --detach (fake provider, free ports, HTTP on $AICHAT_HTTP_PORT)"
"$RUN" up --detach >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "run.sh up failed"; }
grep -q "OpenAI-compatible HTTP http://127.0.0.1:$AICHAT_HTTP_PORT/v1" <<<"$("$RUN" status)" ||
  fail "run.sh status does not show the HTTP API"
ss -ltn "sport = :$AICHAT_HTTP_PORT" | grep -q "127.0.0.1:$AICHAT_HTTP_PORT" ||
  fail "the HTTP API is not on loopback only"

psql_q() { psql -h 127.0.0.1 -p "$AICHAT_PG_PORT" -U postgres -tAq -d "$1" -c "$2"; }
as() {
  local who=$1
  shift
  XDG_CONFIG_HOME="$WORK/$who" "$CLI" "$@"
}
# A CLI step, again while it fails (a loaded machine makes the CLI's deadlines tight).
again() {
  local i
  for i in 1 2 3 4; do
    "$@" && return 0
    sleep $i
  done
  return 1
}
user_id() { psql_q aichat_user "SELECT id FROM users WHERE email = '$1@example.com'"; }
register() {  # register WHO: an attempt that timed out may still have created the account
  local who=$1 i
  for i in 1 2 3 4; do
    as "$who" register "$who@example.com" "$who" <<<"$who's long password" >/dev/null 2>&1 || true
    [[ -n "$(user_id "$who")" ]] && return 0
    sleep $i
  done
  fail "cannot register $who"
}
login() { again as "$1" login "$1@example.com" <<<"$1's long password" >/dev/null; }
# The admin first: it sets the others' limits before their first login (a token carries its rpm).
register root
DATABASE_URL="postgresql://postgres@127.0.0.1:$AICHAT_PG_PORT/aichat_user" \
  "$BUILD/services/user/aichat-user" set-role root@example.com admin >/dev/null
login root || fail "root cannot log in"
# new_user NAME [RPM] — registers NAME@example.com, prints "id key".
new_user() {
  local who=$1 rpm=${2:-} id key
  register "$who"
  id=$(user_id "$who")
  [[ -z "$rpm" ]] || again as root users rate "$id" "$rpm" >/dev/null || fail "rate of $who"
  login "$who" || fail "$who cannot log in"
  key=$(again as "$who" --json keys create sdk |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') || fail "no key for $who"
  echo "$id $key"
}

step "accounts: alice and bob (1000 requests a minute); carol with 2 requests a minute; dave with a USD 0.001 budget"
read -r ALICE_ID ALICE_KEY < <(new_user alice 1000)
read -r BOB_ID BOB_KEY < <(new_user bob 1000)
read -r CAROL_ID CAROL_KEY < <(new_user carol 2)
read -r DAVE_ID DAVE_KEY < <(new_user dave)
again as root budget set "$DAVE_ID" 0.001 >/dev/null || fail "budget"
ALICE_TOKEN=$(sed -n 's/^access_token=//p' "$WORK/alice/aichat/credentials")
[[ -n "$ALICE_KEY" && -n "$BOB_KEY" && -n "$ALICE_TOKEN" ]] || fail "no keys"

step "the SDK: openai_sdk_test.mjs"
OPENAI_SDK_DIR="$SDK_DIR" AICHAT_BASE_URL="$BASE" ALICE_KEY="$ALICE_KEY" ALICE_TOKEN="$ALICE_TOKEN" BOB_KEY="$BOB_KEY" \
  CAROL_KEY="$CAROL_KEY" DAVE_KEY="$DAVE_KEY" FAKE_CA="$AICHAT_STATE_DIR/fake-llm-cert.pem" \
  FAKE_URL="https://127.0.0.1:$AICHAT_FAKE_LLM_PORT" PG_PORT="$AICHAT_PG_PORT" \
  METRICS_URL="http://127.0.0.1:$((AICHAT_METRICS_PORT_BASE + 2))/metrics" \
  node "$ROOT/tests/e2e/openai_sdk_test.mjs" ||
  fail "openai_sdk_test.mjs failed"

AUTH=(-H "Authorization: Bearer $ALICE_KEY" -H "content-type: application/json")
count_rows() {
  echo "$(psql_q aichat_agent "SELECT count(*) FROM ai_prompts"):$(psql_q aichat_conversation \
    "SELECT count(*) FROM conversations"):$(psql_q aichat_conversation "SELECT count(*) FROM messages")"
}

step "curl -N: a stream arrives event by event"
curl -sN --max-time 20 "$BASE/chat/completions" "${AUTH[@]}" \
  -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[fake:tokens=6 delay_ms=200]] one two three"}]}' |
  while IFS= read -r line; do
    if [[ -n "$line" ]]; then printf '%s %s\n' "$(date +%s.%N)" "${line:0:200}"; fi
  done >"$WORK/curl-stream.txt"
grep -q 'data: \[DONE\]' "$WORK/curl-stream.txt" || fail "no [DONE]: $(cat "$WORK/curl-stream.txt")"
python3 - "$WORK/curl-stream.txt" <<'PY' || fail "the stream came in one piece"
import sys
t = [float(l.split()[0]) for l in open(sys.argv[1]) if '"content":"' in l and 'role' not in l]
assert len(t) == 6, t
assert t[-1] - t[0] > 0.6, t  # six deltas 200 ms apart were written as they came
PY

step "a client that leaves mid-stream: the turn is CANCELLED, its partial answer saved and charged"
CONV=$(curl -s "$BASE/conversations" "${AUTH[@]}" -d '{"metadata":{"title":"leaver"}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
CONV_ID=${CONV#conv_}
curl -sN --max-time 1.5 "$BASE/chat/completions" "${AUTH[@]}" -H "x-aichat-conversation-id: $CONV" \
  -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"[[fake:tokens=40 delay_ms=100]] leaving early"}]}' \
  >"$WORK/leaver.txt" 2>/dev/null || true
grep -q '"content":"leaving ' "$WORK/leaver.txt" || fail "no delta before leaving: $(cat "$WORK/leaver.txt")"
deadline=$((SECONDS + 20))
until [[ "$(psql_q aichat_agent "SELECT status FROM ai_prompts WHERE conversation_id = $CONV_ID")" == CANCELLED ]]; do
  ((SECONDS < deadline)) || fail "the turn is $(psql_q aichat_agent "SELECT status FROM ai_prompts WHERE conversation_id = $CONV_ID"), not CANCELLED"
  sleep 0.1
done
PROMPT=$(psql_q aichat_agent "SELECT id FROM ai_prompts WHERE conversation_id = $CONV_ID")
PARTIAL=$(psql_q aichat_conversation "SELECT content FROM messages WHERE conversation_id = $CONV_ID AND role = 'assistant'")
WORDS=$(wc -w <<<"$PARTIAL")
((WORDS >= 1 && WORDS < 40)) || fail "partial answer not saved: '$PARTIAL'"
deadline=$((SECONDS + 20))
until [[ -n "$(psql_q aichat_usage "SELECT 1 FROM usage_logs WHERE prompt_id = $PROMPT")" ]]; do
  ((SECONDS < deadline)) || fail "the cancelled turn was not charged"
  sleep 0.1
done
read -r CTOK COUTCOME < <(psql_q aichat_usage \
  "SELECT completion_tokens, outcome FROM usage_logs WHERE prompt_id = $PROMPT" | tr '|' ' ')
((CTOK >= 1 && CTOK < 40 && COUTCOME == 3)) || fail "charge of the cancelled turn: $CTOK tokens, outcome $COUTCOME"
echo "    cancelled after $WORDS of 40 words; charged $CTOK completion tokens"

step "hostile requests: refused before anything is written"
BEFORE=$(count_rows)
code() { curl -s -o "$WORK/body" -w '%{http_code}' "$@"; }
# Larger than AICHAT_HTTP_MAX_BODY_BYTES (1 MiB here): 413 from the listener, body unread.
head -c 2000000 /dev/zero | tr '\0' 'a' | sed 's/^/{"model":"gpt-4o-mini","messages":[{"role":"user","content":"/; s/$/"}]}/' >"$WORK/huge.json"
[[ $(code "$BASE/chat/completions" "${AUTH[@]}" --data-binary @"$WORK/huge.json") == 413 ]] ||
  fail "a huge body was not refused with 413: $(head -c 300 "$WORK/body")"
python3 -c 'print("{\"model\":\"gpt-4o-mini\",\"messages\":" + "[" * 200 + "]" * 200 + "}")' >"$WORK/deep.json"
[[ $(code "$BASE/chat/completions" "${AUTH[@]}" --data-binary @"$WORK/deep.json") == 400 ]] ||
  fail "a deep body was not refused with 400"
grep -q 'deeper than' "$WORK/body" || fail "deep: $(cat "$WORK/body")"
printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"bad \xff\xfe bytes"}]}' >"$WORK/utf8.json"
[[ $(code "$BASE/chat/completions" "${AUTH[@]}" --data-binary @"$WORK/utf8.json") == 400 ]] ||
  fail "invalid UTF-8 was not refused with 400"
printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"lone \\ud800 surrogate"}]}' >"$WORK/surrogate.json"
[[ $(code "$BASE/chat/completions" "${AUTH[@]}" --data-binary @"$WORK/surrogate.json") == 400 ]] ||
  fail "a lone surrogate was not refused with 400"
printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a \\u0000 NUL"}]}' >"$WORK/nul.json"
[[ $(code "$BASE/chat/completions" "${AUTH[@]}" --data-binary @"$WORK/nul.json") == 400 ]] ||
  fail "an escaped NUL was not refused with 400"
grep -q '"param":"messages\[0\].content"' "$WORK/body" || fail "NUL: $(cat "$WORK/body")"
for bad in '{"model":5,"messages":[]}|model' '{"model":"gpt-4o-mini","messages":"hi"}|messages' \
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"max_tokens":"9"}|max_tokens' \
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"stream":"yes"}|stream' \
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":7}]}|messages[0].content'; do
  [[ $(code "$BASE/chat/completions" "${AUTH[@]}" -d "${bad%|*}") == 400 ]] || fail "not 400: ${bad%|*}"
  grep -qF "\"param\":\"${bad##*|}\"" "$WORK/body" || fail "${bad%|*}: $(cat "$WORK/body")"
done
[[ $(code "$BASE/responses" "${AUTH[@]}" -d '{"model":"gpt-4o-mini","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}') == 400 ]] ||
  fail "an image input was not refused"
grep -qF '"param":"input[0].content[0].type"' "$WORK/body" || fail "image: $(cat "$WORK/body")"
[[ $(code "$BASE/conversations" "${AUTH[@]}" -d '{"metadata":{"title":7}}') == 400 ]] ||
  fail "a wrong type in a conversation was not refused"
[[ "$(count_rows)" == "$BEFORE" ]] || fail "a refused request wrote something: $BEFORE -> $(count_rows)"

step "slow and stalled clients are cut off"
python3 - "$AICHAT_HTTP_PORT" <<'PY' || fail "slow clients"
import socket, sys, time
port = int(sys.argv[1])
def closes_within(payload, seconds):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(payload)
    s.settimeout(seconds)
    start, got = time.time(), b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        raise SystemExit("still open after %ss: %r" % (seconds, payload[:40]))
    return got, time.time() - start
# Headers that never end (read timeout 2 s): closed (the log line says 408).
got, took = closes_within(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", 6)
assert got == b"" and took < 5, (got[:80], took)
# A body that stops half way.
got, took = closes_within(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo", 6)
assert got == b"" and took < 5, (got[:80], took)
# An idle keep-alive connection (idle timeout 5 s) is closed without a word.
got, took = closes_within(b"", 9)
assert got == b"" and took >= 4, (got, took)
# Garbage is a 400.
got, took = closes_within(b"NOT HTTP AT ALL\r\n\r\n", 6)
assert got.startswith(b"HTTP/1.1 400"), got[:80]
PY

step "metrics: http_requests_total and http_request_duration_seconds by route"
METRICS=$(curl -s "http://127.0.0.1:$((AICHAT_METRICS_PORT_BASE + 2))/metrics")
grep -q 'http_requests_total{code="200",method="POST",route="/v1/chat/completions"}' <<<"$METRICS" ||
  fail "no http_requests_total for chat completions"
grep -q 'http_requests_total{code="429",method="POST",route="/v1/chat/completions"}' <<<"$METRICS" ||
  fail "no 429 counted"
grep -q 'http_request_duration_seconds_bucket{method="GET",route="/v1/conversations/{id}/items"' <<<"$METRICS" ||
  fail "no duration histogram by route template"
if grep -E '^http_requests_total\{[^}]*route="/v1/conversations/conv_' <<<"$METRICS"; then
  fail "a path (not its template) became a label"
fi
grep -q '"protocol":"http","method":"POST","route":"/v1/chat/completions","code":200' \
  "$AICHAT_STATE_DIR/logs/ai-agent.log" || fail "no request log line"
if grep -qE "$ALICE_KEY|$ALICE_TOKEN" "$AICHAT_STATE_DIR"/logs/*.log; then
  fail "a key or token reached a log"
fi

echo "PASS: OpenAI SDK end to end (${SECONDS}s)"
