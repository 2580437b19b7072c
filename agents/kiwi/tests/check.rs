//! `kiwi check`: offline validation for an operator's CI. It refuses what `kiwi verify`
//! refuses (same exit code, same message: both call the pipeline's admission
//! functions), and it needs no root, no kernel and no state directory: here it runs as
//! `nobody`, while `verify` runs as root in a throwaway network namespace.
//! Needs root (to create the namespace and drop to `nobody`), iproute2, setpriv
//! (util-linux) and minisign.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NODE: &str = "kiwi-check-test";

struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("kiwi-check-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add (the test needs root)");
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A directory `nobody` can read: keys, documents, signatures.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::create_dir(dir.path().join("no-keys")).unwrap();
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
        // `nobody` may not reach the build's target directory (a clone under /root).
        std::fs::copy(env!("CARGO_BIN_EXE_kiwi"), dir.path().join("kiwi")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `name` with `text` and sign it.
    fn signed(&self, name: &str, text: &str) -> PathBuf {
        let file = self.path(name);
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
        for f in [
            file.clone(),
            PathBuf::from(format!("{}.minisig", file.display())),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        file
    }

    /// `kiwi check ARGS...` as `nobody` (uid and gid 65534, no groups, no
    /// capabilities), with a copy of the binary `nobody` can run.
    fn as_nobody(&self, args: &[String]) -> Output {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(self.path("kiwi"))
            .args(args)
            .env("TMPDIR", "/tmp")
            .output()
            .unwrap()
    }

    /// `kiwi check FILE --trusted-keys keys --node NODE`, as `nobody`.
    fn check(&self, file: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "check".to_owned(),
            file.display().to_string(),
            "--trusted-keys".into(),
            self.path("keys").display().to_string(),
            "--node".into(),
            NODE.into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.as_nobody(&args)
    }

    /// `kiwi verify FILE` as root in `netns`, with its own state.
    fn verify(&self, netns: &Netns, file: &Path) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.0,
                env!("CARGO_BIN_EXE_kiwi"),
                "verify",
            ])
            .arg(file)
            .args(["--node", NODE, "--state-root"])
            .arg(self.path("state"))
            .arg("--trusted-keys")
            .arg(self.path("keys"))
            .arg("--cmdline")
            .arg(self.path("cmdline"))
            .output()
            .unwrap()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The verdict line, without the clock reading that differs between two runs.
fn verdict(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().next().unwrap_or_default().to_owned();
    match line.find(" (now ") {
        Some(at) => line[..at].to_owned(),
        None => line,
    }
}

fn head(version: u64, node: &str, issued: &str, expires: &str) -> String {
    format!(
        "version = {version}\nnode = \"{node}\"\nissued_at = {issued}\nexpires_at = {expires}\n"
    )
}

const GOOD_BODY: &str = r#"
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

fn good(version: u64) -> String {
    format!(
        "{}{GOOD_BODY}",
        head(
            version,
            NODE,
            "2026-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z"
        )
    )
}

