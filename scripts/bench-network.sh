#!/usr/bin/env bash
# Benchmark the network and firewall reconcilers against the kernel's own tools.
#
#   scripts/bench-network.sh [LINKS] [RULES] [RUNS]      (root; defaults 200 500 3)
#
# Network: from an empty namespace to LINKS bridges + LINKS veth pairs (one end a
# port of each bridge) + 2*LINKS addresses + LINKS routes, through our reconciler
# (plan + apply) and through `ip -batch` with the same operations.
# Firewall: RULES filter rules through our reconciler as the generation's first
# change (render + list, then nft -f: the load is the kernel's check), the same
# ruleset put back after its tables were deleted by hand (a known ruleset), and
# another new ruleset with the precheck run when another reconciler changes the node
# first (list, nft -c, nft -f); each against a bare `nft -f` of the very script we
# render.
# Every run uses a fresh network namespace; the median of RUNS runs is reported,
# with the ratio ours / reference (goal for the network: <= 1.5).
set -euo pipefail
cd "$(dirname "$0")/.."

LINKS=${1:-200} RULES=${2:-500} RUNS=${3:-3}
die() { printf 'bench-network: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"
for t in ip nft cargo; do command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh --for test)"; done

cargo build --release --quiet -p kowabunga-network --example bench-network \
  -p kowabunga-firewall --example bench-firewall
bin=${CARGO_TARGET_DIR:-target}/release/examples
tmp=$(mktemp -d) ns="" made=()
cleanup() { for n in "${made[@]}"; do ip netns del "$n" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
# A new namespace per measurement. Old ones are deleted only at the end: the kernel
# tears a namespace down in the background, holding the RTNL lock for seconds when
# it has hundreds of links, which would land in the next measurement.
fresh() { ns="kbench-$$-${#made[@]}"; made+=("$ns"); ip netns add "$ns"; }
# Time a command inside the namespace, from its own start (excludes `ip netns exec`).
timed_ms() {
  ip netns exec "$ns" sh -c 't0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 ))' sh "$@" \
    | awk '{ printf "%.1f\n", $1 / 1000 }'
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== network: $LINKS bridges + $LINKS veth pairs + $((2 * LINKS)) addresses + $LINKS routes, $RUNS runs"
"$bin/bench-network" --ip-batch "$LINKS" > "$tmp/batch.ip"
ours=() ref=()
for run in $(seq "$RUNS"); do
  fresh
  out=$(ip netns exec "$ns" "$bin/bench-network" "$LINKS")
  printf '  run %s %s\n' "$run" "$(head -1 <<<"$out")"
  ours+=("$(sed -n 's/^ours_total_ms=//p' <<<"$out")")
  fresh
  ref+=("$(timed_ms ip -batch "$tmp/batch.ip")")
  printf '  run %s ip -batch: %s ms (%s commands)\n' "$run" "${ref[-1]}" "$(wc -l < "$tmp/batch.ip")"
done
o=$(median "${ours[@]}") r=$(median "${ref[@]}")
printf 'network: ours %s ms, ip -batch %s ms, ratio %s (median of %s)\n' "$o" "$r" "$(ratio "$o" "$r")" "$RUNS"

echo "== firewall: $RULES rules, $RUNS runs"
ours=() known=() applied=() prechecked=() ref=()
for run in $(seq "$RUNS"); do
  fresh
  out=$(ip netns exec "$ns" "$bin/bench-firewall" "$RULES" --script "$tmp/rules.nft")
  printf '  run %s %s\n' "$run" "$(head -1 <<<"$out")"
  ours+=("$(sed -n 's/^ours_total_ms=//p' <<<"$out")")
  known+=("$(sed -n 's/^ours_known_ms=//p' <<<"$out")")
  applied+=("$(sed -n 's/^ours_apply_ms=//p' <<<"$out")")
  prechecked+=("$(sed -n 's/^ours_prechecked_ms=//p' <<<"$out")")
  fresh
  ref+=("$(timed_ms nft -f "$tmp/rules.nft")")
  printf '  run %s nft -f: %s ms\n' "$run" "${ref[-1]}"
done
o=$(median "${ours[@]}") k=$(median "${known[@]}") a=$(median "${applied[@]}") p=$(median "${prechecked[@]}") r=$(median "${ref[@]}")
printf 'firewall: ours %s ms, nft -f %s ms, ratio %s (new ruleset, the first change of its generation: plan + load; goal <= 1.5; median of %s)\n' "$o" "$r" "$(ratio "$o" "$r")" "$RUNS"
printf 'firewall: ours %s ms, nft -f %s ms, ratio %s (apply phase alone: the load)\n' "$a" "$r" "$(ratio "$a" "$r")"
printf 'firewall: ours %s ms, nft -f %s ms, ratio %s (known ruleset put back: plan + load; goal <= 1.5)\n' "$k" "$r" "$(ratio "$k" "$r")"
printf 'firewall: ours %s ms, nft -f %s ms, ratio %s (new ruleset after another reconciler'"'"'s change: plan + nft -c + load)\n' "$p" "$r" "$(ratio "$p" "$r")"
