#!/usr/bin/env bash
# Builds the libFuzzer targets (SSE parser, chat JSON, JWT verifier, the text
# validator every request check uses, the request validators of every service:
# user, conversation, ai-agent turns and model configs, usage events, and the
# OpenAI-compatible HTTP API's request decoder; clang, not the
# CMake build: they need -fsanitize=fuzzer) and runs each for a while.
#   scripts/fuzz.sh [seconds-per-target]   default 10; e.g. 600 for a real run
# Needs Debian clang and libclang-rt-14-dev. Corpus seeds live in fuzz/corpus/;
# runs work on a copy, crashes are written to $OUT/<target>/ and fail the script.
set -euo pipefail

SECONDS_PER_TARGET="${1:-10}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${AICHAT_FUZZ_DIR:-${TMPDIR:-/tmp}/aichat-fuzz}"
CXX="${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
if [[ -z "$CXX" ]]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi
mkdir -p "$OUT"

ABSL_LIBS="$(pkg-config --libs absl_status absl_statusor absl_strings)"
FLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$ROOT" -DOPENSSL_API_COMPAT=30000)

build() {  # name sources...  (extra link flags in $EXTRA_LIBS)
  local name="$1"; shift
  "$CXX" "${FLAGS[@]}" "$@" -o "$OUT/$name" $ABSL_LIBS -lboost_json ${EXTRA_LIBS:-}
}
# The usage validator target needs the generated protobuf code of the CMake build.
PROTO_DIR="${AICHAT_BUILD_DIR:-$ROOT/build}/proto"

echo "fuzz.sh: building into $OUT"
build sse_parser_fuzz "$ROOT/fuzz/sse_parser_fuzz.cc" \
  "$ROOT/services/ai-agent/llm/sse_parser.cc" &
pid1=$!
build chat_chunk_fuzz "$ROOT/fuzz/chat_chunk_fuzz.cc" \
  "$ROOT/services/ai-agent/llm/chat_chunk.cc" &
pid2=$!
wait "$pid1"
wait "$pid2"
EXTRA_LIBS="$(pkg-config --libs absl_time absl_synchronization absl_hash absl_raw_hash_set libsodium)" \
  build jwt_verify_fuzz "$ROOT/fuzz/jwt_verify_fuzz.cc" "$ROOT/common/jwt.cc" \
  "$ROOT/common/base64.cc" &
pid1=$!
build text_validate_fuzz "$ROOT/fuzz/text_validate_fuzz.cc" "$ROOT/common/validate.cc" &
pid2=$!
wait "$pid1"
wait "$pid2"
build user_request_fuzz "$ROOT/fuzz/user_request_fuzz.cc" "$ROOT/services/user/user_checks.cc" \
  "$ROOT/common/validate.cc" &
pid1=$!
build conversation_request_fuzz "$ROOT/fuzz/conversation_request_fuzz.cc" \
  "$ROOT/services/conversation/conversation_checks.cc" "$ROOT/common/validate.cc" &
pid2=$!
wait "$pid1"
wait "$pid2"
EXTRA_LIBS="$(pkg-config --libs absl_str_format)" \
  build openai_request_fuzz "$ROOT/fuzz/openai_request_fuzz.cc" \
  "$ROOT/services/ai-agent/http/openai_decode.cc" "$ROOT/services/ai-agent/http/openai_encode.cc" \
  "$ROOT/common/validate.cc"
targets=(sse_parser chat_chunk jwt_verify text_validate user_request conversation_request
  openai_request)
if [[ -f "$PROTO_DIR/aichat/usage/v1/usage.pb.cc" && -f "$PROTO_DIR/aichat/agent/v1/agent.pb.cc" ]]; then
  EXTRA_LIBS="$(pkg-config --libs protobuf absl_time absl_str_format)" \
    build usage_event_fuzz -I"$PROTO_DIR" "$ROOT/fuzz/usage_event_fuzz.cc" \
    "$ROOT/services/usage/usage_proto.cc" "$ROOT/common/validate.cc" \
    "$PROTO_DIR/aichat/usage/v1/usage.pb.cc" &
  pid1=$!
  EXTRA_LIBS="$(pkg-config --libs protobuf absl_time absl_hash absl_raw_hash_set)" \
    build agent_request_fuzz -I"$PROTO_DIR" "$ROOT/fuzz/agent_request_fuzz.cc" \
    "$ROOT/services/ai-agent/request_checks.cc" "$ROOT/common/validate.cc" \
    "$PROTO_DIR/aichat/agent/v1/agent.pb.cc" &
  pid2=$!
  wait "$pid1"
  wait "$pid2"
  targets+=(usage_event agent_request)
else
  echo "fuzz.sh: no generated protos in $PROTO_DIR (build first); skipping usage_event and agent_request" >&2
fi

status=0
for target in "${targets[@]}"; do
  corpus="$OUT/$target/corpus"
  mkdir -p "$corpus"
  cp -n "$ROOT/fuzz/corpus/$target/"* "$corpus/" 2>/dev/null || true
  echo "fuzz.sh: $target for ${SECONDS_PER_TARGET}s"
  if ! (cd "$OUT/$target" && "$OUT/${target}_fuzz" -max_total_time="$SECONDS_PER_TARGET" \
          -max_len=4096 -print_final_stats=1 "$corpus" > "$OUT/$target/log.txt" 2>&1); then
    echo "fuzz.sh: $target FAILED; see $OUT/$target/log.txt and crash-* there" >&2
    tail -30 "$OUT/$target/log.txt" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^Done" "$OUT/$target/log.txt" | tr '\n' ' '
    echo
  fi
done
exit $status
