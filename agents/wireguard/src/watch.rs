//! The tunnels' watcher: a supervised service of the agent that reads what the kernel
//! holds (`wg show`, every [`POLL`]) and keeps it for `/status` and `/metrics`; it logs
//! each peer's state when first seen and whenever it changes (up: a handshake within
//! the last [`UP_WITHIN`], WireGuard's own limit before it stops using a session).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kowabunga_model::report::{Metric, MetricKind, Sample};
use kowabunga_model::{Report, Supervised};

use crate::reconciler::short;
use crate::wg::{ObservedTunnel, Wg};

/// How often the kernel is read.
pub const POLL: Duration = Duration::from_secs(5);

/// A peer is up while its last handshake is this recent (WireGuard's
/// `REJECT_AFTER_TIME`: past it, the session's keys are no longer used).
pub const UP_WITHIN: Duration = Duration::from_secs(180);

/// The last reading of the node's tunnels.
#[derive(Debug, Clone, Default)]
pub struct TunnelWatch {
    wg: Wg,
    seen: Arc<Mutex<BTreeMap<String, ObservedTunnel>>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a peer whose last handshake was at `handshake` (Unix time, 0: never) is up
/// at `now`.
pub fn is_up(handshake: u64, now: u64) -> bool {
    handshake != 0 && now.saturating_sub(handshake) < UP_WITHIN.as_secs()
}

impl TunnelWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Read the kernel once; log the peers whose state is new or changed.
    pub async fn poll(&self) -> Result<(), String> {
        let fresh = self.wg.show_all().await?;
        let t = now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for (link, tunnel) in &fresh {
            for (key, peer) in &tunnel.peers {
                let up = is_up(peer.latest_handshake, t);
                let was = seen
                    .get(link)
                    .and_then(|o| o.peers.get(key))
                    .map(|p| is_up(p.latest_handshake, t));
                if was != Some(up) {
                    tracing::info!(
                        %link,
                        peer = %short(key),
                        state = %if up { "up" } else { "down" },
                        "wireguard: peer {}",
                        if up { "up" } else { "down" }
                    );
                }
            }
        }
        *seen = fresh;
        Ok(())
    }

    /// The supervised service: a reading every [`POLL`]; a failing `wg` ends the run
    /// (the core restarts it after a back-off, and `/status` shows why).
    pub fn supervised(&self) -> Supervised {
        let watch = self.clone();
        Supervised::new("wireguard", move || {
            let watch = watch.clone();
            async move {
                loop {
                    watch.poll().await?;
                    tokio::time::sleep(POLL).await;
                }
            }
        })
        .with_report(Arc::new(self.clone()))
    }

    fn snapshot(&self) -> BTreeMap<String, ObservedTunnel> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Report for TunnelWatch {
    /// `links.<link>`: its public key and port, and per peer (by public key) its
    /// endpoint, addresses, last handshake, bytes and whether it is up.
    fn status(&self) -> serde_json::Value {
        let t = now();
        let links: serde_json::Map<String, serde_json::Value> = self
            .snapshot()
            .into_iter()
            .map(|(link, tunnel)| {
                let peers: serde_json::Map<String, serde_json::Value> = tunnel
                    .peers
                    .iter()
                    .map(|(key, p)| {
                        (
                            key.clone(),
                            serde_json::json!({
                                "endpoint": p.endpoint.map(|e| e.to_string()),
                                "allowed_ips": p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                                "latest_handshake": p.latest_handshake,
                                "up": is_up(p.latest_handshake, t),
                                "rx_bytes": p.rx_bytes,
                                "tx_bytes": p.tx_bytes,
                            }),
                        )
                    })
                    .collect();
                (
                    link,
                    serde_json::json!({
                        "public_key": tunnel.public_key,
                        "listen_port": tunnel.listen_port,
                        "peers": peers,
                    }),
                )
            })
            .collect();
        serde_json::json!({ "links": links })
    }

    fn metrics(&self) -> Vec<Metric> {
        let t = now();
        let mut up = Vec::new();
        for (link, tunnel) in self.snapshot() {
            for (key, p) in &tunnel.peers {
                up.push(Sample {
                    labels: vec![("link", link.clone()), ("peer", key.clone())],
                    value: u64::from(is_up(p.latest_handshake, t)),
                });
            }
        }
        vec![Metric {
            name: "kowabunga_wireguard_peer_up",
            kind: MetricKind::Gauge,
            help: "1 while the peer's last handshake is under 180 s old",
            samples: up,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_up_within_180_s_of_its_last_handshake() {
        assert!(!is_up(0, 1_000_000), "never shook hands");
        assert!(is_up(1_000_000, 1_000_000));
        assert!(is_up(1_000_000, 1_000_179));
        assert!(!is_up(1_000_000, 1_000_180));
    }

    /// Without any WireGuard interface (the build host) a reading is empty, and
    /// `/status` says so.
    #[tokio::test]
    async fn no_interface_reads_as_no_tunnel() {
        let watch = TunnelWatch::new();
        watch.poll().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(watch.status(), serde_json::json!({ "links": {} }));
        assert!(watch.metrics()[0].samples.is_empty());
    }
}
