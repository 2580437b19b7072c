#!/usr/bin/env bash
# Install every host package this repository uses, and nothing else.
#
#   scripts/install-deps.sh [--for GROUP]... [--mirror URL] [--check]
#
# GROUP is one of: rust (toolchain components), test (fast tier), image (build
# images), qemu (boot images in the QEMU tier), packages (build and test the
# agents' .deb packages), arm64 (build arm64 images and packages on an x86-64
# host, boot them), arm64-libvirt (the same plus libvirt-dev:arm64, multiarch, for
# kaktus), all (default; without arm64-libvirt).
# --check  only report what is missing (exit 1 if anything is), install nothing.
#
# Idempotent: packages already installed are not reinstalled, apt lists are
# refreshed only when something must be installed. The only network sources
# are Debian's archive (apt), crates.io (cargo) and rustup components.
#
# The Debian mirror is read from the host's apt configuration
# (/etc/apt/sources.list and /etc/apt/sources.list.d/*, one-line or deb822),
# never written in this repository; --mirror or KOWABUNGA_MIRROR overrides it.
# bookworm-backports is added (from that same mirror) when a group needs it.
#
# To add a package: append it to the list of its group below.
set -euo pipefail

# ---- package lists ---------------------------------------------------------
# Each entry: "package" or "package/suite" (suite pinned for that package).
# libvirt-dev: kaktus's helper kaktus-libvirt links libvirt (virt crate); every workspace build needs it.
PKGS_base=(ca-certificates curl git build-essential pkg-config libvirt-dev)
# The kaktus tests run a real libvirtd (QEMU driver, TCG guests) and qemu-img; qemu from
# backports as in the QEMU tier, so that both tiers agree on one version.
PKGS_test=(minisign nftables iproute2 bind9-dnsutils dnsperf dnsmasq-base openssl python3 nginx-light
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86/bpo qemu-utils/bpo ovmf
  keepalived conntrackd wireguard-tools dbus-daemon busybox-static isc-dhcp-client xz-utils ipxe)
# Image build: mkosi (>= 24) builds its own tools tree from Debian trixie
# packages (ToolsTree= in image/mkosi.conf): systemd-repart, ukify, bootctl,
# mkfs.erofs, veritysetup... are not taken from the host. The host needs
# bubblewrap, apt and the archive keyring to build that tree, qemu-img, zstd, xz,
# cpio, python3 and sfdisk (fdisk) for the artifacts. "mkosi" is special: on Debian 12 it is
# mkosi 24 unpacked from bookworm-backports into $MKOSI_DIR (see
# install_mkosi), because the mkosi package depends on systemd >= 254 and
# installing it would upgrade the host's systemd; elsewhere, the distribution's
# mkosi package.
PKGS_image=(
  mkosi bubblewrap apt dpkg debian-archive-keyring
  qemu-utils/bpo zstd xz-utils cpio python3 minisign fdisk
)
MKOSI_DIR=/opt/kowabunga/mkosi
# QEMU tier: system emulator, UEFI firmware, a busybox for the peer VM, xorriso
# for the kontroller scenario's NoCloud seed ISO, ssh to log in to it, iPXE's
# image as the kaktus scenario's instance template.
# qemu comes from backports (10.x) so that qemu-utils and qemu-system agree.
# systemd-boot/systemd-boot-efi 254 from backports (and with them the host's
# systemd, which they require): scripts/personalize-image.sh runs the host's
# ukify and its addon stub (254+) to write the credentials add-on.
PKGS_qemu=(qemu-system-x86/bpo ovmf qemu-utils/bpo busybox-static ipxe minisign iproute2 cpio zstd socat mtools xorriso openssh-client fdisk python3 systemd/bpo systemd-boot/bpo systemd-boot-efi/bpo python3-pefile)
# The kaktus rbd backend's tests (scripts/test-rbd.sh): a one-node Ceph cluster
# (scripts/ceph-single-node.sh) and QEMU's rbd block driver, from backports like QEMU.
PKGS_ceph=(ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra/bpo)
# The agents' .deb packages (scripts/build-packages.sh, scripts/test-packages.sh):
# dpkg-deb/dpkg-shlibdeps, lintian, clean Debian roots made with debootstrap,
# minisign to sign the test document; systemd-analyze and unshare are the host's.
# The .apk packages (Alpine: musl): musl-gcc for the C parts of the static musl
# build (ring), openssl for the throwaway packager key and for scripts/check-apk.py's
# independent signature check, python3 for that reader, busybox for `sh -n` of the
# OpenRC scripts with Alpine's shell.
PKGS_packages=(dpkg-dev lintian debootstrap debian-archive-keyring minisign musl-tools openssl python3 busybox-static)
# arm64 on an x86-64 host: the cross linker and libc for the agents, qemu-user
# (static, registered with binfmt_misc by scripts/build-image.sh) for the arm64
# packages' maintainer scripts when mkosi installs them, and QEMU's Arm system
# emulator with AAVMF (UEFI) for the QEMU tier's arm64 boot (QEMU from backports, as
# qemu-system-x86: 10.x has the raspi4b machine). The Raspberry Pi card image
# (build-image.sh --board rpi4) writes its FAT partition with mtools and compresses
# the card with xz; its raspi4b test edits a copy of the device tree with fdtput
# (device-tree-compiler).
PKGS_arm64=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static/bpo qemu-system-arm/bpo qemu-efi-aarch64
  mtools xz-utils device-tree-compiler)
