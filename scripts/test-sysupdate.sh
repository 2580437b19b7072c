#!/usr/bin/env bash
# Host-side test of the A/B update mechanics on a built image, without booting it:
# the agent core's staging (example stage_update: download over HTTP on loopback,
# minisign signature of SHA256SUMS, each file's sha256, zstd unpacked to sparse files)
# fills a staging directory, and systemd-sysupdate (257, from mkosi's tools tree)
# installs the next version from it into slot B of a copy of the disk.
#
#   scripts/test-sysupdate.sh DIST [--role ROLE] [--tools DIR] [--keep] [--bench]
#
# DIST     a scripts/build-image.sh output directory: ROLE-V-x86_64.raw and update/ROLE/
# --role   which image in DIST (default: the only one, else kiwi)
# --tools  mkosi's tools tree (default: the one build-image.sh's mkosi cached, in
#          KOWABUNGA_IMAGE_CACHE or ~/.cache/kowabunga/mkosi)
# --keep   keep the work directory (target/test-sysupdate/ROLE)
# --bench  time the install (staging + sysupdate, the stager built in release) against
#          `cp` of the same bytes (the unpacked root, verity and UKI) to the same
#          partitions (scripts/bench-update.sh)
#
# sysupdate runs as on a booted node: in a sandbox (bubblewrap) whose /etc/os-release
# and /etc/sysupdate.d are the image's own (copied out of slot A), whose root block
# device is the disk copy (a loop device, named by /run/systemd/volatile-root, which
# sysupdate's Path=auto reads), and whose /efi holds the ESP's files (a directory,
# SYSTEMD_RELAX_ESP_CHECKS=1: the host kernel need not have vfat; mtools copies the
# result back into the disk's FAT ESP). The update is the same build renamed as the
# next version (same bytes, higher version string): this checks the mechanics (slot
# labels, partition UUIDs, boot counting on the ESP, refusals), not a new payload;
# slot B gets the same partition UUIDs as slot A. As root. Exit 0 when all pass.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "test-sysupdate: error: $*" >&2; exit 1; }
t0=$(date +%s)
step() { printf '\n==> %s (+%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
fails=0
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }

dist="" role="" tools="" keep=0 bench=0
while [ $# -gt 0 ]; do
  case "$1" in
    --role) [ $# -ge 2 ] || usage; role=$2; shift 2 ;;
    --tools) [ $# -ge 2 ] || usage; tools=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --bench) bench=1; shift ;;
    -h|--help) usage ;;
    -*) echo "test-sysupdate: unknown option $1" >&2; usage ;;
    *) [ -z "$dist" ] || usage; dist=$1; shift ;;
  esac
