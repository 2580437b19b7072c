//! Where every outcome goes, whatever brought the document (a pull, a push over RPC, a
//! restore): the journal, the status board, and a report to Kahuna.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::fetch::Fetcher;
use crate::outcome::{Outcome, State};
use crate::status::StatusBoard;

/// Logs, shows and reports outcomes. Cloning shares it.
#[derive(Clone)]
pub struct Recorder {
    board: StatusBoard,
    /// Where reports go; `None` for a role that pulls no document (Kahuna's config API
    /// knows nothing of it): outcomes are then logged and shown only.
    fetcher: Option<Arc<Mutex<Fetcher>>>,
}

impl Recorder {
    pub fn new(board: StatusBoard, fetcher: Arc<Mutex<Fetcher>>) -> Self {
        Self {
            board,
            fetcher: Some(fetcher),
        }
    }

    /// Logs and shows outcomes, reports none (a [`crate::role::StateSource::Push`] role).
    pub fn unreported(board: StatusBoard) -> Self {
        Self {
            board,
            fetcher: None,
        }
    }

    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Log, show and report `outcome` (unchanged ones are not reported).
    pub async fn record(&self, outcome: &Outcome) {
        log_outcome(outcome);
        self.board.attempt(outcome);
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        if outcome.state == State::Unchanged {
            return;
        }
        if let Err(e) = fetcher.lock().await.report(outcome).await {
            tracing::warn!("reporting \"{outcome}\": {e}");
        }
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
