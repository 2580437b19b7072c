#!/usr/bin/env bash
# Build the bootable, read-only appliance image of one Kowabunga role.
#
#   scripts/build-image.sh ROLE [--arch x86_64] [--board rpi4] [--out DIR] [--mirror URL]
#                               [--version V] [--agent-bin PATH] [--no-install]
#                               [--update-key FILE] [--overlay DIR]...
#
# ROLE       a directory of overlays/ (kiwi, ...) with a matching agent binary
# --arch     x86_64 (default) or arm64 (aarch64): the agent is cross-built and
#            mkosi runs the arm64 packages' scripts under qemu-user (binfmt_misc,
#            registered here if the host has not: the build says what it did)
# --board    rpi4: a Raspberry Pi 4 card image instead of a UEFI disk (arm64): the
#            Pi's firmware, config.txt, cmdline.txt, kernel, initrd and device tree
#            on the first (FAT) partition; personalized by editing cmdline.txt
# --out      output directory (default: dist/)
# --mirror   Debian mirror URL (default: read from this host's apt sources)
# --version  image version (default: the workspace version in Cargo.toml)
# --kernel   generic (linux-image-amd64: bare metal and VMs) or cloud
#            (linux-image-cloud-amd64: VMs only, smaller, boots faster);
#            default: generic for kiwi and kaktus, cloud for kontroller
# --agent-bin  use this prebuilt agent binary instead of `cargo build --release`
# --no-install  never apt-get install missing host tools: fail and name them
# --update-key  minisign secret key signing update/ROLE/SHA256SUMS (also
#            KOWABUNGA_UPDATE_KEY); without one the update is left unsigned and
#            nodes refuse it (make one with: minisign -G -W -p K.pub -s K.key)
# --overlay  one more tree of files baked in after overlays/common and
#            overlays/ROLE (a site's own files; the QEMU tier's update test builds
#            a version whose health gate fails with one); may be repeated
#
# Writes to --out:
# ARCH in file names: x86_64 or aarch64 (systemd's x86-64/arm64 in update/).
#   ROLE-VERSION-ARCH.raw          GPT disk: ESP (systemd-boot + UKI), erofs
#                                  root A + dm-verity; B slot and /var are
#                                  created on first boot by systemd-repart
#   ROLE-VERSION-ARCH.qcow2        the same, compressed (a Kahuna template)
#   ROLE-VERSION-ARCH.efi          the UKI (kernel + trimmed initrd + cmdline)
#   ROLE-VERSION-ARCH.pxe.vmlinuz  PXE kernel
#   ROLE-VERSION-ARCH.pxe.initrd   PXE initrd: the whole root, boots diskless
#   ROLE-VERSION-ARCH.ipxe         example iPXE script (kowabunga.* keys)
#   ROLE-VERSION-ARCH.cmdline      kernel command line of the disk image
#   SHA256SUMS
#   update/ROLE/                   the A/B update of this version (update/ROLE-ARCH/
#                                  for arm64: one architecture per directory), as the agent
#                                  downloads it (scripts/make-update.sh):
#                                  kowabunga-ROLE_VERSION_ARCH.{root.UUID.raw,
#                                  verity.UUID.raw,efi}.zst, SHA256SUMS(.minisig)
# With --board rpi4, instead: ROLE-VERSION-rpi4.img and .img.xz (the card image: dd
#   it, or flash it with any imager), SHA256SUMS. No update/: no A/B on that board.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)

# find_cargo: rustup's cargo, wherever this runs (sudo, a Debian cargo in PATH).
. "$repo/scripts/lib/find-cargo.sh"
cargo_help="install a Rust toolchain with rustup (https://rustup.rs), or point CARGO=/path/to/cargo at one; under sudo, which resets PATH, use 'sudo env CARGO=\$(command -v cargo) $0 ...' if your cargo is not in ~/.cargo/bin"
find_cargo || true
# The host's own tools first (/usr/sbin is not in a user's PATH; a python3 from
# pyenv or a virtualenv must not run mkosi's helpers), then the caller's PATH.
# The Rust toolchain's directory goes before everything, so that a Debian
# /usr/bin/cargo cannot shadow rustup's.
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
[ -z "$cargo_bin" ] || export PATH="$(dirname "$cargo_bin"):$PATH"
stage_no=0
t0=$(date +%s)
stage() { stage_no=$((stage_no + 1)); printf '\n==> [%d] %s (+%ss)\n' "$stage_no" "$*" "$(( $(date +%s) - t0 ))" >&2; }
say() { printf '    %s\n' "$*" >&2; }
die() { printf '\nbuild-image: error: %s\n' "$*" >&2; exit 1; }

