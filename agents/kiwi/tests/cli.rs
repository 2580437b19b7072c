//! The `kiwi` binary in local mode, driving a real kernel inside a throwaway network
//! namespace (`ip netns`): apply, idempotent re-apply, dry run, rejection with nothing
//! changed, exit codes, status, a reverted version retried on request (`--retry`).
//! Needs root, iproute2, nftables and minisign.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NODE: &str = "kiwi-cli-test";

struct Netns(String);

impl Netns {
    fn new() -> Self {
        // One per test: tests of this file run in parallel in one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kiwi-cli-{}-{n}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add (the test needs root)");
        let netns = Self(name);
        // As on a booted system: DNS checks itself over loopback.
        assert!(
            netns
                .run("ip", &["link", "set", "lo", "up"])
                .status
                .success()
        );
        netns
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let ok = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("keys/kahuna.pub"))
            .arg("-s")
            .arg(dir.path().join("kahuna.sec"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::write(dir.path().join("cmdline"), "quiet\n").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write version `version` of a document with `body`, signed.
    fn document(&self, version: u64, body: &str) -> PathBuf {
        let file = self.path(&format!("v{version}.toml"));
        let text = format!(
            "version = {version}\nnode = \"{NODE}\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2099-01-01T00:00:00Z\n{body}"
        );
        std::fs::write(&file, text).unwrap();
        let ok = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(self.path("kahuna.sec"))
            .arg("-m")
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        file
    }

    fn kiwi(&self, netns: &Netns, command: &str, file: Option<&Path>) -> Output {
        self.kiwi_args(netns, command, file, &[])
    }

    /// `kiwi COMMAND FILE ... EXTRA...`.
    fn kiwi_with(&self, netns: &Netns, command: &str, file: &Path, extra: &[&str]) -> Output {
        self.kiwi_args(netns, command, Some(file), extra)
    }

    fn kiwi_args(
        &self,
        netns: &Netns,
        command: &str,
        file: Option<&Path>,
        extra: &[&str],
    ) -> Output {
        let state = self.path("state");
        let keys = self.path("keys");
        let cmdline = self.path("cmdline");
        let mut args = vec![command.to_owned()];
        if let Some(file) = file {
            args.push(file.display().to_string());
            args.extend(["--node".into(), NODE.into()]);
        }
        args.extend([
            "--state-root".into(),
            state.display().to_string(),
            "--trusted-keys".into(),
            keys.display().to_string(),
            "--cmdline".into(),
            cmdline.display().to_string(),
        ]);
        if command == "apply" {
            args.extend(["--confirm-window".into(), "5".into()]);
        }
        if command == "status" {
            args.extend(["--status-addr".into(), "127.0.0.1:1".into()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netns.run(env!("CARGO_BIN_EXE_kiwi"), &args)
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const V1: &str = r#"
[network]
[[network.links]]
name = "br-lan"
kind = "bridge"
addresses = ["10.77.0.1/24"]

[firewall]
input = "drop"
[[firewall.rules]]
chain = "input"
proto = "tcp"
dport = 22
action = "accept"
"#;

#[test]
fn apply_verify_reject_and_status() {
    let netns = Netns::new();
    let setup = Setup::new();
    let v1 = setup.document(1, V1);

    let out = setup.kiwi(&netns, "verify", Some(&v1));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("create bridge br-lan"),
        "{}",
        text(&out)
    );
    let addr = netns.run("ip", &["-o", "addr", "show"]);
    assert!(!text(&addr).contains("10.77.0.1"), "verify changed nothing");

    let out = setup.kiwi(&netns, "apply", Some(&v1));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("version 1 applied"), "{}", text(&out));
    let addr = netns.run("ip", &["-o", "addr", "show", "br-lan"]);
    assert!(text(&addr).contains("10.77.0.1/24"), "{}", text(&addr));
    let rules = netns.run("nft", &["list", "table", "inet", "kowabunga"]);
    assert!(
        text(&rules).contains("tcp dport 22 accept"),
        "{}",
        text(&rules)
    );

    // The same document again: nothing to do.
    let out = setup.kiwi(&netns, "apply", Some(&v1));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("version 1 unchanged"), "{}", text(&out));

    // A VLAN id out of range: rejected at validation, exit 3, nothing changed.
    let bad = setup.document(
        2,
        "[network]\n[[network.links]]\nname = \"vlan5000\"\nkind = \"vlan\"\nparent = \"br-lan\"\nid = 5000\n",
    );
    let out = setup.kiwi(&netns, "apply", Some(&bad));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("5000"), "{}", text(&out));
    let addr = netns.run("ip", &["-o", "addr", "show", "br-lan"]);
    assert!(text(&addr).contains("10.77.0.1/24"), "v1 still in force");

    // Tampered after signing: rejected, exit 3.
    let v3 = setup.document(3, V1);
    let mut bytes = std::fs::read(&v3).unwrap();
    bytes.extend_from_slice(b"\n# tampered\n");
    std::fs::write(&v3, bytes).unwrap();
    let out = setup.kiwi(&netns, "apply", Some(&v3));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("does not verify"), "{}", text(&out));

    // v4 removes the bridge: what v1 created goes away.
    let v4 = setup.document(4, "[firewall]\n");
    let out = setup.kiwi(&netns, "apply", Some(&v4));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let links = netns.run("ip", &["-o", "link", "show"]);
    assert!(!text(&links).contains("br-lan"), "{}", text(&links));

    let out = setup.kiwi(&netns, "status", None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("document version 4"), "{}", text(&out));
}

#[test]
fn bad_arguments_exit_with_usage_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiwi"))
        .args(["apply"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_kiwi"))
        .args([
            "apply",
            "/nonexistent.toml",
            "--node",
            "x",
            "--cmdline",
            "/dev/null",
            "--state-root",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("/nonexistent.toml"), "{}", text(&out));
}

#[test]
fn a_used_up_local_version_is_retried_only_on_request() {
    let netns = Netns::new();
    let setup = Setup::new();
    let v1 = setup.document(1, V1);
    let out = setup.kiwi(&netns, "apply", Some(&v1));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Loopback down: version 2's DNS self-check cannot answer, so it is reverted (4).
    let v2 = setup.document(2, V1);
    assert!(
        netns
            .run("ip", &["link", "set", "lo", "down"])
            .status
            .success()
    );
    let out = setup.kiwi(&netns, "apply", Some(&v2));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("version 2 reverted"), "{}", text(&out));

    // The cause fixed, the same version is a replay (3) unless retried on request.
    assert!(
        netns
            .run("ip", &["link", "set", "lo", "up"])
            .status
            .success()
    );
    let out = setup.kiwi(&netns, "apply", Some(&v2));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not newer"), "{}", text(&out));
    let out = setup.kiwi_with(&netns, "apply", &v2, &["--retry"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("version 2 applied"), "{}", text(&out));

    // --retry never goes back below the generation in force.
    let out = setup.kiwi_with(&netns, "apply", &v1, &["--retry"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = setup.kiwi(&netns, "status", None);
    assert!(text(&out).contains("document version 2"), "{}", text(&out));
}
