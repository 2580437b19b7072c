//! The helper's one libvirt connection: opened on first use, reopened after libvirt
//! reports it dead (a daemon restart).

use std::sync::{Arc, Mutex, PoisonError};

use virt::connect::Connect;

pub struct Connection {
    uri: String,
    open: Mutex<Option<Arc<Conn>>>,
}

/// One open connection; closed when the last user drops it (virt's `Connect` does not
/// close itself).
pub struct Conn(Connect);

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

impl Connection {
    pub fn new(uri: &str) -> Self {
        // libvirt prints every error on stderr by default; ours carry them, with context.
        virt::error::clear_error_callback();
        Self {
            uri: uri.to_owned(),
            open: Mutex::new(None),
        }
    }

    /// Run `job` with the connection. `Err` carries a message naming what failed.
    pub fn run<T>(&self, job: impl FnOnce(&Connect) -> Result<T, String>) -> Result<T, String> {
        let conn = self.connection()?;
        let result = job(&conn.0);
        if result.is_err() && !conn.0.is_alive().unwrap_or(false) {
            // The daemon went away: the next request opens a fresh connection.
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            if open.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                *open = None;
            }
        }
        result
    }

    fn connection(&self) -> Result<Arc<Conn>, String> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = open.as_ref() {
            return Ok(Arc::clone(conn));
        }
        let conn = Connect::open(Some(&self.uri))
            .map_err(|e| format!("cannot connect to libvirt at {}: {}", self.uri, e.message()))?;
        let conn = Arc::new(Conn(conn));
        *open = Some(Arc::clone(&conn));
        Ok(conn)
    }
}
