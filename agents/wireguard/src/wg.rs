//! wg(8), the reference tool, for what the kernel's WireGuard interface holds.
//!
//! - keys: `wg genkey`, `wg pubkey` (the private key on stdin, never an argument);
//! - set: `wg setconf LINK /dev/stdin`, the whole configuration at once (a peer not in
//!   it is removed), written to the child's stdin: the private key is in no file but
//!   its own;
//! - observe: `wg show all <field>`, one field at a time, never `dump` nor
//!   `private-key`: the private key never comes back into the agent's memory from wg.
//!   Each line is tab-separated fields (wg(8), "show ... dump" format), split here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kowabunga_model::network::Prefix;
use kowabunga_process::Invocation;

use crate::model::TunnelConfig;

/// How long one wg call may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// The `wg` binary, looked up in `$PATH` (wireguard-tools on the images).
#[derive(Debug, Clone)]
pub struct Wg {
    program: PathBuf,
}

impl Default for Wg {
    fn default() -> Self {
        Self {
            program: PathBuf::from("wg"),
        }
    }
}

/// What a tunnel's peer is, as the kernel holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPeer {
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<Prefix>,
    /// Unix time of the last handshake; 0: none yet.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

/// What a tunnel is, as the kernel holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTunnel {
    pub public_key: Option<String>,
    pub listen_port: Option<u16>,
    /// By public key.
    pub peers: BTreeMap<String, ObservedPeer>,
}

impl Wg {
    async fn run(&self, args: &[&str], stdin: Option<Vec<u8>>) -> Result<String, String> {
        let mut call = Invocation::new(&self.program, DEADLINE).args(args);
        if let Some(input) = stdin {
            call = call.stdin(input);
        }
        let out = call.run().await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "wg {}: {} {}",
                args.first().copied().unwrap_or_default(),
                out.status,
                out.stderr_lossy().trim()
            ));
        }
        Ok(out.stdout_lossy())
    }

    /// A new private key (`wg genkey`).
    pub async fn genkey(&self) -> Result<String, String> {
        Ok(self.run(&["genkey"], None).await?.trim().to_owned())
    }

    /// The public key of `private` (`wg pubkey`, the key on stdin).
    pub async fn pubkey(&self, private: &str) -> Result<String, String> {
        let input = format!("{private}\n").into_bytes();
        let out = self
            .run(&["pubkey"], Some(input))
            .await
            .map_err(|e| redact(&e, private))?;
        Ok(out.trim().to_owned())
    }

    /// Give `tunnel` its whole configuration: `private` key, port, peers.
    pub async fn setconf(&self, tunnel: &TunnelConfig, private: &str) -> Result<(), String> {
        let text = render(tunnel, private);
        self.run(
            &["setconf", &tunnel.link, "/dev/stdin"],
            Some(text.into_bytes()),
        )
        .await
        .map(drop)
        .map_err(|e| redact(&e, private))
    }

    /// Every WireGuard interface of the node, by name.
    pub async fn show_all(&self) -> Result<BTreeMap<String, ObservedTunnel>, String> {
        let mut tunnels: BTreeMap<String, ObservedTunnel> = BTreeMap::new();
        // One call when there is nothing to read (a Kiwi without tunnels).
        if self
            .run(&["show", "interfaces"], None)
            .await?
            .trim()
            .is_empty()
        {
            return Ok(tunnels);
        }
        for line in self
            .run(&["show", "all", "public-key"], None)
            .await?
            .lines()
        {
            if let [link, key] = fields(line)[..] {
                tunnels.entry(link.to_owned()).or_default().public_key = Some(key.to_owned());
            }
        }
        for line in self
            .run(&["show", "all", "listen-port"], None)
            .await?
            .lines()
        {
            if let [link, port] = fields(line)[..] {
                tunnels.entry(link.to_owned()).or_default().listen_port =
                    port.parse().ok().filter(|p| *p != 0);
            }
        }
        let mut peer = |line: &str, set: &dyn Fn(&mut ObservedPeer, &[&str])| {
            let f = fields(line);
            if f.len() >= 3 {
                let entry = tunnels
                    .entry(f[0].to_owned())
                    .or_default()
                    .peers
                    .entry(f[1].to_owned())
                    .or_default();
                set(entry, &f[2..]);
            }
        };
        for line in self
            .run(&["show", "all", "allowed-ips"], None)
            .await?
            .lines()
        {
            peer(line, &|p, rest| {
                p.allowed_ips = rest
                    .first()
                    .map(|ips| {
                        ips.split_whitespace()
                            .filter_map(|ip| ip.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
            });
        }
        for line in self.run(&["show", "all", "endpoints"], None).await?.lines() {
            peer(line, &|p, rest| {
                p.endpoint = rest.first().and_then(|e| e.parse().ok());
            });
        }
        for line in self
            .run(&["show", "all", "latest-handshakes"], None)
            .await?
            .lines()
        {
            peer(line, &|p, rest| {
                p.latest_handshake = rest.first().and_then(|t| t.parse().ok()).unwrap_or(0);
            });
        }
        for line in self.run(&["show", "all", "transfer"], None).await?.lines() {
            peer(line, &|p, rest| {
                p.rx_bytes = rest.first().and_then(|t| t.parse().ok()).unwrap_or(0);
                p.tx_bytes = rest.get(1).and_then(|t| t.parse().ok()).unwrap_or(0);
            });
        }
        for line in self
            .run(&["show", "all", "persistent-keepalive"], None)
            .await?
            .lines()
        {
            peer(line, &|p, rest| {
                p.persistent_keepalive = rest.first().and_then(|t| t.parse().ok());
            });
        }
        Ok(tunnels)
    }
}

/// `message` (wg's stderr may quote its input) without the private key.
fn redact(message: &str, private: &str) -> String {
    if private.is_empty() {
        return message.to_owned();
    }
    message.replace(private, "<private key>")
}

fn fields(line: &str) -> Vec<&str> {
    line.split('\t').map(str::trim).collect()
}

/// The `wg setconf` text of `tunnel` with `private` as its key. Holds the private key:
/// it goes to wg's stdin and nowhere else.
pub fn render(tunnel: &TunnelConfig, private: &str) -> String {
    let mut out = format!("[Interface]\nPrivateKey = {private}\n");
    if let Some(port) = tunnel.listen_port {
        let _ = writeln!(out, "ListenPort = {port}");
    }
    for peer in &tunnel.peers {
        let _ = write!(out, "\n[Peer]\nPublicKey = {}\n", peer.public_key);
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "Endpoint = {endpoint}");
        }
        if !peer.allowed_ips.is_empty() {
            let ips: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "AllowedIPs = {}", ips.join(", "));
        }
        if let Some(k) = peer.persistent_keepalive {
            let _ = writeln!(out, "PersistentKeepalive = {k}");
        }
    }
    out
}

