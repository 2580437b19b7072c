//! Management-path protection, end to end on a real kernel: `kiwi run` in one network
//! namespace pulls from a Kahuna (python's http.server) in another, reached through a
//! route its document declares. A new document that drops that route cuts the agent off
//! Kahuna: within the confirm window the agent reverts by itself and the route is back.
//! Then the uplink's address is flushed by hand: the agent puts it back (drift
//! correction), though Kahuna is out of reach meanwhile.
//! Needs root, iproute2, python3, minisign.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "kiwi-mgmt-test";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .unwrap()
}

/// What `kiwi status` prints inside `ns` (JSON when the agent answers).
fn kiwi_status(ns: &str, state: &Path) -> String {
    let out = in_ns(
        ns,
        env!("CARGO_BIN_EXE_kiwi"),
        &[
            "status",
            "--status-addr",
            "127.0.0.1:19721",
            "--state-root",
            &state.display().to_string(),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Namespaces {
    node: String,
    kahuna: String,
    children: Vec<Child>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.node, &self.kahuna] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sign(dir: &Path, file: &Path) {
    let ok = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(dir.join("kahuna.sec"))
        .arg("-m")
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn document(version: u64, with_route: bool) -> String {
    let route = if with_route {
        "[[network.routes]]\nto = \"198.51.100.0/24\"\nvia = \"192.0.2.1\"\ndev = \"uplink\"\n"
    } else {
        ""
    };
    format!(
        "version = {version}\nnode = \"{NODE}\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2099-01-01T00:00:00Z\n\
         [network]\n[[network.links]]\nname = \"uplink\"\naddresses = [\"192.0.2.2/24\"]\n{route}"
    )
}

#[test]
fn a_document_that_cuts_the_route_to_kahuna_is_reverted_and_drift_is_put_back() {
    let pid = std::process::id();
    let mut ns = Namespaces {
        node: format!("kiwi-mgmt-node-{pid}"),
        kahuna: format!("kiwi-mgmt-kahuna-{pid}"),
        children: Vec::new(),
    };
    ip(&["netns", "add", &ns.node]);
    ip(&["netns", "add", &ns.kahuna]);
    ip(&[
        "link", "add", "uplink", "netns", &ns.node, "type", "veth", "peer", "name", "kh0", "netns",
        &ns.kahuna,
    ]);
    for (n, cmd) in [
        (&ns.node, vec!["link", "set", "lo", "up"]),
        (&ns.kahuna, vec!["link", "set", "lo", "up"]),
        (&ns.kahuna, vec!["link", "set", "kh0", "up"]),
        (
            &ns.kahuna,
            vec!["addr", "add", "192.0.2.1/24", "dev", "kh0"],
        ),
        (
            &ns.kahuna,
            vec!["addr", "add", "198.51.100.10/32", "dev", "lo"],
        ),
    ] {
        let mut args = vec!["-n", n.as_str()];
        args.extend(cmd);
        ip(&args);
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let ok = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("keys/kahuna.pub"))
        .arg("-s")
        .arg(dir.join("kahuna.sec"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());

    // v1 (address + route to Kahuna) is applied locally, as a first boot would have it.
    let v1 = dir.join("v1.toml");
    std::fs::write(&v1, document(1, true)).unwrap();
    sign(dir, &v1);
    let state = dir.join("state");
    let common = |cmdline: &Path| {
        vec![
            "--state-root".to_owned(),
            state.display().to_string(),
            "--trusted-keys".to_owned(),
            dir.join("keys").display().to_string(),
            "--cmdline".to_owned(),
            cmdline.display().to_string(),
        ]
    };
    std::fs::write(dir.join("empty-cmdline"), "\n").unwrap();
    let mut args = vec![
        "apply".to_owned(),
        v1.display().to_string(),
        "--node".into(),
        NODE.into(),
    ];
    args.extend(common(&dir.join("empty-cmdline")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_ns(&ns.node, env!("CARGO_BIN_EXE_kiwi"), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kahuna serves v2, which drops the route.
    let www = dir.join("www");
    let config = www.join(format!("api/v1/agents/{NODE}/config"));
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, document(2, false)).unwrap();
    sign(dir, &config);
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.kahuna,
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "198.51.100.10",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ns.children.push(server);

    let cmdline = dir.join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "kowabunga.kahuna=http://198.51.100.10:8080 kowabunga.agent_id={NODE} kowabunga.api_key=k \
             kowabunga.insecure kowabunga.interval=5 kowabunga.confirm_window=4\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "run".to_owned(),
        "--status-addr".into(),
        "127.0.0.1:19721".into(),
    ];
    args.extend(common(&cmdline));
    let agent = Command::new("ip")
        .args(["netns", "exec", &ns.node, env!("CARGO_BIN_EXE_kiwi")])
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ns.children.push(agent);

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let text = kiwi_status(&ns.node, &state);
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && json["last_attempt"]["state"] == "reverted"
        {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "no revert within 60 s; last status: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status["last_attempt"]["version"], 2);
    assert_eq!(status["last_attempt"]["reason"], "unreachable");
    assert!(
        status["last_attempt"]["error"]
            .as_str()
            .unwrap()
            .contains("config endpoint unreachable"),
        "{status}"
    );
    assert_eq!(status["version"], 1, "v1 is still the generation in force");
    let routes = in_ns(&ns.node, "ip", &["route", "show", "198.51.100.0/24"]);
    assert!(
        String::from_utf8_lossy(&routes.stdout).contains("via 192.0.2.1"),
        "the route to Kahuna is back"
    );

    // Drift: someone flushes the uplink's address (and with it the route to Kahuna)
    // behind the agent's back. Kahuna is now out of reach, yet within a poll or two the
    // agent puts v1 back by itself.
    ip(&["-n", &ns.node, "addr", "flush", "dev", "uplink"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = kiwi_status(&ns.node, &state);
        let addrs = in_ns(&ns.node, "ip", &["-4", "addr", "show", "dev", "uplink"]);
        let routes = in_ns(&ns.node, "ip", &["route", "show", "198.51.100.0/24"]);
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && json["drift_corrections"]["network"].as_u64().unwrap_or(0) >= 1
            && String::from_utf8_lossy(&addrs.stdout).contains("192.0.2.2/24")
            && String::from_utf8_lossy(&routes.stdout).contains("via 192.0.2.1")
        {
            assert_eq!(json["version"], 1, "{json}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drift not corrected within 60 s; status: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
