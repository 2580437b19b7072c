//! What the agent created, recorded before it creates it: the ledger.
//!
//! Ownership is "declared by the desired document or by the one in force" ([`plan`]),
//! which misses one case: a generation that failed half-way and whose revert could not
//! remove everything it created (a deletion refused, the apply deadline hit, a crash).
//! Those objects belong to no document, and no later document would remove them. So,
//! before each stage of an apply that creates links, adds addresses or sets routes,
//! the reconciler adds them to this ledger and writes it to disk (fsynced) when a
//! state directory was given; planning counts everything in the ledger as owned, so
//! the next document that does not declare an object removes it. Entries leave the
//! ledger when the agent deletes the object, or when a plan finds it gone.
//!
//! The ledger also remembers the MAC of every bridge the agent deleted
//! ([`Ledger::macs`]): re-creating a bridge of that name (a revert, typically) gives
//! it that MAC back instead of a new random one, so that neighbours' ARP/NDP caches
//! and DHCP reservations stay right. A MAC declared in the document wins. (Chosen over
//! always setting a MAC derived from the bridge's name: two nodes on one segment with
//! a `br0` each would collide, and every bridge made before would change MAC at its
//! next re-creation. Recording the observed MAC needs no guess and no new identity.)
//!
//! On disk: `<state dir>/ledger.json`, replaced atomically (write a temporary file,
//! fsync it, rename it over, fsync the directory).
//!
//! [`plan`]: crate::plan

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kowabunga_model::network::{MacAddr, Prefix, RouteKey};
use serde::{Deserialize, Serialize};

use crate::observe::Observed;
use crate::ops::{NewLink, Op};

/// File name of the ledger inside the state directory.
pub const FILE: &str = "ledger.json";

/// The objects the agent created and still owns, and the bridges' MACs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Link name -> kernel kind (`bridge`, `veth`...).
    pub links: BTreeMap<String, String>,
    /// (link name, address).
    pub addresses: BTreeSet<(String, Prefix)>,
    pub routes: BTreeSet<RouteKey>,
    /// Bridge name -> the MAC it had when the agent last deleted it.
    pub macs: BTreeMap<String, MacAddr>,
}

/// Ledger entries a plan found gone from the kernel: apply forgets them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stale {
    pub links: Vec<String>,
    pub addresses: Vec<(String, Prefix)>,
    pub routes: Vec<RouteKey>,
}

impl Stale {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.addresses.is_empty() && self.routes.is_empty()
    }
}

impl Ledger {
    /// Record what `ops` are about to create (and the MACs of bridges they are about
    /// to delete). Returns whether anything was new.
    pub fn record(&mut self, ops: &[Op]) -> bool {
        let mut changed = false;
        for op in ops {
            changed |= match op {
                Op::Create { name, spec } => {
                    let mut new = self.links.insert(name.clone(), kind(spec).into()).is_none();
                    if let NewLink::Veth { peer } = spec {
                        new |= self.links.insert(peer.clone(), "veth".into()).is_none();
                    }
                    new
                }
                Op::AddAddress { link, addr } => self.addresses.insert((link.clone(), *addr)),
                Op::AddRoute { key, .. } => self.routes.insert(*key),
                Op::DelLink {
                    name,
                    mac: Some(mac),
                    ..
                } => self.macs.insert(name.clone(), *mac) != Some(*mac),
                _ => false,
            };
        }
        changed
    }

    /// The entries whose object `obs` does not hold (any more), or holds with another
    /// kind: they are not the agent's to remove.
    pub fn stale(&self, obs: &Observed) -> Stale {
        let links: BTreeMap<&str, _> = obs.links.iter().map(|l| (l.name.as_str(), l)).collect();
        let addrs: BTreeSet<(u32, Prefix)> = obs.addrs.iter().map(|a| (a.index, a.addr)).collect();
        let routes: BTreeSet<RouteKey> = obs.routes.iter().map(|r| r.key).collect();
        Stale {
            links: self
                .links
                .iter()
                .filter(|(name, kind)| {
                    links
                        .get(name.as_str())
                        .is_none_or(|o| o.kind.as_deref() != Some(kind.as_str()))
                })
                .map(|(name, _)| name.clone())
                .collect(),
            addresses: self
                .addresses
                .iter()
                .filter(|(link, addr)| {
                    !links
                        .get(link.as_str())
                        .is_some_and(|o| addrs.contains(&(o.index, *addr)))
                })
                .cloned()
                .collect(),
            routes: self
                .routes
                .iter()
                .filter(|k| !routes.contains(k))
                .copied()
                .collect(),
        }
    }

    /// Forget what `op` removed (it succeeded). Returns whether anything changed.
    pub fn removed(&mut self, op: &Op) -> bool {
        match op {
            Op::DelLink { name, .. } => {
                let before = self.addresses.len();
                self.addresses.retain(|(l, _)| l != name);
                self.links.remove(name).is_some() || before != self.addresses.len()
            }
            Op::DelAddress { link, addr } => self.addresses.remove(&(link.clone(), *addr)),
            Op::DelRoute { key } => self.routes.remove(key),
            _ => false,
        }
    }