role="" arch=x86_64 arch_given="" board="" out="$repo/dist" mirror="${KOWABUNGA_MIRROR:-}" version="" agent_bin="" install=1 kernel= update_key="${KOWABUNGA_UPDATE_KEY:-}"
overlays=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; arch_given=1; shift 2 ;;
    --arch=*) arch=${1#*=}; arch_given=1; shift ;;
    --board) [ $# -ge 2 ] || die "--board needs a value (rpi4)"; board=$2; shift 2 ;;
    --board=*) board=${1#*=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; mirror=$2; shift 2 ;;
    --mirror=*) mirror=${1#*=}; shift ;;
    --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
    --version=*) version=${1#*=}; shift ;;
    --kernel) [ $# -ge 2 ] || die "--kernel needs generic or cloud"; kernel=$2; shift 2 ;;
    --kernel=*) kernel=${1#*=}; shift ;;
    --agent-bin) [ $# -ge 2 ] || die "--agent-bin needs a path"; agent_bin=$2; shift 2 ;;
    --agent-bin=*) agent_bin=${1#*=}; shift ;;
    --no-install) install=0; shift ;;
    --update-key) [ $# -ge 2 ] || die "--update-key needs a file"; update_key=$2; shift 2 ;;
    --update-key=*) update_key=${1#*=}; shift ;;
    --overlay) [ $# -ge 2 ] || die "--overlay needs a directory"; overlays+=("$2"); shift 2 ;;
    --overlay=*) overlays+=("${1#*=}"); shift ;;
    -h|--help) sed -n '2,48p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$role" ] || die "only one ROLE may be given (got '$role' and '$1')"; role=$1; shift ;;
  esac
done

roles=$(cd "$repo/overlays" && ls -d */ 2>/dev/null | tr -d / | grep -vx common | tr '\n' ' ')
[ -n "$role" ] || die "missing ROLE (one of: $roles)"
[ -d "$repo/overlays/$role" ] && [ "$role" != common ] || die "unknown role '$role' (one of: $roles)"
# A board fixes the architecture.
case "$board" in
  "") ;;
  rpi4) case "${arch_given:+$arch}" in ""|arm64|aarch64) arch=aarch64 ;; *) die "--board rpi4 is an arm64 board (got --arch $arch)" ;; esac ;;
  *) die "unknown --board '$board' (supported: rpi4)" ;;
esac
# arch: file names (uname -m); mkosi_arch: mkosi's and systemd's name; deb_arch:
# Debian's; rust_target: the agent's; root_guid/verity_guid: the Discoverable
# Partitions types repart gives "root" and "root-verity" on this architecture.
case "$arch" in
  x86_64|x86-64|amd64) arch=x86_64; mkosi_arch=x86-64; deb_arch=amd64; rust_target=x86_64-unknown-linux-gnu
    root_guid=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709; verity_guid=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5 ;;
  arm64|aarch64) arch=aarch64; mkosi_arch=arm64; deb_arch=arm64; rust_target=aarch64-unknown-linux-gnu
    root_guid=B921B045-1DF0-41C3-AF44-4C6F280D3FAE; verity_guid=DF3300CE-D69F-4C92-978C-9BFB0F38D820 ;;
  *) die "unsupported architecture '$arch' (supported: x86_64, arm64)" ;;
esac
host_arch=$(uname -m)
foreign=0
[ "$arch" = "$host_arch" ] || foreign=1
agent=$role
[ -n "$kernel" ] || case "$role" in kontroller) kernel=cloud ;; *) kernel=generic ;; esac
case "$kernel" in
  generic) kernel_pkg=linux-image-$deb_arch ;;
  cloud) kernel_pkg=linux-image-cloud-$deb_arch ;;
  *) die "unknown --kernel '$kernel' (generic or cloud)" ;;
