#!/usr/bin/env bash
# The product story, end to end, with the real binaries: scripts/run.sh brings the suite up
# (PostgreSQL, the TLS fake provider, the four services) on free ports in a throwaway state
# directory, and the `aichat` CLI drives it the way a user does:
#   two users register and log in; Alice chats with history (the provider sees the earlier
#   turns), regenerates, chats interactively in a pseudo-terminal (tmux) and cancels an answer
#   with Ctrl-C; usage and budget views add up; Bob, made admin with `aichat-user set-role`,
#   adds a model (and one with two deployments and a fallback, read back with their state)
#   and sets Alice's budget, after which her next turn is refused (exit code 5)
#   without reaching the provider; Bob cannot see Alice's conversation; `down` stops
#   everything and a second `up` finds the same data.
# Every wait polls with a deadline. Everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${AICHAT_BUILD_DIR:-$ROOT/build}"
CLI="$BUILD/cli/aichat"
RUN="$ROOT/scripts/run.sh"
# shellcheck source=../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for bin in "$CLI" "$BUILD/tests/fakes/aichat-fake-llm" "$BUILD/services/user/aichat-user" \
  "$BUILD/services/conversation/aichat-conversation" "$BUILD/services/usage/aichat-usage" \
  "$BUILD/services/ai-agent/aichat-agent"; do
  [[ -x "$bin" ]] || { echo "FAIL: $bin is not built"; exit 1; }
done
command -v tmux >/dev/null || { echo "FAIL: tmux is not installed (scripts/lib.sh installs it)"; exit 1; }

WORK=$(mktemp -d /tmp/aichat-e2e-XXXXXX)
chmod 755 "$WORK"
TMUX_SOCK="aichat-e2e-$$"
unset OPENAI_API_KEY OPENAI_BASE_URL SSL_CERT_FILE TMUX
export AICHAT_STATE_DIR="$WORK/state" AICHAT_NO_BUILD=1 AICHAT_BUILD_DIR="$BUILD"

# Free ports, chosen in one go: six single ports, then four consecutive ones for metrics.
read -r AICHAT_PG_PORT AICHAT_USER_PORT AICHAT_CONVERSATION_PORT AICHAT_AGENT_PORT \
  AICHAT_USAGE_PORT AICHAT_FAKE_LLM_PORT AICHAT_METRICS_PORT_BASE < <(python3 "$ROOT/scripts/free_ports.py" 6 4)
export AICHAT_PG_PORT AICHAT_USER_PORT AICHAT_CONVERSATION_PORT AICHAT_AGENT_PORT \
  AICHAT_USAGE_PORT AICHAT_FAKE_LLM_PORT AICHAT_METRICS_PORT_BASE
[[ -n "$AICHAT_METRICS_PORT_BASE" ]] || { echo "FAIL: no free ports"; exit 1; }
# The CLI finds the services through these.
export AICHAT_USER_ADDR="127.0.0.1:$AICHAT_USER_PORT"
export AICHAT_CONVERSATION_ADDR="127.0.0.1:$AICHAT_CONVERSATION_PORT"
export AICHAT_AGENT_ADDR="127.0.0.1:$AICHAT_AGENT_PORT"
export AICHAT_USAGE_ADDR="127.0.0.1:$AICHAT_USAGE_PORT"

