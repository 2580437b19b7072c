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
    /// Ceph RBD: not implemented yet (refused).
    Rbd,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default)]
    pub backend: Backend,
    /// Directory of the pool's volumes (created 0711 if missing).
    pub path: PathBuf,
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
        for (name, pool) in &self.pools {
            crate::volume_name::check(name)
                .map_err(|e| format!("[kaktus] pool {name:?}: not a valid pool name: {e}"))?;
            if pool.backend == Backend::Rbd {
                return Err(format!(
                    "[kaktus] pool {name}: the rbd backend is not supported by this agent yet (use backend = \"local\")"
                ));
            }
            let clean = pool.path.is_absolute()
                && pool
                    .path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
                && pool.path.components().count() > 1;
            if !clean {
                return Err(format!(
                    "[kaktus] pool {name}: path {} must be an absolute directory path without `.` or `..`, not /",
                    pool.path.display()
                ));
            }
            if let Some(other) = paths.insert(pool.path.clone(), name) {
                return Err(format!(
                    "[kaktus] pools {other} and {name} share the directory {}",
                    pool.path.display()
                ));
            }
        }
        Ok(())
    }
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
            k.pools["local"].path,
            PathBuf::from("/var/lib/kaktus/pools/local")
        );
        assert_eq!(k.console_address.as_deref(), Some("10.50.0.11"));
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
                "rbd backend is not supported",
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
