#!/usr/bin/env bash
# Leases per second: Kiwi's DHCP server against dnsmasq with the same pool, the same
# client (busybox udhcpc) and the same load, in the same run, across a veth pair between
# two throwaway network namespaces (root).
#
#   scripts/bench-dhcp.sh [--leases N] [--parallel P]
#
# Each lease is one `udhcpc -q` run (DISCOVER, OFFER, REQUEST, ACK) from its own
# macvlan (its own MAC: dnsmasq NAKs clients that share one), P at a time; both servers
# keep their leases on disk. Four rounds of N leases, each on a fresh server: ours,
# dnsmasq, dnsmasq, ours; the figures are the sums. Neither pings before offering
# (dnsmasq --no-ping, ours ping_check = false); dnsmasq is authoritative. Prints leases/s for
# both, the server CPU time per lease, and their ratio; record the figures in
# docs/dhcp.md.
# KIWI_DHCP_SERVE=path runs that already built `serve` example instead of building
# this tree's.
set -euo pipefail

leases=500 parallel=8
while [ $# -gt 0 ]; do
  case "$1" in
    --leases) leases="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench-dhcp: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "bench-dhcp: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[ -x "$DNSMASQ" ] || die "dnsmasq not found: scripts/install-deps.sh --for test"
command -v busybox >/dev/null || die "busybox not found"

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
tag="kbd$$$(printf %04x $((RANDOM)))"
sns="${tag}s" cns="${tag}c" sif="${tag:0:10}s" cif="${tag:0:10}c"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip netns del "$sns" 2>/dev/null || true
  ip netns del "$cns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

serve=${KIWI_DHCP_SERVE:-}
if [ -z "$serve" ]; then
  echo "bench-dhcp: building (release)" >&2
  (cd "$root" && cargo build --release -q -p kowabunga-dhcp --example serve)
  serve="${CARGO_TARGET_DIR:-$root/target}/release/examples/serve"
fi

ip netns add "$sns"; ip netns add "$cns"
ip -n "$sns" link set lo up; ip -n "$cns" link set lo up
ip -n "$sns" link add "$sif" type veth peer name "$cif" netns "$cns"
ip -n "$sns" addr add 10.0.0.1/16 dev "$sif"
ip -n "$sns" link set "$sif" up; ip -n "$cns" link set "$cif" up
# One client link per lease, and one to warm up: macvlans on the veth, MACs in order.
for i in $(seq 0 "$leases"); do
  printf 'link add bm%d link %s address 02:00:00:%02x:%02x:%02x type macvlan mode bridge\nlink set bm%d up\n' \
    "$i" "$cif" $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) "$i"
done > "$work/links.batch"
ip -n "$cns" -batch "$work/links.batch"

# The same pool for both: 10.0.1.0 - 10.0.255.254, one hour.
cat > "$work/doc.toml" <<DOC
version = 1
node = "bench"
issued_at = "2026-01-01T00:00:00Z"
expires_at = "2099-01-01T00:00:00Z"

[[network.links]]
name = "$sif"
addresses = ["10.0.0.1/16"]

[dhcp]
ping_check = false

[dhcp.links.$sif]
lease_time = 3600
pools = [{ first = "10.0.1.0", last = "10.0.255.254" }]
DOC

start_ours() {
  ip netns exec "$sns" "$serve" "$work/doc.toml" "$work/ours" > "$work/ours.log" 2>&1 &
  server_pid=$!; pids+=("$server_pid")
}
start_theirs() {
  ip netns exec "$sns" "$DNSMASQ" --keep-in-foreground --port=0 --interface="$sif" \
    --bind-interfaces --except-interface=lo --pid-file= --user=root --no-ping \
    --dhcp-authoritative --dhcp-range=10.0.1.0,10.0.255.254,255.255.0.0,1h \
    --dhcp-lease-max=100000 --dhcp-leasefile="$work/dnsmasq.leases" \
    > "$work/dnsmasq.log" 2>&1 &
  server_pid=$!; pids+=("$server_pid")
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
# CPU time (user + system) the server has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

# One lease per client link, P clients at a time; prints the number obtained and seconds.
run_clients() {
  local t0 t1 got
  t0=$(date +%s.%N)
  seq 1 "$leases" | ip netns exec "$cns" xargs -P "$parallel" -I{} sh -c \
    "busybox udhcpc -q -f -n -t 3 -T 1 -A 1 -i bm{} -s /bin/true 2>&1 | grep -c obtained || true" \
    > "$work/clients.out"
  t1=$(date +%s.%N)
  got=$(awk '{s += $1} END {print s + 0}' "$work/clients.out")
  echo "$got $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
}

# Ready: one lease obtained (also warms both up).
warm() {
  for _ in $(seq 1 50); do
    ip netns exec "$cns" busybox udhcpc -q -f -n -t 1 -T 1 -A 1 -i bm0 -s /bin/true \
      >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# One round: a fresh server (no leases), warmed up, then the clients; adds the leases
# obtained, the seconds and the server's CPU ticks to the totals of NAME.
declare -A got secs cpu
round() { # NAME
  local c0 n t
  rm -rf "$work/ours" "$work/dnsmasq.leases"
  if [ "$1" = ours ]; then start_ours; else start_theirs; fi
  warm || { cat "$work/ours.log" "$work/dnsmasq.log" >&2 2>/dev/null; die "$1: no lease"; }
  c0=$(cpu_ticks)
  read -r n t < <(run_clients)
  cpu[$1]=$(( ${cpu[$1]:-0} + $(cpu_ticks) - c0 ))
  stop_server
  got[$1]=$(( ${got[$1]:-0} + n ))
  secs[$1]=$(awk -v a="${secs[$1]:-0}" -v b="$t" 'BEGIN { printf "%.3f", a + b }')
}

echo "bench-dhcp: $leases leases a round, rounds ours-dnsmasq-dnsmasq-ours, $parallel clients at a time, $(nproc) CPUs" >&2
# ABBA: a load that drifts during the run weighs on both alike.
round ours; round theirs; round theirs; round ours
ours_got=${got[ours]} ours_s=${secs[ours]} ours_cpu=${cpu[ours]}
theirs_got=${got[theirs]} theirs_s=${secs[theirs]} theirs_cpu=${cpu[theirs]}
leases=$((leases * 2))

[ "$ours_got" = "$leases" ] || echo "bench-dhcp: note: kiwi-dhcp gave $ours_got of $leases leases" >&2
[ "$theirs_got" = "$leases" ] || echo "bench-dhcp: note: dnsmasq gave $theirs_got of $leases leases" >&2
ours=$(awk -v n="$ours_got" -v s="$ours_s" 'BEGIN { printf "%.1f", n / s }')
theirs=$(awk -v n="$theirs_got" -v s="$theirs_s" 'BEGIN { printf "%.1f", n / s }')
tick=$(getconf CLK_TCK)
per_lease() { awk -v t="$1" -v hz="$tick" -v n="$2" 'BEGIN { printf "%.2f", n ? t / hz * 1000 / n : 0 }'; }
printf 'kiwi-dhcp %8s leases/s  (%s leases in %s s)  %s ms CPU/lease\n' "$ours" "$ours_got" "$ours_s" "$(per_lease "$ours_cpu" "$ours_got")"
printf 'dnsmasq   %8s leases/s  (%s leases in %s s)  %s ms CPU/lease\n' "$theirs" "$theirs_got" "$theirs_s" "$(per_lease "$theirs_cpu" "$theirs_got")"
printf 'ratio     %8s (kiwi-dhcp / dnsmasq)\n' "$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')"
