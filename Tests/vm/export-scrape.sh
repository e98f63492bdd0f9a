#!/bin/bash
# For export.case: serves brd's and loop's parameters, a per-CPU value and a walk of `modules` with
# `kreach export` on the default address; a real Prometheus (Debian's, from the host's root) scrapes it every
# second. At each step (brd and loop loaded, unloaded, reloaded with other parameters) it scrapes with curl and
# waits (bounded) for Prometheus's query API to have the same values, printing both next to the oracles:
# /sys/module/*/parameters and /proc/cpuinfo. Then promtool's verdict on the last scrape.
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
  - name: loop_max_loop
    help: loop devices the loop module was loaded for
    type: gauge
    expr: loop:max_loop
    labels: {driver: loop}
  - name: cpu1_cache_size
    help: CPU 1's cache size in KiB (per-CPU struct cpuinfo_x86)
    type: gauge
    expr: per_cpu(cpu_info, 1).x86_cache_size
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
cat > "$dir/prometheus.yml" <<'YAML'
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: kreach
    static_configs: [{targets: ['127.0.0.1:19157']}]
YAML
# Both are bounded by the case's TIMEOUT and killed on exit.
kreach export --config "$dir/c.yaml" > "$dir/out" 2> "$dir/err" &
pid=$!
prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/data" --web.listen-address 127.0.0.1:19158 > /dev/null 2> "$dir/prometheus.log" &
prometheus_pid=$!
# On exit (also when the case's TIMEOUT stops it), the exporter's log goes to stderr (first, so a failing case's
# report, which keeps the start of stderr, shows it).
trap 'kill $pid $prometheus_pid 2>/dev/null; wait; { cat "$dir/err"; cat "$dir/report" 2>/dev/null; } >&2; rm -rf "$dir"' EXIT
# The events: the exporter's "listening" line, Prometheus's "ready" line (bounded waits).
timeout 120 sh -c "until grep -q listening '$dir/out'; do sleep 0.2; done" || { echo "no listening line:"; cat "$dir/err"; exit 1; }
timeout 120 sh -c "until grep -q 'Server is ready to receive web requests' '$dir/prometheus.log'; do sleep 0.2; done" \
  || { echo "prometheus is not ready:"; tail -5 "$dir/prometheus.log"; exit 1; }
scrape() { curl -sS --max-time 180 http://127.0.0.1:19157/metrics > "$dir/m" || echo "curl failed"; }
value() { awk -v n="$1" '$1 == n {print $2}' "$dir/m"; }
param() { cat "/sys/module/$1/parameters/$2" 2>/dev/null || echo absent; }
# query PROMQL: the values of the instant query's series, space-separated ("" when it has none).
query() {
  curl -sS --max-time 20 -G --data-urlencode "query=$1" http://127.0.0.1:19158/api/v1/query \
    | /usr/bin/python3 -c 'import json, sys; print(" ".join(s["value"][1] for s in json.load(sys.stdin)["data"]["result"]))'
}
# await PROMQL WANT: polls the query API until the query gives WANT, for at most 60 s; prints what it gave last.
await() {
  local got="" tries=0
  while [ "$tries" -lt 240 ]; do
    got=$(query "$1") && [ "$got" = "$2" ] && break
    tries=$(( tries + 1 )); sleep 0.25
  done
  echo "$got"
}
# cpuinfo FIELD: the field of processor 1 in /proc/cpuinfo, its number only.
cpuinfo() { awk -F': ' -v f="$1" '/^processor/ {p = $2} p == 1 && $1 ~ "^" f {print $2 + 0; exit}' /proc/cpuinfo; }
step() {
  scrape
  echo "$1: rd_size $(value kreach_brd_rd_size) sysfs $(param brd rd_size), rd_nr $(value kreach_brd_rd_nr) sysfs $(param brd rd_nr), tgid ok $([ "$(value kreach_tgid)" = "$pid" ] && echo yes || echo no)"
  echo "$1: brd read errors $(awk '$1 ~ /read_errors_total\{metric="kreach_brd_rd_size"\}/ {print $2}' "$dir/m")"
  # struct module's refcnt is module_refcount() + 1 while the module is live (kernel/module/main.c).
  echo "$1: walk refcnt brd $(awk '$1 == "kreach_module_refcnt{module=\"brd\"}" {print $2 - 1}' "$dir/m") sysfs $(param brd ../refcnt), walk errors $(awk '$1 ~ /read_errors_total\{metric="kreach_module_refcnt"\}/ {print $2}' "$dir/m")"
  # Prometheus's stored values; a module's parameter that is absent has no series (Prometheus marks it stale).
  local size max_loop
  size=$(param brd rd_size); [ "$size" = absent ] && size=""
  max_loop=$(param loop max_loop); [ "$max_loop" = absent ] && max_loop=""
  echo "$1: prometheus rd_size $(await kreach_brd_rd_size "$size") max_loop $(await 'kreach_loop_max_loop{driver="loop"}' "$max_loop") sysfs $(param loop max_loop), brd walked $(await 'count(kreach_module_refcnt{module="brd"})' "$([ -n "$size" ] && echo 1)")"
}
step loaded
cache=$(cpuinfo 'cache size')
got=$(await kreach_cpu1_cache_size "$cache")
echo "prometheus: cpu1 cache size $([ -n "$cache" ] && [ "$got" = "$cache" ] && echo "equals /proc/cpuinfo's" || echo "$got, /proc/cpuinfo $cache"), up $(await up 1)"
rmmod brd loop
step unloaded
modprobe brd rd_nr=2 rd_size=4321
modprobe loop max_loop=5
step reloaded
echo "refreshes $(awk '$1 == "kreach_exporter_resolution_refreshes_total" {print ($2 >= 2) ? ">=2" : $2}' "$dir/m")"
# No read error was ever counted for the modules' metrics, in any scrape Prometheus made.
echo "prometheus: read errors ever $(query 'max(max_over_time(kreach_exporter_read_errors_total{metric=~"kreach_(brd_rd_size|loop_max_loop)"}[10m]))')"
promtool check metrics < "$dir/m" && echo "promtool ok"
# What a reader sees (kept in the case's stderr): a query's answer, the exporter's log, the longest scrape
# Prometheus saw and the last scrape.
{
  curl -sS --max-time 20 -G --data-urlencode 'query=kreach_brd_rd_size' http://127.0.0.1:19158/api/v1/query
  echo
  echo "longest scrape: $(query 'max_over_time(scrape_duration_seconds[10m])') s, scrapes failed: $(query 'count_over_time(up[10m]) - sum_over_time(up[10m])')"
  grep -v kreach_module_refcnt "$dir/m"
} > "$dir/report"
