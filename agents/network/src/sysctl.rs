//! Reading and writing sysctls under an injectable root (`/proc/sys` in production, a
//! temporary directory in tests).
//!
//! Synchronous on purpose: the writes are a few bytes, and `/proc/sys/net` answers for
//! the network namespace of the calling thread, which a blocking-pool thread might
//! not share.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Sysctl {
    root: PathBuf,
}

impl Sysctl {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The value of `key` (`net/ipv4/ip_forward`), trimmed; `None` if it does not exist.
    pub fn read(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(key))
            .ok()
            .map(|v| v.trim().to_string())
    }

    pub fn write(&self, key: &str, value: &str) -> Result<(), String> {
        let path = self.root.join(key);
        std::fs::write(&path, format!("{value}\n"))
            .map_err(|e| format!("{}: cannot write {value}: {e}", key.replace('/', ".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_under_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        let s = Sysctl::new(dir.path());
        assert_eq!(s.read("net/ipv4/ip_forward"), None);
        s.write("net/ipv4/ip_forward", "1").unwrap();
        assert_eq!(s.read("net/ipv4/ip_forward").as_deref(), Some("1"));
        let e = s.write("net/ipv4/conf/nope/rp_filter", "1").unwrap_err();
        assert!(
            e.starts_with("net.ipv4.conf.nope.rp_filter: cannot write 1"),
            "{e}"
        );
    }
}
