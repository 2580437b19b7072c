//! Crash-test hooks. `KOWABUNGA_FAILPOINT=<name>` makes the agent kill itself with
//! SIGKILL when it reaches the named point of the apply pipeline, so tests can prove
//! that recovery never leaves a mix of two generations; `<name>:sigterm` sends it
//! SIGTERM there instead (a stop request, as systemd sends at shutdown). Names:
//!
//! - `staged`: the new generation is on disk and `pending` points at it;
//! - `applied:<reconciler>`: that reconciler has applied its plan;
//! - `confirmed`: the health checks passed, nothing committed yet;
//! - `commit`: inside the commit, `previous` moved, `current` not yet.
//!
//! The variable is read once at start; when it is unset this costs one comparison.

use nix::sys::signal::{Signal, raise};

/// Environment variable naming the failpoint to trigger.
pub const ENV: &str = "KOWABUNGA_FAILPOINT";

#[derive(Debug, Clone, Default)]
pub struct Failpoints {
    armed: Option<String>,
}

impl Failpoints {
    /// Read the armed failpoint from the environment.
    pub fn from_env() -> Self {
        Self::armed(std::env::var(ENV).ok().filter(|v| !v.is_empty()))
    }

    /// Arm `spec` (`<name>` or `<name>:sigterm`), or nothing.
    pub fn armed(spec: Option<String>) -> Self {
        Self { armed: spec }
    }

    /// Kill (or stop) the process if `name` is the armed failpoint.
    pub fn hit(&self, name: &str) {
        let Some(armed) = self.armed.as_deref() else {
            return;
        };
        let (point, signal) = match armed.strip_suffix(":sigterm") {
            Some(point) => (point, Signal::SIGTERM),
            None => (armed, Signal::SIGKILL),
        };
        if point == name {
            tracing::warn!("failpoint {name}: sending the agent {signal}");
            // If raise fails the test that armed it sees no signal and fails.
            let _ = raise(signal);
        }
    }
}
