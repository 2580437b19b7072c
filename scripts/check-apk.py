#!/usr/bin/env python3
"""Read an Alpine APK v2 package back and check it, independently of the writer.

    scripts/check-apk.py PACKAGE --pubkey KEY.rsa.pub [--expect FIELD=VALUE]...
                         [--expect-file PATH:MODE]... [--json]

Uses only Python's zlib, gzip, tarfile and hashlib and the openssl command (not the
Rust code that wrote the package). Checks, failing with a message naming the problem:
  * three gzip streams: signature, control, data;
  * the signature stream holds one .SIGN.RSA.<KEY.rsa.pub> entry, an RSA PKCS#1 v1.5
    SHA-1 signature of the control stream's bytes that verifies with --pubkey;
  * the signature and control tars are cut (no end-of-archive blocks), so the whole
    package decompresses to one tar archive;
  * .PKGINFO has pkgname, pkgver, arch, size, datahash..., and datahash is the SHA-256
    of the data stream's bytes;
  * every data entry is owned by root:root (uid/gid 0), every regular file carries a
    PAX APK-TOOLS.checksum.SHA1 that matches its content;
  * --expect / --expect-file: .PKGINFO fields and files with their modes.
Prints what it read (--json: as JSON). Exit status 1 on any failed check.
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zlib


class Bad(Exception):
    pass


def gzip_streams(data):
    """Splits concatenated gzip members, returning each member's compressed bytes."""
    streams = []
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            d.decompress(rest)
        except zlib.error as e:
            raise Bad(f"gzip stream {len(streams) + 1} is corrupt: {e}")
        if not d.eof:
            raise Bad(f"gzip stream {len(streams) + 1} is truncated")
        used = len(rest) - len(d.unused_data)
        streams.append(rest[:used])
        rest = d.unused_data
    return streams


def gunzip(stream):
    return zlib.decompress(stream, wbits=31)


def tar_members(raw, what):
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    except tarfile.TarError as e:
        raise Bad(f"{what} tar does not parse: {e}")


def check_cut(raw, what):
    if len(raw) % 512:
        raise Bad(f"{what} tar is not a whole number of 512-byte blocks")
    if len(raw) >= 1024 and raw[-1024:] == bytes(1024):
        raise Bad(f"{what} tar ends with end-of-archive blocks: it must be cut (abuild-tar --cut)")


