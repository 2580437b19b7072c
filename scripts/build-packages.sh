#!/usr/bin/env bash
# Build the agents' packages: Debian (.deb) and Alpine (.apk, APK v2).
#
#   scripts/build-packages.sh [--arch amd64|arm64] [--format deb|apk]... [--out DIR]
#                             [--agent NAME]... [--bin-dir DIR] [--musl-bin-dir DIR]
#                             [--apk-key FILE] [--no-lintian]
#
# --arch     amd64 (default) or arm64: on an amd64 host, arm64 binaries are
#            cross-built (scripts/install-deps.sh --for arm64); kaktus needs
#            libvirt-dev:arm64 to link (see docs/packages.md)
# --format   deb or apk (repeatable; default: both)
# --out      output directory (default: dist/packages/)
# --agent    build only this agent (repeatable; default: all three; kaktus has
#            no .apk: see docs/packages.md)
# --bin-dir  take the glibc binaries (.deb) from DIR instead of `cargo build --release`
#            (--target aarch64-unknown-linux-gnu for a foreign arm64)
# --musl-bin-dir  take the static musl binaries (.apk) from DIR instead of
#            `cargo build --release --target ARCH-unknown-linux-musl`
# --apk-key  the packager's RSA private key (PEM, as abuild-keygen makes it); its
#            public key NAME.pub must sit beside it. Default: a throwaway key kept
#            in ~/.cache/kowabunga/apk-key/ (a warning says so; Alpine hosts will
#            not trust it)
# --no-lintian  skip lintian (it runs by default, and fails on a warning)
#
# Writes AGENT_VERSION_ARCH.deb, apk/ARCH/AGENT-VERSION-r0.apk, the packager's
# public key apk/NAME.rsa.pub and SHA256SUMS (every package) into --out.
# A .deb: /usr/bin/AGENT, /usr/lib/systemd/system/AGENT.service
# (generated from the image's unit in overlays/, see package_unit), its
# maintainer scripts (packaging/deb/common), an example of its credentials and
# the docs under /usr/share/doc/AGENT. An .apk: the static musl binary, an OpenRC
# service (packaging/apk/openrc), the same example, written and signed by
# kowabunga-apk (packaging/apk). What is in them: docs/packages.md.
# Host tools: scripts/install-deps.sh --for packages.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '[build-packages] %s\n' "$*" >&2; }
die() { printf '[build-packages] error: %s\n' "$*" >&2; exit 1; }

arch=amd64 out="$repo/dist/packages" agents=() bin_dir="" musl_bin_dir="" apk_key="" lintian=1 formats=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arch=$2; shift 2 ;;
    --format) [ $# -ge 2 ] || die "--format needs deb or apk"; formats+=("$2"); shift 2 ;;
    --musl-bin-dir) [ $# -ge 2 ] || die "--musl-bin-dir needs a directory"; musl_bin_dir=$2; shift 2 ;;
    --apk-key) [ $# -ge 2 ] || die "--apk-key needs a file"; apk_key=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --agent) [ $# -ge 2 ] || die "--agent needs a name"; agents+=("$2"); shift 2 ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
    --no-lintian) lintian=0; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ ${#formats[@]} -gt 0 ] || formats=(deb apk)
want_deb=0 want_apk=0
for f in "${formats[@]}"; do
  case "$f" in deb) want_deb=1 ;; apk) want_apk=1 ;; *) die "unknown --format '$f' (deb or apk)" ;; esac
done
# gnu_target: the .deb's binaries; apk_arch/musl_target: Alpine's name, the .apk's.
case "$arch" in
  amd64|x86_64) arch=amd64; gnu_target=x86_64-unknown-linux-gnu; apk_arch=x86_64; musl_target=x86_64-unknown-linux-musl ;;
  arm64|aarch64) arch=arm64; gnu_target=aarch64-unknown-linux-gnu; apk_arch=aarch64; musl_target=aarch64-unknown-linux-musl ;;
  *) die "unknown --arch '$arch' (amd64 or arm64)" ;;
