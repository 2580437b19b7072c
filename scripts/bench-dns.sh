#!/usr/bin/env bash
# Queries per second for managed A records on loopback: Kiwi's DNS server against
# dnsmasq serving the same records, in the same run, measured with dnsperf.
#
#   scripts/bench-dns.sh [--names N] [--seconds S] [--clients C]
#
# Needs dnsperf and dnsmasq (scripts/install-deps.sh --for test). Prints both peak
# rates and their ratio, and the CPU time each spends per query at a fixed 20k qps
# (steadier on a busy machine); record the figures in docs/dns.md.
# KIWI_DNS_SERVE=path runs that already built `serve` example instead of building
# this tree's (to compare two commits in the same conditions).
set -euo pipefail

names=1000 seconds=10 clients=8
while [ $# -gt 0 ]; do
  case "$1" in
    --names) names="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench-dns: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "bench-dns: $*" >&2; exit 1; }
command -v dnsperf >/dev/null || die "dnsperf not found: scripts/install-deps.sh --for test"
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[ -x "$DNSMASQ" ] || die "dnsmasq not found: scripts/install-deps.sh --for test"

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Two free high loopback ports.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    [ -z "$(ss -Hlnu "sport = :$p")$(ss -Hlnt "sport = :$p")" ] && { echo "$p"; return; }
  done
  die "no free loopback port found"
}
ours_port=$(free_port); theirs_port=$(free_port)
[ "$ours_port" != "$theirs_port" ] || theirs_port=$((ours_port + 1))

# The same records for both: vm-N.bench.kowabunga.local -> 10.x.y.z
{
  cat <<DOC
version = 1
node = "bench"
issued_at = "2026-01-01T00:00:00Z"
expires_at = "2099-01-01T00:00:00Z"

[dns]
listen = ["127.0.0.1:$ours_port"]
recursors = ["127.0.0.1:9"]

[dns.zones."bench.kowabunga.local".records]
DOC
  for i in $(seq 1 "$names"); do
    echo "vm-$i = [\"10.$((i / 65536 % 256)).$((i / 256 % 256)).$((i % 256))\"]"
  done
} > "$work/doc.toml"
{
  echo "no-resolv"; echo "no-hosts"; echo "local=/bench.kowabunga.local/"
  for i in $(seq 1 "$names"); do
    echo "host-record=vm-$i.bench.kowabunga.local,10.$((i / 65536 % 256)).$((i / 256 % 256)).$((i % 256))"
  done
} > "$work/dnsmasq.conf"
for i in $(seq 1 "$names"); do echo "vm-$i.bench.kowabunga.local A"; done > "$work/queries.txt"

serve=${KIWI_DNS_SERVE:-}
if [ -z "$serve" ]; then
  echo "bench-dns: building (release)" >&2
  (cd "$root" && cargo build --release -q -p kowabunga-dns --example serve)
  serve="${CARGO_TARGET_DIR:-$root/target}/release/examples/serve"
fi
"$serve" "$work/doc.toml" > "$work/ours.log" 2>&1 &
ours_pid=$!; pids+=($ours_pid)
"$DNSMASQ" --keep-in-foreground --conf-file="$work/dnsmasq.conf" --port="$theirs_port" \
  --listen-address=127.0.0.1 --bind-interfaces --pid-file= --user=root --cache-size=0 \
  > "$work/dnsmasq.log" 2>&1 &
theirs_pid=$!; pids+=($theirs_pid)

ready() { dig @127.0.0.1 -p "$1" +short +tries=1 +time=1 vm-1.bench.kowabunga.local A 2>/dev/null | grep -q '^10\.'; }
for _ in $(seq 1 100); do ready "$ours_port" && ready "$theirs_port" && break; sleep 0.1; done
ready "$ours_port" || { cat "$work/ours.log" >&2; die "our server does not answer on $ours_port"; }
ready "$theirs_port" || { cat "$work/dnsmasq.log" >&2; die "dnsmasq does not answer on $theirs_port"; }

qps() { # PORT LABEL
  dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries.txt" -l "$seconds" -c "$clients" -T 2 -q 200 > "$work/perf-$1.txt" 2>&1 \
    || { cat "$work/perf-$1.txt" >&2; die "dnsperf failed against port $1"; }
  lost=$(awk '/Queries lost:/ {print $3}' "$work/perf-$1.txt")
  [ "${lost:-1}" = 0 ] || echo "bench-dns: note: $2 lost $lost queries (no reply within dnsperf's timeout)" >&2
  awk '/Queries per second:/ {print $4}' "$work/perf-$1.txt"
}

# CPU time one server spends per query at a fixed rate: steadier than peak qps on a
# shared or small machine. Prints microseconds.
cpu_per_query() { # PORT PID RATE
  local tick u0 u1 n
  tick=$(getconf CLK_TCK)
  u0=$(awk '{print $14 + $15}' "/proc/$2/stat")
  dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries.txt" -l 5 -Q "$3" -c 4 -T 1 > "$work/cpu-$1.txt" 2>&1 \
    || { cat "$work/cpu-$1.txt" >&2; die "dnsperf failed against port $1"; }
  u1=$(awk '{print $14 + $15}' "/proc/$2/stat")
  n=$(awk '/Queries completed:/ {print $3}' "$work/cpu-$1.txt")
  awk -v d=$((u1 - u0)) -v t="$tick" -v n="$n" 'BEGIN { printf "%.1f", d / t * 1e6 / n }'
}

echo "bench-dns: $names names, $seconds s per server, $clients clients, $(nproc) CPUs" >&2
ours=$(qps "$ours_port" kiwi-dns)
theirs=$(qps "$theirs_port" dnsmasq)
ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
rate=20000
ours_cpu=$(cpu_per_query "$ours_port" "$ours_pid" "$rate")
theirs_cpu=$(cpu_per_query "$theirs_port" "$theirs_pid" "$rate")
printf 'kiwi-dns  %12.0f qps   %6s us CPU/query at %d qps\n' "$ours" "$ours_cpu" "$rate"
printf 'dnsmasq   %12.0f qps   %6s us CPU/query at %d qps\n' "$theirs" "$theirs_cpu" "$rate"
printf 'ratio     %12s (kiwi-dns / dnsmasq, peak qps)\n' "$ratio"
