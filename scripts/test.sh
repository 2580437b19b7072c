#!/usr/bin/env bash
# Run the test suite: the one command of README's "run the tests", and what CI runs.
#
#   scripts/test.sh            every tier
#   scripts/test.sh --fast     lint + unit/integration tests (kernel tests in network
#                              namespaces, a fake Kahuna on loopback, the rbd backend
#                              against a one-node Ceph) + the README and docs
#                              walkthroughs, run as written: a few minutes
#   scripts/test.sh --fuzz     every fuzz target for 40 s (scripts/fuzz.sh; longer:
#                              scripts/fuzz.sh --seconds N)
#   scripts/test.sh --qemu     build the images (every role for x86_64, kiwi for arm64),
#                              install an A/B update into a disk copy
#                              (scripts/test-sysupdate.sh), boot them under QEMU (the
#                              arm64 kiwi on Arm's `virt` machine), check from outside;
#                              then the agents' .deb packages (scripts/test-packages.sh)
#                              and .apk packages (scripts/test-apk.sh)
#   scripts/test.sh --updates  the A/B update boot test, outside the CI run (~25 min
#                              of TCG: ten boots of one VM; docs/benchmarks.md): builds
#                              the kiwi image V, V.1 and V.2 (whose health gate fails),
#                              then boots V -> power cut -> V.1 -> V.2 -> back to V.1
#   scripts/test.sh --arm64    the arm64 work outside the CI run: the kaktus and
#                              kontroller arm64 images built (kaktus turns the host
#                              multiarch: libvirt-dev:arm64); the Raspberry Pi 4 card
#                              image built, checked and booted on QEMU's raspi4b
#                              (qemu-test/tests/board.rs); the arm64 .deb packages
#                              built and tested in arm64 bookworm and trixie roots
#                              (under qemu-user), the aarch64 .apk tested
#
# Installs what it needs first (scripts/install-deps.sh). Needs root: the kernel tests
# create network namespaces and nftables tables, the QEMU tier builds images.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=1 fuzz=1 qemu=1 updates=0 arm64=0
case "${1:-}" in
  "") ;;
  --fast) fuzz=0 qemu=0 ;;
  --fuzz) fast=0 qemu=0 ;;
  --qemu) fast=0 fuzz=0 ;;
  --updates) fast=0 fuzz=0 qemu=0 updates=1 ;;
  --arm64) fast=0 fuzz=0 qemu=0 arm64=1 ;;
  -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
  *) echo "usage: scripts/test.sh [--fast|--fuzz|--qemu|--updates|--arm64]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (network namespaces, nftables, image build)" >&2; exit 1; }
say() { printf '\n[test] %s\n' "$*" >&2; }
started=$SECONDS
update_test=ab_update_to_v2_is_blessed_and_an_unhealthy_v3_rolls_back_to_v2_by_itself
tier_start=$SECONDS
# Each tier's duration, printed at the end (docs/benchmarks.md keeps them).
timings=()
tier_done() { timings+=("$1: $((SECONDS - tier_start)) s"); tier_start=$SECONDS; }

# find_cargo: rustup's cargo, wherever this runs (sudo, a Debian cargo in PATH).
. scripts/lib/find-cargo.sh
if ! find_cargo; then
  cat >&2 <<EOF