/// Whether the kernel's `observed` tunnel is what `want` says (keys, port, each peer's
/// addresses and keepalive, and its endpoint where `want` gives one).
pub fn matches(want: &TunnelConfig, observed: &ObservedTunnel) -> bool {
    if want.listen_port.is_some() && want.listen_port != observed.listen_port {
        return false;
    }
    if want.peers.len() != observed.peers.len() {
        return false;
    }
    want.peers.iter().all(|p| {
        observed.peers.get(&p.public_key).is_some_and(|o| {
            o.allowed_ips == p.allowed_ips
                && o.persistent_keepalive == p.persistent_keepalive
                && (p.endpoint.is_none() || o.endpoint == p.endpoint)
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::PeerConfig;

    fn tunnel() -> TunnelConfig {
        TunnelConfig {
            link: "wg0".into(),
            listen_port: Some(51820),
            peers: vec![PeerConfig {
                public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
                endpoint: Some("203.0.113.3:51820".parse().unwrap()),
                allowed_ips: vec![
                    "10.62.0.0/24".parse().unwrap(),
                    "10.200.0.2/32".parse().unwrap(),
                ],
                persistent_keepalive: Some(25),
            }],
        }
    }

    #[test]
    fn golden_setconf() {
        assert_eq!(
            render(&tunnel(), "PRIVATE"),
            "[Interface]\nPrivateKey = PRIVATE\nListenPort = 51820\n\n[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 203.0.113.3:51820\nAllowedIPs = 10.62.0.0/24, 10.200.0.2/32\nPersistentKeepalive = 25\n"
        );
    }

    #[test]
    fn matches_compares_what_the_document_sets() {
        let want = tunnel();
        let mut seen = ObservedTunnel {
            public_key: Some("ours".into()),
            listen_port: Some(51820),
            peers: BTreeMap::new(),
        };
        assert!(!matches(&want, &seen), "a missing peer");
        seen.peers.insert(
            want.peers[0].public_key.clone(),
            ObservedPeer {
                endpoint: Some("203.0.113.3:51820".parse().unwrap()),
                allowed_ips: want.peers[0].allowed_ips.clone(),
                latest_handshake: 1,
                persistent_keepalive: Some(25),
                ..ObservedPeer::default()
            },
        );
        assert!(matches(&want, &seen));
        seen.listen_port = Some(1);
        assert!(!matches(&want, &seen), "another port");
        seen.listen_port = Some(51820);
        seen.peers.insert("another".into(), ObservedPeer::default());
        assert!(!matches(&want, &seen), "a peer too many");
    }

    /// An error from wg never carries the private key, even when wg quotes it.
    #[tokio::test]
    async fn errors_never_quote_the_private_key() {
        assert_eq!(
            redact(
                "Key is not the correct length or format: `SECRET`",
                "SECRET"
            ),
            "Key is not the correct length or format: `<private key>`"
        );
        // wg refuses a configuration for a link that does not exist; whatever it
        // prints, the key is not in the error.
        let wg = Wg::default();
        let private = wg.genkey().await.unwrap();
        let err = wg
            .setconf(
                &TunnelConfig {
                    link: "kw-no-such-link".into(),
                    ..tunnel()
                },
                &private,
            )
            .await
            .unwrap_err();
        assert!(!err.contains(&private), "{err}");
    }

    /// The real wg(8) makes a key pair (wireguard-tools, `scripts/install-deps.sh
    /// --for test`): 44 characters each, the public one derived from the private one.
    #[tokio::test]
    async fn wg_makes_a_key_pair() {
        let wg = Wg::default();
        let private = wg.genkey().await.unwrap();
        let public = wg.pubkey(&private).await.unwrap();
        crate::model::check_key("private", &private).unwrap();
        crate::model::check_key("public", &public).unwrap();
        assert_ne!(private, public);
        assert_eq!(wg.pubkey(&private).await.unwrap(), public);
    }
}
