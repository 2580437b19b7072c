//! The agent's main loop: restore the generation in force, tell systemd it is ready,
//! then poll the config endpoint, hand new documents to the pipeline and report what
//! became of them, until SIGTERM. A poll that brings no new document (or fails)
//! checks the system against the generation in force and corrects drift.
//!
//! The loop also feeds systemd's watchdog (`WatchdogSec=` in the unit): pings go out
//! only while the loop's own future is being polled, so an agent whose runtime thread
//! is wedged stops pinging and is restarted. Every step the loop awaits is bounded
//! (request timeouts, plan and apply deadlines, the confirm window).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::fetch::{Fetcher, Poll};
use crate::generations::{Source, sha256_hex};
use crate::outcome::{Outcome, State};
use crate::pipeline::{Candidate, Pipeline};
use crate::record::Recorder;
use crate::schedule::Schedule;
use crate::status::StatusBoard;

/// What the loop works with.
pub struct Daemon {
    pipeline: Arc<Mutex<Pipeline>>,
    /// `None` for a role that pulls nothing: the loop then only corrects drift.
    fetcher: Option<Arc<Mutex<Fetcher>>>,
    recorder: Recorder,
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
        recorder: Recorder,
        schedule: Schedule,
    ) -> Self {
        Self {
            pipeline,
            fetcher: Some(fetcher),
            board: recorder.board().clone(),
            recorder,
            schedule,
            last_submitted: Mutex::new(None),
        }
    }

    /// The loop of a role that pulls no document (its state is pushed): restore, then
    /// check for drift every `schedule` period, feeding the watchdog.
    pub fn without_pull(
        pipeline: Arc<Mutex<Pipeline>>,
        recorder: Recorder,
        schedule: Schedule,
    ) -> Self {
        Self {
            pipeline,
            fetcher: None,
            board: recorder.board().clone(),
            recorder,
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
        let watchdog = Watchdog::from_env();
        watchdog.guard(self.restore()).await;
        notify_ready();
        tracing::info!("{} ready", self.board.snapshot().agent);

        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            // A stop request ends a fetch at once, but never a pipeline run: that sees
            // the same request and ends in a whole generation (`Pipeline::set_shutdown`).
            let fetched = tokio::select! {
                fetched = watchdog.guard(self.fetch()) => fetched,
                () = &mut shutdown => break,
            };
            let ticked = match fetched {
                Ok(Some(candidate)) => Ok(Some(watchdog.guard(self.submit(candidate)).await)),
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            };
            match ticked {
                // A deferred document is tried again after a back-off.
                Ok(Some(outcome)) if outcome.state == State::Deferred => {
                    failures = failures.saturating_add(1);
                }
                Ok(Some(_)) => failures = 0,
                Ok(None) => {
                    failures = 0;
                    watchdog.guard(self.recorder.flush()).await;
                    watchdog.guard(self.correct_drift()).await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.board.fetch_failed(&error);
                    tracing::warn!("poll failed ({failures} in a row): {error}");
                    // Kahuna out of reach changes nothing: the generation in force holds.
                    watchdog.guard(self.correct_drift()).await;
                }
            }
            let delay = self.schedule.next_delay(failures);
            self.board.next_poll(delay.as_secs_f64());
            if failures > 0 {
                tracing::info!("next poll in {:.1}s", delay.as_secs_f64());
            }
            tokio::select! {
                () = watchdog.guard(tokio::time::sleep(delay)) => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!("stopping");
    }

    /// Make the next poll fetch and submit the document again, even if unchanged.
    async fn forget_submitted(&self) {
        *self.last_submitted.lock().await = None;
        if let Some(fetcher) = &self.fetcher {
            fetcher.lock().await.forget_etag();
        }
    }

    /// Undo an interrupted apply, re-apply the generation in force, report.
    ///
    /// Kahuna hears of the restore: the interrupted apply's outcome if there was one,
    /// else the generation in force, applied again (`applied`, its version). That report
    /// says what the node runs after a reboot (its `os`: an update booted, a rollback);
    /// made before the uplink is up, it is sent after the first poll that gets through.
    pub async fn restore(&self) {
        let restored = self.pipeline.lock().await.restore().await;
        let reported = match restored {
            Ok(Some(outcome)) => {
                self.record(&outcome).await;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!("{e}");
                true
            }
        };
        let current = self.pipeline.lock().await.store().current();
        match current {
            Ok(Some(g)) => {
                self.board.in_force(Some(g.meta.seq), Some(g.meta.version));
                if !reported {
                    self.record(&Outcome::applied(g.meta.version, g.meta.seq))
                        .await;
                }
            }
            Ok(None) => tracing::info!("no generation yet: waiting for a document"),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// One poll: fetch, and hand a new document to the pipeline. Returns the outcome
    /// when a document was submitted; `Err` when the endpoint could not be polled.
    pub async fn tick(&self) -> Result<Option<Outcome>, String> {
        match self.fetch().await? {
            Some(candidate) => Ok(Some(self.submit(candidate).await)),
            None => Ok(None),
        }
    }

    /// Poll the endpoint: a document not yet handed to the pipeline, if any.
    async fn fetch(&self) -> Result<Option<Candidate>, String> {
        let Some(fetcher) = &self.fetcher else {
            return Ok(None);
        };
        let poll = fetcher.lock().await.poll().await;
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
        Ok(Some(Candidate {
            bytes: fetched.bytes,
            signature: fetched.signature,
            format: kowabunga_model::Format::Toml,
            source: Source::Pull,
        }))
    }

    /// Hand a pulled document to the pipeline and record the outcome. A deferred one
    /// is fetched and submitted again at the next poll, even if the server says it did
    /// not change.
    async fn submit(&self, candidate: Candidate) -> Outcome {
        let outcome = self.pipeline.lock().await.submit(candidate).await;
        self.record(&outcome).await;
        if outcome.state == State::Deferred {
            self.forget_submitted().await;
        }
        outcome
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

    async fn record(&self, outcome: &Outcome) {
        self.recorder.record(outcome).await;
    }
}

/// Pings systemd's watchdog while a future is being polled, when the unit set one.
struct Watchdog {
    period: Option<Duration>,
}

impl Watchdog {
    fn from_env() -> Self {
        let period = sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
        if let Some(period) = period {
            tracing::debug!("watchdog: pinging every {:.1}s", period.as_secs_f64());
        }
        Self { period }
    }

    /// Run `work`, pinging every half watchdog period while it is polled.
    async fn guard<T>(&self, work: impl Future<Output = T>) -> T {
        let Some(period) = self.period else {
            return work.await;
        };
        tokio::pin!(work);
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                        tracing::warn!("sd_notify WATCHDOG=1: {e}");
                    }
                }
            }
        }
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