RUSTUP_TARGETS_arm64=(aarch64-unknown-linux-gnu aarch64-unknown-linux-musl)
# kaktus for arm64 on an x86-64 host: its libvirt helper links libvirt, so the arm64
# libvirt-dev is installed beside the host's (multiarch: this adds arm64 to dpkg's
# foreign architectures, and apt then reads arm64 package lists too). Only the
# kaktus arm64 image and package need it (scripts/test.sh --arm64), not CI.
PKGS_arm64_libvirt=(libvirt-dev:arm64)
RUSTUP_COMPONENTS=(rustfmt clippy)
RUSTUP_TARGETS=()
# The .apk packages carry static musl binaries.
RUSTUP_TARGETS_packages=(x86_64-unknown-linux-musl)

# ---- helpers -----------------------------------------------------------------
say() { printf '[install-deps] %s\n' "$*" >&2; }
die() { printf '[install-deps] error: %s\n' "$*" >&2; exit 1; }

groups=() mirror="${KOWABUNGA_MIRROR:-}" check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --for) [ $# -ge 2 ] || die "--for needs a group (rust|test|ceph|image|qemu|packages|arm64|arm64-libvirt|all)"; groups+=("$2"); shift 2 ;;
    --for=*) groups+=("${1#--for=}"); shift ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; mirror="$2"; shift 2 ;;
    --mirror=*) mirror="${1#--mirror=}"; shift ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ ${#groups[@]} -gt 0 ] || groups=(all)

want=() want_rust=0
for g in "${groups[@]}"; do
  case "$g" in
    rust) want_rust=1 ;;
    test) want+=("${PKGS_base[@]}" "${PKGS_test[@]}"); want_rust=1 ;;
    image|build) want+=("${PKGS_base[@]}" "${PKGS_image[@]}"); want_rust=1 ;;
    qemu) want+=("${PKGS_base[@]}" "${PKGS_qemu[@]}") ;;
    ceph) want+=("${PKGS_ceph[@]}") ;;
    packages) want+=("${PKGS_base[@]}" "${PKGS_packages[@]}"); want_rust=1; RUSTUP_TARGETS+=("${RUSTUP_TARGETS_packages[@]}") ;;
    arm64) want+=("${PKGS_base[@]}" "${PKGS_arm64[@]}"); want_rust=1; RUSTUP_TARGETS+=("${RUSTUP_TARGETS_arm64[@]}") ;;
    arm64-libvirt) want+=("${PKGS_base[@]}" "${PKGS_arm64[@]}" "${PKGS_arm64_libvirt[@]}"); want_rust=1; RUSTUP_TARGETS+=("${RUSTUP_TARGETS_arm64[@]}") ;;
    all) want+=("${PKGS_base[@]}" "${PKGS_test[@]}" "${PKGS_ceph[@]}" "${PKGS_image[@]}" "${PKGS_qemu[@]}" "${PKGS_packages[@]}" "${PKGS_arm64[@]}"); want_rust=1
      RUSTUP_TARGETS+=("${RUSTUP_TARGETS_packages[@]}" "${RUSTUP_TARGETS_arm64[@]}") ;;
    *) die "unknown group '$g' (expected rust, test, ceph, image, qemu, packages, arm64, arm64-libvirt or all)" ;;
  esac
