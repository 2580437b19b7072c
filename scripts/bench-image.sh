#!/usr/bin/env bash
# Benchmark of a built image against a stock mkosi image of the same Debian
# release and package set (the peer: mkosi defaults, no trimming, ext4 root,
# mkosi's default initrd; only systemd.firstboot=no added, or its first boot
# waits for answers on the console), booted under the same QEMU settings.
#
#   scripts/bench-image.sh [ROLE] [--runs N] [--no-peer-build] [--against RAW]
#
# --against RAW  the peer is another build of ours (another compression, another
#                package set...), personalized and booted like ours until its agent
#                is ready, instead of the stock image: boots alternate, so the ratio
#                holds on a machine whose speed varies.
#
# Prints, side by side: raw and qcow2 sizes, UKI and initrd sizes, and the time
# from QEMU start to
#   - ours: the agent ready (console line "kowabunga: kiwi ready" for kiwi, the
#     agent's own "ROLE ready" journal line on the console for the others, printed
#     once the agent notified systemd); the node is personalized with a Kahuna that
#     does not answer, so nothing waits on the network (a kontroller gets a NoCloud
#     seed ISO with an instance-id, a hostname and Kahuna's keys);
#   - peer: the login prompt on the serial console.
# The image must have been built first (scripts/build-image.sh ROLE).
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
repo=$(cd "$(dirname "$0")/.." && pwd)
die() { printf 'bench-image: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench-image: %s\n' "$*" >&2; }

role=kiwi runs=1 peer_build=1 against=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) [ $# -ge 2 ] || die "--runs needs a number"; runs=$2; shift 2 ;;
    --no-peer-build) peer_build=0; shift ;;
    --against) [ $# -ge 2 ] || die "--against needs a raw image"; against=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1'" ;;
    *) role=$1; shift ;;
  esac
done
case "$runs" in ''|*[!0-9]*|0) die "--runs takes a positive number" ;; esac
for t in qemu-system-x86_64 qemu-img mkosi sfdisk; do
  command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh --for image --for qemu)"
done
ours=$(ls -t "$repo"/dist/"$role"-*-x86_64.raw 2>/dev/null | head -n1)
[ -n "$ours" ] || die "no dist/$role-*-x86_64.raw: run scripts/build-image.sh $role first"
stem=${ours%.raw}
work="$repo/target/bench/$role"
mkdir -p "$work"

# ---- the peer: stock mkosi, same release and packages -------------------------
peer_dir="$work/peer"
peer_label="stock mkosi"
if [ -n "$against" ]; then
  [ -f "$against" ] || die "--against: no $against"
  # The other build's files, named as the stock peer's are below, in a directory of
  # their own (a later --no-peer-build run still finds the stock peer).
  other=${against%.raw}
  peer_dir="$work/against"
  mkdir -p "$peer_dir/out"
  ln -sfn "$(realpath "$against")" "$peer_dir/out/peer.raw"
  ln -sfn "$(realpath "$other.efi")" "$peer_dir/out/peer.efi"
  peer_label="--against"
  say "peer: $against (ours, another build)"
elif [ "$peer_build" = 1 ] || [ ! -f "$peer_dir/out/peer.raw" ]; then
  say "building the peer (stock mkosi defaults, same packages)"
  mkdir -p "$peer_dir/out"
  pkgs=$(awk '/^Packages=/{p=1;next} p && /^[[:space:]]+[a-z0-9]/{print $1;next} p{p=0}' \
           "$repo/image/mkosi.conf" "$repo/image/mkosi.profiles/$role/mkosi.conf" 2>/dev/null | sort -u | tr '\n' ' ')
  kernel_pkg=linux-image-amd64
  [ "$role" = kontroller ] && kernel_pkg=linux-image-cloud-amd64
  # The same tools tree as our build (Debian trixie's systemd, kmod, repart...), so
  # nothing depends on the host's own tools.
  cat > "$peer_dir/mkosi.conf" <<EOF
[Distribution]
Distribution=debian
Release=trixie

[Host]
ToolsTree=default
ToolsTreeRelease=trixie

[Output]
Format=disk

[Content]
Bootable=yes
Bootloader=systemd-boot
KernelCommandLine=console=tty0 console=ttyS0,115200 systemd.firstboot=no
Autologin=no
Packages=$(printf "%s %s" "$kernel_pkg" "$pkgs" | tr -s " " "\n" | grep . | paste -sd, -)
EOF
  # The same apt sources as our build (the host's mirror, see build-image.sh).
  pm="$repo/target/image/$role/pkgmngr"
  [ -d "$pm" ] || die "$pm missing: build the image first (it writes the apt sources)"
  cache="${KOWABUNGA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kowabunga/mkosi}"
  mkosi --directory "$peer_dir" --output peer --output-dir "$peer_dir/out" \
    --package-manager-tree "$pm" --tools-tree-package-manager-tree "$pm" --package-cache-dir "$cache/packages" --force build \
    > "$peer_dir/mkosi.log" 2>&1 || { tail -20 "$peer_dir/mkosi.log" >&2; die "peer build failed ($peer_dir/mkosi.log)"; }
fi

size_mib() { awk -v b="$(stat -L -c %s "$1")" 'BEGIN{printf "%.1f", b/1048576}'; }
alloc_mib() { awk -v k="$(du -L -k "$1" | cut -f1)" 'BEGIN{printf "%.1f", k/1024}'; }
[ -n "$against" ] || qemu-img convert -q -c -f raw -O qcow2 "$peer_dir/out/peer.raw" "$work/peer.qcow2"

