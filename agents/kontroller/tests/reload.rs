//! The `kontroller` binary end to end on a real kernel: in a throwaway network namespace
//! joined to the host by a veth pair, with a NoCloud seed (Kahuna's meta-data keys and
//! a two-NIC Netplan v2), a Kahuna RPC double and a metadata server on the host side.
//! It configures its NICs from the seed, connects to Kahuna with the seed's token,
//! fetches the metadata with the instance's headers and applies the Kawaii firewall;
//! `Kontroller.Reload` after a change applies it; a broken document is refused by name
//! and the rules in force stay.
//! Needs root, iproute2 and nftables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kowabunga_rpc::fake_kahuna::{Expect, FakeKahuna};
use serde_json::json;

const AGENT_ID: &str = "kawaii-test-agent";
const TOKEN: &str = "seed-token-1";
const INSTANCE: &str = "i-kontroller-test";

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

fn must(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace and the host end of its veth; both gone on drop.
struct Lab {
    ns: String,
    host_veth: String,
    /// Third octet of 10.77.X.0/24 (public) and 10.78.X.0/24 (private).
    net: u32,
    agent: Option<Child>,
    /// The agent's standard error, for failure messages.
    log: std::path::PathBuf,
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let net = 100 + pid % 100;
        let lab = Self {
            ns: format!("kontroller-{pid}"),
            host_veth: format!("kch{}", pid % 100_000),
            net,
            agent: None,
            log: std::path::PathBuf::new(),
        };
        must(
            ip(&["netns", "add", &lab.ns]),
            "ip netns add (the test needs root)",
        );
        // The public NIC: host end 10.77.X.1, guest end found by MAC, named by the seed.
        must(
            ip(&[
                "link",
                "add",
                &lab.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "kcpub",
                "address",
                "52:54:00:77:00:03",
                "netns",
                &lab.ns,
            ]),
            "veth to the namespace",
        );
        must(
            ip(&[
                "addr",
                "add",
                &format!("10.77.{net}.1/24"),
                "dev",
                &lab.host_veth,
            ]),
            "host address",
        );
        must(ip(&["link", "set", &lab.host_veth, "up"]), "host veth up");
        // The private NIC: a veth pair inside the namespace.
        must(
            ip(&[
                "-n",
                &lab.ns,
                "link",
                "add",
                "kcpriv",
                "address",
                "52:54:00:77:00:04",
                "type",
                "veth",
                "peer",
                "name",
                "kcpeer",
            ]),
            "private veth",
        );
        must(ip(&["-n", &lab.ns, "link", "set", "lo", "up"]), "lo up");
        lab
    }

    fn host(&self) -> String {
        format!("10.77.{}.1", self.net)
    }

    fn in_ns(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, program])
            .args(args)
            .output()
            .unwrap()
    }

    fn ruleset(&self) -> String {
        String::from_utf8_lossy(&self.in_ns("nft", &["list", "ruleset"]).stdout).into_owned()
    }

    /// Waits until `pred` holds on the namespace's ruleset.
    fn wait_ruleset(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rules = self.ruleset();
            if pred(&rules) {
                return rules;
            }
            if let Some(status) = self.agent.as_mut().and_then(|a| a.try_wait().unwrap()) {
                panic!("kontroller exited ({status}) before {what}");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen; ruleset:\n{rules}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// `X-Kowabunga-Instance-Id` and `X-Kowabunga-Source-Ip` of one metadata request.
type SourceHeaders = (Option<String>, Option<String>);

/// The metadata Kahuna serves, and the headers of each request for it.
#[derive(Clone, Default)]
struct Metadata {
    document: Arc<Mutex<String>>,
    requests: Arc<Mutex<Vec<SourceHeaders>>>,
}

impl Metadata {
    async fn serve(&self, addr: SocketAddr) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| this.clone().answer(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        bound
    }

    async fn answer(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.requests.lock().unwrap().push((
            header("X-Kowabunga-Instance-Id"),
            header("X-Kowabunga-Source-Ip"),
        ));
        let body = self.document.lock().unwrap().clone();
        Ok(Response::new(Full::new(Bytes::from(body))))
    }

    fn set(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }
}

/// Kawaii metadata shaped like Kahuna's: SSH-like port `port` open on the public side.
fn kawaii(net: u32, port: u16, input_default: &str) -> String {
    json!({
        "instance-id": INSTANCE,
        "local-hostname": "kawaii-test",
        "local-ipv4": format!("10.77.{net}.10"),
        "subnet_cidr": format!("10.78.{net}.0/24"),
        "virtual_ips": [],
        "kawaii": {
            "public_interface": "ens3",
            "private_interface": "ens4",
            "vrrp_control_interface": "ens4",
            "public_gw_address": format!("10.77.{net}.1"),
            "fw_input_default": input_default,
            "fw_output_default": "accept",
            "fw_forward_default": "drop",
            "fw_input_rules": [{
                "iifname": "ens3", "protocol": "tcp", "ports": port.to_string(),
                "action": "accept", "source_ip": "0.0.0.0/0"
            }]
        }
    })
    .to_string()
}

fn write_seed(dir: &Path, lab: &Lab, kahuna: SocketAddr, metadata: SocketAddr) {
    let net = lab.net;
    std::fs::create_dir_all(dir).unwrap();
    // ISO 9660 names, as Kahuna's ISO shows them to a reader that skips Rock Ridge.
    std::fs::write(
        dir.join("META-DATA;1"),
        format!(
            "instance-id: {INSTANCE}\nlocal-hostname: kawaii-test\ncloud-name: kowabunga\n\
             kowabunga_metadata_uri: http://{metadata}/latest/meta-data\n\
             kowabunga_local_ip: 10.77.{net}.10\n\
             kowabunga_controller_uri: ws://{kahuna}\n\
             kowabunga_controller_agent_id: {AGENT_ID}\n\
             kowabunga_controller_agent_token: {TOKEN}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("NETWORK-CONFIG;1"),
        format!(
            "version: 2\nethernets:\n  ens3:\n    match:\n      macaddress: 52:54:00:77:00:03\n\
             \x20   set-name: ens3\n    dhcp4: false\n    addresses:\n      - 10.77.{net}.10/24\n\
             \x20   routes:\n      - to: default\n        via: 10.77.{net}.1\n        metric: 100\n\
             \x20 ens4:\n    match:\n      macaddress: 52:54:00:77:00:04\n    set-name: ens4\n\
             \x20   dhcp4: false\n    addresses:\n      - 10.78.{net}.1/24\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("USER-DATA;1"),
        "#cloud-config\nhostname: kawaii-test\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_and_metadata_configure_the_vm_and_reload_applies_changes_or_refuses_them() {
    let mut lab = Lab::new();
    let host = lab.host();
    let mut kahuna = FakeKahuna::start_on(
        format!("{host}:0").parse().unwrap(),
        Expect {
            kind: "Kontroller".into(),
            agent_id: AGENT_ID.into(),
            api_key: TOKEN.into(),
        },
    )
    .await
    .unwrap();
    let metadata = Metadata::default();
    metadata.set(kawaii(lab.net, 2222, "drop"));
    let metadata_addr = metadata.serve(format!("{host}:0").parse().unwrap()).await;

    let dir = tempfile::tempdir().unwrap();
    write_seed(&dir.path().join("seed"), &lab, kahuna.addr(), metadata_addr);
    std::fs::write(dir.path().join("cmdline"), "kowabunga.confirm_window=10\n").unwrap();
    lab.log = dir.path().join("agent.log");
    let log = std::fs::File::create(&lab.log).unwrap();
    lab.agent = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns,
                env!("CARGO_BIN_EXE_kontroller"),
                "run",
            ])
            .arg("--state-root")
            .arg(dir.path().join("state"))
            .arg("--cmdline")
            .arg(dir.path().join("cmdline"))
            .args(["--status-addr", "127.0.0.1:19723"])
            .env("KOWABUNGA_SEED_DIR", dir.path().join("seed"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // First boot: NICs found by MAC and named from the seed, addressed; the metadata's
    // firewall in force (fetched with the instance's headers).
    let rules = tokio::task::block_in_place(|| {
        lab.wait_ruleset("the first metadata's rule", |r| r.contains("dport 2222"))
    });
    assert!(rules.contains("policy drop"), "{rules}");
    let addr = lab.in_ns("ip", &["-br", "addr", "show", "ens3"]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(
        addr.contains(&format!("10.77.{}.10/24", lab.net)),
        "ens3: {addr}\n{}",
        agent_log()
    );
    let private = lab.in_ns("ip", &["-br", "addr", "show", "ens4"]);
    assert!(String::from_utf8_lossy(&private.stdout).contains(&format!("10.78.{}.1/24", lab.net)));
    {
        let requests = metadata.requests.lock().unwrap();
        let want = (
            Some(INSTANCE.to_owned()),
            Some(format!("10.77.{}.10", lab.net)),
        );
        assert!(
            !requests.is_empty() && requests.iter().all(|r| *r == want),
            "metadata requests: {requests:?}"
        );
    }

    // Kahuna's link, with the seed's credentials.
    let mut conn = kahuna.accept(Duration::from_secs(60)).await;
    let (_, methods) = conn.capabilities("Kontroller").await;
    assert!(methods.iter().any(|m| m == "Reload"), "{methods:?}");

    // A change, then Reload: in force.
    metadata.set(kawaii(lab.net, 2223, "drop"));
    let reply = conn.call("Kontroller.Reload", json!({})).await;
    assert_eq!(reply.error, None, "{}", agent_log());
    let rules = lab.ruleset();
    assert!(
        rules.contains("dport 2223") && !rules.contains("dport 2222"),
        "{rules}"
    );

    // A broken document: refused by name, the rules in force stay.
    metadata.set(kawaii(lab.net, 2224, "maybe"));
    let reply = conn.call("Kontroller.Reload", json!({})).await;
    let error = reply
        .error
        .expect("a broken metadata document was accepted");
    assert!(error.contains("fw_input_default"), "{error}");
    let rules = lab.ruleset();
    assert!(
        rules.contains("dport 2223") && !rules.contains("dport 2224"),
        "{rules}"
    );
    assert!(!agent_log().contains(TOKEN), "the token reached the log");
}
