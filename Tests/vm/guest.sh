#!/bin/bash
# Runs inside the guest's chroot (the host's root under an overlay): mount the kernel filesystems, then the cases.
repo=$1 bin=$2 cases=$3
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
# Benchmarks run only when named.
if [ "$cases" = "*" ]; then files=($(printf '%s\n' "${files[@]}" | grep -v '/bench-')); fi
[ ${#files[@]} -gt 0 ] || { echo "no case file matches Tests/vm/cases/$cases.case"; echo "0 passed, 1 failed"; exit 1; }
exec bash Tests/vm/run-cases "${files[@]}"