    /// Forget entries whose object a plan found gone. Returns whether anything changed.
    pub fn forget(&mut self, stale: &Stale) -> bool {
        let mut changed = false;
        for l in &stale.links {
            changed |= self.links.remove(l).is_some();
        }
        for a in &stale.addresses {
            changed |= self.addresses.remove(a);
        }
        for r in &stale.routes {
            changed |= self.routes.remove(r);
        }
        changed
    }

    fn to_file(&self) -> LedgerFile {
        LedgerFile {
            links: self
                .links
                .iter()
                .map(|(name, kind)| LinkEntry {
                    name: name.clone(),
                    kind: kind.clone(),
                })
                .collect(),
            addresses: self
                .addresses
                .iter()
                .map(|(link, addr)| AddressEntry {
                    link: link.clone(),
                    address: addr.to_string(),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|k| RouteEntry {
                    table: k.table,
                    to: k.dst.to_string(),
                    metric: k.metric,
                })
                .collect(),
            macs: self
                .macs
                .iter()
                .map(|(link, mac)| MacEntry {
                    link: link.clone(),
                    mac: mac.to_string(),
                })
                .collect(),
        }
    }

    fn from_file(f: LedgerFile) -> Result<Self, String> {
        let mut l = Ledger::default();
        for e in f.links {
            l.links.insert(e.name, e.kind);
        }
        for e in f.addresses {
            l.addresses.insert((e.link, e.address.parse()?));
        }
        for e in f.routes {
            l.routes.insert(RouteKey {
                table: e.table,
                dst: e.to.parse()?,
                metric: e.metric,
            });
        }
        for e in f.macs {
            l.macs.insert(e.link, e.mac.parse()?);
        }
        Ok(l)
    }
}

fn kind(spec: &NewLink) -> &'static str {
    spec.kind()
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    #[serde(default)]
    links: Vec<LinkEntry>,
    #[serde(default)]
    addresses: Vec<AddressEntry>,
    #[serde(default)]
    routes: Vec<RouteEntry>,
    #[serde(default)]
    macs: Vec<MacEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkEntry {
    name: String,
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressEntry {
    link: String,
    address: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    table: u32,
    to: String,
    metric: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MacEntry {
    link: String,
    mac: String,
}

/// Read the ledger in `dir` (empty when there is none yet).
pub fn load(dir: &Path) -> Result<Ledger, String> {
    let path = dir.join(FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ledger::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: LedgerFile = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a ledger: {e}", path.display()))?;
    Ledger::from_file(file).map_err(|e| format!("{} is not a ledger: {e}", path.display()))
}

/// Write the ledger to `dir` atomically and durably.
pub fn save(dir: &Path, ledger: &Ledger) -> Result<(), String> {
    let path = dir.join(FILE);
    let tmp: PathBuf = dir.join(format!("{FILE}.tmp"));
    let write = || -> io::Result<()> {
        let text = serde_json::to_vec_pretty(&ledger.to_file()).map_err(io::Error::other)?;
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dst: &str) -> RouteKey {
        RouteKey {
            table: 254,
            dst: dst.parse().unwrap(),
            metric: 0,
        }
    }

    #[test]
    fn records_creations_and_forgets_removals() {
        let mut l = Ledger::default();
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let ops = [
            Op::Create {
                name: "ve0".into(),
                spec: NewLink::Veth { peer: "ve1".into() },
            },
            Op::AddAddress {
                link: "ve0".into(),
                addr: "10.0.0.1/24".parse().unwrap(),
            },
            Op::AddRoute {
                key: key("10.9.0.0/16"),
                via: None,
                dev: Some("ve0".into()),
            },
            Op::DelLink {
                name: "br0".into(),
                kind: "bridge",
                mac: Some(mac),
            },
            Op::SetUp {
                link: "ve0".into(),
                up: true,
            },
        ];
        assert!(l.record(&ops));
        assert!(!l.record(&ops), "recording twice changes nothing");
        assert_eq!(
            l.links.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ve0", "ve1"]
        );
        assert_eq!(l.macs.get("br0"), Some(&mac));
        assert!(l.removed(&Op::DelLink {
            name: "ve0".into(),
            kind: "veth",
            mac: None,
        }));
        assert!(l.addresses.is_empty(), "the link's addresses go with it");
        assert!(l.forget(&Stale {
            links: vec!["ve1".into()],
            addresses: vec![],
            routes: vec![key("10.9.0.0/16")],
        }));
        assert!(l.links.is_empty() && l.routes.is_empty());
        assert_eq!(l.macs.len(), 1, "MACs are remembered after deletion");
    }

    #[test]
    fn round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Ledger::default());
        let mut l = Ledger::default();
        l.links.insert("br0".into(), "bridge".into());
        l.addresses
            .insert(("eth0".into(), "fd00::1/64".parse().unwrap()));
        l.routes.insert(key("10.9.0.0/16"));
        l.macs
            .insert("br0".into(), "02:00:00:00:00:01".parse().unwrap());
        save(dir.path(), &l).unwrap();
        assert_eq!(load(dir.path()).unwrap(), l);
        assert!(!dir.path().join("ledger.json.tmp").exists());
        fs::write(dir.path().join(FILE), b"{\"links\": 3}").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains("ledger.json is not a ledger"), "{e}");
    }
}
