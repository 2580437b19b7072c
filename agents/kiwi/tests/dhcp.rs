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

/// A veth pair between the Kiwi's namespace and the client's: `<tag>l<sfx>` on the
/// Kiwi's side (the served link), `<tag>p<sfx>` on the client's (left down).
fn veth_pair(kiwi_ns: &Netns, client_ns: &Netns, tag: &str) -> (String, String) {
    let sfx = format!("{:04x}", nanos() & 0xffff);
    let (lan, peer) = (format!("{tag}l{sfx}"), format!("{tag}p{sfx}"));
    kiwi_ns.sh(&format!(
        "ip link add {lan} type veth peer name {peer} netns {}",
        client_ns.name
    ));
    (lan, peer)
}

/// One try of busybox `udhcpc` on `link` in `ns` (3 discovers, 1 s apart), quitting
/// once it has a lease; `args` add to it (`-s SCRIPT`, `-x OPT:VAL`).
fn udhcpc(ns: &Netns, link: &str, args: &[&str]) -> std::process::Output {
    ns.exec("busybox")
        .args([
            "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-A", "1", "-i", link,
        ])
        .args(args)
        .output()
        .unwrap()
}

/// A minisign key pair in `dir`: the public key in `dir/keys/` (the agent's trusted
/// keys), the secret key returned.
fn make_key(dir: &Path) -> std::path::PathBuf {
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
    sec
}

/// Publishes `document` signed with `sec` under `www/` as [`NODE`]'s, starts the fake
/// Kahuna on `port` serving `www/` and `kiwi run` pulling from it, both in `ns`;
/// returns the agent's log file (its state is `dir/state`).
fn start_kiwi(
    ns: &mut Netns,
    dir: &Path,
    sec: &Path,
    port: u16,
    document: &str,
) -> std::path::PathBuf {
    let www = dir.join("www");
    let config = www.join(format!("api/v1/agents/{NODE}/config"));
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, document).unwrap();
    sign(sec, &config);
    let kahuna = ns
        .exec("python3")
        .args(["-c", KAHUNA, &port.to_string()])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ns.children.push(kahuna);
    let cmdline = dir.join("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "kowabunga.kahuna=http://127.0.0.1:{port} kowabunga.agent_id={NODE} \
             kowabunga.api_key=dhcp-test kowabunga.insecure kowabunga.interval=5 \
             kowabunga.confirm_window=10\n"
        ),
    )
    .unwrap();
    let log = dir.join("agent.log");
    let agent = ns
        .exec(env!("CARGO_BIN_EXE_kiwi"))
        .args(["run", "--status-addr", STATUS])
        .arg("--state-root")
        .arg(dir.join("state"))
        .arg("--trusted-keys")
        .arg(dir.join("keys"))
        .arg("--cmdline")
        .arg(&cmdline)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    ns.children.push(agent);
    log
}

