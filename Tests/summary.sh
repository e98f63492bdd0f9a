#!/usr/bin/env bash
# Reads a test log's summary line and prints "RUN FAILED SKIPPED" (numbers); exit 1 when there is none.
#   Tests/summary.sh xctest LOG   the last XCTest "Executed N tests, with [K tests skipped and ]M failures" line
#                                 (swift-corelibs-xctest names the skips only when there are some)
#   Tests/summary.sh vm LOG       the last Tests/vm/run-cases "P passed, F failed[, K skipped]" line (RUN = P + F)
set -uo pipefail
kind=${1:-} log=${2:-}
[ -f "$log" ] || { echo "summary.sh: no log $log" >&2; exit 2; }
case "$kind" in
  xctest)
    grep -E '^[[:space:]]*Executed [0-9]+ tests?, with ([0-9]+ tests? skipped and )?[0-9]+ failures?' "$log" | tail -1 \
      | sed -nE 's/^[[:space:]]*Executed ([0-9]+) tests?, with (([0-9]+) tests? skipped and )?([0-9]+) failures?.*/\1 \4 \3/p' \
      | awk '{print $1, $2, ($3 == "" ? 0 : $3); found = 1} END {exit !found}' ;;
  vm)
    grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" | tail -1 \
      | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$/\1 \2 \4/p' \
      | awk '{print $1 + $2, $2, ($3 == "" ? 0 : $3); found = 1} END {exit !found}' ;;
  *) echo "usage: Tests/summary.sh xctest|vm LOG" >&2; exit 2 ;;
esac