esac
if [ -z "$version" ]; then
  version=$(awk '/^\[workspace.package\]/{w=1;next} /^\[/{w=0} w && $1=="version"{gsub(/"/,"",$3); print $3; exit}' "$repo/Cargo.toml")
  [ -n "$version" ] || die "no version given and none found in Cargo.toml [workspace.package]"
fi
# The version is part of partition labels and file names systemd-sysupdate parses
# (kowabunga-ROLE_VERSION, ..._VERSION+TRIES.efi): sysupdate accepts letters,
# digits and .,_-+ in a version; "_" separates fields and "+" starts the boot
# counter, so: letters, digits, "." and "-", starting with a digit.
case "$version" in [0-9]*) ;; *) die "invalid version '$version' (must start with a digit)" ;; esac
case "$version" in *[!A-Za-z0-9.-]*) die "invalid version '$version' (letters, digits, '.' and '-' only: systemd-sysupdate reads it from partition labels and file names)" ;; esac
# GPT partition labels hold 36 characters; the longest is the verity one.
label_max="kowabunga-${role}_${version}_verity"
[ ${#label_max} -le 36 ] || die "version '$version' too long for role $role: partition label '$label_max' is ${#label_max} characters, GPT allows 36 (at most $(( 36 - ${#label_max} + ${#version} )) characters of version)"
name="$role-$version-$arch"
overlay_args=() extra_trees=()
for o in "${overlays[@]}"; do
  [ -d "$o" ] || die "--overlay '$o': not a directory"
  o=$(cd "$o" && pwd)
  overlay_args+=(--overlay "$o")
  extra_trees+=(--extra-tree "$o")
done
mkdir -p "$out" || die "cannot create output directory '$out'"
out=$(cd "$out" && pwd)
work="$repo/target/image/$role"
[ "$arch" = x86_64 ] || work="$work-$arch"
[ -z "$board" ] || work="$work-$board"
cache="${KOWABUNGA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kowabunga/mkosi}"

# ---- 1. host tools -------------------------------------------------------------
stage "checking host tools"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -e "$1" ] || missing+=("$2 (for $1)"); }
# The image's build tools (systemd-repart, ukify, bootctl, mkfs.erofs,
# veritysetup, mkfs.vfat...) come from mkosi's tools tree (ToolsTree= in
# image/mkosi.conf), built from Debian trixie packages: the host needs mkosi,
# bubblewrap and apt to build that tree, and a few tools for the artifacts.
# mkosi: the copy scripts/install-deps.sh unpacks on Debian 12 (not an apt
# package, so that the host keeps its systemd), else the one in PATH.
mkosi=/opt/kowabunga/mkosi/bin/mkosi
[ -x "$mkosi" ] || mkosi=$(command -v mkosi 2>/dev/null) || mkosi=""
[ -n "$mkosi" ] || missing+=("mkosi >= 24 (scripts/install-deps.sh --for image)")
need bwrap bubblewrap
need apt-get apt
need dpkg dpkg
need /usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring
need qemu-img qemu-utils
need zstd zstd
need cpio cpio
need python3 python3
need sfdisk fdisk
[ -z "$update_key" ] || need minisign minisign
deps_groups=(--for image)
if [ "$foreign" = 1 ]; then
  # mkosi runs the foreign packages' maintainer scripts through binfmt_misc; the
  # static qemu-user is opened when registered (flag F), so it works in mkosi's
  # sandbox. The agent is cross-linked.
  deps_groups+=(--for "$deb_arch")
  need "/usr/libexec/qemu-binfmt/$arch-binfmt-P" qemu-user-static
  need "/usr/lib/binfmt.d/qemu-$arch.conf" qemu-user-static
  [ -n "$agent_bin" ] || need "$arch-linux-gnu-gcc" "gcc-$arch-linux-gnu"
  # kaktus's helper links libvirt: the target's libvirt-dev, beside the host's.
  if [ "$role" = kaktus ] && [ -z "$agent_bin" ]; then
    deps_groups=(--for image --for "$deb_arch-libvirt")
    need "/usr/lib/$arch-linux-gnu/pkgconfig/libvirt.pc" "libvirt-dev:$deb_arch"
  fi