#[test]
fn check_refuses_what_verify_refuses_with_the_same_message() {
    let netns = Netns::new();
    let setup = Setup::new();
    let valid_head = head(1, NODE, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z");

    let tampered = setup.signed("tampered.toml", &good(1));
    let mut bytes = std::fs::read(&tampered).unwrap();
    bytes.extend_from_slice(b"# tampered\n");
    std::fs::write(&tampered, bytes).unwrap();

    let unsigned = setup.path("unsigned.toml");
    std::fs::write(&unsigned, good(1)).unwrap();
    std::fs::set_permissions(&unsigned, std::fs::Permissions::from_mode(0o644)).unwrap();

    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("tampered after signing", tampered, "does not verify"),
        ("unsigned", unsigned, "not signed"),
        (
            "for another node",
            setup.signed(
                "other-node.toml",
                &head(1, "kiwi-other", "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"),
            ),
            "kiwi-other",
        ),
        (
            "expired",
            setup.signed(
                "expired.toml",
                &head(1, NODE, "2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z"),
            ),
            "expired",
        ),
        (
            "issued in the future",
            setup.signed(
                "future.toml",
                &head(1, NODE, "2098-01-01T00:00:00Z", "2099-01-01T00:00:00Z"),
            ),
            "in the future",
        ),
        (
            "not TOML",
            setup.signed("not-toml.toml", &format!("{valid_head}[network\n")),
            "not valid TOML",
        ),
        (
            "header without offset",
            setup.signed(
                "no-offset.toml",
                &head(1, NODE, "\"2026-01-01T00:00:00\"", "2099-01-01T00:00:00Z"),
            ),
            "UTC offset",
        ),
        (
            "misspelt header key",
            setup.signed("misspelt.toml", &format!("{valid_head}verison = 2\n")),
            "verison",
        ),
        (
            "overlapping DHCP pools",
            setup.signed(
                "dhcp.toml",
                &format!(
                    "{valid_head}{GOOD_BODY}[dhcp.links.br-lan]\npools = [\
                     {{ first = \"10.77.0.10\", last = \"10.77.0.50\" }}, \
                     {{ first = \"10.77.0.40\", last = \"10.77.0.60\" }}]\n"
                ),
            ),
            "overlaps pool 10.77.0.10-10.77.0.50 of br-lan",
        ),
        (
            "VLAN id out of range",
            setup.signed(
                "vlan.toml",
                &format!(
                    "{valid_head}[network]\n[[network.links]]\nname = \"eth9\"\n\
                     [[network.links]]\nname = \"vlan5000\"\nkind = \"vlan\"\nparent = \"eth9\"\nid = 5000\n"
                ),
            ),
            "5000",
        ),
        (
            "unknown network key",
            setup.signed(
                "network-key.toml",
                &format!("{valid_head}[network]\nip_fowrard = true\n"),
            ),
            "ip_fowrard",
        ),
        (
            "port out of range",
            setup.signed(
                "port.toml",
                &format!(
                    "{valid_head}[firewall]\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = 70000\naction = \"accept\"\n"
                ),
            ),
            "70000",
        ),
        (
            "unknown dns key",
            setup.signed(
                "dns-key.toml",
                &format!("{valid_head}[dns]\nlisten_adress = \"127.0.0.1\"\n"),
            ),
            "listen_adress",
        ),
    ];
    let mut mismatches = Vec::new();
    for (what, file, needle) in &cases {
        let checked = setup.check(file, &[]);
        let verified = setup.verify(&netns, file);
        let (c, v) = (verdict(&checked), verdict(&verified));
        let ok = checked.status.code() == Some(3)
            && verified.status.code() == Some(3)
            && c == v
            && c.contains("rejected")
            && c.contains(needle);
        if !ok {
            mismatches.push(format!(
                "{what}:\n  check  (exit {:?}): {}\n  verify (exit {:?}): {}",
                checked.status.code(),
                text(&checked).trim(),
                verified.status.code(),
                text(&verified).trim()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn check_accepts_a_valid_document_offline_and_says_what_it_checked() {
    let setup = Setup::new();
    let file = setup.signed("good.toml", &good(7));

    let out = setup.check(&file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("version 7 valid for kiwi"), "{said}");
    assert!(said.contains("signature: verified"), "{said}");
    assert!(said.contains("[network]: valid"), "{said}");
    assert!(said.contains("[firewall]: valid"), "{said}");

    // Without any key the signature is not checked, and check says so.
    let out = setup.as_nobody(&["check".to_owned(), file.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("signature: NOT CHECKED"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("node: not checked"), "{}", text(&out));

    // A key directory that holds no key is an error, not a silent skip.
    let out = setup.as_nobody(&[
        "check".to_owned(),
        file.display().to_string(),
        "--trusted-keys".into(),
        setup.path("no-keys").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no trusted key"), "{}", text(&out));

    // Keys from a kernel command line file (kowabunga.pubkey) count too.
    let key = std::fs::read_to_string(setup.path("keys/kahuna.pub")).unwrap();
    let key = key.lines().nth(1).unwrap();
    let cmdline = setup.path("node-cmdline");
    std::fs::write(&cmdline, format!("quiet kowabunga.pubkey={key}\n")).unwrap();
    std::fs::set_permissions(&cmdline, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = setup.as_nobody(&[
        "check".to_owned(),
        file.display().to_string(),
        "--cmdline".into(),
        cmdline.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("signature: verified"), "{}", text(&out));

    // A section kiwi does not read is pointed out, not refused (another role's).
    let shared = setup.signed("shared.toml", &format!("{}[kaktus]\nx = 1\n", good(8)));
    let out = setup.check(&shared, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("[kaktus]: not read by kiwi"),
        "{}",
        text(&out)
    );

    // Missing file: an error naming it.
    let out = setup.check(&setup.path("absent.toml"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("absent.toml"), "{}", text(&out));
}
