#!/usr/bin/env bash
# Installs what is missing, builds, starts a throwaway PostgreSQL and runs every test.
#   scripts/test.sh            the whole suite (what CI runs)
#   scripts/test.sh -L pg      extra arguments go to ctest (here: only the PostgreSQL tests)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

install_deps
[[ -n "${AICHAT_NO_BUILD:-}" ]] || build "$AICHAT_ROOT/build"

# One throwaway cluster for the whole run; tests create a database each.
PGTMP=$(mktemp -d /tmp/aichat-test-XXXXXX)
[[ $(id -u) -eq 0 ]] && chown postgres "$PGTMP"
cleanup() {
  pg_stop "$PGTMP/data" immediate
  rm -rf "$PGTMP"
}
trap cleanup EXIT
pg_init "$PGTMP/data"
export AICHAT_TEST_PG_PORT=$(free_port)
# Durability is pointless for a throwaway test cluster (STACK.md); never in run.sh or deploy/.
pg_start "$PGTMP/data" "$AICHAT_TEST_PG_PORT" "$PGTMP/server.log" \
  fsync=off synchronous_commit=off full_page_writes=off
log "test PostgreSQL on 127.0.0.1:$AICHAT_TEST_PG_PORT"

cd "$AICHAT_ROOT/build"
status=0
ctest --output-on-failure --timeout 600 -j"${AICHAT_TEST_JOBS:-2}" "$@" || status=$?

if [[ $# -eq 0 ]]; then
  "$AICHAT_ROOT/scripts/check_format.sh" || status=$?  # recently changed C++ files
fi
if [[ $# -eq 0 && -x "$AICHAT_ROOT/scripts/fuzz.sh" ]]; then
  log "fuzz smoke"
  "$AICHAT_ROOT/scripts/fuzz.sh" || status=$?
fi
if [[ $# -eq 0 && -x "$AICHAT_ROOT/deploy/check.sh" ]]; then
  "$AICHAT_ROOT/deploy/check.sh" || status=$? # manifests, schemas, promtool, live Prometheus scrape
fi
exit $status
