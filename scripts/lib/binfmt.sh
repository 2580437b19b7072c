# Sourced: ensure_binfmt ARCH — lets this x86-64 host run ARCH's programs (an arm64
# image's or root's maintainer scripts, an arm64 agent in a chroot) through
# qemu-user-static and binfmt_misc. Registration is the kernel's, for the whole
# host until reboot: what is changed is said on stderr. The registration comes from
# qemu-user-static's own /usr/lib/binfmt.d/qemu-ARCH.conf; its F flag makes the
# kernel open the interpreter once, so it works in chroots and mkosi's sandbox.
# Needs root. Returns non-zero with a message when it cannot.
ensure_binfmt() {
  local arch=$1 dir=/proc/sys/fs/binfmt_misc conf
  conf=/usr/lib/binfmt.d/qemu-$arch.conf
  [ -r "$conf" ] || { echo "binfmt: $conf not found (qemu-user-static: scripts/install-deps.sh --for arm64)" >&2; return 1; }
  if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir" || { echo "binfmt: cannot mount binfmt_misc on $dir" >&2; return 1; }
    echo "binfmt: mounted binfmt_misc on $dir" >&2
  fi
  if [ -e "$dir/qemu-$arch" ] && grep -qx enabled "$dir/qemu-$arch" && grep -q '^flags: .*F' "$dir/qemu-$arch"; then
    return 0
  fi
  [ ! -e "$dir/qemu-$arch" ] || echo -1 > "$dir/qemu-$arch"
  grep -v '^#' "$conf" > "$dir/register" || { echo "binfmt: registering $conf failed" >&2; return 1; }
  echo "binfmt: registered qemu-$arch from $conf (until reboot; undo: echo -1 > $dir/qemu-$arch)" >&2
}
