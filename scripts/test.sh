#!/usr/bin/env bash
# Run the test suite: the one command of README's "run the tests", and what CI runs.
#
#   scripts/test.sh            both tiers
#   scripts/test.sh --fast     lint + unit/integration tests (kernel tests in network
#                              namespaces, a fake Kahuna on loopback): a few minutes
#   scripts/test.sh --qemu     build the kiwi image, boot it under QEMU, check from outside
#
# Installs what it needs first (scripts/install-deps.sh). Needs root: the kernel tests
# create network namespaces and nftables tables, the QEMU tier builds images.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=1 qemu=1
case "${1:-}" in
  "") ;;
  --fast) qemu=0 ;;
  --qemu) fast=0 ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "usage: scripts/test.sh [--fast|--qemu]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (network namespaces, nftables, image build)" >&2; exit 1; }
say() { printf '\n[test] %s\n' "$*" >&2; }

if [ "$fast" = 1 ]; then
  say "installing test dependencies"
  scripts/install-deps.sh --for test
  say "cargo fmt --check"
  cargo fmt --all --check
  say "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  say "fast tier: cargo test"
  cargo test --workspace --locked
fi

if [ "$qemu" = 1 ]; then
  say "QEMU tier: image build"
  scripts/install-deps.sh --for image --for qemu
  scripts/build-image.sh kiwi
  say "QEMU tier: boots"
  KOWABUNGA_QEMU_TESTS=1 cargo test -p qemu-test --locked -- --ignored --test-threads=1
fi
