//! Where every outcome goes, whatever brought the document (a pull, a push over RPC, a
//! restore): the journal, the status board, and a report to Kahuna.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::fetch::{FetchError, Fetcher};
use crate::outcome::{Outcome, State};
use crate::status::StatusBoard;

/// Logs, shows and reports outcomes. Cloning shares it.
#[derive(Clone)]
pub struct Recorder {
    board: StatusBoard,
    /// Where reports go; `None` for a role that pulls no document (Kahuna's config API
    /// knows nothing of it): outcomes are then logged and shown only.
    fetcher: Option<Arc<Mutex<Fetcher>>>,
    /// The last outcome whose report did not get through because Kahuna or the network
    /// was away, sent again by [`Recorder::flush`] after the next poll that did: the
    /// restore at boot usually comes before the uplink is up, and it is the report that
    /// tells Kahuna what the node runs after a reboot (an OS update, a rollback).
    pending: Arc<Mutex<Option<Outcome>>>,
}

impl Recorder {
    pub fn new(board: StatusBoard, fetcher: Arc<Mutex<Fetcher>>) -> Self {
        Self {
            board,
            fetcher: Some(fetcher),
            pending: Arc::default(),
        }
    }

    /// Logs and shows outcomes, reports none (a [`crate::role::StateSource::Push`] role).
    pub fn unreported(board: StatusBoard) -> Self {
        Self {
            board,
            fetcher: None,
            pending: Arc::default(),
        }
    }

    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Log, show and report `outcome` (unchanged ones are not reported).
    pub async fn record(&self, outcome: &Outcome) {
        log_outcome(outcome);
        self.board.attempt(outcome);
        if outcome.state == State::Unchanged {
            return;
        }
        // A newer outcome replaces one still waiting to be reported.
        let mut pending = self.pending.lock().await;
        *pending = None;
        self.send(outcome, &mut pending).await;
    }

    /// Report the outcome a transport failure held back, if any (after a poll that
    /// reached the endpoint).
    pub async fn flush(&self) {
        let mut pending = self.pending.lock().await;
        if let Some(outcome) = pending.take() {
            self.send(&outcome, &mut pending).await;
        }
    }

    async fn send(&self, outcome: &Outcome, pending: &mut Option<Outcome>) {
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        match fetcher.lock().await.report(outcome).await {
            Ok(()) => {}
            Err(e) if worth_retrying(&e) => {
                tracing::warn!("reporting \"{outcome}\": {e} (sent again after the next poll)");
                *pending = Some(outcome.clone());
            }
            Err(e) => tracing::warn!("reporting \"{outcome}\": {e}"),
        }
    }
}

/// Kahuna or the network away, not a report Kahuna refused.
fn worth_retrying(e: &FetchError) -> bool {
    match e {
        FetchError::Transport { .. } => true,
        FetchError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// Log an outcome at the level it deserves.
pub fn log_outcome(outcome: &Outcome) {
    match outcome.state {
        State::Applied => tracing::info!("{outcome}"),
        State::Unchanged => tracing::debug!("{outcome}"),
        State::Deferred => tracing::warn!("{outcome}"),
        State::Rejected | State::Reverted => tracing::error!("{outcome}"),
    }
}
