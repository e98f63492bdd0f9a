#!/usr/bin/env bash
# Tests Tests/summary.sh on real captured logs (Tests/Fixtures/summaries): a root run with failures, a
# non-root run with skips (swift-corelibs-xctest's "with K tests skipped and M failures" form), a single
# skipped test, the VM cases' summary with and without skips, and logs without any summary.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fx=$here/Fixtures/summaries
fails=0
check() {  # KIND LOG EXPECTED
  local got
  got=$(bash "$here/summary.sh" "$1" "$2" 2>&1); local status=$?
  if [ "$3" = none ]; then
    [ "$status" -ne 0 ] && [ -z "$got" ] || { echo "summary-test: $1 $(basename "$2"): expected no summary, got '$got' (exit $status)"; fails=$((fails + 1)); }
  elif [ "$status" -ne 0 ] || [ "$got" != "$3" ]; then
    echo "summary-test: $1 $(basename "$2"): expected '$3', got '$got' (exit $status)"; fails=$((fails + 1))
  fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check xctest "$fx/xctest-failures.log" "16 4 0"
check xctest "$fx/xctest-nonroot.log" "66 0 16"
check xctest "$fx/xctest-one-skipped.log" "1 0 1"
check vm "$fx/vm-cases.log" "17 4 0"
# run-cases' current form names the skips; the counts are the ones of the captured log above.
sed 's/^13 passed, 4 failed$/11 passed, 4 failed, 2 skipped/' "$fx/vm-cases.log" > "$tmp/vm-skips.log"
check vm "$tmp/vm-skips.log" "15 4 2"
# No summary line: a crash or a timeout must not read as success.
grep -v Executed "$fx/xctest-nonroot.log" > "$tmp/no-summary.log"
check xctest "$tmp/no-summary.log" none
check vm "$fx/xctest-nonroot.log" none
[ "$fails" -eq 0 ] && echo "summary-test: 7 checks passed"
[ "$fails" -eq 0 ]
