//! The `[kaktus]` section of a hypervisor's desired state: its libvirt connection, its
//! storage pools and the knobs of its RPC methods. Bridges for instances come from the
//! shared `[network]` section (links of kind `bridge`).
//!
//! ```toml
//! [kaktus]
//! libvirt_uri = "qemu:///system"
//! console_address = "10.50.0.11"
//! template_max_bytes = 21474836480
//!
//! [kaktus.pools.local]
//! backend = "local"
//! path = "/var/lib/kaktus/pools/local"
//!
//! [kaktus.pools.ceph]
//! backend = "rbd"
//! ceph_pool = "rbd"
//! monitors = ["10.50.0.21:3300", "10.50.0.22:3300"]
//! client = "libvirt"
//! secret_uuid = "6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10"
//! ```

use std::collections::BTreeMap;
use std::path::{Component, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

/// Section name.
pub const SECTION: &str = "kaktus";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kaktus {
    /// libvirt connection URI; absent = `qemu:///system`.
    #[serde(default)]
    pub libvirt_uri: Option<String>,
    /// Host named in console URLs (`spice://<host>:<port>`); absent = the graphics
    /// listen address.
    #[serde(default)]
    pub console_address: Option<String>,
    /// Largest template download accepted, in bytes; absent = 64 GiB.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub template_max_bytes: Option<u64>,
    /// Storage pools by name (the `Pool` of Kahuna's calls, and the libvirt pool).
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSpec>,
}

/// Storage backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A directory of volume files (raw templates, qcow2 clones), a libvirt `dir` pool.
    #[default]
    Local,
    /// Ceph RBD images (templates with a protected snapshot, OS volumes as clones).
    Rbd,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default)]
    pub backend: Backend,
    /// `local`: directory of the pool's volumes (created 0711 if missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `rbd`: the Ceph pool holding the images; absent = this pool's name.
    #[serde(default)]
    pub ceph_pool: Option<String>,
    /// `rbd`: the cluster's monitors, `host:port` (msgr v2 is port 3300).
    #[serde(default)]
    pub monitors: Vec<String>,
    /// `rbd`: the cephx client id; absent = `libvirt`.
    #[serde(default)]
    pub client: Option<String>,
    /// `rbd`: the libvirt secret holding the client's key, as Kahuna's domain XML names
    /// it (`<auth><secret type='ceph' uuid=...>`); the agent defines it.
    #[serde(default)]
    pub secret_uuid: Option<String>,
    /// `rbd`: the file holding the client's key (base64); absent = `<client>.key` in the
    /// agent's state directory's `ceph/` (`/var/lib/kowabunga/kaktus/ceph/`). Keys never
    /// travel in documents.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl PoolSpec {
    /// The cephx client of an `rbd` pool.
    pub fn client(&self) -> &str {
        self.client.as_deref().unwrap_or("libvirt")
    }
}

/// Ceph names (pools, clients): what `rbd` and `rados` accept without quoting.
fn ceph_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a Ceph name (letters, digits, `_`, `-`, `.`; not starting with `.` or `-`)"
        ))
    }
}