def check(package, pubkey, expect, expect_files):
    with open(package, "rb") as f:
        data = f.read()
    streams = gzip_streams(data)
    if len(streams) != 3:
        raise Bad(f"{len(streams)} gzip streams, an APK v2 package has 3 (signature, control, data)")
    sig_gz, control_gz, data_gz = streams
    sig_raw, control_raw, data_raw = (gunzip(s) for s in streams)

    # Signature.
    check_cut(sig_raw, "signature")
    sig = tar_members(sig_raw, "signature")
    if len(sig) != 1 or not sig[0][0].name.startswith(".SIGN.RSA."):
        raise Bad(f"signature tar holds {[m.name for m, _ in sig]}, not one .SIGN.RSA.<key> entry")
    key_name = sig[0][0].name[len(".SIGN.RSA."):]
    if key_name != os.path.basename(pubkey):
        raise Bad(f"signed by key '{key_name}', not by {os.path.basename(pubkey)}")
    with tempfile.TemporaryDirectory() as tmp:
        sig_file, control_file = os.path.join(tmp, "sig"), os.path.join(tmp, "control")
        with open(sig_file, "wb") as f:
            f.write(sig[0][1])
        with open(control_file, "wb") as f:
            f.write(control_gz)
        verify = subprocess.run(
            ["openssl", "dgst", "-sha1", "-verify", pubkey, "-signature", sig_file, control_file],
            capture_output=True, text=True)
        if verify.returncode != 0:
            raise Bad(f"signature does not verify with {pubkey}: {verify.stdout.strip()} {verify.stderr.strip()}")

    # Control.
    check_cut(control_raw, "control")
    control = tar_members(control_raw, "control")
    if not control or control[0][0].name != ".PKGINFO":
        raise Bad("control tar does not start with .PKGINFO")
    pkginfo = {}
    for line in control[0][1].decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            raise Bad(f".PKGINFO line is not 'key = value': {line!r}")
        if key == "depend":
            pkginfo.setdefault("depend", []).append(value)
        else:
            pkginfo[key] = value
    for key in ("pkgname", "pkgver", "pkgdesc", "arch", "size", "license", "builddate", "datahash"):
        if key not in pkginfo:
            raise Bad(f".PKGINFO has no {key}")
    if hashlib.sha256(data_gz).hexdigest() != pkginfo["datahash"]:
        raise Bad(".PKGINFO datahash is not the SHA-256 of the data stream (data changed after signing)")
    scripts = []
    for m, content in control[1:]:
        if not m.name.startswith(".") or not m.isfile():
            raise Bad(f"unexpected control entry {m.name}")
        if not content.startswith(b"#!"):
            raise Bad(f"install script {m.name} has no #! line")
        scripts.append({"name": m.name, "mode": oct(m.mode)})

    # Data.
    if len(data_raw) < 1024 or data_raw[-1024:] != bytes(1024):
        raise Bad("data tar has no end-of-archive blocks")
    files = []
    total = 0
    for m, content in tar_members(data_raw, "data"):
        if (m.uid, m.gid) != (0, 0):
            raise Bad(f"{m.name} is owned by {m.uid}:{m.gid}, not root")
        entry = {"path": m.name, "mode": oct(m.mode), "owner": f"{m.uname}:{m.gname}"}
        if m.isfile():
            want = m.pax_headers.get("APK-TOOLS.checksum.SHA1")
            if want is None:
                raise Bad(f"{m.name} has no APK-TOOLS.checksum.SHA1 PAX header")
            if hashlib.sha1(content).hexdigest() != want:
                raise Bad(f"{m.name}: content does not match its APK-TOOLS.checksum.SHA1")
            entry["size"] = len(content)
            total += len(content)
        elif not m.isdir():
            raise Bad(f"{m.name}: only files and directories are expected")
        files.append(entry)
    if int(pkginfo["size"]) != total:
        raise Bad(f".PKGINFO size {pkginfo['size']} is not the files' total {total}")

    # One archive, as apk reads it.
    whole = [m.name for m, _ in tar_members(sig_raw + control_raw + data_raw, "concatenated")]
    if whole[:2] != [sig[0][0].name, ".PKGINFO"]:
        raise Bad("the three streams do not read as one archive (signature, .PKGINFO, ...)")

    for spec in expect:
        key, _, value = spec.partition("=")
        got = pkginfo.get(key)
        if (value not in got) if isinstance(got, list) else (got != value):
            raise Bad(f".PKGINFO {key} is {got!r}, expected {value!r}")
    by_path = {f["path"]: f for f in files}
    for spec in expect_files:
        path, _, mode = spec.rpartition(":")
        if path not in by_path:
            raise Bad(f"no {path} in the package")
        if by_path[path]["mode"] != oct(int(mode, 8)):
            raise Bad(f"{path} has mode {by_path[path]['mode']}, expected {oct(int(mode, 8))}")
    return {"signed_by": key_name, "pkginfo": pkginfo, "scripts": scripts, "files": files,
            "streams": [len(s) for s in streams]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package")
    p.add_argument("--pubkey", required=True)
    p.add_argument("--expect", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--expect-file", action="append", default=[], metavar="PATH:MODE")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        report = check(args.package, args.pubkey, args.expect, args.expect_file)
    except (Bad, OSError) as e:
        print(f"check-apk: {args.package}: {e}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        info = report["pkginfo"]
        print(f"{args.package}: {info['pkgname']} {info['pkgver']} {info['arch']}, signed by {report['signed_by']}, "
              f"{len(report['files'])} entries, {info['size']} bytes installed, depends {info.get('depend', [])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