fi
# A board image's firmware partition is written with mtools, as personalize-image.sh does.
[ -z "$board" ] || { need mcopy mtools; need xz xz-utils; }
if [ -n "$mkosi" ]; then
  mv=$("$mkosi" --version 2>/dev/null | awk '{print $2}')
  dpkg --compare-versions "${mv:-0}" ge 24 || missing+=("mkosi >= 24 (found ${mv:-none} at $mkosi; scripts/install-deps.sh --for image)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ]; then
    say "missing: ${missing[*]}"
    say "installing with scripts/install-deps.sh ${deps_groups[*]}"
    "$repo/scripts/install-deps.sh" "${deps_groups[@]}" ${mirror:+--mirror "$mirror"} || die "installing host tools failed"
    exec "$0" "$role" --arch "$arch" ${board:+--board "$board"} --out "$out" --version "$version" --kernel "$kernel" ${mirror:+--mirror "$mirror"} \
      ${agent_bin:+--agent-bin "$agent_bin"} ${update_key:+--update-key "$update_key"} "${overlay_args[@]}" --no-install
  fi
  printf '    missing: %s\n' "${missing[@]}" >&2
  die "host tools missing; run (as root): scripts/install-deps.sh ${deps_groups[*]}"
fi
[ "$(id -u)" = 0 ] || die "mkosi must run as root here (it builds file systems and partition tables)"
say "mkosi $("$mkosi" --version | awk '{print $2}') ($mkosi); build tools from its tools tree (Debian trixie)"
if [ "$foreign" = 1 ]; then
  . "$repo/scripts/lib/binfmt.sh"
  ensure_binfmt "$arch" || die "$arch programs cannot run on this host: the $deb_arch packages' scripts would fail"
  say "binfmt_misc: $arch programs run through $(sed -n 's/^interpreter //p' "/proc/sys/fs/binfmt_misc/qemu-$arch")"
fi

# ---- 2. Debian mirror -----------------------------------------------------------
stage "resolving the Debian mirror"
. "$repo/scripts/lib/debian-mirror.sh"
if [ -z "$mirror" ]; then
  mirror=$(host_mirror)
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*: pass --mirror URL"
  say "mirror from the host's apt sources: $mirror"
else
  say "mirror from --mirror/KOWABUNGA_MIRROR: $mirror"
fi
security=$(host_security)
mkdir -p "$work/pkgmngr/etc/apt/sources.list.d"
# The Raspberry Pi's boot firmware (raspi-firmware) is in non-free-firmware.
components=main
[ -z "$board" ] || components="main non-free-firmware"
{
  printf 'Types: deb\nURIs: %s\nSuites: trixie trixie-updates\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" "$components"
  if [ -n "$security" ]; then
    printf '\nTypes: deb\nURIs: %s\nSuites: trixie-security\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$security" "$components"
    say "security updates from the host's apt sources: $security"
  fi
} > "$work/pkgmngr/etc/apt/sources.list.d/mkosi.sources"

# ---- 3. agent -------------------------------------------------------------------
stage "building the $agent agent (release)"
rm -rf "$work/agent" && mkdir -p "$work/agent/usr/bin"
if [ -n "$agent_bin" ]; then
  [ -x "$agent_bin" ] || die "--agent-bin '$agent_bin' is not an executable file"
  say "using prebuilt $agent_bin"
else
  [ -n "$cargo_bin" ] || die "cargo not found: $cargo_help"
  say "cargo: $cargo_bin ($("$cargo_bin" --version 2>/dev/null || echo 'version unknown'))"
  # Always --locked: the image carries exactly the dependency versions of the
  # committed Cargo.lock. Never retried without it.
  # Native builds keep cargo's default target (target/release: what the tests and
  # the packages build); a foreign one is cross-linked (.cargo/config.toml).
  target_args=()
  if [ "$foreign" = 1 ]; then
    target_args=(--target "$rust_target")
    # pkg-config answers for the target's libraries (kaktus's libvirt), multiarch.
    export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR="/usr/lib/$arch-linux-gnu/pkgconfig:/usr/share/pkgconfig"
  fi
  if [ "$foreign" = 1 ] && command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$rust_target"; then
    say "rustup target add $rust_target"
    rustup target add "$rust_target" >&2 || die "rustup target add $rust_target failed"
  fi
  (cd "$repo" && "$cargo_bin" build --release --locked -p "$agent" "${target_args[@]}" 2>&1 | sed 's/^/    /') \
    || die "cargo build --release --locked -p $agent ${target_args[*]} failed (output above). If cargo says the lock file needs to be updated, Cargo.lock does not match a Cargo.toml: run 'cargo update -p CRATE' for the crate you changed, commit Cargo.lock, and build again. Images are never built from unlocked dependency versions."
  target_dir=${CARGO_TARGET_DIR:-target}
  case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
  agent_bin="$target_dir/release/$agent"
  [ "$foreign" = 0 ] || agent_bin="$target_dir/$rust_target/release/$agent"
  [ -x "$agent_bin" ] || die "cargo produced no $agent_bin"
fi
# An agent of another architecture would only fail at boot: refuse it here.
case "$(od -An -tx1 -j18 -N2 "$agent_bin" | tr -d ' \n')" in
  3e00) bin_arch=x86_64 ;; b700) bin_arch=aarch64 ;; *) bin_arch=unknown ;;
