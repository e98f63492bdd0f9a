#!/bin/bash
# Runs inside the guest's chroot (the host's root under an overlay): mount the kernel filesystems, then the cases.
repo=$1 bin=$2 cases=$3 xctest=${4:-0}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
ulimit -l unlimited 2>/dev/null
echo "guest: $(uname -r), $(nproc) CPUs, $(wc -l < /proc/kallsyms) kallsyms lines"
mkdir -p /run/kreach-bin
ln -sf "$bin" /run/kreach-bin/kreach
export PATH=/run/kreach-bin:$PATH
cd "$repo" || exit 1
shopt -s nullglob
files=(Tests/vm/cases/$cases.case)
# Benchmarks and the release suite (release-*.case) run only when named.
if [ "$cases" = "*" ]; then files=($(printf '%s\n' "${files[@]}" | grep -Ev '/(bench|release)-')); fi
[ ${#files[@]} -gt 0 ] || { echo "no case file matches Tests/vm/cases/$cases.case"; echo "0 passed, 1 failed"; exit 1; }
bash Tests/vm/run-cases "${files[@]}"
status=$?
# The XCTest bundle as root on this kernel (KREACH_VM_XCTEST=1): its full log goes to the results share,
# its failures and the "Executed N tests" summary to the output.
if [ "$xctest" != 0 ]; then
  bundle=$repo/.build/debug/kreachPackageTests.xctest
  filter=(); [ "$xctest" = 1 ] || filter=("$xctest")
  echo "# XCTest: $bundle ${filter[*]} as root in the guest"
  start=$(date +%s)
  timeout "${KREACH_VM_XCTEST_TIMEOUT:-5000}" "$bundle" "${filter[@]}" > /kreach-results/xctest.log 2>&1
  xstatus=$?
  grep -E "error: |: (failed|skipped)|^Test Suite '(All tests|Selected tests)'|Executed [0-9]+ tests?" /kreach-results/xctest.log | tail -n 200
  summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?" /kreach-results/xctest.log | tail -1)
  echo "# XCTest exit $xstatus after $(( $(date +%s) - start ))s${summary:+: $summary}"
  [ -n "$summary" ] || echo "# XCTest printed no summary (timed out or crashed): the tail of its log"
  [ -n "$summary" ] || tail -n 20 /kreach-results/xctest.log
  [ "$xstatus" -eq 0 ] || status=1
fi
exit $status
