//! Secrets audit: a full run of `kiwi run` (a document applied, a bad one rejected, the
//! RPC link refused) with a unique API key, then every channel the agent writes to is
//! searched for it: its logs, the reports Kahuna received, `/status`, `/metrics`,
//! `kiwi status`, `kiwi verify`'s output and the whole state directory except the
//! credentials file, which must be 0600 in a 0700 directory. The unit must forbid core
//! dumps. Needs root, iproute2, python3, minisign.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "kiwi-secrets-test";
const STATUS: &str = "127.0.0.1:19731";

/// A fake Kahuna: serves `www/`, answers HEAD, records every POST body (the reports)
/// to `reports.jsonl` and refuses the WebSocket upgrade.
const KAHUNA: &str = r#"
import http.server, sys, os
www, reports = sys.argv[2], sys.argv[3]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=www, **k)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(reports, "ab") as f:
            f.write(body + b"\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Netns {
    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

fn sign(key: &Path, file: &Path) {
    let ok = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(key)
        .arg("-m")
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn document(version: u64, body: &str) -> String {
    format!(
        "version = {version}\nnode = \"{NODE}\"\nissued_at = 2026-01-01T00:00:00Z\n\
         expires_at = 2099-01-01T00:00:00Z\n{body}"
    )
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            files_under(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

#[test]
fn the_api_key_appears_in_no_output_channel() {
    let secret = format!("S3CR3T-{:016x}", fastrand_u64());
    let ns = &mut Netns {
        name: format!("kiwi-secrets-{}", std::process::id()),
        children: Vec::new(),
    };
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.name])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        ns.exec("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let sec = dir.join("kahuna.sec");
    assert!(
        Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.join("keys/kahuna.pub"))
            .arg("-s")
            .arg(&sec)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let www = dir.join("www");
    let config = www.join(format!("api/v1/agents/{NODE}/config"));
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, document(1, "[network]\n")).unwrap();
    sign(&sec, &config);
    let reports = dir.join("reports.jsonl");
    let kahuna = ns
        .exec("python3")
        .args(["-c", KAHUNA, "18090"])
        .arg(&www)
        .arg(&reports)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ns.children.push(kahuna);

    let state = dir.join("state");
    let cmdline = dir.join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "kowabunga.kahuna=http://127.0.0.1:18090 kowabunga.agent_id={NODE} \
             kowabunga.api_key={secret} kowabunga.insecure kowabunga.interval=5 \
             kowabunga.confirm_window=5\n"
        ),
    )
    .unwrap();
    let common: Vec<String> = vec![
        "--state-root".into(),
        state.display().to_string(),
        "--trusted-keys".into(),
        dir.join("keys").display().to_string(),
        "--cmdline".into(),
        cmdline.display().to_string(),
    ];
    let log = dir.join("agent.log");
    let agent = ns
        .exec(env!("CARGO_BIN_EXE_kiwi"))
        .args(["run", "--status-addr", STATUS])
        .args(&common)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(dir.join("agent.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    ns.children.push(agent);

    let status = |path: &str| -> String {
        let out = ns
            .exec("python3")
            .args([
                "-c",
                "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())",
                &format!("http://{STATUS}{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait_for = |what: &str, done: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&status("/status"))
                && done(&json)
            {
                return json;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not seen within 90 s; status {}; agent log:\n{}",
                status("/status"),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for("version 1 in force", &|s| s["version"] == 1);

    // A bad document: rejected, its error reported and logged.
    std::fs::write(&config, document(2, "[network]\nbogus = 1\n")).unwrap();
    sign(&sec, &config);
    wait_for("version 2 rejected", &|s| {
        s["last_attempt"]["version"] == 2 && s["last_attempt"]["state"] == "rejected"
    });
    // The RPC link was tried (the fake Kahuna refuses the upgrade) and failed.
    wait_for("the RPC link refused", &|s| {
        s["kahuna_link"]
            .as_str()
            .is_some_and(|l| l.starts_with("down"))
    });

    let mut channels: Vec<(String, String)> = vec![
        ("/status".into(), status("/status")),
        ("/metrics".into(), status("/metrics")),
    ];
    let kiwi = |args: &[&str]| {
        let out = ns
            .exec(env!("CARGO_BIN_EXE_kiwi"))
            .args(args)
            .args(&common)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    channels.push((
        "kiwi status".into(),
        kiwi(&["status", "--status-addr", STATUS]),
    ));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, document(9, "[network]\nbogus = 1\n")).unwrap();
    sign(&sec, &bad);
    channels.push((
        "kiwi verify".into(),
        kiwi(&["verify", bad.to_str().unwrap()]),
    ));
    for child in &mut ns.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    ns.children.clear();
    channels.push(("agent log".into(), std::fs::read_to_string(&log).unwrap()));
    channels.push((
        "agent stdout".into(),
        std::fs::read_to_string(dir.join("agent.out")).unwrap(),
    ));
    let reported = std::fs::read_to_string(&reports).unwrap();
    assert!(reported.contains("\"rejected\""), "{reported}");
    channels.push(("reports".into(), reported));

    // The credentials file holds the key, alone, 0600 in a 0700 directory.
    let credentials = state.join("kiwi/credentials.toml");
    let text = std::fs::read_to_string(&credentials).unwrap();
    assert!(
        text.contains(&secret),
        "the key is persisted for the next boot"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(mode(credentials.parent().unwrap()), 0o700);
    let mut files = Vec::new();
    files_under(&state, &mut files);
    assert!(files.len() > 3, "{files:?}");
    for file in files.iter().filter(|f| **f != credentials) {
        let bytes = std::fs::read(file).unwrap();
        channels.push((
            file.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }

    assert!(
        channels.iter().any(|(_, text)| text.contains("rejected")),
        "the run produced the outputs this test searches"
    );
    for (channel, text) in &channels {
        assert!(
            !text.contains(&secret),
            "the API key leaked into {channel}:\n{text}"
        );
    }

    // No core dump can carry it either.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../overlays/kiwi/usr/lib/systemd/system/kiwi.service"
    ))
    .unwrap();
    assert!(unit.lines().any(|l| l.trim() == "LimitCORE=0"));
}

/// A random value without a dependency: the clock's nanoseconds mixed with the pid.
fn fastrand_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ (u64::from(std::process::id()) << 32)
}
