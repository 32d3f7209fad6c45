#!/usr/bin/env bash
# Fails when a C++ file changed recently is not formatted as .clang-format says, so the
# tree converges on one style file by file. "Recently": changed in the last
# AICHAT_FORMAT_COMMITS commits (default 30), or since AICHAT_FORMAT_BASE when set.
#   scripts/check_format.sh          check;   scripts/check_format.sh --fix   reformat them
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check_format: clang-format not found" >&2; exit 1; }
base="${AICHAT_FORMAT_BASE:-}"
if [[ -z "$base" ]]; then
  n="${AICHAT_FORMAT_COMMITS:-30}"
  total=$(git rev-list --count HEAD)
  if ((total > n)); then base="HEAD~$n"; else base=$(git rev-list --max-parents=0 HEAD | tail -1); fi
fi
mapfile -t files < <(git diff --name-only --diff-filter=d "$base" -- '*.cc' '*.h' | sort -u)
((${#files[@]})) || { echo "check_format: no C++ file changed since $base"; exit 0; }
if [[ "${1:-}" == "--fix" ]]; then
  clang-format -i "${files[@]}"
  echo "check_format: formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check_format: not formatted (scripts/check_format.sh --fix):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check_format: ${#files[@]} changed C++ files formatted"
