//! The whole Kiwi serving DHCP: `kiwi run` in a throwaway network namespace pulls a
//! signed document from a fake Kahuna (network and dhcp, no `[firewall]`: the baseline
//! must open DHCP on the served link), applies it, and a busybox `udhcpc` in a second
//! namespace gets a lease across a veth pair through the closed firewall; the lease is
//! in the agent's state directory and counted in its `/metrics` and `/status`. Needs root, iproute2, python3, minisign, nftables,
//! busybox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "kiwi-dhcp-test";
const STATUS: &str = "127.0.0.1:19741";

/// A fake Kahuna: serves `www/`, accepts the reports, refuses the WebSocket upgrade.
const KAHUNA: &str = r#"
import http.server, sys
www = sys.argv[2]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=www, **k)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204); self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!(
            "kiwi-dhcp-{}-{tag}-{:04x}",
            std::process::id(),
            nanos() & 0xffff
        );
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success(),
            "ip netns add (the test needs root)"
        );
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.sh("ip link set lo up");
        ns
    }

    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    fn sh(&self, script: &str) -> String {
        let out = self.exec("sh").args(["-c", script]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "in {}: `{script}`: {text}", self.name);
        text
    }
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

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
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

#[test]
fn kiwi_serves_dhcp_from_its_document() {
    let kiwi_ns = &mut Netns::new("k");
    let client_ns = Netns::new("c");
    let sfx = format!("{:04x}", nanos() & 0xffff);
    let (lan, peer) = (format!("kdl{sfx}"), format!("kdp{sfx}"));
    kiwi_ns.sh(&format!(
        "ip link add {lan} type veth peer name {peer} netns {}",
        client_ns.name
    ));
    client_ns.sh(&format!("ip link set {peer} up"));

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
    // The link is addressed by the network reconciler, opened to DHCP by the firewall's
    // baseline (no [firewall]: a Kiwi is closed but for its services, DHCP on the links
    // [dhcp] serves), served by the dhcp reconciler.
    std::fs::write(
        &config,
        format!(
            r#"version = 1
node = "{NODE}"
issued_at = 2026-01-01T00:00:00Z
expires_at = 2099-01-01T00:00:00Z

[[network.links]]
name = "{lan}"
addresses = ["10.66.0.1/24"]

[dhcp]
domain = "lan.acme.local"

[dhcp.links.{lan}]
pools = [{{ first = "10.66.0.100", last = "10.66.0.150" }}]
"#
        ),
    )
    .unwrap();
    sign(&sec, &config);
    let kahuna = kiwi_ns
        .exec("python3")
        .args(["-c", KAHUNA, "18091"])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kiwi_ns.children.push(kahuna);

    let state = dir.join("state");
    let cmdline = dir.join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "kowabunga.kahuna=http://127.0.0.1:18091 kowabunga.agent_id={NODE} \
             kowabunga.api_key=dhcp-test kowabunga.insecure kowabunga.interval=5 \
             kowabunga.confirm_window=10\n"
        ),
    )
    .unwrap();
    let log = dir.join("agent.log");
    let agent = kiwi_ns
        .exec(env!("CARGO_BIN_EXE_kiwi"))
        .args(["run", "--status-addr", STATUS])
        .arg("--state-root")
        .arg(&state)
        .arg("--trusted-keys")
        .arg(dir.join("keys"))
        .arg("--cmdline")
        .arg(&cmdline)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    kiwi_ns.children.push(agent);

    // udhcpc retries until the agent has applied the document (a hang guard of 90 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    let lease = loop {
        let out = client_ns
            .exec("busybox")
            .args([
                "udhcpc",
                "-f",
                "-q",
                "-n",
                "-t",
                "3",
                "-T",
                "1",
                "-A",
                "1",
                "-s",
                "/bin/true",
                "-i",
                &peer,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no lease within 90 s: {text}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        lease.contains("lease of 10.66.0.100 obtained from 10.66.0.1"),
        "{lease}"
    );
    // Through Kiwi's baseline firewall, which opens UDP 67 on the served link only.
    let input = kiwi_ns.sh("nft list chain inet kowabunga input");
    assert!(
        input.contains(&format!(
            "iifname \"{lan}\" udp sport 68 udp dport 67 accept"
        )),
        "{input}"
    );
    assert!(input.contains("policy drop"), "{input}");
    // The agent's /metrics and /status show the link's pool, the bound lease and the
    // ACK (counted before the reply left), in Prometheus text and JSON.
    let get = |path: &str| {
        kiwi_ns.sh(&format!(
            "python3 -c 'import sys, urllib.request; \
             print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
             http://{STATUS}{path}"
        ))
    };
    let metrics = get("/metrics");
    let sample = |name: &str| -> u64 {
        let prefix = format!("{name}{{agent=\"kiwi\",link=\"{lan}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
    };
    assert_eq!(sample("kowabunga_dhcp_pool_addresses"), 51, "{metrics}");
    assert_eq!(sample("kowabunga_dhcp_leases_bound"), 1, "{metrics}");
    assert!(sample("kowabunga_dhcp_acks_total") >= 1, "{metrics}");
    assert!(sample("kowabunga_dhcp_offers_total") >= 1, "{metrics}");
    assert_eq!(sample("kowabunga_dhcp_naks_total"), 0, "{metrics}");
    assert!(
        metrics.contains("# TYPE kowabunga_dhcp_acks_total counter\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kowabunga_dhcp_lease_store_failing{agent=\"kiwi\"} 0\n"),
        "{metrics}"
    );
    let status: serde_json::Value = serde_json::from_str(&get("/status")).unwrap();
    let report = &status["services"]["dhcp"]["report"];
    assert_eq!(report["links"][lan.as_str()]["bound"], 1, "{status}");
    assert_eq!(
        report["lease_store_error"],
        serde_json::Value::Null,
        "{status}"
    );
    // The lease is kept under the agent's state directory, for the next start.
    let leases = std::fs::read_to_string(state.join("kiwi/dhcp/leases.json")).unwrap();
    assert!(leases.contains("10.66.0.100"), "{leases}");
    assert!(leases.contains("\"bound\""), "{leases}");
}
