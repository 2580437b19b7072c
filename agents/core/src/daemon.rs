//! The agent's main loop: restore the generation in force, tell systemd it is ready,
//! then poll the config endpoint, hand new documents to the pipeline and report what
//! became of them, until SIGTERM. A poll that brings no new document (or fails)
//! checks the system against the generation in force and corrects drift.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::fetch::{Fetcher, Poll};
use crate::generations::{Source, sha256_hex};
use crate::outcome::{Outcome, State};
use crate::pipeline::{Candidate, Pipeline};
use crate::schedule::Schedule;
use crate::status::StatusBoard;

/// What the loop works with.
pub struct Daemon {
    pipeline: Arc<Mutex<Pipeline>>,
    fetcher: Arc<Mutex<Fetcher>>,
    board: StatusBoard,
    schedule: Schedule,
    /// Fingerprint of the last document handed to the pipeline: not submitted again
    /// while the endpoint keeps serving it (a rejected one, from a server without ETags).
    last_submitted: Mutex<Option<String>>,
}

impl Daemon {
    pub fn new(
        pipeline: Arc<Mutex<Pipeline>>,
        fetcher: Arc<Mutex<Fetcher>>,
        board: StatusBoard,
        schedule: Schedule,
    ) -> Self {
        Self {
            pipeline,
            fetcher,
            board,
            schedule,
            last_submitted: Mutex::new(None),
        }
    }

    /// Poll on another schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Restore, then poll until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.restore().await;
        notify_ready();
        tracing::info!("{} ready", self.board.snapshot().agent);

        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            match self.tick().await {
                Ok(Some(_)) => failures = 0,
                Ok(None) => {
                    failures = 0;
                    self.correct_drift().await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.board.fetch_failed(&error);
                    tracing::warn!("poll failed ({failures} in a row): {error}");
                    // Kahuna out of reach changes nothing: the generation in force holds.
                    self.correct_drift().await;
                }
            }
            let delay = self.schedule.next_delay(failures);
            self.board.next_poll(delay.as_secs_f64());
            if failures > 0 {
                tracing::info!("next poll in {:.1}s", delay.as_secs_f64());
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!("stopping");
    }

    /// Undo an interrupted apply, re-apply the generation in force, report.
    pub async fn restore(&self) {
        let restored = self.pipeline.lock().await.restore().await;
        match restored {
            Ok(Some(outcome)) => self.record(&outcome).await,
            Ok(None) => {}
            Err(e) => tracing::error!("{e}"),
        }
        let current = self.pipeline.lock().await.store().current();
        match current {
            Ok(Some(g)) => self.board.in_force(Some(g.meta.seq), Some(g.meta.version)),
            Ok(None) => tracing::info!("no generation yet: waiting for a document"),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// One poll: fetch, and hand a new document to the pipeline. Returns the outcome
    /// when a document was submitted; `Err` when the endpoint could not be polled.
    pub async fn tick(&self) -> Result<Option<Outcome>, String> {
        let poll = self.fetcher.lock().await.poll().await;
        let fetched = match poll.map_err(|e| e.to_string())? {
            Poll::NotModified => {
                self.board.fetch_ok();
                return Ok(None);
            }
            Poll::NoDocument => {
                self.board.fetch_ok();
                tracing::debug!("the endpoint has no document for this agent yet");
                return Ok(None);
            }
            Poll::Document(fetched) => fetched,
        };
        self.board.fetch_ok();
        let fingerprint = format!(
            "{}:{}",
            sha256_hex(&fetched.bytes),
            sha256_hex(fetched.signature.as_deref().unwrap_or_default())
        );
        {
            let mut last = self.last_submitted.lock().await;
            if last.as_deref() == Some(fingerprint.as_str()) {
                return Ok(None);
            }
            *last = Some(fingerprint);
        }
        let candidate = Candidate {
            bytes: fetched.bytes,
            signature: fetched.signature,
            format: kowabunga_model::Format::Toml,
            source: Source::Pull,
        };
        let outcome = self.pipeline.lock().await.submit(candidate).await;
        self.record(&outcome).await;
        Ok(Some(outcome))
    }

    /// When no new document came (or Kahuna could not be polled): put back what drifted
    /// from the generation in force. (A new document is planned against the system as
    /// it is, so it needs no check.)
    pub async fn correct_drift(&self) {
        match self.pipeline.lock().await.correct_drift().await {
            Ok(corrected) => {
                for reconciler in corrected {
                    tracing::info!("drift corrected: {reconciler}");
                    self.board.drift_corrected(reconciler);
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// Log, show and report an outcome (unchanged ones are not reported).
    async fn record(&self, outcome: &Outcome) {
        log_outcome(outcome);
        self.board.attempt(outcome);
        if outcome.state == State::Unchanged {
            return;
        }
        if let Err(e) = self.fetcher.lock().await.report(outcome).await {
            tracing::warn!("reporting \"{outcome}\": {e}");
        }
    }
}

/// Log an outcome at the level it deserves.
pub fn log_outcome(outcome: &Outcome) {
    match outcome.state {
        State::Applied => tracing::info!("{outcome}"),
        State::Unchanged => tracing::debug!("{outcome}"),
        State::Rejected | State::Reverted => tracing::error!("{outcome}"),
    }
}

/// Tell systemd (Type=notify) that the agent is up. Outside systemd this does nothing.
fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot listen for SIGTERM; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