#[test]
fn kiwi_serves_dhcp_from_its_document() {
    let kiwi_ns = &mut Netns::new("k");
    let client_ns = Netns::new("c");
    let (lan, peer) = veth_pair(kiwi_ns, &client_ns, "kd");
    client_ns.sh(&format!("ip link set {peer} up"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sec = make_key(dir);
    // The link is addressed by the network reconciler, opened to DHCP by the firewall's
    // baseline (no [firewall]: a Kiwi is closed but for its services, DHCP on the links
    // [dhcp] serves), served by the dhcp reconciler.
    let document = format!(
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
    );
    let log = start_kiwi(kiwi_ns, dir, &sec, 18091, &document);
    let state = dir.join("state");

    // udhcpc retries until the agent has applied the document (a hang guard of 90 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    let lease = loop {
        let out = udhcpc(&client_ns, &peer, &["-s", "/bin/true"]);
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

/// A client's DHCP exchange as busybox `udhcpc` reports it to its script, and the
/// script's environment for the `bound` event (`ip`, `siaddr`, `boot_file`...).
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n[ \"$1\" = bound ] && env > \"$0.env\"\nexit 0\n";

/// Kiwi boots a node of its zone: `[netboot]` names an image (PXE artifacts under a
/// signed `SHA256SUMS` on the fake Kahuna) and a node by MAC with its own
/// `kowabunga.*` keys. The agent fetches and verifies the image into its store; a DHCP
/// client announcing itself as iPXE (user class `iPXE`, option 77) is then given the URL
/// of its script; the script, fetched from the leased address, boots the stored kernel
/// and initrd with the node's keys; from any other address it is refused.
#[test]
fn kiwi_netboots_an_ipxe_client_with_its_own_keys() {
    let kiwi_ns = &mut Netns::new("n");
    let client_ns = Netns::new("m");
    let (lan, peer) = veth_pair(kiwi_ns, &client_ns, "kn");
    let node_mac = "52:54:00:6b:00:01";
    client_ns.sh(&format!("ip link set {peer} address {node_mac} up"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sec = make_key(dir);
    let www = dir.join("www");
    // The image's PXE artifacts, as scripts/build-image.sh names them, and their signed
    // SHA256SUMS.
    let img = www.join("images/kaktus/0.9.0");
    std::fs::create_dir_all(&img).unwrap();
    let id = "kaktus-0.9.0-x86_64";
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd: Vec<u8> = (0..700_000u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(img.join(format!("{id}.pxe.vmlinuz")), &kernel).unwrap();
    std::fs::write(img.join(format!("{id}.pxe.initrd")), &initrd).unwrap();
    std::fs::write(
        img.join(format!("{id}.pxe.cmdline")),
        "console=ttyS0 systemd.mask=var.mount\n",
    )
    .unwrap();
    let sums = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && sha256sum {id}.pxe.*", img.display()))
        .output()
        .unwrap();
    assert!(sums.status.success());
    std::fs::write(img.join("SHA256SUMS"), &sums.stdout).unwrap();
    sign(&sec, &img.join("SHA256SUMS"));

    let document = format!(
        r#"version = 1
node = "{NODE}"
issued_at = 2026-01-01T00:00:00Z
expires_at = 2099-01-01T00:00:00Z

[[network.links]]
name = "{lan}"
addresses = ["10.77.0.1/24"]

[dhcp.links.{lan}]
pools = [{{ first = "10.77.0.100", last = "10.77.0.150" }}]

[netboot.images.kaktus]
url = "http://127.0.0.1:18092/images/kaktus/0.9.0"
role = "kaktus"
version = "0.9.0"

[[netboot.nodes]]
mac = "{node_mac}"
image = "kaktus"
kernel_args = ["console=ttyS0"]
params = {{ kahuna = "https://kahuna.example", agent_id = "kaktus-netboot-1", api_key = "node-s3cret" }}
"#
    );
    let log = start_kiwi(kiwi_ns, dir, &sec, 18092, &document);
    let state = dir.join("state");

    // An iPXE client: user class "iPXE" (option 77). Until the image is verified it
    // gets an address and no boot file; udhcpc asks again until it has one (a hang
    // guard of 90 s).
    let script = dir.join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env_file = dir.join("udhcpc.sh.env");
    let deadline = Instant::now() + Duration::from_secs(90);
    let env = loop {
        let _ = std::fs::remove_file(&env_file);
        let out = udhcpc(
            &client_ns,
            &peer,
            &["-x", "0x4d:69505845", "-s", &script.display().to_string()],
        );
        let env = std::fs::read_to_string(&env_file).unwrap_or_default();
        if out.status.success() && env.contains("boot_file=") {
            break env;
        }
        assert!(
            Instant::now() < deadline,
            "no boot file within 90 s: {}{env}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in\n{env}"))
            .to_owned()
    };
    let ip = var("ip");
    let boot_file = var("boot_file");
    assert_eq!(
        boot_file, "http://10.77.0.1:9724/netboot/52-54-00-6b-00-01.ipxe",
        "{env}"
    );
    assert_eq!(var("siaddr"), "10.77.0.1", "{env}");
    // Through the baseline firewall: TCP 9724 open on the served link.
    let input = kiwi_ns.sh("nft list chain inet kowabunga input");
    assert!(
        input.contains(&format!("iifname \"{lan}\" tcp dport 9724 accept")),
        "{input}"
    );

    // The node, at its leased address, fetches its script, then the kernel it names.
    client_ns.sh(&format!(
        "ip addr add {ip}/24 dev {peer} && ip addr add 10.77.0.200/24 dev {peer}"
    ));
    let fetch = |source: &str, url: &str| -> (u16, Vec<u8>) {
        let out = client_ns
            .exec("python3")
            .args([
                "-c",
                "import sys, urllib.parse, http.client\n\
                 u = urllib.parse.urlsplit(sys.argv[2])\n\
                 c = http.client.HTTPConnection(u.hostname, u.port, timeout=10, source_address=(sys.argv[1], 0))\n\
                 c.request('GET', u.path)\n\
                 r = c.getresponse()\n\
                 sys.stdout.buffer.write(b'%d\\n' % r.status + r.read())\n",
                source,
                url,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let split = out.stdout.iter().position(|b| *b == b'\n').unwrap();
        let status = std::str::from_utf8(&out.stdout[..split])
            .unwrap()
            .parse()
            .unwrap();
        (status, out.stdout[split + 1..].to_vec())
    };
    let (code, body) = fetch(&ip, &boot_file);
    let ipxe = String::from_utf8(body).unwrap();
    assert_eq!(code, 200, "{ipxe}");
    let base = format!("http://10.77.0.1:9724/netboot/images/{id}");
    assert_eq!(
        ipxe.lines().nth(2).unwrap(),
        format!(
            "kernel {base}/vmlinuz initrd=initrd console=ttyS0 systemd.mask=var.mount \
             kowabunga.agent_id=kaktus-netboot-1 kowabunga.api_key=node-s3cret \
             kowabunga.kahuna=https://kahuna.example console=ttyS0"
        ),
        "{ipxe}"
    );
    assert_eq!(fetch(&ip, &format!("{base}/vmlinuz")), (200, kernel));
    assert_eq!(fetch(&ip, &format!("{base}/initrd")), (200, initrd));
    // The same node as a BIOS PXE ROM (vendor class PXEClient, architecture 0) is
    // given iPXE's UNDI loader, which it fetches over TFTP from the Kiwi (UDP 69 opened
    // by the baseline, the transfer's acknowledgements as its established flow).
    let out = udhcpc(
        &client_ns,
        &peer,
        &[
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
            "-s",
            &script.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pxe_env = std::fs::read_to_string(&env_file).unwrap();
    assert!(pxe_env.contains("\nboot_file=undionly.kpxe\n"), "{pxe_env}");
    let loader = dir.join("undionly.kpxe");
    client_ns.sh(&format!(
        "busybox tftp -g -r undionly.kpxe -l {} 10.77.0.1",
        loader.display()
    ));
    assert!(
        std::fs::read(&loader).unwrap() == std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap(),
        "the loader sent is not Debian's"
    );
    assert!(
        input.contains(&format!("iifname \"{lan}\" udp dport 69 accept")),
        "{input}"
    );

    // Another address of the same segment does not get the node's keys.
    let (code, body) = fetch("10.77.0.200", &boot_file);
    assert_eq!(code, 403);
    assert!(!String::from_utf8_lossy(&body).contains("node-s3cret"));

    // /status: the image ready, the node, the script counted; no key anywhere in it.
    let status = kiwi_ns.sh(&format!(
        "python3 -c 'import sys, urllib.request; \
         print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
         http://{STATUS}/status"
    ));
    let parsed: serde_json::Value = serde_json::from_str(&status).unwrap();
    let report = &parsed["services"]["netboot"]["report"];
    assert_eq!(report["images"][id]["state"], "ready", "{status}");
    assert_eq!(report["scripts_served"], 1, "{status}");
    assert_eq!(report["scripts_refused"], 1, "{status}");
    assert!(!status.contains("node-s3cret"), "{status}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.contains("node-s3cret"), "the key is in the log");
    assert!(
        state
            .join(format!("kiwi/netboot/images/{id}/initrd"))
            .exists(),
        "the image is not in the store"
    );
}