scripts/test.sh: cargo not found.
  sudo resets PATH, which drops ~/.cargo/bin. Either
    sudo env "PATH=\$PATH" scripts/test.sh     (keeps your PATH, rustup's cargo included)
    sudo env CARGO=\$(command -v cargo) scripts/test.sh
  or install a toolchain for root: https://rustup.rs (then /root/.cargo/bin/cargo is found).
EOF
  exit 1
fi
# rustup's directory first: a Debian /usr/bin/cargo must not shadow it, and the
# scripts and cargo subcommands (clippy, fmt) run below find the same toolchain.
export PATH="$(dirname "$cargo_bin"):$PATH"
say "cargo: $cargo_bin ($(cargo --version))"
# A from-scratch run gains nothing from incremental state (hundreds of MiB per crate).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
disk() { say "disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') free, target/ $(du -sh target 2>/dev/null | cut -f1 || echo 0)"; }
disk

if [ "$fast" = 1 ]; then
  say "installing test dependencies"
  scripts/install-deps.sh --for test
  say "cargo fmt --check"
  cargo fmt --all --check
  say "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  say "fast tier: cargo test"
  cargo test --workspace --locked --no-fail-fast
  say "fast tier: the kaktus rbd backend against a one-node Ceph cluster"
  scripts/test-rbd.sh
  say "fast tier: update artifacts (scripts/make-update.sh on fake files)"
  scripts/test-make-update.sh
  say "docs: README and docs/ walkthroughs, as written"
  scripts/check-docs.sh
  tier_done "fast tier"
  disk
fi

if [ "$fuzz" = 1 ]; then
  say "fuzz tier: every target for 40 s"
  scripts/fuzz.sh --seconds 40
  tier_done "fuzz tier"
  disk
fi

if [ "$qemu" = 1 ]; then
  say "QEMU tier: image build"
  scripts/install-deps.sh --for image --for qemu --for arm64
  for role in kiwi kaktus kontroller; do
    scripts/build-image.sh "$role"
  done
  # arm64: the kiwi image (cross-built agent, packages' scripts under qemu-user); the
  # other roles' arm64 images: scripts/test.sh --arm64.
  scripts/build-image.sh kiwi --arch arm64
  say "QEMU tier: the A/B update installed into slot B of the kiwi disk (systemd-sysupdate, no boot)"
  scripts/test-sysupdate.sh dist --role kiwi
  say "QEMU tier: boots (all but the A/B update test: scripts/test.sh --updates)"
  KOWABUNGA_QEMU_TESTS=1 cargo test -p qemu-test --locked --test boot --test harness -- --ignored \
    --test-threads=1 --skip "$update_test"
  tier_done "QEMU tier"
  disk
  say "packages: each agent's .deb installed, verified and purged in bookworm and trixie roots; each .apk read back and run without libc"
  scripts/install-deps.sh --for packages
  # The release binaries the image builds just left (a joint `cargo build -p kiwi -p
  # kaktus -p kontroller` would unify features and rebuild most of the tree); the
  # .apk's static musl binaries are built here.
  scripts/build-packages.sh --no-lintian --bin-dir target/release --out dist/packages
  scripts/test-packages.sh --packages dist/packages
  scripts/test-apk.sh --packages dist/packages
  tier_done "packages"
  disk
fi
if [ "$arm64" = 1 ]; then
  say "arm64: the kaktus and kontroller images"
  # arm64-libvirt: kaktus's helper links the arm64 libvirt (multiarch host).
  scripts/install-deps.sh --for image --for qemu --for arm64-libvirt --for packages
  for role in kaktus kontroller; do
    scripts/build-image.sh "$role" --arch arm64
  done
  tier_done "arm64 images"
  say "arm64: the Raspberry Pi 4 card image, checked and booted on QEMU's raspi4b"
  scripts/build-image.sh kiwi --board rpi4
  KOWABUNGA_QEMU_TESTS=1 cargo test -p qemu-test --locked --test board -- --ignored --test-threads=1
  tier_done "rpi4 card"
  say "arm64: the agents' .deb packages in arm64 bookworm and trixie roots, their .apk read back and run"
  scripts/build-packages.sh --arch arm64 --no-lintian --out dist/packages-arm64
  scripts/test-packages.sh --arch arm64 --packages dist/packages-arm64
  scripts/test-apk.sh --arch aarch64 --packages dist/packages-arm64
  tier_done "arm64 packages"
fi
if [ "$updates" = 1 ]; then
  # The node goes from the kiwi image V to V.1, then to V.2, a build whose health gate
  # fails (its agent cannot reach Kahuna): qemu-test/tests/boot.rs, docs/images.md.
  say "A/B update boot test: the kiwi image V, V.1 and V.2 (unhealthy)"
  scripts/install-deps.sh --for image --for qemu
  v1=$(cargo pkgid -p kiwi | sed 's/.*[#@]//')
  scripts/build-image.sh kiwi
  rm -rf dist/update-test
  scripts/build-image.sh kiwi --version "$v1.1" --out dist/update-test/next --agent-bin target/release/kiwi
  scripts/build-image.sh kiwi --version "$v1.2" --out dist/update-test/unhealthy --agent-bin target/release/kiwi \
    --overlay qemu-test/overlays/unhealthy
  tier_done "update builds"
  say "A/B update boot test: V -> power cut -> V.1 -> V.2 -> rolled back to V.1"
  KOWABUNGA_QEMU_TESTS=1 cargo test -p qemu-test --locked --test boot -- --ignored --exact "$update_test"
  tier_done "update boots"
fi
say "durations: ${timings[*]:-none}; total $((SECONDS - started)) s"
# CI's disk is shared and its free space varies: what this run left, for the next one.
say "disk: target/ $(du -sh target 2>/dev/null | cut -f1), dist/ $(du -sh dist 2>/dev/null | cut -f1), $(df -h --output=avail . | tail -n1 | tr -d ' ') free"
