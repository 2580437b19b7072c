#!/usr/bin/env bash
# Time to install an A/B update (download from loopback + verify + write) against
# copying the same bytes with cp to the same partitions (goal: <= 1.3x;
# docs/benchmarks.md):
#
#   scripts/bench-update.sh [DIST] [--role ROLE]     (default: dist/, kiwi)
#
# Runs scripts/test-sysupdate.sh --bench on a copy of DIST's disk (every check of that
# test runs too; the agent core's stager is built in release). Needs a built image
# (scripts/build-image.sh ROLE) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
dist=dist
case "${1:-}" in ""|--*) ;; *) dist=$1; shift ;; esac
exec scripts/test-sysupdate.sh "$dist" --bench "$@"
