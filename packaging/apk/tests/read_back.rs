//! Packages written by `kowabunga-apk`, read back by an independent implementation
//! (scripts/check-apk.py: Python's zlib/tarfile/hashlib and the openssl command), and
//! the same checks failing on tampered packages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A throwaway packager key, `packager-test.rsa` (+ `.pub`), made as abuild-keygen
    /// makes it (`openssl genrsa`, `openssl rsa -pubout`); `pkcs1` for the older format.
    fn new(pkcs1: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("packager-test.rsa");
        let mut genrsa = Command::new("openssl");
        genrsa.arg("genrsa");
        if pkcs1 {
            genrsa.arg("-traditional");
        }
        run(genrsa.arg("-out").arg(&key).arg("2048"));
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(dir.path().join("packager-test.rsa.pub")));
        std::fs::write(dir.path().join("agent"), b"\x7fELF pretend binary").unwrap();
        std::fs::write(
            dir.path().join("init"),
            b"#!/sbin/openrc-run\ncommand=/usr/bin/agent\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("post-install"),
            b"#!/bin/sh\necho enable it\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn build(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kowabunga-apk"))
            .arg("--out")
            .arg(self.path("agent-0.1.0-r0.apk"))
            .arg("--key")
            .arg(self.path("packager-test.rsa"))
            .args([
                "--pkgname",
                "agent",
                "--pkgver",
                "0.1.0-r0",
                "--arch",
                "x86_64",
            ])
            .args([
                "--description",
                "A test agent",
                "--maintainer",
                "Test <t@example.org>",
            ])
            .args(["--depend", "nftables", "--mtime", "1700000000"])
            .arg(format!(
                "--file={}=usr/bin/agent:755",
                self.path("agent").display()
            ))
            .arg(format!(
                "--file={}=etc/init.d/agent:755",
                self.path("init").display()
            ))
            .arg(format!(
                "--script=post-install={}",
                self.path("post-install").display()
            ))
            .args(extra)
            .output()
            .unwrap()
    }

    fn package(&self) -> PathBuf {
        let out = self.build(&[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.path("agent-0.1.0-r0.apk")
    }

    fn check(&self, package: &Path, extra: &[&str]) -> Output {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-apk.py"))
            .arg(package)
            .arg("--pubkey")
            .arg(self.path("packager-test.rsa.pub"))
            .args(extra)
            .output()
            .unwrap()
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Offsets of the three gzip streams (each starts with 1f 8b 08, best compression).
fn stream_starts(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len() - 3)
        .filter(|&i| bytes[i..i + 4] == [0x1f, 0x8b, 0x08, 0x00] && bytes.get(i + 8) == Some(&2))
        .collect()
}

#[test]
fn a_package_reads_back_with_its_fields_files_modes_owners_and_signature() {
    for pkcs1 in [false, true] {
        let fx = Fixture::new(pkcs1);
        let package = fx.package();
        let out = fx.check(
            &package,
            &[
                "--json",
                "--expect=pkgname=agent",
                "--expect=pkgver=0.1.0-r0",
                "--expect=arch=x86_64",
                "--expect=depend=nftables",
                "--expect=builddate=1700000000",
                "--expect-file=usr/bin/agent:755",
                "--expect-file=etc/init.d/agent:755",
            ],
        );
        assert!(out.status.success(), "pkcs1={pkcs1}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["signed_by"], "packager-test.rsa.pub");
        assert_eq!(report["scripts"][0]["name"], ".post-install");
        let files = report["files"].as_array().unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/init.d",
                "usr",
                "usr/bin",
                "etc/init.d/agent",
                "usr/bin/agent"
            ]
        );
        assert!(files.iter().all(|f| f["owner"] == "root:root"));
    }
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let fx = Fixture::new(false);
    let first = std::fs::read(fx.package()).unwrap();
    let second = std::fs::read(fx.package()).unwrap();
    assert_eq!(first, second);
}

#[test]
fn a_tampered_package_fails_the_checks() {
    let fx = Fixture::new(false);
    let package = fx.package();
    let bytes = std::fs::read(&package).unwrap();
    let starts = stream_starts(&bytes);
    assert_eq!(starts.len(), 3, "three gzip streams at {starts:?}");
    let tampered = fx.path("tampered.apk");

    // Data replaced by another valid data stream (a different binary): the datahash no
    // longer matches.
    std::fs::write(fx.path("agent"), b"\x7fELF another binary").unwrap();
    let other = std::fs::read(fx.package()).unwrap();
    let other_data = &other[stream_starts(&other)[2]..];
    std::fs::write(&tampered, [&bytes[..starts[2]], other_data].concat()).unwrap();
    let out = fx.check(&tampered, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("datahash"), "{}", stderr(&out));

    // Control replaced by the other package's (its own valid .PKGINFO): signature fails.
    let other_control = &other[stream_starts(&other)[1]..stream_starts(&other)[2]];
    std::fs::write(
        &tampered,
        [&bytes[..starts[1]], other_control, &bytes[starts[2]..]].concat(),
    )
    .unwrap();
    let out = fx.check(&tampered, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("signature does not verify"),
        "{}",
        stderr(&out)
    );

    // A flipped byte in the data stream: gzip's CRC or the datahash catches it.
    let mut flipped = bytes.clone();
    let at = starts[2] + (bytes.len() - starts[2]) / 2;
    flipped[at] ^= 0x40;
    std::fs::write(&tampered, &flipped).unwrap();
    assert!(!fx.check(&tampered, &[]).status.success());

    // Truncated.
    std::fs::write(&tampered, &bytes[..bytes.len() - 100]).unwrap();
    let out = fx.check(&tampered, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("truncated") || stderr(&out).contains("corrupt"),
        "{}",
        stderr(&out)
    );

    // Another packager's key.
    let stranger = Fixture::new(false);
    let out = stranger.check(&package, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("signature does not verify"),
        "{}",
        stderr(&out)
    );

    // Expectations that do not hold.
    let out = fx.check(&package, &["--expect-file=usr/bin/agent:644"]);
    assert!(stderr(&out).contains("expected 0o644"), "{}", stderr(&out));
    let out = fx.check(&package, &["--expect=arch=aarch64"]);
    assert!(
        stderr(&out).contains("arch is 'x86_64'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_arguments_are_refused_naming_the_problem_and_write_nothing() {
    let fx = Fixture::new(false);
    for (extra, needle) in [
        (vec!["--pkgver", "0.1.0"], "not an Alpine version"),
        (vec!["--arch", "amd64"], "'amd64'"),
        (
            vec!["--file=/nonexistent=usr/bin/x"],
            "reading /nonexistent",
        ),
        (vec!["--file=/etc/hostname=usr/bin/x:999"], "mode '999'"),
        (vec!["--file=/etc/hostname=/abs"], "'/abs'"),
        (vec!["--key", "/etc/hostname"], "not an RSA private key"),
    ] {
        let out = fx.build(&extra);
        assert!(!out.status.success(), "{extra:?}");
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
        assert!(
            !fx.path("agent-0.1.0-r0.apk").exists(),
            "{extra:?} wrote a package"
        );
    }
}
