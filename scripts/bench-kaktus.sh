#!/usr/bin/env bash
# Kaktus storage figures (docs/benchmarks.md), against qemu-img on the same files:
#
#   scripts/bench-kaktus.sh [TEMPLATE_MIB]        (default 1024)
#
# - template import (`CreateTemplateVolume`: download, checks, conversion, fsync) over
#   HTTP on loopback, raw and qcow2, vs `qemu-img convert` of the same file on the same
#   filesystem (qemu-img's default, and with -W, out-of-order writes, as the agent runs
#   it), each followed by a sync of its output, as the agent syncs what it publishes;
# - an OS volume (`CreateOsVolume`, a qcow2 clone) from that template and from a
#   64 MiB one, vs a full copy of the template (`qemu-img convert -O raw`).
# The template holds random data (nothing to skip or compress: the worst case). Every
# file is in the page cache for both sides. Then the agent's idle memory
# (scripts/bench-agent-memory.sh kaktus). Needs qemu-utils, python3, root (memory).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
say() { printf '[bench-kaktus] %s\n' "$*" >&2; }
for tool in qemu-img python3 cargo bc; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh --for test" >&2; exit 1; }
done

say "building the storage bench (release)"
cargo build --release -q --locked -p kaktus --example bench_storage
bench=target/release/examples/bench_storage

work=$(mktemp -d /var/tmp/kaktus-bench.XXXXXX)
server=""
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/www" "$work/pool" "$work/copies"

say "a $mib MiB template of random data, raw and qcow2"
head -c "$((mib << 20))" /dev/urandom > "$work/www/template.raw"
qemu-img convert -q -f raw -O qcow2 "$work/www/template.raw" "$work/www/template.qcow2"

# nginx (sendfile) when installed, so that the server is not what is measured;
# python3's http.server otherwise (slower: the figures say which).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if command -v nginx >/dev/null; then
  server_name=nginx
  chmod 755 "$work" "$work/www"; chmod 644 "$work/www/"*
  cat > "$work/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:$port; root $work/www; }
}
EOF
  nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" &
else
  server_name="python3 http.server"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
fi
server=$!
for _ in $(seq 1 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/template.raw', timeout=1).read(1)" 2>/dev/null && break
  sleep 0.1
done

# Seconds a command takes.
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

# qemu-img convert [OPTIONS] FORMAT SOURCE OUTPUT, then its output synced (as the agent's).
convert() {
  local out=$4
  qemu-img convert -q $1 -f "$2" -O raw "$3" "$out"
  sync "$out"
}
say "qemu-img on the same files"
sync
convert_raw=$(timed convert "" raw "$work/www/template.raw" "$work/copies/a.raw")
convert_qcow2=$(timed convert "" qcow2 "$work/www/template.qcow2" "$work/copies/b.raw")
convert_raw_w=$(timed convert -W raw "$work/www/template.raw" "$work/copies/c.raw")
convert_qcow2_w=$(timed convert -W qcow2 "$work/www/template.qcow2" "$work/copies/d.raw")
rm -f "$work/copies/"*

say "the agent's storage code"
declare -A fig
while IFS=': ' read -r name secs; do fig[$name]=$secs; done < <(
  "$bench" "$work/pool" "http://127.0.0.1:$port/template.raw" \
    "http://127.0.0.1:$port/template.qcow2" "$((64 << 20))")

ratio() { echo "scale=2; $1 / $2" | bc -l; }
ms() { printf '%.1f ms' "$(echo "$1 * 1000" | bc -l)"; }
echo
echo "template: $mib MiB, random data, served by $server_name on loopback"
printf 'import raw over HTTP:   %.2f s  vs qemu-img convert raw->raw:   %.2f s (ratio %s), with -W: %.2f s (ratio %s)\n' \
  "${fig[import_raw]}" "$convert_raw" "$(ratio "${fig[import_raw]}" "$convert_raw")" \
  "$convert_raw_w" "$(ratio "${fig[import_raw]}" "$convert_raw_w")"
printf 'import qcow2 over HTTP: %.2f s  vs qemu-img convert qcow2->raw: %.2f s (ratio %s), with -W: %.2f s (ratio %s)\n' \
  "${fig[import_qcow2]}" "$convert_qcow2" "$(ratio "${fig[import_qcow2]}" "$convert_qcow2")" \
  "$convert_qcow2_w" "$(ratio "${fig[import_qcow2]}" "$convert_qcow2_w")"
echo "OS volume from the $mib MiB template: $(ms "${fig[os_clone_large]}") (median of 5)"
echo "OS volume from a 64 MiB template:     $(ms "${fig[os_clone_small]}") (median of 5)"
echo "full copy of the $mib MiB template:   $(ms "$convert_raw")"

if [ "$(id -u)" = 0 ]; then
  echo
  scripts/bench-agent-memory.sh kaktus 10
else
  say "not root: idle memory skipped (scripts/bench-agent-memory.sh kaktus)"
fi
