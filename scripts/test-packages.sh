#!/usr/bin/env bash
# Test the agents' .deb packages in clean Debian roots (root only).
#
#   scripts/test-packages.sh [--packages DIR] [--suite bookworm|trixie]...
#                            [--agent NAME]... [--arch amd64|arm64]
#                            [--mirror URL] [--refresh] [--keep]
#
# --packages  take the .deb files from DIR (default: build them into
#             dist/packages/ with scripts/build-packages.sh)
# --suite     Debian suite to install into (repeatable; default: bookworm trixie)
# --agent     test only this agent (repeatable; default: kiwi kaktus kontroller)
# --arch      the packages' architecture (default: this host's). arm64 on an
#             amd64 host: the roots are arm64 (debootstrap --arch arm64), and
#             everything in them (apt, dpkg, systemd-analyze, the agent) runs
#             under qemu-user (binfmt_misc, scripts/lib/binfmt.sh)
# --mirror    Debian mirror (default: KOWABUNGA_MIRROR, else this host's apt sources)
# --refresh   rebuild the cached roots (debootstrap --variant=minbase, apt lists)
# --keep      keep the test roots (printed) instead of deleting them
#
# For each package: lintian (fails on a warning), then in a copy of each
# cached root: its Depends installed with apt, dpkg -i, the unit enabled,
# `systemd-analyze verify` of the unit (the root's systemd, in a chroot), the
# agent's `verify` of a signed document (chroot, own network namespace) and of
# a tampered one (must be refused), dpkg --purge, and nothing left but the
# documented state (docs/packages.md). Exits non-zero on the first failure.
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/kowabunga/package-roots (roots, .debs).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s)
say() { printf '[test-packages] %s\n' "$*" >&2; }
die() { printf '[test-packages] FAIL: %s\n' "$*" >&2; exit 1; }

pkgdir="" suites=() agents=() mirror="${KOWABUNGA_MIRROR:-}" refresh=0 keep=0 arch=$(dpkg --print-architecture)
while [ $# -gt 0 ]; do
  case "$1" in
    --packages) [ $# -ge 2 ] || die "--packages needs a directory"; pkgdir=$2; shift 2 ;;
    --suite) [ $# -ge 2 ] || die "--suite needs a name"; suites+=("$2"); shift 2 ;;
    --agent) [ $# -ge 2 ] || die "--agent needs a name"; agents+=("$2"); shift 2 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs amd64 or arm64"; arch=$2; shift 2 ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; mirror=$2; shift 2 ;;
    --refresh) refresh=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
