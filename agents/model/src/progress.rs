//! Progress of long steps (a template download, a volume clone), shown in `/status`.
//!
//! A reconciler or RPC method that takes long gets a [`Progress`] handle from its role
//! and sets one line of text per task; the agent core's status board reads them all.
//! Memory only: nothing here is persisted or reported to Kahuna.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Shared map `task -> what it is doing now`. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<BTreeMap<String, String>>>);

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Say what `task` is doing (`"template debian-12: 312 of 640 MiB"`).
    pub fn set(&self, task: &str, what: impl std::fmt::Display) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task.to_owned(), what.to_string());
    }

    /// `task` is over.
    pub fn clear(&self, task: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(task);
    }

    /// Every task in progress, by name.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_shared_between_clones_and_cleared() {
        let progress = Progress::new();
        let reporter = progress.clone();
        reporter.set("template t1", "12 of 64 MiB");
        assert_eq!(
            progress.snapshot().get("template t1").map(String::as_str),
            Some("12 of 64 MiB")
        );
        reporter.clear("template t1");
        assert!(progress.snapshot().is_empty());
    }
}
