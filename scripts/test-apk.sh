#!/usr/bin/env bash
# Test the agents' Alpine .apk packages (root only: chroot, unshare).
#
#   scripts/test-apk.sh [--packages DIR] [--arch x86_64|aarch64] [--keep]
#
# --packages  take DIR/apk/ARCH/*.apk and the packager key DIR/apk/*.rsa.pub
#             (default: build them into dist/packages/ with
#             scripts/build-packages.sh --format apk)
# --arch      Alpine's architecture of the packages (default x86_64); aarch64 on an
#             x86-64 host: the agent runs under qemu-user (scripts/lib/binfmt.sh)
# --keep      keep the test roots (printed)
#
# No Alpine system or apk-tools exists here (Debian has neither), so each package
# is checked by an independent reader and its files are run without any libc:
#   1. scripts/check-apk.py (Python's zlib/tarfile/hashlib, openssl): three gzip
#      streams, the signature verifies with the packager's public key, .PKGINFO's
#      fields and datahash, each file's PAX SHA-1, owners and modes;
#   2. a package with one byte changed in its data, and one whose control comes from
#      another build, are refused by the same reader;
#   3. the OpenRC service, conf.d and install scripts parse with busybox sh (Alpine's
#      /bin/sh is busybox ash) and the service is an openrc-run script;
#   4. the package unpacked into an empty root (no libc, no loader: the binary must be
#      the static musl build) where the agent runs; then, with the host's nft (the
#      package's depend) added, its `verify` accepts a signed document and refuses a
#      tampered one (chroot, own network and mount namespaces).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s)
say() { printf '[test-apk] %s\n' "$*" >&2; }
die() { printf '[test-apk] FAIL: %s\n' "$*" >&2; exit 1; }

pkgdir="" keep=0 arch=x86_64
while [ $# -gt 0 ]; do
  case "$1" in
    --packages) [ $# -ge 2 ] || die "--packages needs a directory"; pkgdir=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --arch) [ $# -ge 2 ] || die "--arch needs x86_64 or aarch64"; arch=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (chroot, unshare)"
for tool in python3 openssl minisign busybox unshare chroot tar; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh --for packages"
done
case "$arch" in
  x86_64) deb_arch=amd64 ;;
  aarch64) deb_arch=arm64 ;;
  *) die "unknown --arch '$arch' (x86_64 or aarch64)" ;;
esac
if [ "$arch" != "$(uname -m)" ]; then
  . "$repo/scripts/lib/binfmt.sh"
  ensure_binfmt "$arch" || die "$arch programs cannot run on this host"
fi
if [ -z "$pkgdir" ]; then
  pkgdir="$repo/dist/packages"
  "$repo/scripts/build-packages.sh" --arch "$deb_arch" --format apk --out "$pkgdir" || die "scripts/build-packages.sh --format apk failed"
