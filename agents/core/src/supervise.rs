//! Supervision of a role's background services: a service whose run ends (an error, a
//! panic, or a plain return) is started again after a back-off, and the status board
//! shows each service's state and restart count.

use std::time::Duration;

use kowabunga_backoff::Backoff;
use kowabunga_model::Supervised;
use tokio::time::Instant;

use crate::status::StatusBoard;

/// Restart delays: 1 s doubling up to 60 s, back to 1 s once a run has held 60 s.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub min: Duration,
    pub max: Duration,
    /// A run that lasted this long resets the back-off.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// Run `service` forever, restarting it whenever its run ends.
pub async fn supervise(service: Supervised, board: StatusBoard, policy: RestartPolicy) {
    let name = service.name();
    if let Some(report) = service.report() {
        board.service_report(name, report);
    }
    let mut backoff = Backoff::new(policy.min, policy.max);
    loop {
        board.service_running(name);
        let started = Instant::now();
        // A run of its own task: a panic ends the run, not the supervisor.
        let ended = match tokio::spawn(service.start()).await {
            Ok(Ok(())) => "ended".to_owned(),
            Ok(Err(error)) => error,
            Err(join) => format!("panicked: {join}"),
        };
        if started.elapsed() >= policy.healthy_after {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::error!(
            "service {name} stopped: {ended}; restarting in {:.1}s",
            delay.as_secs_f64()
        );
        board.service_failed(name, &ended);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A service that fails on its first two runs and then holds: restarted twice,
    /// shown running with the last error kept.
    #[tokio::test(start_paused = true)]
    async fn a_failing_service_is_restarted_and_shown() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let service = Supervised::new("echo", move || {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 2 {
                    Err(format!("bind failed (run {run})"))
                } else {
                    std::future::pending().await
                }
            }
        });
        let board = StatusBoard::new("kiwi", "n1", false);
        tokio::spawn(supervise(service, board.clone(), RestartPolicy::default()));
        // Paused time: sleeps complete as soon as every task is idle.
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::task::yield_now().await;
        let status = board.snapshot();
        let echo = &status.services["echo"];
        assert_eq!(echo.restarts, 2);
        assert!(echo.running);
        assert_eq!(echo.last_error.as_deref(), Some("bind failed (run 1)"));
        assert!(
            board.metrics().contains(
                "kowabunga_agent_service_restarts_total{agent=\"kiwi\",service=\"echo\"} 2"
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_service_is_restarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let service = Supervised::new("boom", move || {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if run == 0 {
                    panic!("boom");
                }
                std::future::pending().await
            }
        });
        let board = StatusBoard::new("kiwi", "n1", false);
        tokio::spawn(supervise(service, board.clone(), RestartPolicy::default()));
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::task::yield_now().await;
        let status = board.snapshot();
        assert_eq!(status.services["boom"].restarts, 1);
        assert!(
            status.services["boom"]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("panicked")
        );
    }
}
