//! Who gets recursive (forwarded) answers: a client whose source address is in a
//! subnet of one of the node's own addresses (BIND's `localnets`, loopback included),
//! or in a network the `[dns]` section lists (`recursion_clients`). Everyone else gets
//! REFUSED, so a Kiwi reachable from outside is never an open resolver.
//!
//! The node's subnets are read from the kernel (`getifaddrs`: one netlink dump) at most
//! once per [`REFRESH`], by whichever serving thread needs them first; the others keep
//! using the previous list meanwhile. Addresses the network reconciler adds are seen
//! within that delay.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// How long a reading of the node's subnets is used before it is read again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Whether `client` may get a forwarded answer.
pub fn allowed(client: IpAddr, listed: &[IpNet], local: &LocalNets) -> bool {
    let client = client.to_canonical();
    listed.iter().any(|net| net.contains(&client)) || local.contains(client)
}

/// The subnets of the node's own addresses, cached for [`REFRESH`].
#[derive(Debug, Default)]
pub struct LocalNets {
    snapshot: RwLock<Snapshot>,
    /// Held by the one thread reading the kernel.
    reading: Mutex<()>,
}

#[derive(Debug, Default, Clone)]
struct Snapshot {
    read_at: Option<Instant>,
    nets: Arc<[IpNet]>,
}

impl LocalNets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `ip` is in one of the node's subnets.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.current().iter().any(|net| net.contains(&ip))
    }

    fn current(&self) -> Arc<[IpNet]> {
        let snapshot = self.read();
        match snapshot.read_at {
            Some(at) if at.elapsed() < REFRESH => snapshot.nets,
            // Another thread is reading: use the previous list rather than wait.
            Some(_) => match self.reading.try_lock() {
                Ok(_reading) => self.refresh(snapshot.nets),
                Err(_) => snapshot.nets,
            },
            // Never read: wait for the reading, nobody has an answer yet.
            None => {
                let _reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
                let snapshot = self.read();
                if snapshot.read_at.is_some() {
                    snapshot.nets
                } else {
                    self.refresh(snapshot.nets)
                }
            }
        }
    }

    fn read(&self) -> Snapshot {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Read the kernel's addresses; on failure keep `previous` (and try again after
    /// [`REFRESH`], not on every query).
    fn refresh(&self, previous: Arc<[IpNet]>) -> Arc<[IpNet]> {
        let nets = match host_subnets() {
            Ok(nets) => nets.into(),
            Err(err) => {
                tracing::warn!("dns: cannot read the node's addresses: {err}");
                previous
            }
        };
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Snapshot {
            read_at: Some(Instant::now()),
            nets: Arc::clone(&nets),
        };
        nets
    }
}

/// The subnet of every address of every link, host bits cleared.
fn host_subnets() -> Result<Vec<IpNet>, String> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    let mut nets = Vec::new();
    for ifa in addresses {
        let (Some(address), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (address.as_sockaddr_in(), mask.as_sockaddr_in()) {
            ipnet::ipv4_mask_to_prefix(m.ip())
                .ok()
                .and_then(|prefix| IpNet::new(a.ip().into(), prefix).ok())
        } else if let (Some(a), Some(m)) = (address.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            ipnet::ipv6_mask_to_prefix(m.ip())
                .ok()
                .and_then(|prefix| IpNet::new(a.ip().into(), prefix).ok())
        } else {
            None
        };
        if let Some(net) = net.map(|n| n.trunc())
            && !nets.contains(&net)
        {
            nets.push(net);
        }
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_listed_networks_are_allowed() {
        let local = LocalNets::new();
        assert!(allowed("127.0.0.1".parse().unwrap(), &[], &local));
        assert!(allowed("::ffff:127.0.0.1".parse().unwrap(), &[], &local));
        // TEST-NET-3 is on no link of a test machine.
        let far: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(!allowed(far, &[], &local));
        let listed: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
        assert!(allowed(far, &listed, &local));
    }
}