# ---- boot timing ----------------------------------------------------------------
boot_until() { # DISK NEEDLE NAME [QEMU ARGS...] -> seconds from qemu start to NEEDLE on the serial console
  # The console, each line stamped with seconds since QEMU started, goes to
  # $work/NAME.timeline (scripts/lib/serial-timeline.py) for the phase figures.
  local disk=$1 needle=$2 name=$3 start pid rc=0
  shift 3
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
  rm -f "$work/$name.serial.log"
  start=$(date +%s.%N)
  qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 1024 -smp 2 -nodefaults -display none \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$work/vars.fd" \
    -drive if=virtio,format=raw,file="$disk",cache=unsafe \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
    -serial file:"$work/$name.serial.log" "$@" &
  pid=$!
  QEMU_PID=$pid python3 "$repo/scripts/lib/serial-timeline.py" "$work/$name.serial.log" "$start" "$needle" 600 \
    > "$work/$name.timeline" || rc=$?
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  case $rc in
    0) grep -F -- "$needle" "$work/$name.timeline" | head -n1 | awk '{print $1}' ;;
    1) echo timeout ;;
    *) echo qemu-exited ;;
  esac
}
phase() { # NAME NEEDLE -> seconds at the first timeline line containing NEEDLE, or -
  local t; t=$(grep -F -- "$2" "$work/$1.timeline" 2>/dev/null | head -n1 | awk '{print $1}')
  echo "${t:--}"
}

ready_needle="kowabunga: $role ready"
ours_args=()
if [ "$role" != kiwi ]; then
  ready_needle="]: $role ready"
fi
if [ "$role" = kontroller ]; then
  command -v xorriso >/dev/null || die "xorriso not found (scripts/install-deps.sh --for qemu)"
  mkdir -p "$work/seed"
  # Kahuna's keys too (an address nothing answers on): without them the agent
  # refuses to run, this not being a Kahuna service VM.
  printf 'instance-id: bench\nlocal-hostname: bench\nkowabunga_controller_uri: ws://10.0.2.100:81/ws\nkowabunga_controller_agent_id: bench\nkowabunga_controller_agent_token: bench-token\n' \
    > "$work/seed/meta-data"
  xorriso -as mkisofs -quiet -V cidata -o "$work/seed.iso" "$work/seed"
  ours_args=(-drive "if=virtio,format=raw,readonly=on,file=$work/seed.iso")
fi
ours_times=() peer_times=() ours_phases=() peer_phases=()
for i in $(seq 1 "$runs"); do
  cp --sparse=always "$ours" "$work/ours.raw"; truncate -s 4G "$work/ours.raw"
  printf 'bench-key\n' > "$work/key"
  "$repo/scripts/personalize-image.sh" "$work/ours.raw" --kahuna http://10.0.2.100 --agent-id bench \
    --api-key-file "$work/key" --insecure 2>/dev/null
  say "run $i: booting ours"
  ours_times+=("$(boot_until "$work/ours.raw" "$ready_needle" ours "${ours_args[@]}")")
  ours_phases+=("$(phase ours "EFI stub") / $(phase ours "kowabunga: image=")")
  cp --sparse=always "$peer_dir/out/peer.raw" "$work/peer.raw"; truncate -s 4G "$work/peer.raw"
  say "run $i: booting the peer"
  if [ -n "$against" ]; then
    "$repo/scripts/personalize-image.sh" "$work/peer.raw" --kahuna http://10.0.2.100 --agent-id bench \
      --api-key-file "$work/key" --insecure 2>/dev/null
    peer_times+=("$(boot_until "$work/peer.raw" "$ready_needle" peer "${ours_args[@]}")")
    peer_phases+=("$(phase peer "EFI stub") / $(phase peer "kowabunga: image=")")
  else
    peer_times+=("$(boot_until "$work/peer.raw" "login:" peer)")
    peer_phases+=("$(phase peer "EFI stub") / $(phase peer "Welcome to")")
  fi
done

uki_ours=$(ls "$stem.efi")
uki_peer=$(ls "$peer_dir"/out/peer.efi 2>/dev/null || true)
printf '\n%-34s %14s %14s\n' "$(basename "$stem")" "ours" "$peer_label"
printf '%-34s %14s %14s\n' "raw (apparent MiB)" "$(size_mib "$ours")" "$(size_mib "$peer_dir/out/peer.raw")"
printf '%-34s %14s %14s\n' "raw (allocated MiB)" "$(alloc_mib "$ours")" "$(alloc_mib "$peer_dir/out/peer.raw")"
printf '%-34s %14s %14s\n' "qcow2 compressed (MiB)" "$(size_mib "$stem.qcow2")" "$(size_mib "${other:-$work/peer}.qcow2")"
[ -z "$uki_peer" ] || printf '%-34s %14s %14s\n' "UKI (MiB)" "$(size_mib "$uki_ours")" "$(size_mib "$uki_peer")"
[ ! -f "$peer_dir/out/peer.initrd" ] || printf '%-34s %14s %14s\n' "initrd (MiB)" \
  "$(size_mib "$repo/target/image/$role/out/$(basename "$stem").initrd")" "$(size_mib "$peer_dir/out/peer.initrd")"
for i in $(seq 0 $((runs - 1))); do
  printf '%-34s %14s %14s\n' "boot run $((i + 1)): ready / login (s)" "${ours_times[$i]}" "${peer_times[$i]}"
  printf '%-34s %14s %14s\n' "  kernel start / system up (s)" "${ours_phases[$i]}" "${peer_phases[$i]}"
done
printf '%-34s %14s\n' "timelines" "$work/{ours,peer}.timeline"
printf '%-34s %14s\n' "accel" "tcg (-cpu max, 2 vCPU, 1 GiB)"