/// A monitor address: `host:port`, `[v6]:port`.
fn monitor(addr: &str) -> Result<(), String> {
    let bad = || format!("monitor {addr:?} is not host:port");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if plain || host.parse::<std::net::Ipv6Addr>().is_ok() {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A UUID in its 8-4-4-4-12 hex form.
fn uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Kaktus {
    /// Everything checkable without I/O.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(uri) = &self.libvirt_uri
            && (uri.trim().is_empty() || !uri.contains(':'))
        {
            return Err(format!("[kaktus] libvirt_uri {uri:?} is not a libvirt URI"));
        }
        if self.template_max_bytes == Some(0) {
            return Err("[kaktus] template_max_bytes must be above 0".into());
        }
        let mut paths = BTreeMap::new();
        let mut ceph_pools = BTreeMap::new();
        for (name, pool) in &self.pools {
            crate::volume_name::check(name)
                .map_err(|e| format!("[kaktus] pool {name:?}: not a valid pool name: {e}"))?;
            let err = |e: String| format!("[kaktus] pool {name}: {e}");
            match pool.backend {
                Backend::Local => {
                    let rbd_only = [
                        ("ceph_pool", pool.ceph_pool.is_some()),
                        ("monitors", !pool.monitors.is_empty()),
                        ("client", pool.client.is_some()),
                        ("secret_uuid", pool.secret_uuid.is_some()),
                        ("key_file", pool.key_file.is_some()),
                    ];
                    if let Some((key, _)) = rbd_only.iter().find(|(_, set)| *set) {
                        return Err(err(format!("`{key}` is for backend = \"rbd\"")));
                    }
                    let path = pool
                        .path
                        .as_ref()
                        .ok_or_else(|| err("backend = \"local\" needs a `path`".into()))?;
                    if !clean_absolute(path) {
                        return Err(err(format!(
                            "path {} must be an absolute directory path without `.` or `..`, not /",
                            path.display()
                        )));
                    }
                    if let Some(other) = paths.insert(path.clone(), name) {
                        return Err(format!(
                            "[kaktus] pools {other} and {name} share the directory {}",
                            path.display()
                        ));
                    }
                }
                Backend::Rbd => {
                    if pool.path.is_some() {
                        return Err(err(
                            "`path` is for backend = \"local\" (an rbd pool is a Ceph pool)".into(),
                        ));
                    }
                    let ceph_pool = pool.ceph_pool.as_deref().unwrap_or(name);
                    ceph_name("ceph_pool", ceph_pool).map_err(err)?;
                    ceph_name("client", pool.client()).map_err(err)?;
                    if pool.monitors.is_empty() {
                        return Err(err("backend = \"rbd\" needs `monitors`".into()));
                    }
                    for m in &pool.monitors {
                        monitor(m).map_err(err)?;
                    }
                    match pool.secret_uuid.as_deref() {
                        Some(u) if uuid(u) => {}
                        Some(u) => return Err(err(format!("secret_uuid {u:?} is not a UUID"))),
                        None => return Err(err("backend = \"rbd\" needs `secret_uuid`".into())),
                    }
                    if let Some(key) = &pool.key_file
                        && !clean_absolute(key)
                    {
                        return Err(err(format!(
                            "key_file {} must be an absolute path without `.` or `..`",
                            key.display()
                        )));
                    }
                    if let Some(other) = ceph_pools.insert(ceph_pool.to_owned(), name) {
                        return Err(format!(
                            "[kaktus] pools {other} and {name} share the Ceph pool {ceph_pool}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An absolute path of normal components, not `/` itself.
fn clean_absolute(path: &std::path::Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.components().count() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Kaktus, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let section = table
            .get("kaktus")
            .cloned()
            .unwrap_or(toml::Value::Table(Default::default()));
        let k: Kaktus = section
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        k.validate()?;
        Ok(k)
    }

    #[test]
    fn reads_the_documented_example() {
        let k = parse(
            "[kaktus]\nlibvirt_uri = \"qemu:///system\"\nconsole_address = \"10.50.0.11\"\n\
             [kaktus.pools.local]\nbackend = \"local\"\npath = \"/var/lib/kaktus/pools/local\"\n",
        )
        .unwrap();
        assert_eq!(
            k.pools["local"].path.as_deref(),
            Some(std::path::Path::new("/var/lib/kaktus/pools/local"))
        );
        assert_eq!(k.console_address.as_deref(), Some("10.50.0.11"));
    }

    #[test]
    fn reads_the_module_example_with_an_rbd_pool() {
        let doc = include_str!("section.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let k = parse(&example).unwrap();
        let ceph = &k.pools["ceph"];
        assert_eq!(ceph.backend, Backend::Rbd);
        assert_eq!(
            (ceph.ceph_pool.as_deref(), ceph.client()),
            (Some("rbd"), "libvirt")
        );
        assert_eq!(ceph.monitors.len(), 2);
        assert_eq!(k.pools["local"].backend, Backend::Local);
    }

    #[test]
    fn refuses_bad_pools() {
        for (text, expected) in [
            (
                "[kaktus.pools.a]\npath = \"rel/dir\"",
                "must be an absolute directory path",
            ),
            (
                "[kaktus.pools.a]\npath = \"/var/../etc\"",
                "without `.` or `..`",
            ),
            ("[kaktus.pools.a]\npath = \"/\"", "not /"),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\npath = \"/x\"",
                "`path` is for backend = \"local\"",
            ),
            ("[kaktus.pools.a]\nbackend = \"local\"", "needs a `path`"),
            (
                "[kaktus.pools.a]\npath = \"/x\"\nmonitors = [\"m:3300\"]",
                "`monitors` is for backend = \"rbd\"",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nsecret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"",
                "needs `monitors`",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nmonitors = [\"10.0.0.1\"]\nsecret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"",
                "monitor \"10.0.0.1\" is not host:port",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nmonitors = [\"m:3300\"]",
                "needs `secret_uuid`",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nmonitors = [\"m:3300\"]\nsecret_uuid = \"xyz\"",
                "is not a UUID",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nceph_pool = \"a b\"\nmonitors = [\"m:3300\"]\nsecret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"",
                "is not a Ceph name",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nclient = \"-x\"\nmonitors = [\"m:3300\"]\nsecret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"",
                "client \"-x\" is not a Ceph name",
            ),
            (
                "[kaktus.pools.a]\nbackend = \"rbd\"\nmonitors = [\"m:3300\"]\nsecret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"\n[kaktus.pools.b]\nbackend = \"rbd\"\nceph_pool = \"a\"\nmonitors = [\"m:3300\"]\nsecret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"",
                "share the Ceph pool a",
            ),
            (
                "[kaktus.pools.a]\npath = \"/x\"\n[kaktus.pools.b]\npath = \"/x\"",
                "share the directory /x",
            ),
            (
                "[kaktus.pools.\"a/b\"]\npath = \"/x\"",
                "not a valid pool name",
            ),
            (
                "[kaktus.pools.a]\npath = \"/x\"\nsize = 3",
                "unknown field `size`",
            ),
            ("[kaktus]\nlibvirt_uri = \"\"", "is not a libvirt URI"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