fi
shopt -s nullglob
apks=("$pkgdir"/apk/"$arch"/*.apk) keys=("$pkgdir"/apk/*.rsa.pub)
[ ${#apks[@]} -gt 0 ] || die "no .apk in $pkgdir/apk/$arch"
[ ${#keys[@]} = 1 ] || die "expected one packager key $pkgdir/apk/*.rsa.pub, found ${#keys[@]}"
pub=${keys[0]}

tmp=$(mktemp -d)
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$tmp"; else say "kept $tmp"; fi; }
trap cleanup EXIT
minisign -G -W -p "$tmp/test.pub" -s "$tmp/test.key" >/dev/null || die "minisign -G failed"
issued=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ) expires=$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)
printf 'version = 1\nnode = "test-node"\nissued_at = %s\nexpires_at = %s\n' "$issued" "$expires" > "$tmp/doc.toml"
minisign -S -s "$tmp/test.key" -m "$tmp/doc.toml" -x "$tmp/doc.toml.minisig" >/dev/null </dev/null || die "minisign -S failed"
sed 's/^version = 1$/version = 2/' "$tmp/doc.toml" > "$tmp/tampered.toml"
cp "$tmp/doc.toml.minisig" "$tmp/tampered.toml.minisig"

# tamper flip APK OUT: one byte of the data stream's deflate body flipped;
# tamper swap APK OTHER OUT: APK with OTHER's control stream. The streams are split by
# check-apk.py's own gzip_streams.
tamper() {
  python3 - "$repo/scripts/check-apk.py" "$@" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("check_apk", sys.argv[1])
check_apk = importlib.util.module_from_spec(spec); spec.loader.exec_module(check_apk)
how, args = sys.argv[2], sys.argv[3:]
split = lambda path: check_apk.gzip_streams(open(path, "rb").read())
if how == "flip":
    sig, control, data = split(args[0])
    at = 10 + (len(data) - 18) // 2  # past the 10-byte gzip header, before the trailer
    data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
    out, parts = args[1], (sig, control, data)
else:
    (sig, _, data), (_, control, _) = split(args[0]), split(args[1])
    out, parts = args[2], (sig, control, data)
open(out, "wb").write(b"".join(parts))
PY
}

n=0
for apk in "${apks[@]}"; do
  file=$(basename "$apk") agent=${file%%-[0-9]*}
  # 1. Read back.
  python3 "$repo/scripts/check-apk.py" "$apk" --pubkey "$pub" \
    --expect "pkgname=$agent" --expect "arch=$arch" --expect depend=nftables --expect license=Apache-2.0 \
    --expect-file "usr/bin/$agent:755" --expect-file "etc/init.d/$agent:755" --expect-file "etc/conf.d/$agent:644" \
    >&2 || die "$file: check-apk.py refused it"

  # 2. Tampered copies are refused.
  tamper flip "$apk" "$tmp/flipped.apk" || die "$file: could not write a tampered copy"
  ! python3 "$repo/scripts/check-apk.py" "$tmp/flipped.apk" --pubkey "$pub" 2>/dev/null \
    || die "$file: a copy with one data byte flipped passed check-apk.py"
  other=""; for o in "${apks[@]}"; do [ "$o" = "$apk" ] || other=$o; done
  if [ -n "$other" ]; then
    tamper swap "$apk" "$other" "$tmp/swapped.apk" || die "$file: could not write a swapped copy"
    ! python3 "$repo/scripts/check-apk.py" "$tmp/swapped.apk" --pubkey "$pub" 2>/dev/null \
      || die "$file: a copy with another package's control passed check-apk.py"
  fi

  # 3 and 4. Unpack into an empty root.
  root="$tmp/root-$agent"
  mkdir -p "$root"
  tar -xzf "$apk" -C "$root" 2>"$tmp/tar.err" || { cat "$tmp/tar.err" >&2; die "$file: tar -xzf failed"; }
  head -1 "$root/etc/init.d/$agent" | grep -qx '#!/sbin/openrc-run' || die "$file: /etc/init.d/$agent is not an openrc-run script"
  for script in "$root/etc/init.d/$agent" "$root/etc/conf.d/$agent" "$root/.post-install" "$root/.pre-deinstall"; do
    busybox sh -n "$script" 2>"$tmp/sh.err" || { cat "$tmp/sh.err" >&2; die "$file: ${script#"$root"} does not parse with busybox sh"; }
  done
  leftover=$(cd "$root" && find . -type f ! -path "./usr/bin/$agent" ! -path './etc/*' ! -path './usr/share/doc/*' ! -name '.SIGN.*' ! -name '.PKGINFO' ! -name '.post-install' ! -name '.pre-deinstall')
  [ -z "$leftover" ] || die "$file: unexpected files: $leftover"
  # Nothing but the package: no /lib, no loader, no libc.
  [ ! -e "$root/lib" ] && [ ! -e "$root/lib64" ] && [ ! -e "$root/usr/lib" ] || die "$file: the package ships a /lib, /lib64 or /usr/lib"
  mkdir -p "$root/proc" "$root/dev"
  # Its own network and mount namespaces: /proc and /dev mounted for the agent only
  # (it runs children with stdin on /dev/null), gone after.
  in_root() {
    unshare --net --mount sh -c 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"' "$root" "$@"
  }
  out=$(in_root "/usr/bin/$agent" --version 2>&1) \
    || { printf '%s\n' "$out" >&2; die "$file: /usr/bin/$agent does not run in a root without libc"; }
  # The document check runs `nft` (the package's depend): the host's, with its
  # libraries, added only now.
  nft=$(command -v nft) || die "nft not found: run scripts/install-deps.sh --for test"
  for f in "$nft" $(ldd "$nft" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$f")" && cp -L "$f" "$root$f"
  done
  mkdir -p "$root/tmp/kpt" "$root/etc/kowabunga/trusted-keys"
  cp "$tmp/test.pub" "$root/etc/kowabunga/trusted-keys/"
  cp "$tmp/doc.toml" "$tmp/doc.toml.minisig" "$tmp/tampered.toml" "$tmp/tampered.toml.minisig" "$root/tmp/kpt/"
  : > "$root/tmp/kpt/cmdline"
  args=(--cmdline /tmp/kpt/cmdline --trusted-keys /etc/kowabunga/trusted-keys)
  if [ "$agent" = kontroller ]; then
    args+=(--node test-node)
  else
    sed 's/^  id: .*/  id: test-node/' "$root/usr/share/doc/$agent/examples/$agent.yml" > "$root/etc/kowabunga/$agent.yml"
  fi
  rc=0; out=$(in_root "/usr/bin/$agent" verify /tmp/kpt/doc.toml "${args[@]}" 2>&1) || rc=$?
  [ "$rc" = 0 ] && printf '%s\n' "$out" | grep -q '^valid' \
    || { printf '%s\n' "$out" >&2; die "$file: '$agent verify' of a signed document in a root without libc exited $rc"; }
  rc=0; out=$(in_root "/usr/bin/$agent" verify /tmp/kpt/tampered.toml "${args[@]}" 2>&1) || rc=$?
  [ "$rc" = 3 ] || { printf '%s\n' "$out" >&2; die "$file: '$agent verify' of a tampered document exited $rc, not 3 (rejected)"; }
  say "$file: read back and signature ok, tampered copies refused, OpenRC scripts parse, static binary runs in a root without libc, verify accepts a signed document and refuses a tampered one"
  n=$((n + 1))
done
say "all passed in $(( $(date +%s) - t0 ))s"
printf '%d passed, 0 failed\n' "$n"