esac
host_arch=$(dpkg --print-architecture)
cross=0
[ "$host_arch" = "$arch" ] || cross=1
[ "$cross" = 0 ] || [ "$host_arch" = amd64 ] || die "cross-building $arch packages is done on an amd64 host (this one is $host_arch)"
[ ${#agents[@]} -gt 0 ] || agents=(kiwi kaktus kontroller)
for a in "${agents[@]}"; do
  case "$a" in kiwi|kaktus|kontroller) ;; *) die "unknown agent '$a' (kiwi, kaktus or kontroller)" ;; esac
  # kaktus's helper links libvirt: cross, the target's libvirt-dev (multiarch).
  if [ "$a:$cross" = kaktus:1 ] && [ -z "$bin_dir" ] && [ ! -e /usr/lib/aarch64-linux-gnu/pkgconfig/libvirt.pc ]; then
    die "kaktus for $arch links the $arch libvirt: run scripts/install-deps.sh --for arm64-libvirt (multiarch: libvirt-dev:$arch), or leave kaktus out (--agent kiwi --agent kontroller)"
  fi
done
if [ "$cross" = 1 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc not found: run scripts/install-deps.sh --for arm64"
fi
if [ "$want_deb" = 1 ]; then
  for tool in dpkg-deb dpkg-shlibdeps gzip md5sum; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh --for packages"
  done
  [ "$lintian" = 0 ] || command -v lintian >/dev/null || die "lintian not found: run scripts/install-deps.sh --for packages (or pass --no-lintian)"
fi
# .apk: every agent but kaktus, whose libvirt helper links libvirt (C), which has no
# musl build on a Debian host (docs/packages.md).
apk_agents=()
if [ "$want_apk" = 1 ]; then
  for a in "${agents[@]}"; do [ "$a" = kaktus ] || apk_agents+=("$a"); done
  if [ ${#apk_agents[@]} -lt ${#agents[@]} ]; then
    why="kaktus has no .apk: kaktus-libvirt links libvirt, and no musl libvirt can be built or linked on a Debian host (docs/packages.md)"
    [ "$want_deb" = 1 ] || [ ${#apk_agents[@]} -gt 0 ] || die "$why"
    say "note: $why"
  fi
  command -v openssl >/dev/null || die "openssl not found (it makes the throwaway packager key): run scripts/install-deps.sh --for packages"
  command -v readelf >/dev/null || die "readelf not found: run scripts/install-deps.sh --for packages"
fi

version=$(awk '/^\[workspace.package\]/{p=1;next} /^\[/{p=0} p && $1=="version"{gsub(/"/,"",$3); print $3; exit}' "$repo/Cargo.toml")
license=$(awk '/^\[workspace.package\]/{p=1;next} /^\[/{p=0} p && $1=="license"{gsub(/"/,"",$3); print $3; exit}' "$repo/Cargo.toml")
[ -n "$version" ] && [ -n "$license" ] || die "no version or license under [workspace.package] in Cargo.toml"
# The package's version: the workspace's, Debian revision 1 (a non-native
# package: its changelog is changelog.Debian.gz).
debversion="$version-1"
maintainer="Kowabunga OS maintainers <maintainers@kowabunga.cloud>"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)

# ---- binaries ------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-$repo/target}
# cargo_build HINT ARGS...: `cargo build --release --locked ARGS`, HINT added to the
# error when it fails.
cargo_build() {
  local hint=$1; shift
  if [ -z "${cargo_bin:-}" ]; then
    . "$repo/scripts/lib/find-cargo.sh"
    find_cargo || die "cargo not found: install a Rust toolchain with rustup, or set CARGO=/path/to/cargo"
  fi
  say "cargo build --release --locked $*"
  (cd "$repo" && nice -n 10 "$cargo_bin" build --release --locked "$@") || die "cargo build --release --locked $* failed${hint:+ ($hint)}"
}
if [ "$want_deb" = 1 ]; then
  if [ -z "$bin_dir" ]; then
    p=(); for a in "${agents[@]}"; do p+=(-p "$a"); done
    if [ "$cross" = 1 ]; then
      export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR="/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
      cargo_build "the $gnu_target target and its cross linker come with scripts/install-deps.sh --for arm64" --target "$gnu_target" "${p[@]}"
      bin_dir=$target_dir/$gnu_target/release
    else
      cargo_build "" "${p[@]}"
      bin_dir=$target_dir/release
    fi
  fi
  for a in "${agents[@]}"; do
    [ -x "$bin_dir/$a" ] || die "no executable $bin_dir/$a"
    # A binary of the wrong architecture would be packaged without a complaint.
    machine=$(readelf -hW "$bin_dir/$a" | sed -n 's/^ *Machine: *//p')
    case "$arch:$machine" in amd64:*X86-64*|arm64:AArch64) ;; *) die "$bin_dir/$a is for '$machine', not $arch" ;; esac
  done
fi
if [ ${#apk_agents[@]} -gt 0 ]; then
  if [ -z "$musl_bin_dir" ]; then
    p=(); for a in "${apk_agents[@]}"; do p+=(-p "$a"); done
    cargo_build "the $musl_target target and musl-gcc come with scripts/install-deps.sh --for packages" \
      --target "$musl_target" "${p[@]}"
    musl_bin_dir=$target_dir/$musl_target/release
  fi
  for a in "${apk_agents[@]}"; do
    [ -x "$musl_bin_dir/$a" ] || die "no executable $musl_bin_dir/$a"
    # Alpine's libc is musl: a binary asking for a program interpreter (glibc's
    # ld-linux, or musl's own) is not the static build the package promises.
    ! readelf -lW "$musl_bin_dir/$a" | grep -q 'program interpreter' \
      || die "$musl_bin_dir/$a is dynamically linked: an .apk carries the static $musl_target build"
  done
  apk_tool=$target_dir/release/kowabunga-apk
  cargo_build "" -p kowabunga-apk
fi
# Reproducible: every date and mtime is the last commit's (set after cargo: a
# changed SOURCE_DATE_EPOCH makes build scripts rerun).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}

# ---- the package's unit --------------------------------------------------------
# One source of truth: the image's unit (overlays/AGENT/...), made fit for a
# general-purpose host: no var.mount (the appliance's /var partition), logs to
# the journal only (an appliance shows them on its console), and kiwi/kaktus
# read their trusted keys from /etc/kowabunga/trusted-keys (the image bakes them
# into /usr/share/kowabunga/trusted-keys, the agent's default).
package_unit() {
  local agent=$1 src="$repo/overlays/$1/usr/lib/systemd/system/$1.service" keys=""
  [ -r "$src" ] || die "no unit $src"
  [ "$agent" = kontroller ] || keys=" --trusted-keys /etc/kowabunga/trusted-keys"
  printf '# Packaged unit: generated by scripts/build-packages.sh from the image'"'"'s\n'
  printf '# overlays/%s/usr/lib/systemd/system/%s.service (no var.mount, journal only%s).\n' \
    "$agent" "$agent" "${keys:+, trusted keys in /etc/kowabunga/trusted-keys}"
  sed -e 's/^After=var\.mount /After=/' \
      -e '/^# Logs go to the journal and to the console/,/^# console is where an operator looks first\.$/d' \
      -e '/^StandardOutput=journal+console$/d' -e '/^StandardError=journal+console$/d' \
      -e "s|^ExecStart=/usr/bin/$agent run\$|&$keys|" "$src"
}

# ---- one package ----------------------------------------------------------------
build_one() {
  local agent=$1 pkg="$repo/packaging/deb/$1" common="$repo/packaging/deb/common"
  local root="$work/$agent" doc ready ready_text credentials tmpfiles="" keeps="" purge_leaves f
  doc="$root/usr/share/doc/$agent"
  case "$agent" in
    kontroller)
      ready="[ -e /dev/disk/by-label/cidata ]"
      ready_text="the NoCloud seed volume /dev/disk/by-label/cidata"
      credentials="kontroller reads its credentials (kowabunga_controller_* keys) from the
VM's NoCloud seed, the volume labelled cidata that Kahuna attaches, mounted
read-only on /run/kowabunga/seed by run-kowabunga-seed.mount (shipped here).
An example meta-data: /usr/share/doc/kontroller/examples/meta-data. No
trusted minisign key is needed (the seed and the instance metadata are
trusted, as upstream's agents trust them)." ;;
    *)
      ready="[ -e /etc/kowabunga/$agent.yml ]"
      ready_text="/etc/kowabunga/$agent.yml"
      credentials="Put the agent's Kahuna credentials in /etc/kowabunga/$agent.yml (mode 0600),
upstream Kowabunga's format, global: {id, endpoint, apiKey}; an example is in
/usr/share/doc/$agent/examples/$agent.yml.

Trusted signing keys: the agent applies only documents signed (minisign) by
a key in /etc/kowabunga/trusted-keys/*.pub; the unit passes
--trusted-keys /etc/kowabunga/trusted-keys. Put Kahuna's public key there
before starting it. Run \`$agent verify --trusted-keys /etc/kowabunga/trusted-keys FILE\`
to check a document by hand." ;;
  esac
  if [ "$agent" = kaktus ]; then
    tmpfiles='if command -v systemd-tmpfiles >/dev/null; then systemd-tmpfiles --create kaktus.conf; fi'
    keeps=" and /var/lib/kaktus (instance volumes)"
  fi
  case "$agent" in
    kontroller) purge_leaves="the seed (a read-only volume) and anything you put under /etc/kowabunga." ;;
    kaktus) purge_leaves="/etc/kowabunga/kaktus.yml and /etc/kowabunga/trusted-keys (the admin's
files, with secrets: delete them by hand), and /var/lib/kaktus, the storage
pools: the instances' volumes are never deleted by a package (remove them by
hand once no instance uses them)." ;;
    kiwi) purge_leaves="/etc/kowabunga/kiwi.yml and /etc/kowabunga/trusted-keys (the admin's
files, with secrets: delete them by hand)." ;;
  esac

  rm -rf "$root" && mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$doc/examples"
  install -m 0755 "$bin_dir/$agent" "$root/usr/bin/$agent"
  # The helper binaries the packaged agent runs itself (kaktus-libvirt: the only one
  # linking libvirt). kontroller-firstboot and kontroller-seed-generator are the
  # appliance's first-boot units' programs, not the package's.
  local helper helpers=()
  [ "$agent" != kaktus ] || helpers=(kaktus-libvirt)
  for helper in "${helpers[@]}"; do
    [ -x "$bin_dir/$helper" ] || die "no executable $bin_dir/$helper"
    install -m 0755 "$bin_dir/$helper" "$root/usr/bin/$helper"
  done
  package_unit "$agent" > "$root/usr/lib/systemd/system/$agent.service"
  if grep -v '^#' "$root/usr/lib/systemd/system/$agent.service" | grep -Eq 'var\.mount|journal\+console'; then
    die "$agent.service: the image unit changed, package_unit no longer adapts it (var.mount or journal+console left)"
  fi
  if [ "$agent" = kontroller ]; then
    install -m 0644 "$repo/overlays/kontroller/usr/lib/systemd/system/run-kowabunga-seed.mount" "$root/usr/lib/systemd/system/"
    install -m 0644 "$pkg/meta-data" "$doc/examples/meta-data"
  else
    install -m 0644 "$pkg/$agent.yml" "$doc/examples/$agent.yml"
  fi
  if [ "$agent" = kaktus ]; then
    install -D -m 0644 "$pkg/kaktus.tmpfiles" "$root/usr/lib/tmpfiles.d/kaktus.conf"
  fi
  if [ -r "$pkg/lintian-overrides" ]; then
    install -D -m 0644 "$pkg/lintian-overrides" "$root/usr/share/lintian/overrides/$agent"
  fi

  # Docs: DEP-5 copyright, changelog, README.Debian.
  local years first last
  first=$(git -C "$repo" log --format=%cd --date=format:%Y 2>/dev/null | tail -1)
  last=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
  years=${first:-$last}; [ "$years" = "$last" ] || years="$years-$last"
  cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: kowabunga-os
Source: https://www.kowabunga.cloud/

Files: *
Copyright: $years Kowabunga OS contributors
License: $license

License: $license
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
EOF
  [ "$license" = Apache-2.0 ] || die "copyright text is written for Apache-2.0, the workspace says $license"
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from Kowabunga OS commit %s.\n\n -- %s  %s\n' \
    "$agent" "$debversion" "$commit" "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" \
    | gzip -9n > "$doc/changelog.Debian.gz"
  subst() {
    sed -e "s|@AGENT@|$agent|g" -e "s|@READY@|$ready|g" -e "s|@READY_TEXT@|$ready_text|g" \
        -e "s|@TMPFILES@|$tmpfiles|" -e '/^\t$/d' -e "s|@KEEPS@|$keeps|" "$1"
  }
  for f in postinst prerm postrm; do
    subst "$common/$f" > "$root/DEBIAN/$f" && chmod 0755 "$root/DEBIAN/$f"
  done
  # README.Debian: multi-line values, so awk rather than sed.
  awk -v c="$credentials" -v l="$purge_leaves" -v a="$agent" \
    '{ gsub(/@AGENT@/, a); if ($0 == "@CREDENTIALS@") { print c; next }
       if ($0 == "@PURGE_LEAVES@") { print l; next } print }' \
    "$common/README.Debian" > "$doc/README.Debian"

  # Depends: the shared libraries, from dpkg-shlibdeps (it wants a debian/control).
  local shl="$work/shlibs-$agent"
  mkdir -p "$shl/debian"
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$agent" "$agent" > "$shl/debian/control"
  local shlibs
  if [ "$cross" = 0 ]; then
    shlibs=$(cd "$shl" && dpkg-shlibdeps -O "$root"/usr/bin/* 2>"$shl/err" | sed -n 's/^shlibs:Depends=//p') \
      || die "dpkg-shlibdeps $agent failed: $(cat "$shl/err")"
  else
    # Cross: the libraries are the cross toolchain's (/usr/aarch64-linux-gnu/lib),
    # whose shlibs name libc6:arm64 and libgcc-s1-arm64-cross; on an arm64 host they
    # are libc6 and libgcc-s1 (the same versions).
    shlibs=$(cd "$shl" && CC=aarch64-linux-gnu-gcc dpkg-architecture -a"$arch" -c \
      dpkg-shlibdeps -l/usr/aarch64-linux-gnu/lib -O "$root"/usr/bin/* 2>"$shl/err" \
      | sed -n 's/^shlibs:Depends=//p' | sed -e "s/:$arch//g" -e "s/-$arch-cross//g") \
      || die "dpkg-shlibdeps $agent ($arch) failed: $(cat "$shl/err")"
  fi
  [ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependency for $agent: $(cat "$shl/err")"

  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s|@VERSION@|$debversion|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
      -e "s|@SIZE@|$size|" -e "s|@SHLIBS@|$shlibs|" "$pkg/control" > "$root/DEBIAN/control"
  (cd "$root" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

  local deb="$out/${agent}_${debversion}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null || die "dpkg-deb --build $agent failed"
  say "$(basename "$deb"): $(( $(stat -c %s "$deb") / 1024 )) KiB, Depends: $(dpkg-deb -f "$deb" Depends)"
  if [ "$lintian" = 1 ]; then
    lintian --fail-on warning "$deb" >&2 || die "lintian: $(basename "$deb") has warnings or errors (above)"
  fi
}

# ---- one .apk ----------------------------------------------------------------------
# The OpenRC service is packaging/apk/openrc/agent.initd with the agent's name, its
# `run` arguments and its start_pre checks (AGENT.start_pre) filled in.
render_apk_file() {
  local agent=$1 src=$2 upper description args="" pre=""
  upper=$(printf '%s' "$agent" | tr 'a-z' 'A-Z')
  case "$agent" in
    kiwi) description="Pulls Kiwi's signed desired state from Kahuna and applies it" ;;
    kontroller) description="Applies the service VM's state from its NoCloud seed and instance metadata" ;;
  esac
  [ "$agent" = kontroller ] || args=" --trusted-keys /etc/kowabunga/trusted-keys"
  [ ! -r "$apk_src/openrc/$agent.start_pre" ] || pre="$apk_src/openrc/$agent.start_pre"
  awk -v a="$agent" -v u="$upper" -v d="$description" -v r="$args" -v ready="$3" -v pre="$pre" '
    $0 == "@START_PRE@" { if (pre != "") while ((getline line < pre) > 0) print line; next }
    { gsub(/@AGENT_UPPER@/, u); gsub(/@AGENT@/, a); gsub(/@DESCRIPTION@/, d); gsub(/@ARGS@/, r)
      gsub(/@READY_TEXT@/, ready); print }' "$src"
}

build_apk() {
  local agent=$1 root="$work/apk-$1" ready example desc depends=()
  case "$agent" in
    kiwi)
      ready="put Kahuna's credentials in /etc/kowabunga/kiwi.yml (example: /usr/share/doc/kiwi/examples/kiwi.yml) and its minisign key in /etc/kowabunga/trusted-keys/"
      example="$repo/packaging/deb/kiwi/kiwi.yml"
      desc="Kowabunga network node agent (SD-WAN gateway)"
      depends=(nftables) ;;
    kontroller)
      ready="starts once the NoCloud seed volume (label cidata) is attached"
      example="$repo/packaging/deb/kontroller/meta-data"
      desc="Kowabunga service VM agent (Kawaii gateway, Konvey load balancer)"
      depends=(nftables) ;;
  esac
  rm -rf "$root" && mkdir -p "$root"
  render_apk_file "$agent" "$apk_src/openrc/agent.initd" "$ready" > "$root/initd"
  render_apk_file "$agent" "$apk_src/openrc/agent.confd" "$ready" > "$root/confd"
  render_apk_file "$agent" "$apk_src/openrc/post-install" "$ready" > "$root/post-install"
  render_apk_file "$agent" "$apk_src/openrc/pre-deinstall" "$ready" > "$root/pre-deinstall"
  if grep -q '@[A-Z_]*@' "$root/initd" "$root/confd" "$root/post-install" "$root/pre-deinstall"; then
    die "$agent: a placeholder of packaging/apk/openrc was left unfilled"
  fi
  local apk="$out/apk/$apk_arch/$agent-$version-r0.apk" dep_args=() d
  for d in "${depends[@]}"; do dep_args+=(--depend "$d"); done
  mkdir -p "$(dirname "$apk")"
  "$apk_tool" --out "$apk" --key "$apk_key" --pkgname "$agent" --pkgver "$version-r0" --arch "$apk_arch" \
    --description "$desc" --maintainer "$maintainer" --license "$license" --commit "$commit" "${dep_args[@]}" \
    --file "$musl_bin_dir/$agent=usr/bin/$agent:755" \
    --file "$root/initd=etc/init.d/$agent:755" \
    --file "$root/confd=etc/conf.d/$agent:644" \
    --file "$example=usr/share/doc/$agent/examples/$(basename "$example"):644" \
    --script "post-install=$root/post-install" --script "pre-deinstall=$root/pre-deinstall" \
    || die "kowabunga-apk $agent failed"
  say "apk/$apk_arch/$(basename "$apk"): $(( $(stat -c %s "$apk") / 1024 )) KiB, depends: ${depends[*]}, signed by $(basename "$apk_key").pub"
}

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
if [ "$want_deb" = 1 ]; then
  for a in "${agents[@]}"; do build_one "$a"; done
fi
if [ ${#apk_agents[@]} -gt 0 ]; then
  apk_src="$repo/packaging/apk"
  if [ -z "$apk_key" ]; then
    # Kept out of --out (never published beside the packages), reused between builds.
    apk_key="${XDG_CACHE_HOME:-$HOME/.cache}/kowabunga/apk-key/kowabunga-throwaway.rsa"
    if [ ! -r "$apk_key" ] || [ ! -r "$apk_key.pub" ]; then
      mkdir -p "$(dirname "$apk_key")" && chmod 0700 "$(dirname "$apk_key")"
      openssl genrsa -out "$apk_key" 2048 2>/dev/null && openssl rsa -in "$apk_key" -pubout -out "$apk_key.pub" 2>/dev/null \
        || die "openssl could not make the throwaway packager key"
    fi
    say "warning: .apk signed with a throwaway key ($apk_key): pass --apk-key for packages Alpine hosts trust"
  fi
  [ -r "$apk_key.pub" ] || die "no public key $apk_key.pub beside --apk-key $apk_key (apk finds it as /etc/apk/keys/$(basename "$apk_key").pub)"
  mkdir -p "$out/apk"
  [ "$(realpath "$apk_key.pub")" = "$(realpath -m "$out/apk/$(basename "$apk_key").pub")" ] || cp "$apk_key.pub" "$out/apk/"
  for a in "${apk_agents[@]}"; do build_apk "$a"; done
fi
(cd "$out" && find . -maxdepth 3 \( -name '*.deb' -o -name '*.apk' \) -printf '%P\n' | LC_ALL=C sort | xargs -r sha256sum -- > SHA256SUMS)
say "done: $out ($(wc -l < "$out/SHA256SUMS") packages, SHA256SUMS)"