case "$arch" in amd64|arm64) ;; *) die "unknown --arch '$arch' (amd64 or arm64)" ;; esac
[ ${#agents[@]} -gt 0 ] || agents=(kiwi kaktus kontroller)
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"
for tool in debootstrap lintian minisign dpkg-deb systemd-analyze unshare chroot; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh --for packages"
done
. "$repo/scripts/lib/debian-mirror.sh"
[ -n "$mirror" ] || mirror=$(host_mirror)
[ -n "$mirror" ] || die "no Debian mirror in this host's apt sources: pass --mirror URL or set KOWABUNGA_MIRROR"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kowabunga/package-roots
mkdir -p "$cache"
# Roots of the host's architecture are cached as SUITE, others as SUITE-ARCH.
foreign=0 root_suffix=""
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  foreign=1 root_suffix="-$arch"
  . "$repo/scripts/lib/binfmt.sh"
  ensure_binfmt aarch64 || die "arm64 programs cannot run on this host"
fi

# ---- packages -------------------------------------------------------------------
if [ -z "$pkgdir" ]; then
  pkgdir="$repo/dist/packages"
  args=(); for a in "${agents[@]}"; do args+=(--agent "$a"); done
  "$repo/scripts/build-packages.sh" --arch "$arch" --format deb --no-lintian --out "$pkgdir" "${args[@]}" || die "scripts/build-packages.sh failed"
fi
declare -A deb
for a in "${agents[@]}"; do
  deb[$a]=$(ls "$pkgdir/${a}"_*_"$arch".deb 2>/dev/null | tail -1) || true
  [ -n "${deb[$a]}" ] || die "no ${a}_*_$arch.deb in $pkgdir"
  say "lintian $(basename "${deb[$a]}")"
  lintian --fail-on warning "${deb[$a]}" >&2 || die "lintian: $(basename "${deb[$a]}") has warnings or errors (above)"
done

# ---- a signed document, its key, a tampered copy ----------------------------------
tmp=$(mktemp -d)
mounts=()
cleanup() {
  local m i
  for (( i=${#mounts[@]}-1; i>=0; i-- )); do m=${mounts[$i]}; umount -l "$m" 2>/dev/null || true; done
  rm -rf "$tmp"
  if [ "$keep" = 0 ]; then rm -rf "$cache"/test-*; fi
}
trap cleanup EXIT
minisign -G -W -p "$tmp/test.pub" -s "$tmp/test.key" >/dev/null || die "minisign -G failed"
# The smallest document each agent takes: a header (valid for a year from now).
issued=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ) expires=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)
for a in "${agents[@]}"; do
  printf 'version = 1\nnode = "test-node"\nissued_at = %s\nexpires_at = %s\n' "$issued" "$expires" > "$tmp/$a.toml"
  minisign -S -s "$tmp/test.key" -m "$tmp/$a.toml" -x "$tmp/$a.toml.minisig" >/dev/null </dev/null || die "minisign -S failed"
  sed 's/^version = 1$/version = 2/' "$tmp/$a.toml" > "$tmp/$a-tampered.toml"
  cp "$tmp/$a.toml.minisig" "$tmp/$a-tampered.toml.minisig"
done
: > "$tmp/cmdline"

# ---- cached roots -----------------------------------------------------------------
base_root() {
  local suite=$1 base="$cache/$1$root_suffix"
  if [ "$refresh" = 1 ] || [ ! -e "$base/.kowabunga-ready" ]; then
    say "$suite: debootstrap --variant=minbase --arch $arch from $mirror (cached in $base)"
    rm -rf "$base" "$base.new"
    debootstrap --variant=minbase --arch "$arch" "$suite" "$base.new" "$mirror" > "$cache/$suite$root_suffix.debootstrap.log" 2>&1 \
      || die "debootstrap $suite ($arch) failed: see $cache/$suite$root_suffix.debootstrap.log"
    cp /etc/resolv.conf "$base.new/etc/resolv.conf"
    chroot "$base.new" apt-get update -qq >/dev/null 2>"$cache/$suite$root_suffix.apt.log" || die "$suite: apt-get update failed: $(cat "$cache/$suite$root_suffix.apt.log")"
    # systemd, as on any host the agents run on: the root's own systemd-analyze
    # checks the unit, deb-systemd-helper (init-system-helpers) enables it.
    chroot "$base.new" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
      >>"$cache/$suite$root_suffix.apt.log" 2>&1 || die "$suite: apt-get install systemd failed: see $cache/$suite$root_suffix.apt.log"
    chroot "$base.new" apt-get clean
    touch "$base.new/.kowabunga-ready"
    mv "$base.new" "$base"
  fi
}

# Every path of the root but the volatile ones and the package manager's own.
snapshot() {
  (cd "$1" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \
      -o -path ./var/cache -o -path ./var/lib/dpkg -o -path ./var/lib/apt -o -path ./var/log \) -prune -o -print | LC_ALL=C sort)
}

test_agent() {
  local suite=$1 root=$2 a=$3 out rc unit="/usr/lib/systemd/system/$3.service" left expected
  local name; name=$(dpkg-deb -f "${deb[$a]}" Package)
  say "$suite/$a: apt-get satisfy the Depends: $(dpkg-deb -f "${deb[$a]}" Depends)"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get satisfy -y -qq --no-install-recommends \
    "$(dpkg-deb -f "${deb[$a]}" Depends)" > "$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; die "$suite/$a: apt-get satisfy failed"; }
  # The admin's files, before the package: the yml (kiwi, kaktus) and a trusted key.
  mkdir -p "$root/etc/kowabunga/trusted-keys"
  cp "$tmp/test.pub" "$root/etc/kowabunga/trusted-keys/test.pub"
  if [ "$a" != kontroller ]; then
    dpkg-deb --fsys-tarfile "${deb[$a]}" | tar -xO "./usr/share/doc/$a/examples/$a.yml" \
      | sed 's/^  id: .*/  id: test-node/' > "$root/etc/kowabunga/$a.yml"
    chmod 0600 "$root/etc/kowabunga/$a.yml"
  fi
  snapshot "$root" > "$tmp/before"

  cp "${deb[$a]}" "$root/tmp/pkg.deb"
  chroot "$root" dpkg -i /tmp/pkg.deb > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; die "$suite/$a: dpkg -i failed"; }
  [ -x "$root/usr/bin/$a" ] || die "$suite/$a: /usr/bin/$a not installed"
  [ -L "$root/etc/systemd/system/multi-user.target.wants/$a.service" ] || die "$suite/$a: $a.service not enabled by postinst"
  say "$suite/$a: installed and enabled"
  if [ "$a" = kaktus ]; then
    # The libvirt helper runs with the libraries the package's Depends brought in.
    out=$(echo '{"id":1,"request":{"op":"hostname"}}' | chroot "$root" /usr/bin/kaktus-libvirt --uri test:///default 2>"$tmp/helper.err") \
      && [[ "$out" == '{"id":1,"result":{"Ok":'* ]] \
      || { printf '%s\n' "$out" >&2; cat "$tmp/helper.err" >&2; die "$suite/kaktus: kaktus-libvirt did not answer a request on libvirt's test driver"; }
    say "$suite/kaktus: kaktus-libvirt answers on libvirt's test driver"
  fi

  # The root's own systemd (its version's directives); a unit it only names
  # (libvirtd.service for kaktus: a Recommends) is tolerated, any other message fails.
  out=$(chroot "$root" systemd-analyze verify "$unit" 2>&1) || { printf '%s\n' "$out" >&2; die "$suite/$a: systemd-analyze verify $unit failed"; }
  if printf '%s\n' "$out" | grep -v -e '^$' | grep -q .; then
    printf '%s\n' "$out" >&2; die "$suite/$a: systemd-analyze verify $unit printed warnings"
  fi
  say "$suite/$a: systemd-analyze verify $unit ($(chroot "$root" systemd-analyze --version | head -1)): ok"

  if [ "$foreign" = 1 ]; then
    # The document check runs nft, which speaks netlink (NETLINK_NETFILTER): qemu-user
    # does not translate that protocol, so for the check the root's nft is a wrapper
    # running the host's own nft natively, with its loader and libraries; the root's
    # is put back after.
    local hn="$root/tmp/host-nft" f hostnft
    hostnft=$(command -v nft) || die "nft not found on the host: run scripts/install-deps.sh --for test"
    mkdir -p "$hn"
    for f in "$hostnft" $(ldd "$hostnft" | grep -o '/[^ ]*'); do cp -L "$f" "$hn/"; done
    mv "$root/usr/sbin/nft" "$root/usr/sbin/nft.kowabunga-test"
    printf '#!/bin/sh\nexec /tmp/host-nft/ld-linux-x86-64.so.2 --library-path /tmp/host-nft /tmp/host-nft/nft "$@"\n' > "$root/usr/sbin/nft"
    chmod 0755 "$root/usr/sbin/nft"
  fi
  mkdir -p "$root/tmp/kpt" && cp "$tmp/$a.toml" "$tmp/$a.toml.minisig" "$tmp/$a-tampered.toml" "$tmp/$a-tampered.toml.minisig" "$tmp/cmdline" "$root/tmp/kpt/"
  local node=(); [ "$a" != kontroller ] || node=(--node test-node)
  # kiwi and kaktus take their id from /etc/kowabunga/AGENT.yml (the example, filled in).
  rc=0; out=$(unshare --net chroot "$root" "/usr/bin/$a" verify "/tmp/kpt/$a.toml" "${node[@]}" --cmdline /tmp/kpt/cmdline \
      --trusted-keys /etc/kowabunga/trusted-keys 2>&1) || rc=$?
  [ "$rc" = 0 ] && printf '%s\n' "$out" | grep -q '^valid' \
    || { printf '%s\n' "$out" >&2; die "$suite/$a: '$a verify' of a signed document exited $rc"; }
  rc=0; out=$(unshare --net chroot "$root" "/usr/bin/$a" verify "/tmp/kpt/$a-tampered.toml" "${node[@]}" --cmdline /tmp/kpt/cmdline \
      --trusted-keys /etc/kowabunga/trusted-keys 2>&1) || rc=$?
  [ "$rc" = 3 ] || { printf '%s\n' "$out" >&2; die "$suite/$a: '$a verify' of a tampered document exited $rc, not 3 (rejected)"; }
  rm -rf "$root/tmp/kpt"
  if [ "$foreign" = 1 ]; then
    mv "$root/usr/sbin/nft.kowabunga-test" "$root/usr/sbin/nft" && rm -rf "$root/tmp/host-nft"
  fi
  [ -d "$root/var/lib/kowabunga/$a" ] || die "$suite/$a: verify left no state in /var/lib/kowabunga/$a (purge would test nothing)"
  say "$suite/$a: '$a verify': signed document valid, tampered one rejected"

  chroot "$root" dpkg --purge "$name" > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; die "$suite/$a: dpkg --purge failed"; }
  snapshot "$root" > "$tmp/after"
  # Documented state left by a purge (docs/packages.md): kaktus's storage pools.
  expected=""; [ "$a" != kaktus ] || expected=$'+./var/lib/kaktus\n+./var/lib/kaktus/pools'
  left=$({ diff "$tmp/before" "$tmp/after" || true; } | sed -n 's/^> /+/p; s/^< /-/p')
  [ "$left" = "$expected" ] || die "$suite/$a: after dpkg --purge the root differs from before the install (+ left, - removed):
$left
(expected: ${expected:-nothing})"
  say "$suite/$a: purged, nothing left${expected:+ but /var/lib/kaktus (documented)}"
  rm -rf "$root/var/lib/kaktus" "$root/etc/kowabunga"
}

for suite in "${suites[@]}"; do
  base_root "$suite"
  root="$cache/test-$suite$root_suffix"
  rm -rf "$root" && cp -a "$cache/$suite$root_suffix" "$root"
  mkdir -p "$cache/archives-$suite$root_suffix/partial"
  mount --bind "$cache/archives-$suite$root_suffix" "$root/var/cache/apt/archives" && mounts+=("$root/var/cache/apt/archives")
  mount -t proc proc "$root/proc" && mounts+=("$root/proc")
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  for a in "${agents[@]}"; do test_agent "$suite" "$root" "$a"; done
  for (( i=${#mounts[@]}-1; i>=0; i-- )); do umount "${mounts[$i]}"; done
  mounts=()
  [ "$keep" = 0 ] || say "kept $root"
done

n=$(( ${#agents[@]} * ${#suites[@]} ))
say "all passed in $(( $(date +%s) - t0 ))s: ${agents[*]} ($arch) on ${suites[*]}"
printf '%d passed, 0 failed\n' "$n"