esac
[ "$bin_arch" = "$arch" ] || die "$agent_bin is an ELF file for $bin_arch, the image is $arch"
install -m 0755 "$agent_bin" "$work/agent/usr/bin/$agent"
say "$agent: $(du -k "$work/agent/usr/bin/$agent" | cut -f1) KiB"
# A role's helper binaries are named <role>-<job> (kontroller-firstboot).
for helper in "$(dirname "$agent_bin")/$agent"-*; do
  [ -f "$helper" ] && [ -x "$helper" ] || continue
  install -m 0755 "$helper" "$work/agent/usr/bin/"
  say "$(basename "$helper"): $(du -k "$helper" | cut -f1) KiB"
done

# ---- 4. mkosi -------------------------------------------------------------------
mkdir -p "$cache/packages" "$work/out" "$work/initrd"
run_mkosi() { # LOG ARGS...: runs mkosi, shows its steps, keeps the full log
  local log=$1 rc; shift
  set +e
  "$mkosi" --architecture "$mkosi_arch" \
    --cache-dir "$cache" --package-cache-dir "$cache/packages" --incremental yes \
    --package-manager-tree "$work/pkgmngr" --tools-tree-package-manager-tree "$work/pkgmngr" \
    "$@" --force build 2>&1 \
    | tee "$log" | grep --line-buffered -E '^‣|^(E|W):|[Ee]rror' | grep --line-buffered -v 'Processing' | sed 's/^/    /'
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || { tail -n 30 "$log" | sed 's/^/    | /' >&2; die "mkosi failed (exit $rc); full log: $log"; }
}
stage "building the trimmed initrd (image/initrd)"
# The initrd runs systemd-repart with the real root's partition definitions.
run_mkosi "$work/initrd.log" --directory "$repo/image/initrd" --output-dir "$work/initrd" \
  --extra-tree "$repo/overlays/common/usr/lib/repart.d:/usr/lib/repart.d"
initrd=$(ls "$work/initrd"/initrd.cpio* 2>/dev/null | head -n1)
[ -n "$initrd" ] || die "mkosi produced no initrd in $work/initrd"
# mkosi leaves a copy of its tools tree (1.8 GB) beside each output; the cached one
# stays in $cache. Four role builds kept 15 GB of copies, and filled CI's disk.
rm -rf "$work/initrd/debian-tools"
say "initrd userspace: $(( $(stat -c %s "$initrd") / 1024 )) KiB"

stage "building the image with mkosi (Debian trixie $deb_arch, $kernel_pkg, erofs + dm-verity, UKI)"
profile_args=()
[ -d "$repo/image/mkosi.profiles/$role" ] && profile_args=(--profile "$role")
# mkosi.conf.d/30-board-BOARD.conf and mkosi.postinst act on KOWABUNGA_BOARD.
[ -z "$board" ] || profile_args+=(--environment "KOWABUNGA_BOARD=$board")
run_mkosi "$work/mkosi.log" --directory "$repo/image" \
  --image-id "kowabunga-$role" --image-version "$version" \
  --unified-kernel-image-format "kowabunga-${role}_${version}" \
  --output "$name" --output-dir "$work/out" --initrd "$initrd" --package "$kernel_pkg" \
  --extra-tree "$repo/overlays/common" --extra-tree "$repo/overlays/$role" "${extra_trees[@]}" \
  --extra-tree "$work/agent" "${profile_args[@]}"
