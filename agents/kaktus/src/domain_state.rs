//! libvirt domain states and reasons in upstream Kaktus' words (`GetInstanceState`
//! answers `{State: "Running", Reason: "Booted"}`); numbers from `virDomainState` and
//! the per-state `virDomain*Reason` enums.

/// `(State, Reason)` for libvirt's `(state, reason)` pair. An unknown number gives
/// empty strings, as upstream's map lookup does.
pub fn describe(state: u32, reason: i32) -> (&'static str, &'static str) {
    let (name, reasons): (&str, &[&str]) = match state {
        0 => ("No State", &["Unknown"]),
        1 => (
            "Running",
            &[
                "Unknown",
                "Booted",
                "Migrated",
                "Restored",
                "From Snapshot",
                "Unpaused",
                "Migration Cancelled",
                "Save Cancelled",
                "Wake Up",
                "Crashed",
                "Post Copy",
            ],
        ),
        2 => ("Blocked", &["Unknown"]),
        3 => (
            "Paused",
            &[
                "Unknown",
                "User",
                "Migration",
                "Save",
                "Dump",
                "I/O Error",
                "Watchdog",
                "From Snapshot",
                "Shutting Down",
                "Snapshot",
                "Crashed",
                "Starting Up",
                "Post Copy",
                "Post Copy Failed",
            ],
        ),
        4 => ("Shutdown", &["Unknown", "User"]),
        5 => (
            "Shutoff",
            &[
                "Unknown",
                "Shutdown",
                "Destroyed",
                "Crashed",
                "Migrated",
                "Saved",
                "Failed",
                "From Snapshot",
                "Daemon",
            ],
        ),
        6 => ("Crashed", &["Unknown", "Panicked"]),
        7 => ("PM Suspended", &["Unknown"]),
        _ => ("", &[]),
    };
    let reason = usize::try_from(reason)
        .ok()
        .and_then(|r| reasons.get(r))
        .copied()
        .unwrap_or("");
    (name, reason)
}

/// Upstream's `InstanceIsRunning`: running or paused.
pub fn is_running(state: u32) -> bool {
    state == 1 || state == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_states_and_reasons_like_upstream() {
        assert_eq!(describe(1, 1), ("Running", "Booted"));
        assert_eq!(describe(5, 2), ("Shutoff", "Destroyed"));
        assert_eq!(describe(3, 1), ("Paused", "User"));
        assert_eq!(describe(7, 0), ("PM Suspended", "Unknown"));
        assert_eq!(describe(5, 99), ("Shutoff", ""));
        assert_eq!(describe(42, 0), ("", ""));
        assert!(is_running(1) && is_running(3) && !is_running(5) && !is_running(7));
    }
}
