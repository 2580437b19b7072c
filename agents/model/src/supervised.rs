//! A role's long-running background service (the DNS server's listeners, the link to
//! Kahuna), which the agent core supervises: when its future ends, with an error or
//! not, it is started again after a back-off, and `/status` and `/metrics` show it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

/// Held by one serving loop of a supervised service (a thread or a task of the DNS or
/// DHCP server): when the loop ends without having been asked to stop (an error it
/// cannot serve past, or a panic unwinding), records `what: reason` in `exit` (the
/// first one wins) and calls `failed` with it, which logs and wakes the supervised run.
pub struct LoopExit {
    what: String,
    stop: Arc<AtomicBool>,
    exit: Arc<Mutex<Option<String>>>,
    failed: Arc<dyn Fn(&str) + Send + Sync>,
    reason: Option<String>,
}

impl LoopExit {
    /// `stop`: set when the loop is asked to stop (its end is then no failure).
    pub fn new(
        what: impl Into<String>,
        stop: &Arc<AtomicBool>,
        exit: &Arc<Mutex<Option<String>>>,
        failed: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        Self {
            what: what.into(),
            stop: Arc::clone(stop),
            exit: Arc::clone(exit),
            failed,
            reason: None,
        }
    }

    /// The loop returned: with `Err`, that is the reason recorded. Takes the guard by
    /// value, so that the loop owns it whole (and drops it when it ends).
    pub fn ended(mut self, result: Result<(), String>) {
        self.reason = result.err();
    }
}

impl Drop for LoopExit {
    fn drop(&mut self) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let reason = self
            .reason
            .take()
            .unwrap_or_else(|| "stopped unexpectedly (panic)".to_owned());
        let message = format!("{}: {reason}", self.what);
        self.exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| message.clone());
        (self.failed)(&message);
    }
}

#[cfg(test)]
mod loop_exit_tests {
    use super::*;

    fn guard(
        stop: &Arc<AtomicBool>,
        exit: &Arc<Mutex<Option<String>>>,
    ) -> (LoopExit, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let failed: Arc<dyn Fn(&str) + Send + Sync> =
            Arc::new(move |m: &str| seen.lock().unwrap().push(m.to_owned()));
        (LoopExit::new("UDP 10.0.0.1:53", stop, exit, failed), calls)
    }

    #[test]
    fn records_the_first_reason_and_calls_back_unless_asked_to_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let exit = Arc::new(Mutex::new(None));
        let (g, calls) = guard(&stop, &exit);
        g.ended(Err("receive: boom".into()));
        assert_eq!(
            exit.lock().unwrap().as_deref(),
            Some("UDP 10.0.0.1:53: receive: boom")
        );
        assert_eq!(*calls.lock().unwrap(), ["UDP 10.0.0.1:53: receive: boom"]);

        // A panic unwinding through the loop drops the guard without a reason.
        let (g, calls) = guard(&stop, &exit);
        let _ = std::thread::spawn(move || {
            let _g = g;
            panic!("bug");
        })
        .join();
        assert_eq!(
            *calls.lock().unwrap(),
            ["UDP 10.0.0.1:53: stopped unexpectedly (panic)"]
        );
        assert_eq!(
            exit.lock().unwrap().as_deref(),
            Some("UDP 10.0.0.1:53: receive: boom")
        );

        // Asked to stop: nothing recorded, nobody woken.
        stop.store(true, Ordering::Relaxed);
        let fresh = Arc::new(Mutex::new(None));
        let (g, calls) = guard(&stop, &fresh);
        g.ended(Err("closed".into()));
        assert!(fresh.lock().unwrap().is_none() && calls.lock().unwrap().is_empty());
    }
}
