#!/bin/bash
# For export.case: serves brd's parameters with `kreach export` on the default address, scrapes with curl
# while brd is loaded, after rmmod and after a modprobe with other parameters. Prints the scraped value
# next to /sys/module/brd/parameters (the oracle) at each step, then promtool's verdict on the last scrape.
set -u
dir=$(mktemp -d)
cat > "$dir/c.yaml" <<'YAML'
metrics:
  - name: brd_rd_size
    help: size of each RAM disk in KiB (brd's rd_size parameter)
    type: gauge
    expr: brd:rd_size
  - name: brd_rd_nr
    help: RAM disks brd was loaded for
    type: gauge
    expr: brd:rd_nr
  - name: tgid
    help: the exporter's process id, through current
    type: gauge
    expr: current->tgid
  - name: module_refcnt
    help: "each module's reference count, read in its struct module (module memory; the expression names no module)"
    type: gauge
    walk: list_for_each_entry(struct module, &modules, list)
    label_fields: {module: name}
    value: refcnt.counter
YAML
kreach export --config "$dir/c.yaml" > "$dir/out" 2> "$dir/err" &  # bounded by the case's TIMEOUT; killed on exit
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
# The event: the exporter's "listening" line (bounded wait).
timeout 120 sh -c "until grep -q listening '$dir/out'; do sleep 0.2; done" || { echo "no listening line:"; cat "$dir/err"; exit 1; }
scrape() { curl -sS --max-time 60 http://127.0.0.1:19157/metrics > "$dir/m" || echo "curl failed"; }
value() { awk -v n="$1" '$1 == n {print $2}' "$dir/m"; }
param() { cat /sys/module/brd/parameters/$1 2>/dev/null || echo absent; }
step() {
  scrape
  echo "$1: rd_size $(value kreach_brd_rd_size) sysfs $(param rd_size), rd_nr $(value kreach_brd_rd_nr) sysfs $(param rd_nr), tgid ok $([ "$(value kreach_tgid)" = "$pid" ] && echo yes || echo no)"
  echo "$1: brd read errors $(awk '$1 ~ /read_errors_total\{metric="kreach_brd_rd_size"\}/ {print $2}' "$dir/m")"
  # struct module's refcnt is module_refcount() + 1 while the module is live (kernel/module/main.c).
  echo "$1: walk refcnt brd $(awk '$1 == "kreach_module_refcnt{module=\"brd\"}" {print $2 - 1}' "$dir/m") sysfs $(param ../refcnt), walk errors $(awk '$1 ~ /read_errors_total\{metric="kreach_module_refcnt"\}/ {print $2}' "$dir/m")"
}
step loaded
rmmod brd
step unloaded
modprobe brd rd_nr=2 rd_size=4321
step reloaded
echo "refreshes $(awk '$1 == "kreach_exporter_resolution_refreshes_total" {print ($2 >= 2) ? ">=2" : $2}' "$dir/m")"
promtool check metrics < "$dir/m" && echo "promtool ok"