cleanup() {
  local rc=$?
  tmux -L "$TMUX_SOCK" kill-server 2>/dev/null || true
  if ((rc != 0)); then
    echo "---- logs (last lines) ----"
    for f in "$AICHAT_STATE_DIR"/logs/*.log; do
      [[ -e "$f" ]] || continue
      echo "== $f"
      tail -n 15 "$f" || true
    done
  fi
  "$RUN" down >/dev/null 2>&1 || true
  # As root run.sh keeps the cluster outside the state directory (see pg_data_dir).
  local data
  data=$(readlink -f "$AICHAT_STATE_DIR/pg" 2>/dev/null || true)
  [[ "$data" == /var/lib/aichat/* ]] && rm -rf "$(dirname "$data")"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STEP=""
step() { STEP="$*"; echo "==> [${SECONDS}s] $*"; }
fail() { echo "FAIL ($STEP): $*" >&2; exit 1; }

# as USER aichat-args... — the CLI with USER's own config dir (login).
as() {
  local who=$1
  shift
  XDG_CONFIG_HOME="$WORK/$who" "$CLI" "$@"
}
# expect_rc CODE cmd... — run, capture stdout/stderr in $OUT/$ERR, check the exit code.
expect_rc() {
  local want=$1
  shift
  local rc=0
  "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
  OUT=$(cat "$WORK/out")
  ERR=$(cat "$WORK/err")
  ((rc == want)) || fail "$* exited $rc, expected $want; stdout: $OUT; stderr: $ERR"
}
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
fake() {
  curl -sf --cacert "$AICHAT_STATE_DIR/fake-llm-cert.pem" "https://127.0.0.1:$AICHAT_FAKE_LLM_PORT$1"
}
fake_requests() { fake /_fake/requests | json 'len(d["requests"])'; }
# The messages of the last completion request the fake provider received, as JSON.
last_upstream_messages() {
  fake /_fake/requests | python3 -c '
import json, sys
reqs = [r for r in json.load(sys.stdin)["requests"] if r["path"].endswith("/chat/completions")]
print(json.dumps(json.loads(reqs[-1]["body"])["messages"]))'
}
# poll SECONDS cmd... — until cmd succeeds.
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

step "run.sh up --detach (fake provider, free ports, throwaway state)"
"$RUN" up --detach >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "run.sh up failed"; }
grep -q "FAKE provider" "$WORK/up.log" || fail "run.sh did not announce the fake provider"
STATUS=$("$RUN" status)
for svc in postgres user conversation usage ai-agent fake-llm; do
  grep -qE "^ +$svc +running" <<<"$STATUS" || fail "$svc is not running: $STATUS"
done
[[ $(stat -c %a "$AICHAT_STATE_DIR/keys.env") == 600 ]] || fail "keys.env is not mode 0600"

step "register and log in two users"
expect_rc 0 as alice register alice@example.com "Alice" <<<"alice's long password"
expect_rc 0 as alice login alice@example.com <<<"alice's long password"
[[ $(stat -c %a "$WORK/alice/aichat/credentials") == 600 ]] || fail "credentials not 0600"
ALICE_ID=$(as alice --json whoami | json 'd["id"]')
expect_rc 0 as bob register bob@example.com "Bob" <<<"bob's long password"
expect_rc 0 as bob login bob@example.com <<<"bob's long password"
expect_rc 3 as bob login bob@example.com <<<"not bob's password"
expect_rc 0 as bob login bob@example.com <<<"bob's long password"

step "models"
expect_rc 0 as alice models
grep -q "gpt-4o-mini" <<<"$OUT" || fail "models does not list gpt-4o-mini: $OUT"

step "send: a first turn in a new conversation"
expect_rc 0 as alice --json send "the first question alpha"
CONV=$(json 'd["conversation_id"]' <<<"$OUT")
FIRST_ANSWER=$(json 'd["turn"]["text"]' <<<"$OUT")
[[ "$FIRST_ANSWER" == "the first question alpha the first question alpha" ]] ||
  fail "unexpected answer: $FIRST_ANSWER"
# cost_nanos = (prompt * 150000 + completion * 600000) / 1000, rounded half up (gpt-4o-mini).
python3 - "$OUT" <<'PY' || fail "cost is not the exact price arithmetic: $OUT"
import json, sys
t = json.loads(sys.argv[1])["turn"]
u = t["usage"]
p, c = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
want = (p * 150000 + c * 600000 + 500) // 1000
sys.exit(0 if int(t["cost_nanos"]) == want and p > 0 and c == 8 else 1)
PY
expect_rc 0 as alice send --conversation "$CONV" "plain text mode"
[[ "$OUT" == "plain text mode plain text mode plain text" ]] ||
  fail "text mode prints the answer only: $OUT"
grep -qE '^\[conversation [0-9]+\] \[gpt-4o-mini · [0-9]+ tokens in, 8 out · \$0\.[0-9]{9}\]$' <<<"$ERR" ||
  fail "footer: $ERR"

step "history: the second turn's context holds the first"
expect_rc 0 as alice send --conversation "$CONV" <<<"second question beta"
python3 - "$(last_upstream_messages)" "$FIRST_ANSWER" <<'PY' || fail "context: $(last_upstream_messages)"
import json, sys
msgs, first_answer = json.loads(sys.argv[1]), sys.argv[2]
pairs = [(m["role"], m["content"].strip()) for m in msgs]
assert ("user", "the first question alpha") in pairs, pairs
assert ("assistant", first_answer) in pairs, pairs
assert pairs[-1] == ("user", "second question beta"), pairs
PY

step "regen: the last message answered again, the old answer replaced"
BEFORE=$(fake_requests)
expect_rc 0 as alice regen "$CONV"
[[ "$OUT" == "second question beta second question beta second question" ]] ||
  fail "regen answer: $OUT"
(($(fake_requests) == BEFORE + 1)) || fail "regen did not make exactly one upstream call"
python3 - "$(last_upstream_messages)" <<'PY' || fail "regen context: $(last_upstream_messages)"
import json, sys
pairs = [(m["role"], m["content"].strip()) for m in json.loads(sys.argv[1])]
assert pairs[-1] == ("user", "second question beta"), pairs
PY
expect_rc 0 as alice --json conversations show "$CONV"
python3 - "$OUT" <<'PY' || fail "messages after regen: $OUT"
import json, sys
docs = sys.argv[1].strip().split("\n")
msgs = json.loads(docs[1])["messages"]
asst = [m for m in msgs if m["role"] == "MESSAGE_ROLE_ASSISTANT"]
assert len([m for m in asst if m.get("superseded")]) == 1, asst
assert not asst[-1].get("superseded"), asst
PY

step "chat: interactive, streamed, Ctrl-C cancels an answer, /quit leaves"
pane() { tmux -L "$TMUX_SOCK" capture-pane -p -J -S -500 -t chat; }
# (Through a variable: `grep -q` closing a pipe early would fail the pipeline under pipefail.)
pane_has() { local p; p=$(pane); grep -qF -- "$1" <<<"$p"; }
pane_count() { local p; p=$(pane); grep -cF -- "$1" <<<"$p" || true; }
tmux -L "$TMUX_SOCK" -f /dev/null new-session -d -s chat -x 200 -y 60 \
  "env XDG_CONFIG_HOME='$WORK/alice' '$CLI' chat $CONV; echo \$? >'$WORK/chat.rc'; sleep 600"
poll 15 pane_has "you> " || fail "no prompt: $(pane)"
tmux -L "$TMUX_SOCK" send-keys -t chat "third question gamma" Enter
poll 20 pane_has "third question gamma third question gamma" || fail "no answer: $(pane)"
poll 20 pane_has "· \$0." || fail "no tokens/cost footer: $(pane)"
BEFORE=$(fake /_fake/stats | json 'd["disconnects_mid_stream"]')
# 200 tokens, 200 ms apart: 40 s if nobody stops it.
tmux -L "$TMUX_SOCK" send-keys -t chat "slow answer please [[fake:delay_ms=200 tokens=200]]" Enter
poll 20 pane_has "slow answer please slow answer" || fail "the slow answer did not stream: $(pane)"
tmux -L "$TMUX_SOCK" send-keys -t chat C-c
poll 10 pane_has "[answer cancelled]" || fail "Ctrl-C did not cancel the answer: $(pane)"
upstream_cut() { (($(fake /_fake/stats | json 'd["disconnects_mid_stream"]') > BEFORE)); }
poll 10 upstream_cut || fail "the upstream request was not aborted"
# Still in the program: the next line is a new turn.
FOOTERS=$(pane_count "· \$0.")
tmux -L "$TMUX_SOCK" send-keys -t chat "after the cancel delta" Enter
footers_grew() { (($(pane_count "· \$0.") > FOOTERS)); }
poll 20 footers_grew || fail "no turn after the cancel: $(pane)"
pane_has "after the cancel delta after the cancel" || fail "answer after cancel: $(pane)"
tmux -L "$TMUX_SOCK" send-keys -t chat "/quit" Enter
poll 10 test -s "$WORK/chat.rc" || fail "/quit did not leave: $(pane)"
[[ $(cat "$WORK/chat.rc") == 0 ]] || fail "chat exited $(cat "$WORK/chat.rc")"
expect_rc 0 as alice conversations show "$CONV"
grep -q "slow answer please slow" <<<"$OUT" || fail "the partial answer was not kept: $OUT"

step "usage and budget views"
# 7 turns so far (6 answered, 1 cancelled and charged for what was streamed); the outbox
# delivers them to usage in the background.
usage_requests() { as alice --json usage daily | json 'int(d.get("totals", {}).get("requests", 0))'; }
all_recorded() { (($(usage_requests) >= 7)); }
poll 30 all_recorded || fail "usage shows $(usage_requests) requests, expected 7"
expect_rc 0 as alice --json usage daily
DAILY=$OUT
DAILY_COST=$(json 'int(d["totals"]["cost_nanos"])' <<<"$OUT")
expect_rc 0 as alice --json usage models
[[ $(json 'd["rows"][0]["key"]' <<<"$OUT") == gpt-4o-mini ]] || fail "usage models: $OUT"
[[ $(json 'int(d["totals"]["cost_nanos"])' <<<"$OUT") == "$DAILY_COST" ]] ||
  fail "daily and by-model totals differ: $OUT"
[[ $(json 'sum(int(r["requests"]) for r in d["rows"])' <<<"$DAILY") == 7 ]] ||
  fail "daily rows do not add up to the total: $DAILY"
expect_rc 0 as alice usage
grep -qE '^total +7 ' <<<"$OUT" || fail "usage text: $OUT"
grep -qE "^$(date -u +%Y-%m-%d) +7 " <<<"$OUT" || fail "usage text has no row for today: $OUT"
expect_rc 0 as alice usage budget
grep -q "unlimited" <<<"$OUT" || fail "budget view: $OUT"

step "admin: promote Bob, add a model, set Alice's budget; her next turn is refused"
expect_rc 3 as bob budget set "$ALICE_ID" 1
grep -q "not allowed" <<<"$ERR" || fail "non-admin budget set: $ERR"
DATABASE_URL="postgresql://postgres@127.0.0.1:$AICHAT_PG_PORT/aichat_user" \
  "$BUILD/services/user/aichat-user" set-role bob@example.com admin >/dev/null ||
  fail "aichat-user set-role failed"
expect_rc 0 as bob login bob@example.com <<<"bob's long password"
grep -q admin <<<"$OUT" || fail "bob is not admin: $OUT"
expect_rc 0 as bob users
grep -q alice@example.com <<<"$OUT" || fail "users: $OUT"
expect_rc 0 as bob models set e2e-mini --provider-model gpt-4o-mini --input-price 0.15 \
  --output-price 0.6 --cached-price 0.075 --context 8000 --max-output 500
expect_rc 0 as alice --json models
[[ $(json '[m["name"] for m in d["models"] if m["name"] == "e2e-mini"][0]' <<<"$OUT") == e2e-mini ]] ||
  fail "the new model is not listed: $OUT"
expect_rc 0 as alice send --conversation "$CONV" --model e2e-mini "on the new model"
# Two deployments (both on the run's provider) and a fallback; admins read them back with
# their state, users see the model only.
expect_rc 0 as bob models set e2e-routed --provider-model gpt-4o-mini --input-price 0.15 \
  --output-price 0.6 --context 8000 --max-output 500 --deployment name=east,weight=2,max=4 \
  --deployment name=west,model=gpt-4o-mini --fallback e2e-mini
expect_rc 0 as bob --json models
python3 - "$OUT" <<'PY' || fail "deployments and fallbacks not read back: $OUT"
import json, sys
m = [m for m in json.loads(sys.argv[1])["models"] if m["name"] == "e2e-routed"][0]
ds = m["deployments"]
assert [(d["name"], d.get("weight"), d.get("max_concurrency")) for d in ds] == [
    ("east", 2, 4), ("west", 1, None)], ds
assert ds[1]["provider_model"] == "gpt-4o-mini", ds
assert all(d["state"]["circuit"] == "closed" for d in ds), ds
assert m["fallbacks"] == ["e2e-mini"], m
PY
expect_rc 0 as bob models
grep -qE '^  deployment east +closed +0 in flight  name=east,weight=2,max=4$' <<<"$OUT" ||
  fail "admin listing: $OUT"
grep -q '^  fallbacks  e2e-mini$' <<<"$OUT" || fail "admin listing, fallbacks: $OUT"
expect_rc 0 as alice models
grep -q "e2e-routed" <<<"$OUT" || fail "users do not see the model: $OUT"
grep -q "deployment" <<<"$OUT" && fail "users see deployments: $OUT"
expect_rc 0 as alice --json send --conversation "$CONV" --model e2e-routed "on two deployments"
[[ $(json 'd["turn"]["model"]' <<<"$OUT") == e2e-routed ]] || fail "routed turn: $OUT"
expect_rc 7 as bob models set e2e-routed --deployment name=east,weight=0
grep -q -- "--deployment name=east,weight=0: weight must be" <<<"$ERR" || fail "parse error: $ERR"
expect_rc 0 as bob --json models set e2e-routed --no-deployments --no-fallbacks
[[ $(json 'len(d.get("deployments", [])) + len(d.get("fallbacks", []))' <<<"$OUT") == 0 ]] ||
  fail "--no-deployments --no-fallbacks: $OUT"
expect_rc 7 as bob budget set "$ALICE_ID" 0.0000000001
expect_rc 0 as bob --json budget set "$ALICE_ID" 0.000001
[[ $(json 'd["monthly_limit_nanos"]' <<<"$OUT") == 1000 ]] || fail "budget set: $OUT"
expect_rc 0 as bob usage budget --user "$ALICE_ID"
grep -q 'monthly budget \$0.000001000' <<<"$OUT" || fail "budget view: $OUT"
BEFORE=$(fake_requests)
expect_rc 5 as alice send --conversation "$CONV" "one more question"
grep -qi "budget" <<<"$ERR" || fail "the refusal does not say why: $ERR"
[[ $(wc -l <<<"$ERR") == 1 ]] || fail "the refusal is not one line: $ERR"
(($(fake_requests) == BEFORE)) || fail "a refused turn reached the provider"
expect_rc 0 as bob budget set "$ALICE_ID" 0
expect_rc 0 as alice send --conversation "$CONV" "budget lifted"

step "isolation: Bob cannot see Alice's conversation"
expect_rc 4 as bob conversations show "$CONV"
grep -q "not found" <<<"$ERR" || fail "show: $ERR"
expect_rc 4 as bob send --conversation "$CONV" "peek"
expect_rc 4 as bob regen "$CONV"
expect_rc 4 as bob conversations delete "$CONV"
expect_rc 0 as bob --json conversations list
[[ $(json 'len(d.get("conversations", []))' <<<"$OUT") == 0 ]] || fail "bob lists: $OUT"
expect_rc 0 as alice conversations rename "$CONV" "Alice's thread"
expect_rc 0 as alice conversations
grep -q "Alice's thread" <<<"$OUT" || fail "rename: $OUT"

step "clear errors: not logged in, service down"
expect_rc 0 as alice logout
expect_rc 3 as alice conversations
grep -q "not logged in" <<<"$ERR" || fail "logged out: $ERR"
expect_rc 0 as alice login alice@example.com <<<"alice's long password"

step "down stops everything; a second up finds the same data"
PIDS=$(cat "$AICHAT_STATE_DIR"/run/*.pid)
"$RUN" down >/dev/null 2>&1
# alive (scripts/lib.sh) counts a zombie its new parent has not reaped yet as exited.
for pid in $PIDS; do ! alive "$pid" || fail "pid $pid still runs after down"; done
STATUS=$("$RUN" status)
grep -q running <<<"$STATUS" && fail "still running after down: $STATUS"
expect_rc 6 as alice conversations
grep -q "cannot reach the service" <<<"$ERR" || fail "service down: $ERR"
"$RUN" up --detach >"$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log"; "$RUN" status; fail "second up failed"; }
grep -q "generating token keys" "$WORK/up2.log" && fail "the second up made new keys"
expect_rc 0 as alice conversations
grep -q "Alice's thread" <<<"$OUT" || fail "the conversation is gone after a restart: $OUT"
expect_rc 0 as alice send --conversation "$CONV" "after the restart"

echo "PASS: e2e story in ${SECONDS}s"
