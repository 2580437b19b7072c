#!/usr/bin/env bash
# A throwaway single-node Ceph cluster on this host, for the RBD storage backend's
# tests of the kaktus agent:
#
#   scripts/ceph-single-node.sh start DIR    # install what is missing, start, wait, print DIR/env
#   scripts/ceph-single-node.sh stop DIR     # kill the daemons it started, remove DIR
#
# Why: kaktus' `rbd` backend talks to a real Ceph cluster through librbd (and libvirt's
# rbd pools/disks); a fake would not tell us whether the images, snapshots, clones and
# caps work. This is the smallest real cluster: Debian bookworm's Ceph 16.2 packages
# (ceph-mon, ceph-mgr, ceph-osd, ceph-common), one monitor on 127.0.0.1, one manager,
# one OSD whose BlueStore lives on a sparse 4 GiB FILE (no block device, no LVM, as
# Ceph's own vstart.sh does), pools of size 1, cephx on, a pool `kowabunga` (rbd pool
# init'ed) and a client `client.libvirt` with `profile rbd` caps on that pool.
# Everything it writes is under DIR (config, keyrings, mon/mgr/osd data, logs, pid
# files, admin sockets); the daemons run as root, daemonized with pid files in DIR/run,
# no systemd units. Root only. scripts/test-rbd.sh (part of scripts/test.sh's fast
# tier) starts one for the kaktus rbd tests; docs/ceph-single-node.md. A second `start` refuses while the cluster in DIR runs; a DIR left by
# a failed start (it carries our marker file) is wiped and started afresh.
#
# DIR/env (printed at the end) gives the tests CEPH_CONF, CEPH_KEYRING (client.libvirt),
# CEPH_ID, the monitor's address, the pool and client.libvirt's key (for a libvirt secret).
# CEPH_MON_PORT is the msgr v2 port: librados takes a bare HOST:PORT whose port is not
# 6789 for msgr v2 (given the v1 port it tries v2, logs an error, then falls back),
# so that is the port for libvirt's <host name='127.0.0.1' port='...'/>.
#
# Ports: CEPH_MON_PORT_V2 (default 13300) and CEPH_MON_PORT_V1 (default 16789) on
# 127.0.0.1, away from Ceph's usual 3300/6789. The OSD and the manager take ports in
# Ceph's 6800-7300 range on 127.0.0.1.
set -euo pipefail

PKGS=(ceph-mon ceph-mgr ceph-osd ceph-common)
POOL=kowabunga
CLIENT=libvirt
MON_ID=a MGR_ID=x OSD_ID=0
PORT_V2=${CEPH_MON_PORT_V2:-13300}
PORT_V1=${CEPH_MON_PORT_V1:-16789}
TIMEOUT=${CEPH_START_TIMEOUT:-120}    # seconds for the cluster to become usable
MARKER=.ceph-single-node              # DIR is ours (stop and a re-start may wipe it)

say() { printf '[ceph-single-node] %s\n' "$*" >&2; }
die() { printf '[ceph-single-node] error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }

# ---- arguments -----------------------------------------------------------------
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  start|stop) cmd=$1 ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown command '$1' (start DIR | stop DIR | -h)" ;;
esac
[ $# -eq 2 ] || die "usage: $0 $cmd DIR"
[ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root and apt-get installs the packages)"
dir=$(realpath -m -- "$2")
case "$dir" in
  /) die "DIR may not be /" ;;
  *[[:space:]]*|*'$'*|*'"'*|*"'"*) die "DIR may not contain spaces, quotes or \$ (it goes into ceph.conf): $dir" ;;