raw="$work/out/$name.raw"
[ -f "$raw" ] || die "mkosi produced no $raw"

# uki_cmdline UKI: the .cmdline section of a PE (UKI), read without binutils.
uki_cmdline() {
  python3 - "$1" <<'EOF'
import struct, sys
# Read the .cmdline section of a PE (UKI) without binutils.
d = open(sys.argv[1], "rb").read()
pe = struct.unpack_from("<I", d, 0x3c)[0]
nsec = struct.unpack_from("<H", d, pe + 6)[0]
opt = struct.unpack_from("<H", d, pe + 20)[0]
sec = pe + 24 + opt
for i in range(nsec):
    o = sec + 40 * i
    nm = d[o:o + 8].rstrip(b"\0").decode()
    vsize, _, rsize, rptr = struct.unpack_from("<IIII", d, o + 8)
    if nm == ".cmdline":
        print(d[rptr:rptr + min(vsize, rsize)].rstrip(b"\0").decode().strip())
EOF
}

[ -z "$board" ] || . "$repo/scripts/lib/board-$board.sh"

# ---- 5. disk artifacts ------------------------------------------------------------
stage "writing disk artifacts"
rm -f "$out/$name".* "$out/SHA256SUMS"
cp --sparse=always "$raw" "$out/$name.raw"
qemu-img convert -q -c -f raw -O qcow2 "$out/$name.raw" "$out/$name.qcow2" || die "qemu-img convert to qcow2 failed"
cp "$work/out/$name.efi" "$out/$name.efi"
objcopy_cmdline=$(uki_cmdline "$out/$name.efi") || die "cannot read the UKI command line"
printf '%s\n' "$objcopy_cmdline" > "$out/$name.cmdline"
say "UKI command line: $objcopy_cmdline"

# ---- 6. PXE artifacts --------------------------------------------------------------
stage "writing PXE artifacts (kernel + whole-root initrd, diskless)"
cp "$work/out/$name.vmlinuz" "$out/$name.pxe.vmlinuz"
rootpart=$(ls "$work/out/$name".root.raw* 2>/dev/null | head -n1)
[ -n "$rootpart" ] || die "mkosi produced no split root partition ($work/out/$name.root.raw)"
pxeroot="$work/pxeroot"
rm -rf "$pxeroot"
# The root was made by the tools tree's mkfs.erofs: extract it with the same
# erofs-utils, run from the tools tree (a trixie userspace, in bubblewrap).
tools="$work/out/debian-tools"
[ -x "$tools/usr/bin/fsck.erofs" ] || die "no fsck.erofs in mkosi's tools tree ($tools)"
in_tools() {
  bwrap --ro-bind "$tools/usr" /usr --symlink usr/bin /bin --symlink usr/sbin /sbin \
    --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc --dev /dev --tmpfs /tmp \
    --bind "$work" "$work" --die-with-parent "$@"
}
in_tools fsck.erofs --extract="$pxeroot" "$rootpart" >/dev/null || die "fsck.erofs --extract of $rootpart failed"
# The kernel runs /init from the initramfs: start systemd as the real init
# (there is no /etc/initrd-release here, so systemd boots the full system).
ln -sfn usr/lib/systemd/systemd "$pxeroot/init"
(cd "$pxeroot" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
  | cpio --null --create --format=newc --owner=0:0 --quiet) \
  | zstd -q -T0 -15 > "$out/$name.pxe.initrd" || die "building the PXE initrd failed"
