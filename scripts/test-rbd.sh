#!/usr/bin/env bash
# The kaktus agent's rbd backend against a real Ceph cluster:
#
#   scripts/test-rbd.sh        (root; part of scripts/test.sh's fast tier)
#
# Starts a one-node cluster (scripts/ceph-single-node.sh: one monitor, one manager, one
# BlueStore OSD on a file, a pool `kowabunga`, client.libvirt), runs
# agents/kaktus/tests/rbd_cluster.rs against it (the volume methods through a fake
# Kahuna, checked with `rbd`; an instance whose disk is an RBD image, run by the host's
# libvirtd under TCG), then stops the cluster and removes everything it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test-rbd.sh: run as root (the cluster's daemons, libvirtd)" >&2; exit 1; }
say() { printf '[test-rbd] %s\n' "$*" >&2; }

scripts/install-deps.sh --for ceph --for test
. scripts/lib/find-cargo.sh
find_cargo || { echo "scripts/test-rbd.sh: cargo not found (see scripts/test.sh)" >&2; exit 1; }
dir=$(mktemp -d /var/tmp/kowabunga-ceph.XXXXXX)
trap 'scripts/ceph-single-node.sh stop "$dir" >/dev/null 2>&1 || rm -rf "$dir"' EXIT
started=$SECONDS
scripts/ceph-single-node.sh start "$dir" >/dev/null
say "cluster up in $((SECONDS - started)) s ($dir)"
KOWABUNGA_CEPH_ENV="$dir/env" "$cargo_bin" test -p kaktus --locked --test rbd_cluster -- --test-threads=1
say "done in $((SECONDS - started)) s"
