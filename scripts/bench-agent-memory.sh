#!/usr/bin/env bash
# Idle resident memory of an agent (goal: <= 15 MB).
#
#   scripts/bench-agent-memory.sh [kiwi|kaktus] [SECONDS]     (default: kiwi, 10 s)
#
# kaktus: the document has a `[kaktus]` section with a local pool on the host's
# libvirtd (qemu:///system, which must run: `systemctl start libvirtd`), so the agent
# drives libvirt through its helper (`kaktus-libvirt`). Printed: the agent and the
# helper just after the apply, then the agent once the helper has exited idle.
#
# Builds the agent in release mode, serves a signed document from a throwaway directory on
# loopback (python3's http.server), runs `<role> run` against it with its state in a
# temporary directory, waits until the document is applied and the agent is idle, then
# prints VmRSS/VmHWM from /proc. Server and agent run in a throwaway network namespace
# (the agent binds DNS on port 53 and owns nftables tables): needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
role=kiwi
case "${1:-}" in kiwi|kaktus) role=$1; shift ;; esac
idle=${1:-10}
say() { printf '[bench-memory] %s\n' "$*" >&2; }

for tool in minisign python3 cargo; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh --for test" >&2; exit 1; }
done
say "building $role (release)"
cargo build --release -q --locked -p "$role"
bin=target/release/$role

work=$(mktemp -d)
ns=$role-bench-$$
cleanup() {
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

node=bench-node
mkdir -p "$work/www/api/v1/agents/$node" "$work/keys" "$work/state"
minisign -G -W -p "$work/keys/bench.pub" -s "$work/key.sec" >/dev/null
doc="$work/www/api/v1/agents/$node/config"
cat > "$doc" <<TOML
version = 1
node = "$node"
issued_at = 2026-01-01T00:00:00Z
expires_at = 2099-01-01T00:00:00Z
TOML
interval=5
if [ "$role" = kaktus ]; then
  virsh -c qemu:///system version >/dev/null 2>&1 \
    || { echo "kaktus: no libvirtd at qemu:///system (systemctl start libvirtd)" >&2; exit 1; }
  pool=bench-memory-$$
  printf '\n[kaktus]\nlibvirt_uri = "qemu:///system"\n\n[kaktus.pools.%s]\nbackend = "local"\npath = "%s"\n' \
    "$pool" "$work/pool" >> "$doc"
  # A poll (and its drift check against libvirt) every 30 s: the helper, idle after
  # 10 s, exits in between, as with the default 60 s.
  interval=30
  trap 'virsh -q -c qemu:///system pool-destroy "$pool" >/dev/null 2>&1; virsh -q -c qemu:///system pool-undefine "$pool" >/dev/null 2>&1; cleanup' EXIT
fi
minisign -S -s "$work/key.sec" -m "$doc" -x "$doc.minisig" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
status_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
in_ns python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
sleep 1
echo "kowabunga.kahuna=http://127.0.0.1:$port kowabunga.agent_id=$node kowabunga.api_key=bench kowabunga.insecure kowabunga.interval=$interval" > "$work/cmdline"
RUST_LOG=warn in_ns "$bin" run --cmdline "$work/cmdline" --state-root "$work/state" \
  --trusted-keys "$work/keys" --status-addr "127.0.0.1:$status_port" 2>"$work/agent.log" &

for _ in $(seq 1 50); do
  [ -L "$work/state/$role/current" ] && break
  sleep 0.2
done
[ -L "$work/state/$role/current" ] || { cat "$work/agent.log" >&2; echo "the agent did not apply the document" >&2; exit 1; }
agent=$(pgrep -f "^$bin run --cmdline $work/cmdline" | head -n 1)
[ -n "$agent" ] || { cat "$work/agent.log" >&2; echo "the agent died" >&2; exit 1; }
mb() { echo "$(awk "/^$2/ {print \$2}" "/proc/$1/status") / 1024" | bc -l; }
if [ "$role" = kaktus ]; then
  helper=$(pgrep -P "$agent" -f kaktus-libvirt | head -n 1)
  [ -n "$helper" ] || { cat "$work/agent.log" >&2; echo "no libvirt helper after the apply" >&2; exit 1; }
  printf 'kaktus-libvirt binary size: %.1f MB\n' "$(echo "$(stat -c %s "$bin-libvirt") / 1000000" | bc -l)"
  printf 'after the apply: kaktus RSS %.1f MB + kaktus-libvirt RSS %.1f MB\n' "$(mb "$agent" VmRSS)" "$(mb "$helper" VmRSS)"
  for _ in $(seq 1 100); do
    [ -d "/proc/$helper" ] || break
    sleep 0.2
  done
  [ ! -d "/proc/$helper" ] || { echo "the libvirt helper did not exit when idle" >&2; exit 1; }
  say "the libvirt helper exited idle"
  cargo build --release -q --locked -p kaktus --example bench_libvirt_helper
  target/release/examples/bench_libvirt_helper qemu:///system 21 | while IFS=': ' read -r name secs; do
    printf 'libvirt request, %s helper: %.1f ms (median of 21)\n' "$name" "$(echo "$secs * 1000" | bc -l)"
  done
fi
say "document applied; idling ${idle}s (polling every ${interval}s)"
sleep "$idle"
kill -0 "$agent" 2>/dev/null || { cat "$work/agent.log" >&2; echo "the agent died" >&2; exit 1; }
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$agent/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$agent/status")
size=$(stat -c %s "$bin")
printf '%s binary size: %.1f MB\n' "$role" "$(echo "$size / 1000000" | bc -l)"
printf '%s idle RSS: %.1f MB (peak %.1f MB) after %ss idle\n' "$role" "$(echo "$rss / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" "$idle"
# Where it goes: resident kB per mapping (file, [heap], anonymous), largest first.
awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anonymous]" : $6) }
     /^Rss:/ { rss[name] += $2 }
     END { for (n in rss) if (rss[n] > 0) printf "  %6d kB  %s\n", rss[n], n }' "/proc/$agent/smaps" \
  | sort -rn | head -n "${BENCH_MEMORY_TOP:-12}"