done
[ -n "$dist" ] || usage
[ "$(id -u)" = 0 ] || die "run as root (sysupdate attaches the disk copy to a loop device)"
for tool in bwrap sfdisk mdir mcopy mdel losetup partx minisign sha256sum cmp python3 curl; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh --for image --for qemu)"
done
dist=$(cd "$dist" && pwd) || die "no directory $dist"
if [ -z "$role" ]; then
  mapfile -t found < <(cd "$dist" && ls *-x86_64.raw 2>/dev/null | sed 's/-[^-]*-x86_64\.raw$//' | sort -u)
  [ ${#found[@]} = 1 ] && role=${found[0]} || role=kiwi
fi
raw=$(ls -t "$dist/$role"-*-x86_64.raw 2>/dev/null | head -n1)
[ -n "$raw" ] || die "no $role-*-x86_64.raw in $dist (scripts/build-image.sh $role --out $dist)"
version=$(basename "$raw" -x86_64.raw); version=${version#"$role"-}
update="$dist/update/$role"
[ -f "$update/SHA256SUMS" ] || die "no $update/SHA256SUMS: rebuild with this tree's scripts/build-image.sh"
image_id="kowabunga-$role"
# The next version: the last number of this one plus one (0.1.0 -> 0.1.1).
if [[ $version =~ ^(.*[^0-9])?([0-9]+)$ ]]; then
  next="${BASH_REMATCH[1]}$(( BASH_REMATCH[2] + 1 ))"
else
  next="$version.1"
fi
if [ -z "$tools" ]; then
  for c in "${KOWABUNGA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kowabunga/mkosi}"/*~debian-tools.cache; do
    [ -x "$c/usr/lib/systemd/systemd-sysupdate" ] && { tools=$c; break; }
  done
fi
[ -n "$tools" ] && [ -x "$tools/usr/lib/systemd/systemd-sysupdate" ] \
  || die "no mkosi tools tree with systemd-sysupdate found (build an image first, or --tools DIR)"
work="$repo/target/test-sysupdate/$role"
rm -rf "$work" && mkdir -p "$work"
loop=""
cleanup() {
  [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
  [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

# The tools tree's programs (systemd 257), with the host's devices (loop) and the work
# directory; the repository read-only.
in_tools() {
  bwrap --ro-bind "$tools/usr" /usr --ro-bind "$tools/etc" /etc --symlink usr/bin /bin \
    --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
    --proc /proc --dev-bind /dev /dev --ro-bind /sys /sys --tmpfs /run --tmpfs /tmp \
    --tmpfs /var/tmp --ro-bind "$repo" "$repo" --bind "$work" "$work" --ro-bind "$dist" "$dist" \
    --cap-add ALL --die-with-parent "$@"
}
# The node's view (see the header): the tools tree's programs, the image's settings.
in_node() {
  bwrap --ro-bind "$tools/usr" /usr --tmpfs /etc --ro-bind "$tools/etc/ld.so.cache" /etc/ld.so.cache \
    --ro-bind "$tools/etc/passwd" /etc/passwd --ro-bind "$tools/etc/group" /etc/group \
    --ro-bind "$work/image/os-release" /etc/os-release --ro-bind "$work/image/sysupdate.d" /etc/sysupdate.d \
    --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
    --proc /proc --dev-bind /dev /dev --ro-bind /sys /sys \
    --tmpfs /run --dir /run/systemd --symlink "${loop}p2" /run/systemd/volatile-root \
    --bind "$work/esp" /efi --tmpfs /tmp --tmpfs /var/tmp --bind "$work" "$work" \
    --setenv SYSTEMD_RELAX_ESP_CHECKS 1 --cap-add ALL --die-with-parent "$@"
}
sysupdate() { in_node /usr/lib/systemd/systemd-sysupdate --no-pager "$@"; }
show() { printf '$ %s\n' "$*"; "$@" 2>&1 | sed 's/^/  /'; return "${PIPESTATUS[0]}"; }
parts() { sfdisk --json "$work/disk.raw"; }
# LABEL|UUID of the partitions of TYPE (GPT type UUID), in table order.
slots() { parts | python3 -c '
import json, sys
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if p["type"].upper() == sys.argv[1]:
        print(p.get("name", "") + "|" + p["uuid"].lower() + "|" + str(p["start"] * 512))' "$1"; }
ROOT=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 VERITY=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5 ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
esp_ls() { local off; off=$(slots $ESP | head -n1 | cut -d'|' -f3); mdir -b -i "$work/disk.raw@@$off" ::/EFI/Linux 2>/dev/null | sed 's|^::/EFI/Linux/||' | LC_ALL=C sort; }

step "disk: a copy of $(basename "$raw"), grown to 2 GiB, first-boot partitioning (B slot, /var)"
cp --sparse=always "$raw" "$work/disk.raw"
truncate -s 2G "$work/disk.raw"
# What the initrd does on first boot: the image's own repart.d.
show in_tools systemd-repart --dry-run=no --no-pager --definitions="$repo/overlays/common/usr/lib/repart.d" "$work/disk.raw" >/dev/null \
  || die "systemd-repart could not lay out the disk copy"
show sfdisk -d "$work/disk.raw"
show esp_ls
# The node's settings, from slot A's root: os-release and sysupdate.d.
mkdir -p "$work/image"
for f in /usr/lib/os-release /usr/lib/sysupdate.d; do
  in_tools systemd-dissect --image-policy='root=unprotected+verity:esp=ignore:var=ignore:=ignore' \
    --copy-from "$work/disk.raw" "$f" "$work/image/$(basename "$f")" || die "cannot copy $f out of slot A"
done
show grep -E '^IMAGE_(ID|VERSION)=' "$work/image/os-release"
show ls "$work/image/sysupdate.d"
loop=$(losetup -f --show "$work/disk.raw") || die "losetup failed"
partx -a "$loop" 2>/dev/null || true
[ -b "${loop}p2" ] || die "no partition devices for $loop (partx -a)"
esp_off=$(slots $ESP | head -n1 | cut -d'|' -f3)
mkdir -p "$work/esp"
mcopy -s -p -m -i "$work/disk.raw@@$esp_off" '::/*' "$work/esp/" || die "cannot copy the ESP's files out"

step "update artifacts of $next: $update, renamed from $version, signed with a throwaway key"
mkdir -p "$work/keys" "$work/trusted" "$work/next"
minisign -G -W -p "$work/keys/update.pub" -s "$work/keys/update.key" >/dev/null
minisign -G -W -p "$work/keys/other.pub" -s "$work/keys/other.key" >/dev/null
cp "$work/keys/update.pub" "$work/trusted/"
for f in "$update/${image_id}_${version}_"*; do
  [ -e "$f" ] || die "no ${image_id}_${version}_* files in $update"
  n=$(basename "$f"); cp --reflink=auto "$f" "$work/next/${n/_${version}_/_${next}_}"
done
(cd "$work/next" && sha256sum -- "${image_id}_${next}_"* > SHA256SUMS)
minisign -S -s "$work/keys/update.key" -m "$work/next/SHA256SUMS" >/dev/null </dev/null
show ls -l "$work/next"

# The agent's staging, as the updater runs it (agents/core/src/update/staging.rs).
profile=debug; [ "$bench" = 1 ] && profile=release
step "the agent core's stager (example stage_update, $profile)"
. "$repo/scripts/lib/find-cargo.sh"
find_cargo || die "cargo not found (see scripts/test.sh)"
(cd "$repo" && "$cargo_bin" build -q --locked -p kowabunga-agent --example stage_update \
  $([ "$profile" = release ] && echo --release)) || die "cannot build the stage_update example"
stager="$repo/target/$profile/examples/stage_update"
# One HTTP server on loopback for every case: $work, each version directory under it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; cleanup' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs -o /dev/null "$url/next/SHA256SUMS" && break; sleep 0.1; done
curl -fs -o /dev/null "$url/next/SHA256SUMS" || die "the HTTP server on $url did not answer"
stage() { # DIR STAGING: DIR's artifacts (a directory of $work), staged as the agent does
  "$stager" "$url/$(basename "$1")" "$role" "$version" "$next" "$2" "$work/trusted"
}

step "refusals: nothing reaches the staging directory or slot B"
cp -r "$work/next" "$work/tampered"
f=$(ls "$work/tampered"/*.root.*.raw.zst)
printf '\x00' | dd of="$f" bs=1 seek=4096 conv=notrunc status=none
cp -r "$work/next" "$work/othersig"
minisign -S -s "$work/keys/other.key" -m "$work/othersig/SHA256SUMS" >/dev/null </dev/null
cp -r "$work/next" "$work/truncated"
f=$(ls "$work/truncated"/*.efi.zst); truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"
for case in "tampered:a root file changed by one byte:does not match SHA256SUMS" \
            "othersig:SHA256SUMS signed by an untrusted key:does not verify" \
            "truncated:a truncated UKI:does not match SHA256SUMS"; do
  IFS=: read -r dir what expected <<<"$case"
  if out=$(stage "$work/$dir" "$work/refused" 2>&1); then
    fail "$what was staged"
  elif ! grep -qF "$expected" <<<"$out"; then
    fail "$what: refused without '$expected': $out"
  elif [ -n "$(ls -A "$work/refused")" ]; then
    fail "$what: refused, but the staging directory holds $(ls -A "$work/refused" | tr '\n' ' ')"
  else
    ok "$what: refused ($(tail -n1 <<<"$out")), staging empty"
  fi
done
b=$(slots $ROOT | sed -n 2p | cut -d'|' -f1); bv=$(slots $VERITY | sed -n 2p | cut -d'|' -f1)
[ "$b" = _empty ] && [ "$bv" = _empty ] && ok "slot B still _empty/_empty" || fail "slot B is now '$b'/'$bv'"

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.3f", e - s }'; }
step "install $next as the agent does: staged (downloaded, verified, unpacked), then systemd-sysupdate update"
mkdir -p "$work/staged"
sync
s=$(now)
stage "$work/next" "$work/staged" > "$work/stage.log" 2>&1 || fail "staging failed"
sed 's/^/  /' "$work/stage.log"
staged_s=$(elapsed "$s")
# sysupdate sees the installed version and the staged one (the image's own sysupdate.d).
t_list=$(now)
sysupdate --transfer-source="$work/staged" --json=short list 2>/dev/null | grep -q "\"$version\"" \
  && ok "sysupdate lists the installed version $version" || fail "version $version not listed"
[ "$(sysupdate --transfer-source="$work/staged" check-new 2>/dev/null)" = "$next" ] \
  && ok "check-new finds the staged $next" || fail "check-new does not find the staged $next"
list_s=$(elapsed "$t_list")
show sysupdate --transfer-source="$work/staged" update "$next" || fail "install failed"
# The install's time without the two checks above (not part of what the agent runs).
install_s=$(awk -v a="$(elapsed "$s")" -v b="$list_s" 'BEGIN { printf "%.3f", a - b }')
# The ESP's files back into the disk's FAT file system: what sysupdate added to and
# removed from EFI/Linux.
for f in $(esp_ls); do
  [ -e "$work/esp/EFI/Linux/$f" ] || mdel -i "$work/disk.raw@@$esp_off" "::/EFI/Linux/$f"
done
for f in "$work/esp/EFI/Linux"/*; do
  esp_ls | grep -qxF "$(basename "$f")" || mcopy -i "$work/disk.raw@@$esp_off" "$f" "::/EFI/Linux/$(basename "$f")"
done
show sfdisk -d "$work/disk.raw"
show esp_ls
root_file=$(ls "$work/staged"/*.root.*.raw); verity_file=$(ls "$work/staged"/*.verity.*.raw)
uki_file=$(ls "$work/staged/${image_id}_${next}_"*.efi)
want_root_uuid=$(basename "$root_file" | sed -E 's/.*\.root\.([0-9a-f-]{36})\.raw/\1/')
want_verity_uuid=$(basename "$verity_file" | sed -E 's/.*\.verity\.([0-9a-f-]{36})\.raw/\1/')
zstd -dcq "$(ls "$work/next"/*.root.*.raw.zst)" | cmp -s - "$root_file" \
  && ok "the staged root is the unpacked .raw.zst ($(( $(du -k "$root_file" | cut -f1) >> 10 )) MiB allocated of $(( $(stat -c %s "$root_file") >> 20 )) MiB: zeros are holes)" \
  || fail "the staged root differs from the unpacked .raw.zst"
IFS='|' read -r a_label _ _ < <(slots $ROOT | sed -n 1p)
IFS='|' read -r b_label b_uuid b_off < <(slots $ROOT | sed -n 2p)
IFS='|' read -r bv_label bv_uuid bv_off < <(slots $VERITY | sed -n 2p)
[ "$a_label" = "${image_id}_$version" ] && ok "slot A keeps ${image_id}_$version" || fail "slot A is '$a_label'"
[ "$b_label" = "${image_id}_$next" ] && ok "slot B root labelled $b_label" || fail "slot B root labelled '$b_label'"
[ "$bv_label" = "${image_id}_${next}_verity" ] && ok "slot B verity labelled $bv_label" || fail "slot B verity labelled '$bv_label'"
[ "$b_uuid" = "$want_root_uuid" ] && [ "$bv_uuid" = "$want_verity_uuid" ] \
  && ok "slot B partition UUIDs from the file names (the root hash halves): $b_uuid $bv_uuid" \
  || fail "slot B UUIDs $b_uuid $bv_uuid, expected $want_root_uuid $want_verity_uuid"
cmp -s -n "$(stat -c %s "$root_file")" "$root_file" <(tail -c +"$(( b_off + 1 ))" "$work/disk.raw") \
  && ok "slot B root holds the unpacked root image" || fail "slot B root differs from the root image"
cmp -s -n "$(stat -c %s "$verity_file")" "$verity_file" <(tail -c +"$(( bv_off + 1 ))" "$work/disk.raw") \
  && ok "slot B verity holds the unpacked verity image" || fail "slot B verity differs from the verity image"
esp=$(esp_ls)
echo "$esp" | grep -qx "${image_id}_$version.efi" && ok "ESP keeps ${image_id}_$version.efi" || fail "ESP lost ${image_id}_$version.efi"
echo "$esp" | grep -qx "${image_id}_$next+3-0.efi" && ok "ESP has ${image_id}_$next+3-0.efi (3 tries left)" || fail "no ${image_id}_$next+3-0.efi on the ESP"
mcopy -n -i "$work/disk.raw@@$esp_off" "::/EFI/Linux/${image_id}_$next+3-0.efi" "$work/uki.efi" 2>/dev/null || true
cmp -s "$uki_file" "$work/uki.efi" \
  && ok "the new UKI on the ESP is the unpacked .efi.zst" || fail "the new UKI on the ESP differs from the .efi.zst's content"
show sysupdate --transfer-source="$work/staged" list || true
sysupdate --transfer-source="$work/staged" --json=short list 2>/dev/null | grep -q "\"$next\"" && ok "sysupdate lists $next installed" || fail "$next not listed after the update"
printf 'install of %s: %.1f s (staging %.1f s + sysupdate)\n' "$next" "$install_s" "$staged_s"
if [ "$bench" = 1 ]; then
  # The same bytes, written by cp: the unpacked root and verity images onto slot B's
  # partitions, the UKI into the ESP's directory, then synced (sysupdate syncs too).
  dev_of() { parts | python3 -c '
import json, re, sys
nodes = [p["node"] for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p["type"].upper() == sys.argv[1]]
print(re.search(r"(\d+)$", nodes[1]).group(1))' "$1"; }
  root_dev="${loop}p$(dev_of $ROOT)" verity_dev="${loop}p$(dev_of $VERITY)"
  [ -b "$root_dev" ] && [ -b "$verity_dev" ] || die "no block devices for slot B ($root_dev, $verity_dev)"
  bytes=$(( $(stat -c %s "$root_file") + $(stat -c %s "$verity_file") + $(stat -c %s "$uki_file") ))
  sync
  s=$(now)
  cp "$root_file" "$root_dev" && cp "$verity_file" "$verity_dev" \
    && cp "$uki_file" "$work/esp/EFI/Linux/bench-copy.efi" && sync || fail "cp to slot B failed"
  cp_s=$(elapsed "$s")
  rm -f "$work/esp/EFI/Linux/bench-copy.efi"
  printf 'bench: update %s (%d MiB written, %d MiB downloaded): download + verify + unpack %.2f s, with sysupdate %.2f s; cp of the same bytes %.2f s; ratio %.2f (goal <= 1.3)\n' \
    "$next" "$(( bytes >> 20 ))" "$(( $(cat "$work/next"/*.zst | wc -c) >> 20 ))" "$staged_s" "$install_s" "$cp_s" \
    "$(awk -v a="$install_s" -v b="$cp_s" 'BEGIN { print a / b }')"
fi

step "next boot: the initrd's systemd-repart runs again and leaves both slots alone"
before=$(sfdisk -d "$work/disk.raw" | grep -v '^device:')
in_tools systemd-repart --dry-run=no --no-pager --definitions="$repo/overlays/common/usr/lib/repart.d" "$work/disk.raw" >/dev/null 2>&1 \
  || fail "systemd-repart failed on the updated disk"
after=$(sfdisk -d "$work/disk.raw" | grep -v '^device:')
[ "$before" = "$after" ] && ok "partition table unchanged (slot B keeps ${image_id}_$next)" \
  || { fail "systemd-repart changed the partition table"; diff <(echo "$before") <(echo "$after") | sed 's/^/  /'; }

step "done in $(( $(date +%s) - t0 ))s"
if [ "$fails" = 0 ]; then echo "test-sysupdate: all checks passed"; else echo "test-sysupdate: $fails check(s) failed"; exit 1; fi