rm -rf "$pxeroot" "$tools"
# Diskless: no root hash, and no /var on a data partition: /var stays in the RAM
# root. (The disk layout is the initrd's job, and a diskless boot has no initrd
# stage; the root's own systemd-repart.service is masked in every image.)
pxe_cmdline=$(printf '%s\n' "$objcopy_cmdline" | tr ' ' '\n' | grep -v -E '^(roothash=|ro$|root=|mount\.usr)' | tr '\n' ' ' | sed 's/ $//')
pxe_cmdline="$pxe_cmdline systemd.mask=var.mount"
cat > "$out/$name.ipxe" <<EOF
#!ipxe
# Kowabunga $role $version ($arch): diskless boot (the root lives in RAM).
# Serve this script and the two files beside it over HTTP(S); set the node's
# credentials below (or from your DHCP/iPXE config) before chaining it.
# The API key travels on the kernel command line: serve this script over
# HTTPS only, per node (docs/images.md).
set kowabunga_kahuna https://kahuna.example.org
set kowabunga_agent_id REPLACE-WITH-AGENT-ID
set kowabunga_api_key REPLACE-WITH-API-KEY
kernel $name.pxe.vmlinuz initrd=$name.pxe.initrd $pxe_cmdline kowabunga.kahuna=\${kowabunga_kahuna} kowabunga.agent_id=\${kowabunga_agent_id} kowabunga.api_key=\${kowabunga_api_key}
initrd $name.pxe.initrd
boot
EOF
printf '%s\n' "$pxe_cmdline" > "$out/$name.pxe.cmdline"

# ---- 7. update artifacts ---------------------------------------------------------
# One directory holds one role's update for one architecture (one SHA256SUMS, which
# make-update.sh rewrites): x86_64's is update/ROLE, another's update/ROLE-ARCH, so
# that builds of both architectures can share --out.
update_dir="$out/update/$role"
[ "$arch" = x86_64 ] || update_dir="$update_dir-$arch"
stage "writing the A/B update artifacts (${update_dir#"$out/"}/)"
roothash=$(printf '%s\n' "$objcopy_cmdline" | tr ' ' '\n' | sed -n 's/^roothash=//p' | head -n1)
[ -n "$roothash" ] || die "no roothash= on the UKI command line"
# The transfer files name slots by IMAGE_ID_VERSION and the new UKI finds its root by
# the partition UUIDs repart derived from the root hash: check both on the disk.
sfdisk --json "$out/$name.raw" | python3 -c '
import json, sys
want_label, roothash = sys.argv[1], sys.argv[2]
uuid = lambda h: "-".join((h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])).upper()
root_type, verity_type = sys.argv[3], sys.argv[4]
want = {root_type: (want_label, uuid(roothash[:32])),
        verity_type: (want_label + "_verity", uuid(roothash[32:]))}
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if p["type"] in want:
        label, u = want.pop(p["type"])
        if p.get("name") != label or p["uuid"].upper() != u:
            sys.exit("partition %s: label %r, uuid %s; expected %r, %s" % (p["node"], p.get("name"), p["uuid"], label, u))
if want:
    sys.exit("no root or verity partition in the image")
 ' "kowabunga-${role}_${version}" "$roothash" "$root_guid" "$verity_guid" || die "the image's root/verity partitions do not carry the labels and UUIDs sysupdate.d expects (above)"
"$repo/scripts/make-update.sh" --role "$role" --version "$version" --arch "$mkosi_arch" --roothash "$roothash" \
  --root "$work/out/$name.root.raw" --verity "$work/out/$name.root-verity.raw" --uki "$work/out/$name.efi" \
  --out "$update_dir" ${update_key:+--key "$update_key"} || die "writing the update artifacts failed"
(cd "$update_dir" && ls -l --block-size=K kowabunga-* | awk '{printf "    %-80s %s\n", $NF, $5}') >&2

# ---- 8. checksums -------------------------------------------------------------------
stage "checksums"
(cd "$out" && sha256sum "$name".* > SHA256SUMS)
for f in raw qcow2 efi pxe.vmlinuz pxe.initrd; do
  say "$(printf '%-40s %8s KiB (allocated %s KiB)' "$name.$f" "$(( $(stat -c %s "$out/$name.$f") / 1024 ))" "$(du -k "$out/$name.$f" | cut -f1)")"
done
initrd_kib=$(( $(stat -c %s "$work/out/$name.initrd") / 1024 ))
say "UKI initrd (trimmed): $initrd_kib KiB"
stage "done in $(( $(date +%s) - t0 ))s: $out"
