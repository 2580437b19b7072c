#!/usr/bin/env bash
# Time to install an A/B update (download from loopback + verify + write) against
# copying the same bytes with cp to the same partitions (goal: <= 1.3x;
# docs/benchmarks.md):
#
#   scripts/bench-update.sh [DIST] [--role ROLE]     (default: dist/, kiwi)
#
# Builds the agent core's staging example (release), then runs
# scripts/test-sysupdate.sh --bench on a copy of DIST's disk (every check of that test
# runs too). Needs a built image (scripts/build-image.sh ROLE) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
dist=dist
case "${1:-}" in ""|--*) ;; *) dist=$1; shift ;; esac
. scripts/lib/find-cargo.sh
find_cargo || { echo "bench-update: cargo not found (see scripts/test.sh)" >&2; exit 1; }
"$cargo_bin" build --release -q --locked -p kowabunga-agent --example stage_update
exec scripts/test-sysupdate.sh "$dist" --bench "$@"