done

# host_mirror: the first Debian mirror URL of the host's apt sources.
. "$(dirname "$0")/lib/debian-mirror.sh"

# A package without :ARCH is the host's architecture's (or an arch-all one): on a
# multiarch host dpkg-query lists every architecture's instance, one line each.
installed() {
  local p=$1
  case "$p" in *:*) ;; *) dpkg-query -W -f='${Status}\n' "$p:$(dpkg --print-architecture)" 2>/dev/null | grep -qx 'install ok installed' && return 0 ;; esac
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed'
}
installed_from_bpo() {
  # A package pinned to backports counts only if its version is a backports one
  # or newer than bookworm's (e.g. it came from trixie already).
  local v; v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) || return 1
  case "$v" in *bpo*|*deb13*) return 0 ;; esac
  # mkosi >= 24, systemd >= 254 are acceptable whatever their origin.
  case "$1" in
    mkosi) dpkg --compare-versions "$v" ge 24 ;;
    systemd*) dpkg --compare-versions "$v" ge 254 ;;
    *) return 1 ;;
  esac
}

. /etc/os-release
codename=${VERSION_CODENAME:-}

# mkosi >= 24 present: our unpacked copy, or (not on Debian 12) a mkosi package.
mkosi_ok() {
  local v
  if [ -x "$MKOSI_DIR/bin/mkosi" ]; then
    v=$("$MKOSI_DIR/bin/mkosi" --version 2>/dev/null | awk '{print $2}')
  elif [ "$codename" != bookworm ] && command -v mkosi >/dev/null 2>&1; then
    v=$(mkosi --version 2>/dev/null | awk '{print $2}')
  fi
  dpkg --compare-versions "${v:-0}" ge 24
}

# Debian 12: mkosi 24 from bookworm-backports, unpacked (dpkg-deb -x) into
# $MKOSI_DIR and run with the host's python3, not installed with apt: its
# package depends on systemd >= 254 and would upgrade the host's systemd.
# mkosi is pure Python; what needed systemd 254 (systemd-repart, ukify) comes
# from its tools tree. scripts/build-image.sh runs $MKOSI_DIR/bin/mkosi first.
install_mkosi() {
  local tmp deb
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root -t bookworm-backports mkosi) \
    || { rm -rf "$tmp"; die "apt-get download -t bookworm-backports mkosi failed"; }
  deb=$(ls "$tmp"/mkosi_*.deb)
  rm -rf "$MKOSI_DIR.new" && mkdir -p "$MKOSI_DIR.new/bin"
  dpkg-deb -x "$deb" "$MKOSI_DIR.new/root" || { rm -rf "$tmp"; die "dpkg-deb -x $deb failed"; }
  cat > "$MKOSI_DIR.new/bin/mkosi" <<EOF
#!/bin/sh
# mkosi $(dpkg-deb -f "$deb" Version), unpacked by scripts/install-deps.sh (not an apt package).
PYTHONPATH=$MKOSI_DIR/root/usr/lib/python3/dist-packages exec /usr/bin/python3 -m mkosi "\$@"
EOF
  chmod 0755 "$MKOSI_DIR.new/bin/mkosi"
  rm -rf "$MKOSI_DIR" && mv "$MKOSI_DIR.new" "$MKOSI_DIR"
  rm -rf "$tmp"
  # `mkosi` in PATH too (/usr/local/bin comes before /usr/bin), unless taken.
  [ -e /usr/local/bin/mkosi ] || ln -s "$MKOSI_DIR/bin/mkosi" /usr/local/bin/mkosi
  say "mkosi $("$MKOSI_DIR/bin/mkosi" --version | awk '{print $2}') unpacked into $MKOSI_DIR (the host's systemd is untouched)"
}

