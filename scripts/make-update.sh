#!/usr/bin/env bash
# Lay out one image version's A/B update artifacts, named as the image's
# systemd-sysupdate transfer files expect them (overlays/common/usr/lib/sysupdate.d/),
# with a SHA256SUMS over them, signed with minisign when a key is given.
#
#   scripts/make-update.sh --role ROLE --version V --roothash HEX \
#       --root FILE --verity FILE --uki FILE --out DIR [--arch x86-64] [--key FILE]
#
# --role      kiwi, kaktus, kontroller...: the image id is kowabunga-ROLE
# --version   the image version (letters, digits, '.' and '-', starting with a digit)
# --roothash  the root's dm-verity root hash (64 hex digits, the UKI's roothash=):
#             its first half is root's partition UUID, its second half verity's
#             (systemd-repart derives them so; the new UKI finds the slot by them)
# --root, --verity  the root (erofs) and verity partition images (mkosi's split files)
# --uki       the version's UKI
# --out       directory to write (created; files of another version in it are
#             removed: it holds exactly one version)
# --arch      sysupdate's architecture name (%a): x86-64 (default)
# --key       minisign secret key; also KOWABUNGA_UPDATE_KEY. Without one,
#             SHA256SUMS is left unsigned and nodes refuse the update.
#
# Writes to DIR (zstd -12: the agent unpacks it while it downloads, and sysupdate
# copies the unpacked files; docs/images.md, "Update artifacts"):
#   kowabunga-ROLE_V_ARCH.root.<root uuid>.raw.zst
#   kowabunga-ROLE_V_ARCH.verity.<verity uuid>.raw.zst
#   kowabunga-ROLE_V_ARCH.efi.zst
#   SHA256SUMS          sha256sum format, over the three files above
#   SHA256SUMS.minisig  with --key: detached minisign signature of SHA256SUMS
# Exit: 0 written (signed or not), 1 an error, 2 usage.
set -euo pipefail

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "make-update: error: $*" >&2; exit 1; }

role="" version="" roothash="" root="" verity="" uki="" out="" arch=x86-64 key="${KOWABUNGA_UPDATE_KEY:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --role|--version|--roothash|--root|--verity|--uki|--out|--arch|--key)
      [ $# -ge 2 ] || { echo "make-update: $1 needs a value" >&2; usage; }
      v=$2; o=${1#--}; shift 2
      case "$o" in
        role) role=$v ;; version) version=$v ;; roothash) roothash=$v ;; root) root=$v ;;
        verity) verity=$v ;; uki) uki=$v ;; out) out=$v ;; arch) arch=$v ;; key) key=$v ;;
      esac ;;
    -h|--help) usage ;;
    *) echo "make-update: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "$role" ] && [ -n "$version" ] && [ -n "$roothash" ] && [ -n "$root" ] && [ -n "$verity" ] \
  && [ -n "$uki" ] && [ -n "$out" ] || usage

case "$role" in *[!a-z0-9-]*|"") die "invalid role '$role' (lower-case letters, digits and '-')" ;; esac
case "$version" in [0-9]*) ;; *) die "invalid version '$version' (must start with a digit)" ;; esac
case "$version" in *[!A-Za-z0-9.-]*) die "invalid version '$version' (letters, digits, '.' and '-' only)" ;; esac
case "$arch" in x86-64|arm64) ;; *) die "unsupported architecture '$arch' (sysupdate's names: x86-64, arm64)" ;; esac
roothash=$(printf '%s' "$roothash" | tr 'A-F' 'a-f')
[ ${#roothash} = 64 ] && case "$roothash" in *[!0-9a-f]*) false ;; esac \
  || die "--roothash '$roothash' is not 64 hex digits (a sha256 dm-verity root hash)"
label="kowabunga-${role}_${version}_verity"
[ ${#label} -le 36 ] || die "partition label '$label' is ${#label} characters, GPT allows 36: shorten the version"
for f in "$root" "$verity" "$uki"; do
  [ -f "$f" ] && [ -s "$f" ] || die "$f: missing or empty"
done
command -v zstd >/dev/null || die "zstd not found (Debian package zstd)"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"
if [ -n "$key" ]; then
  [ -f "$key" ] || die "update key '$key': no such file"
  command -v minisign >/dev/null || die "minisign not found (Debian package minisign)"
fi

uuid() { printf '%s-%s-%s-%s-%s' "${1:0:8}" "${1:8:4}" "${1:12:4}" "${1:16:4}" "${1:20:12}"; }
root_uuid=$(uuid "${roothash:0:32}")
verity_uuid=$(uuid "${roothash:32:32}")
base="kowabunga-${role}_${version}_${arch}"

mkdir -p "$out" || die "cannot create '$out'"
# One version per directory: whatever a previous run left goes, so SHA256SUMS and
# the directory always agree.
find "$out" -mindepth 1 -maxdepth 1 \( -name 'kowabunga-*' -o -name 'SHA256SUMS*' \) -exec rm -f {} +
tmp=$(mktemp -d "$out/.make-update.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

compress() { # SRC NAME
  zstd -q -T0 -12 -c -- "$1" > "$tmp/$2" || die "zstd of $1 failed"
}
compress "$root" "$base.root.$root_uuid.raw.zst"
compress "$verity" "$base.verity.$verity_uuid.raw.zst"
compress "$uki" "$base.efi.zst"
(cd "$tmp" && sha256sum -- "$base".* | LC_ALL=C sort -k2 > SHA256SUMS) || die "sha256sum failed"
if [ -n "$key" ]; then
  # The trusted comment names what is signed, for a human reading the .minisig; the
  # agent trusts only the signed SHA256SUMS and the file names in it.
  minisign -S -s "$key" -m "$tmp/SHA256SUMS" -x "$tmp/SHA256SUMS.minisig" \
    -t "kowabunga update $base" >/dev/null </dev/null \
    || die "minisign could not sign SHA256SUMS with '$key' (a password-protected key needs a terminal; use a key made with minisign -G -W for unattended builds)"
fi
for f in "$tmp"/*; do mv -f "$f" "$out/"; done
if [ -n "$key" ]; then
  echo "make-update: $out: $base, SHA256SUMS signed with $key" >&2
else
  echo "make-update: $out: $base, SHA256SUMS NOT SIGNED (no --update-key / KOWABUNGA_UPDATE_KEY): nodes refuse an unsigned update" >&2
fi
