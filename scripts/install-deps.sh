#!/usr/bin/env bash
# Install every host package this repository uses, and nothing else.
#
#   scripts/install-deps.sh [--for GROUP]... [--mirror URL] [--check]
#
# GROUP is one of: rust (toolchain components), test (fast tier), image (build
# images), qemu (boot images in the QEMU tier), all (default).
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
PKGS_base=(ca-certificates curl git build-essential pkg-config)
PKGS_test=(minisign nftables iproute2 bind9-dnsutils dnsperf dnsmasq-base openssl python3)
# Image build: mkosi 24 and systemd-boot, ukify, systemd-repart (systemd 254)
# come from bookworm-backports on Debian 12; bookworm's own are too old.
PKGS_image=(
  mkosi/bpo systemd/bpo systemd-boot/bpo systemd-boot-efi/bpo
  bubblewrap apt dpkg debian-archive-keyring
  erofs-utils dosfstools mtools fdisk cryptsetup-bin e2fsprogs
  qemu-utils/bpo zstd cpio kmod python3 python3-pefile minisign binutils
)
# QEMU tier: system emulator, UEFI firmware, a busybox for the peer VM.
# qemu comes from backports (10.x) so that qemu-utils and qemu-system agree.
PKGS_qemu=(qemu-system-x86/bpo ovmf qemu-utils/bpo busybox-static minisign iproute2 cpio zstd socat mtools fdisk python3 systemd/bpo systemd-boot/bpo systemd-boot-efi/bpo python3-pefile)
RUSTUP_COMPONENTS=(rustfmt clippy)
RUSTUP_TARGETS=()

# ---- helpers -----------------------------------------------------------------
say() { printf '[install-deps] %s\n' "$*" >&2; }
die() { printf '[install-deps] error: %s\n' "$*" >&2; exit 1; }

groups=() mirror="${KOWABUNGA_MIRROR:-}" check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --for) [ $# -ge 2 ] || die "--for needs a group (rust|test|image|qemu|all)"; groups+=("$2"); shift 2 ;;
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
    all) want+=("${PKGS_base[@]}" "${PKGS_test[@]}" "${PKGS_image[@]}" "${PKGS_qemu[@]}"); want_rust=1 ;;
    *) die "unknown group '$g' (expected rust, test, image, qemu or all)" ;;
  esac
done

# Print the first Debian mirror URL found in the host's apt sources.
host_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    case "$f" in
      *.sources)
        # deb822: take the URIs of the stanza whose Suites carry a plain
        # release name (not -security).
        awk 'BEGIN{RS="";FS="\n"}
             { uris=""; suites="";
               for(i=1;i<=NF;i++){ if($i ~ /^URIs:/){sub(/^URIs:[ \t]*/,"",$i); uris=$i}
                                   if($i ~ /^Suites:/){sub(/^Suites:[ \t]*/,"",$i); suites=$i} }
               if(uris!="" && suites !~ /security/ && suites ~ /(bookworm|trixie|stable)/){ split(uris,u," "); print u[1]; exit } }' "$f" ;;
      *)
        awk '$1=="deb" && $0 !~ /security/ { for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; exit} }' "$f" ;;
    esac
  done | grep -m1 . || true
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
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

missing=() need_bpo=0
for p in "${want[@]}"; do
  name=${p%/*}
  case "$p" in
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
  . /etc/os-release
  codename=${VERSION_CODENAME:-}
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
  say "apt-get update"
  apt-get update -qq || die "apt-get update failed"
  plain=() bpo_pkgs=()
  for p in "${missing[@]}"; do
    case "$p" in
      */bpo) if [ "$codename" = bookworm ]; then bpo_pkgs+=("${p%/*}"); else plain+=("${p%/*}"); fi ;;
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
else
  say "all Debian packages present for: ${groups[*]}"
fi

if [ "$want_rust" = 1 ]; then
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
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