esac
# Admin sockets are unix sockets (107 bytes at most); a client's is named like
# DIR/run/ceph-client.libvirt.PID.NUMBER.asok.
[ $(( ${#dir} + 55 )) -le 107 ] || die "DIR is too long for unix socket paths (${#dir} > 52 bytes): $dir"
conf=$dir/ceph.conf

# ---- daemons: pids recorded in DIR/pids ("name pid" lines) ----------------------
# A pid counts only while its process is a Ceph daemon started with our ceph.conf
# (guards against a recycled pid).
ours() {
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-c $conf "
}
live_pids() {
  local name pid
  [ -r "$dir/pids" ] || return 0
  while read -r name pid; do
    [ -n "$pid" ] && ours "$pid" && printf '%s %s\n' "$name" "$pid"
  done < "$dir/pids"
  return 0
}

kill_daemons() {
  local name pid names=() pids=() i t
  # osd first, then mgr, then mon (reverse start order): an OSD that loses its
  # monitor first would wait for it.
  while read -r name pid; do names=("$name" "${names[@]}"); pids=("$pid" "${pids[@]}"); done < <(live_pids)
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    say "stopping ${names[$i]} (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for t in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done   # 10 s each
  done
  for t in $(seq 1 200); do          # then up to 20 s more for all, then KILL
    [ -z "$(live_pids)" ] && return 0
    sleep 0.1
  done
  while read -r name pid; do say "$name (pid $pid) ignored SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; done < <(live_pids)
  for t in $(seq 1 50); do [ -z "$(live_pids)" ] && return 0; sleep 0.1; done
  die "daemons still running: $(live_pids | tr '\n' ' ')"
}

# Refuse to rm -rf a directory that is not ours.
check_ours() {
  [ -e "$dir" ] || return 0
  [ -d "$dir" ] || die "$dir exists and is not a directory"
  [ -e "$dir/$MARKER" ] || [ -z "$(ls -A "$dir")" ] \
    || die "$dir is not empty and was not made by this script (no $MARKER): refusing to touch it"
}

if [ "$cmd" = stop ]; then
  if [ ! -e "$dir" ]; then say "$dir does not exist: nothing to stop"; exit 0; fi
  check_ours
  kill_daemons
  rm -rf -- "$dir"
  say "stopped; removed $dir"
  exit 0
fi

# ---- start ----------------------------------------------------------------------
t0=$(date +%s%N)
check_ours
if [ -e "$dir/$MARKER" ]; then
  running=$(live_pids)
  [ -z "$running" ] || die "a cluster is already running in $dir ($(echo $running)): run '$0 stop $dir' first"
  say "wiping $dir (left by an earlier start that is not running)"
  rm -rf -- "$dir"
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (scripts/install-deps.sh --for ceph)"
  "$(dirname "$0")/install-deps.sh" --for ceph || die "scripts/install-deps.sh --for ceph failed"
  t0=$(date +%s%N)   # the start time reported below is the cluster's, not apt's
fi
for b in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd uuidgen python3; do
  command -v "$b" >/dev/null || die "$b not found after installing ${PKGS[*]}"
done
for port in "$PORT_V2" "$PORT_V1"; do
  ! ss -Htln "sport = :$port" | grep -q . || die "port $port is taken on this host (set CEPH_MON_PORT_V2/CEPH_MON_PORT_V1)"
done

mkdir -p "$dir"
touch "$dir/$MARKER"
mkdir -p "$dir/run" "$dir/log" "$dir/crash" "$dir/mon.$MON_ID" "$dir/mgr.$MGR_ID" "$dir/osd.$OSD_ID"
: > "$dir/pids"

# On any failure from here: stop what was started, show the logs' tails, keep DIR
# (with its marker, so that the next start wipes it).
on_error() {
  local rc=$?
  trap - ERR EXIT
  if [ "$rc" != 0 ]; then
    say "start failed (exit $rc); last log lines:"
    for f in "$dir"/log/*.log "$dir"/log/*.out; do
      [ -s "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }
    done
    kill_daemons || true
    say "left $dir for inspection; '$0 stop $dir' removes it"
  fi
  exit "$rc"
}
trap on_error EXIT

fsid=$(uuidgen)
mon_host="[v2:127.0.0.1:$PORT_V2,v1:127.0.0.1:$PORT_V1]"
cat > "$conf" <<EOF
# Written by scripts/ceph-single-node.sh: a throwaway single-node test cluster.
[global]
fsid = $fsid
mon host = $mon_host
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $dir/run
crash dir = $dir/crash
# One OSD: pools of size 1, replicas chosen among OSDs (not hosts), fixed PG counts.
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# The host's disk may be fuller than Ceph's 30 %-free warning (and 5 % stop) likes.
mon data avail warn = 2
mon data avail crit = 1
mon cluster log file = $dir/log/cluster.log
# Daemons report to the manager every second (default 5 s): PG states reach
# ceph -s sooner, so the start's wait is shorter.
mgr stats period = 1
# Enabled modules: only iostat, not also restful and nfs (read by the mon's --mkfs,
# hence here and not under [mgr]).
mgr initial modules = iostat
ms bind ipv6 = false

[client.admin]
keyring = $dir/keyring

[client.$CLIENT]
keyring = $dir/client.$CLIENT.keyring

[mon]
mon data = $dir/mon.\$id
keyring = $dir/mon.\$id/keyring
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid

[mgr]
mgr data = $dir/mgr.\$id
keyring = $dir/mgr.\$id/keyring
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
public addr = 127.0.0.1

[osd]
osd data = $dir/osd.\$id
keyring = $dir/osd.\$id/keyring
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
public addr = 127.0.0.1
cluster addr = 127.0.0.1
osd objectstore = bluestore
# BlueStore on a sparse file, created by --mkfs (as vstart.sh does).
bluestore block path = $dir/osd.\$id/block.img
bluestore block create = true
bluestore block size = 4294967296
bluestore block db create = false
bluestore block wal create = false
# The smallest memory target Ceph accepts is 896 MiB; the default is 4 GiB.
osd memory target = 939524096
EOF

ceph_admin() { timeout 60 ceph -c "$conf" -n client.admin --connect-timeout 30 "$@"; }

# Start a daemon (it daemonizes and writes DIR/run/NAME.pid); record its pid.
start_daemon() {
  local name=$1 bin=$2 id=$3 pidf pid t
  pidf=$dir/run/$name.pid
  "$bin" -c "$conf" -i "$id" > "$dir/log/$name.out" 2>&1 || die "$bin -i $id failed (see $dir/log/$name.out)"
  for t in $(seq 1 100); do [ -s "$pidf" ] && break; sleep 0.1; done
  pid=$(cat "$pidf" 2>/dev/null) || die "$name wrote no pid file $pidf"
  ours "$pid" || die "$name (pid $pid) is not running (see $dir/log/$name.log)"
  echo "$name $pid" >> "$dir/pids"
  say "$name running (pid $pid)"
}

# Run "$@" until it succeeds, until the start's deadline.
deadline=$(( $(date +%s) + TIMEOUT ))
wait_for() {
  local what=$1; shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out (${TIMEOUT}s) waiting for $what"
    sleep 0.5
  done
}

# -- monitor
# The bootstrap keyring stays out of the mon's data dir: --mkfs wants that dir empty
# (and then writes its own keyring there).
ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null
monmaptool --create --fsid "$fsid" --addv "$MON_ID" "$mon_host" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i "$MON_ID" --monmap "$dir/monmap" --keyring "$dir/mon.keyring" \
  > "$dir/log/mon.$MON_ID.out" 2>&1 && [ -d "$dir/mon.$MON_ID/store.db" ] \
  || die "ceph-mon --mkfs failed (see $dir/log/mon.$MON_ID.log)"
start_daemon "mon.$MON_ID" ceph-mon "$MON_ID"
wait_for "the monitor to answer" ceph_admin mon stat

# -- manager
ceph_admin auth get-or-create "mgr.$MGR_ID" mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
  -o "$dir/mgr.$MGR_ID/keyring" 2>/dev/null
start_daemon "mgr.$MGR_ID" ceph-mgr "$MGR_ID"

# -- OSD: registered with its cephx key, BlueStore made on the file, then started.
osd_uuid=$(uuidgen)
osd_key=$(ceph-authtool --gen-print-key)
id=$(printf '{"cephx_secret": "%s"}\n' "$osd_key" | ceph_admin osd new "$osd_uuid" -i -)
[ "$id" = "$OSD_ID" ] || die "ceph osd new gave id '$id', expected $OSD_ID"
ceph-authtool --create-keyring "$dir/osd.$OSD_ID/keyring" -n "osd.$OSD_ID" --add-key "$osd_key" >/dev/null
ceph-osd -c "$conf" -i "$OSD_ID" --mkfs --osd-uuid "$osd_uuid" > "$dir/log/osd.$OSD_ID.mkfs.out" 2>&1 \
  || die "ceph-osd --mkfs failed (see $dir/log/osd.$OSD_ID.mkfs.out and osd.$OSD_ID.log)"
start_daemon "osd.$OSD_ID" ceph-osd "$OSD_ID"

# -- the pool and its client
osd_up() {
  ceph_admin osd stat -f json | python3 -c '
import json, sys
s = json.load(sys.stdin); s = s.get("osdmap", s)
sys.exit(0 if s["num_up_osds"] >= 1 and s["num_in_osds"] >= 1 else 1)'
}
wait_for "osd.$OSD_ID to be up and in" osd_up
ceph_admin osd pool create "$POOL" 8 8 replicated >/dev/null 2>&1
wait_for "rbd pool init $POOL" timeout 60 rbd -c "$conf" -n client.admin pool init "$POOL"
ceph_admin auth get-or-create "client.$CLIENT" mon 'profile rbd' osd "profile rbd pool=$POOL" \
  mgr "profile rbd pool=$POOL" -o "$dir/client.$CLIENT.keyring" 2>/dev/null
chmod 0600 "$dir/client.$CLIENT.keyring"
key=$(ceph_admin auth print-key "client.$CLIENT")

# -- until `ceph -s` shows the OSD up+in, a manager and every PG (the pool's too) active+clean
healthy() {
  ceph_admin -s -f json | POOL="$POOL" python3 -c '
import json, os, sys
s = json.load(sys.stdin)
o = s["osdmap"]; o = o.get("osdmap", o)
p = s["pgmap"]
states = {x["state_name"]: x["count"] for x in p.get("pgs_by_state", [])}
ok = (o["num_up_osds"] >= 1 and o["num_in_osds"] >= 1 and s["mgrmap"]["available"]
      and p["num_pgs"] > 0 and states.get("active+clean", 0) == p["num_pgs"])
sys.exit(0 if ok else 1)'
}
wait_for "the OSD up+in and all PGs active+clean" healthy
# ... and the pool's own PGs, from the client's point of view (its caps included).
wait_for "client.$CLIENT to list pool $POOL" timeout 30 rbd -c "$conf" --id "$CLIENT" ls "$POOL"

cat > "$dir/env" <<EOF
CEPH_CONF=$conf
CEPH_KEYRING=$dir/client.$CLIENT.keyring
CEPH_ID=$CLIENT
CEPH_CLIENT_KEY=$key
CEPH_MON_HOST=$mon_host
CEPH_MON_ADDR=127.0.0.1
CEPH_MON_PORT=$PORT_V2
CEPH_MON_PORT_V1=$PORT_V1
CEPH_POOL=$POOL
CEPH_FSID=$fsid
EOF
trap - EXIT
t1=$(date +%s%N)
say "$(ceph_admin health 2>/dev/null || echo 'health unknown')"
say "started in $(( (t1 - t0) / 1000000000 )).$(( (t1 - t0) / 100000000 % 10 )) s; env in $dir/env:"
cat "$dir/env"