missing=() need_bpo=0 want_mkosi=0
for p in "${want[@]}"; do
  name=${p%/*}
  case "$p" in
    mkosi)
      want_mkosi=1
      mkosi_ok && continue
      if [ "$codename" = bookworm ]; then need_bpo=1; missing+=("mkosi (unpacked from bookworm-backports)"); else missing+=(mkosi); fi ;;
    */bpo) need_bpo=1; installed "$name" && installed_from_bpo "$name" || missing+=("$p") ;;
    *) installed "$name" || missing+=("$p") ;;
  esac
done
# de-duplicate, keep order
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')

if [ "$check" = 1 ]; then
  if [ ${#missing[@]} -gt 0 ]; then say "missing: ${missing[*]}"; exit 1; fi
  say "all packages present for: ${groups[*]}"; exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "must run as root to install: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$need_bpo" = 1 ] && [ "$codename" = bookworm ]; then
    [ -n "$mirror" ] || mirror=$(host_mirror)
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*; pass --mirror URL"
    bpo=/etc/apt/sources.list.d/kowabunga-backports.sources
    want_src="Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ ; then
      say "adding bookworm-backports from $mirror"
      printf '%s\n' "$want_src" > "$bpo"
    fi
  fi
  # Packages of another architecture (NAME:ARCH): dpkg must know that architecture.
  for p in "${missing[@]}"; do
    case "$p" in
      *:*) a=${p##*:}
        if ! dpkg --print-foreign-architectures | grep -qx "$a" && [ "$a" != "$(dpkg --print-architecture)" ]; then
          say "dpkg --add-architecture $a (for ${p%%:*}:$a)"
          dpkg --add-architecture "$a" || die "dpkg --add-architecture $a failed"
        fi ;;
    esac
  done
  say "apt-get update"
  apt-get update -qq || die "apt-get update failed"
  plain=() bpo_pkgs=()
  for p in "${missing[@]}"; do
    case "$p" in
      */bpo) if [ "$codename" = bookworm ]; then bpo_pkgs+=("${p%/*}"); else plain+=("${p%/*}"); fi ;;
      "mkosi (unpacked from bookworm-backports)") ;;
      *) plain+=("$p") ;;
    esac
  done
  if [ ${#bpo_pkgs[@]} -gt 0 ]; then
    say "installing from bookworm-backports: ${bpo_pkgs[*]}"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bpo_pkgs[@]}" >/dev/null \
      || die "apt-get install -t bookworm-backports ${bpo_pkgs[*]} failed"
  fi
  if [ ${#plain[@]} -gt 0 ]; then
    say "installing: ${plain[*]}"
    apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null \
      || die "apt-get install ${plain[*]} failed"
  fi
  if [ "$want_mkosi" = 1 ] && [ "$codename" = bookworm ] && ! mkosi_ok; then
    install_mkosi
  fi
else
  say "all Debian packages present for: ${groups[*]}"
fi

# find_cargo: rustup's cargo, wherever this runs (sudo, a Debian cargo in PATH).
. "$(dirname "$0")/lib/find-cargo.sh"
if [ "$want_rust" = 1 ]; then
  find_cargo || die "cargo not found: install a Rust toolchain with rustup (https://rustup.rs) first; under sudo, which resets PATH, run: sudo env \"PATH=\$PATH\" $0 ..."
  export PATH="$(dirname "$cargo_bin"):$PATH"
  if command -v rustup >/dev/null 2>&1; then
    for c in "${RUSTUP_COMPONENTS[@]}"; do
      rustup component list --installed 2>/dev/null | grep -q "^$c" || { say "rustup component add $c"; rustup component add "$c"; }
    done
    for t in "${RUSTUP_TARGETS[@]}"; do
      rustup target list --installed 2>/dev/null | grep -qx "$t" || { say "rustup target add $t"; rustup target add "$t"; }
    done
  fi
fi
say "done"
