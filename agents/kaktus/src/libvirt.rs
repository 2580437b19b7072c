//! The agent's one connection to libvirt, used off the async runtime.
//!
//! libvirt's C API blocks (a remote daemon, a busy QEMU monitor), so every call runs on
//! tokio's blocking pool through [`Libvirt::call`]. The connection is opened on first
//! use and reopened after libvirt reports it dead (a daemon restart), so the agent
//! starts and serves read-only answers even while libvirtd is still coming up.

use std::sync::{Arc, Mutex, PoisonError};

use virt::connect::Connect;

/// libvirt URI used when the `[kaktus]` section names none.
pub const DEFAULT_URI: &str = "qemu:///system";

/// A shared, lazily opened libvirt connection. Cloning shares it.
#[derive(Clone)]
pub struct Libvirt(Arc<Mutex<Slot>>);

struct Slot {
    uri: String,
    conn: Option<Arc<Conn>>,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt").field("uri", &self.uri()).finish()
    }
}

/// One open connection; closed when the last user drops it (virt's `Connect` does not
/// close itself).
pub struct Conn(Connect);

impl std::ops::Deref for Conn {
    type Target = Connect;
    fn deref(&self) -> &Connect {
        &self.0
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

impl Libvirt {
    pub fn new(uri: &str) -> Self {
        // libvirt prints every error on stderr by default; ours carry them, with context.
        virt::error::clear_error_callback();
        Self(Arc::new(Mutex::new(Slot {
            uri: uri.to_owned(),
            conn: None,
        })))
    }

    pub fn uri(&self) -> String {
        self.slot().uri.clone()
    }

    /// Use `uri` from now on (the open connection, if to another URI, is dropped).
    pub fn set_uri(&self, uri: &str) {
        let mut slot = self.slot();
        if slot.uri != uri {
            slot.uri = uri.to_owned();
            slot.conn = None;
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `job` with the connection on the blocking pool. `Err` carries a message
    /// naming what failed.
    pub async fn call<T, F>(&self, job: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, String> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.connection()?;
            let result = job(&conn);
            if result.is_err() && !conn.is_alive().unwrap_or(false) {
                // The daemon went away: the next call opens a fresh connection.
                this.forget(&conn);
            }
            result
        })
        .await
        .map_err(|e| format!("libvirt call did not complete: {e}"))?
    }

    /// The open connection, opening it if needed.
    fn connection(&self) -> Result<Arc<Conn>, String> {
        let mut slot = self.slot();
        if let Some(conn) = slot.conn.as_ref() {
            return Ok(Arc::clone(conn));
        }
        let conn = Connect::open(Some(&slot.uri))
            .map_err(|e| format!("cannot connect to libvirt at {}: {}", slot.uri, e.message()))?;
        let conn = Arc::new(Conn(conn));
        slot.conn = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn forget(&self, dead: &Arc<Conn>) {
        let mut slot = self.slot();
        if slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, dead)) {
            slot.conn = None;
        }
    }
}

/// `what: message` for a libvirt error (`instance vm1: domain not found ...`).
pub fn context(what: impl std::fmt::Display) -> impl FnOnce(virt::error::Error) -> String {
    move |e| format!("{what}: {}", e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_lazily_and_reports_an_unreachable_daemon() {
        let lv = Libvirt::new("test:///default");
        let host = lv
            .call(|c| c.get_hostname().map_err(context("hostname")))
            .await;
        assert!(host.is_ok(), "{host:?}");
        let bad = Libvirt::new("qemu+unix:///system?socket=/nonexistent/kaktus-sock");
        let err = bad
            .call(|c| c.get_hostname().map_err(context("hostname")))
            .await;
        let err = err.expect_err("no daemon there");
        assert!(
            err.contains("cannot connect to libvirt at qemu+unix"),
            "{err}"
        );
    }
}
