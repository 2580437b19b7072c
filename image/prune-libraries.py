#!/usr/bin/python3
"""Drop the libraries that only systemd-pull needed.

systemd-container brings systemd-sysupdate (A/B updates) and, with it,
systemd-pull, which links libcurl and curl's chain (HTTP/2 and 3, TLS through
GnuTLS, LDAP, SASL, Kerberos, SSH, RTMP, PSL...): ~16 MB on a Kiwi that nothing
else uses. The agent downloads and verifies the update artifacts itself and
sysupdate reads them from a local directory, so mkosi.conf removes systemd-pull;
this removes each library of CANDIDATES that no ELF file left in the image
needs (DT_NEEDED, read with readelf), repeated until nothing changes. A role
whose own programs link one (libvirt links Kerberos and SASL on kaktus) keeps
it: the rule is computed on the built tree, not listed per role.

Then every ELF file's DT_NEEDED libraries are looked up in the image; one that
is missing and was removed here fails the build (it cannot happen by the rule
above, but a change to it must not ship a binary that cannot start); one missing
for another reason is named in the build log.

Runs from mkosi.finalize (inside mkosi's tools tree) with $BUILDROOT set.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ["BUILDROOT"])

# Sonames (and prefixes of their files) of curl's dependency chain in trixie
# (libcurl4t64's Depends, recursively) minus what systemd itself loads
# (libidn2, libunistring, libzstd, libz, libssl/libcrypto, libgcc_s, libc).
CANDIDATES = [
    "libcurl.so.4", "libnghttp2.so.14", "libnghttp3.so.9", "libngtcp2.so.16",
    "libngtcp2_crypto_gnutls.so.8", "librtmp.so.1", "libssh2.so.1", "libpsl.so.5",
    "libldap.so.2", "liblber.so.2", "libsasl2.so.2", "libgssapi_krb5.so.2",
    "libkrb5.so.3", "libk5crypto.so.3", "libkrb5support.so.0", "libcom_err.so.2",
    "libkeyutils.so.1", "libbrotlidec.so.1", "libbrotlienc.so.1", "libbrotlicommon.so.1",
    "libgnutls.so.30", "libnettle.so.8", "libhogweed.so.6", "libgmp.so.10",
    "libp11-kit.so.0", "libtasn1.so.6", "libffi.so.8", "libdb-5.3.so",
]
# Plug-in directories that go with their library.
PLUGINS = {"libsasl2.so.2": ["sasl2"]}

SKIP_DIRS = ("usr/lib/modules", "usr/lib/firmware", "usr/share")


def lib_dirs() -> list[Path]:
    dirs = []
    for base in (ROOT / "usr/lib", ROOT / "usr/lib64"):
        if base.is_dir():
            dirs.append(base)
            dirs.extend(d for d in base.glob("*-linux-gnu*") if d.is_dir())
    dirs.extend(d / "systemd" for d in list(dirs) if (d / "systemd").is_dir())
    return dirs


def elf_files() -> list[Path]:
    found = []
    for top in ("usr", "etc", "opt"):
        for dirpath, _dirs, files in os.walk(ROOT / top):
            rel = Path(dirpath).relative_to(ROOT).as_posix()
            if rel.startswith(SKIP_DIRS):
                continue
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink() or name.endswith((".ko", ".ko.xz", ".ko.zst")):
                    continue
                try:
                    with path.open("rb") as f:
                        if f.read(4) == b"\x7fELF":
                            found.append(path)
                except OSError:
                    continue
    return found


def needed_of(files: list[Path]) -> dict[Path, set[str]]:
    """DT_NEEDED of each file, with readelf run on batches of files."""
    result: dict[Path, set[str]] = {f: set() for f in files}
    for start in range(0, len(files), 200):
        batch = files[start:start + 200]
        out = subprocess.run(["readelf", "-dW", *map(str, batch)],
                             capture_output=True, text=True, check=False).stdout
        current = batch[0] if len(batch) == 1 else None
        for line in out.splitlines():
            if line.startswith("File: "):
                current = Path(line[len("File: "):].strip())
            elif "(NEEDED)" in line and current is not None and current in result:
                result[current].add(line.split("[", 1)[1].split("]", 1)[0])
    return result


def main() -> int:
    dirs = lib_dirs()
    elves = needed_of(elf_files())
    # A candidate's files: the soname and every file whose name starts with it
    # (libfoo.so.1 -> libfoo.so.1.2.3), in any library directory.
    owned: dict[str, list[Path]] = {}
    for soname in CANDIDATES:
        paths = [p for d in dirs for p in d.glob(soname + "*")]
        if paths:
            owned[soname] = paths
    removable = set(owned)
    while True:
        gone = {p for s in removable for p in owned[s]}
        wanted = set().union(*(n for f, n in elves.items() if f not in gone))
        keep = removable & wanted
        if not keep:
            break
        removable -= keep
    freed = 0
    for soname in sorted(removable):
        for path in owned[soname]:
            if not path.is_symlink():
                freed += path.stat().st_size
            path.unlink()
        for plugin_dir in PLUGINS.get(soname, []):
            for d in dirs:
                if (d / plugin_dir).is_dir():
                    freed += sum(f.stat().st_size for f in (d / plugin_dir).rglob("*")
                                 if f.is_file() and not f.is_symlink())
                    shutil.rmtree(d / plugin_dir)
    print(f"prune-libraries: removed {len(removable)} libraries ({freed // 1024} KiB): "
          f"{' '.join(sorted(removable)) or 'none'}; kept (linked by the role): "
          f"{' '.join(sorted(set(owned) - removable)) or 'none'}", file=sys.stderr)

    present = {p.name for d in dirs for p in d.iterdir()}
    broken = 0
    for path, names in sorted(elves.items()):
        if not path.exists():
            continue
        for name in sorted(names - present):
            rel = path.relative_to(ROOT)
            if name in removable:
                print(f"prune-libraries: error: /{rel} needs {name}, removed here", file=sys.stderr)
                broken += 1
            else:
                print(f"prune-libraries: note: /{rel} needs {name}, not in the image",
                      file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
