//! A role's long-running background service (the DNS server's listeners, the link to
//! Kahuna), which the agent core supervises: when its future ends, with an error or
//! not, it is started again after a back-off, and `/status` and `/metrics` show it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Report;

type Start = dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync;

/// A named, restartable service. `start` makes a fresh run each time it is called.
pub struct Supervised {
    name: &'static str,
    start: Box<Start>,
    report: Option<Arc<dyn Report>>,
}

impl Supervised {
    /// `start` returns the future of one run; the run should not end, and when it does
    /// (`Err` with the reason, or `Ok`), the supervisor starts another.
    pub fn new<F, Fut>(name: &'static str, start: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            start: Box::new(move || Box::pin(start())),
            report: None,
        }
    }

    /// The service's own figures, shown in `/status` and `/metrics` (see [`Report`]).
    pub fn with_report(mut self, report: Arc<dyn Report>) -> Self {
        self.report = Some(report);
        self
    }

    /// Its report, if it has one.
    pub fn report(&self) -> Option<Arc<dyn Report>> {
        self.report.clone()
    }

    /// Name in logs, `/status` and the `service` label of `/metrics`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One new run of the service.
    pub fn start(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        (self.start)()
    }
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.name)
            .field("report", &self.report.is_some())
            .finish_non_exhaustive()
    }
}
