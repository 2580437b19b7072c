//! The agent's own view of itself: a status board updated by the daemon, served on a
//! loopback-only HTTP endpoint as JSON (`/status`) and Prometheus text (`/metrics`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::outcome::{Outcome, Reason, State};

/// Default address of the status endpoint.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9721";

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub agent: String,
    pub node: String,
    /// Generation in force and its document version.
    pub generation: Option<u64>,
    pub version: Option<u64>,
    /// Unix seconds of the last attempt that left the wanted generation in force.
    pub last_success: Option<i64>,
    pub last_attempt: Option<Outcome>,
    /// Failed attempts by reason since start.
    pub failures: BTreeMap<Reason, u64>,
    pub fetch_failures: u64,
    pub consecutive_fetch_failures: u32,
    pub last_fetch_error: Option<String>,
    /// Corrections of drift from the generation in force since start, by reconciler.
    pub drift_corrections: BTreeMap<String, u64>,
    /// Seconds until the next poll, as last scheduled.
    pub next_poll_in: Option<f64>,
    pub insecure: bool,
}

/// Shared, updated status.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<Status>>);

impl StatusBoard {
    pub fn new(agent: &str, node: &str, insecure: bool) -> Self {
        Self(Arc::new(Mutex::new(Status {
            agent: agent.to_owned(),
            node: node.to_owned(),
            insecure,
            ..Status::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Status> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> Status {
        self.lock().clone()
    }

    /// Record the generation in force (at start, or after an attempt).
    pub fn in_force(&self, generation: Option<u64>, version: Option<u64>) {
        let mut status = self.lock();
        status.generation = generation;
        status.version = version;
    }

    /// Record an attempt's outcome.
    pub fn attempt(&self, outcome: &Outcome) {
        let mut status = self.lock();
        match outcome.state {
            State::Applied | State::Unchanged => {
                status.last_success = Some(kowabunga_model::Timestamp::now().as_unix_seconds());
                status.generation = outcome.generation.or(status.generation);
                status.version = outcome.version;
            }
            State::Rejected | State::Reverted => {
                let reason = outcome.reason.unwrap_or(Reason::Apply);
                *status.failures.entry(reason).or_default() += 1;
            }
        }
        status.last_attempt = Some(outcome.clone());
    }

    pub fn fetch_ok(&self) {
        let mut status = self.lock();
        status.consecutive_fetch_failures = 0;
        status.last_fetch_error = None;
    }

    pub fn fetch_failed(&self, error: &str) {
        let mut status = self.lock();
        status.fetch_failures += 1;
        status.consecutive_fetch_failures += 1;
        status.last_fetch_error = Some(error.to_owned());
    }

    /// Record that `reconciler` put the generation in force back.
    pub fn drift_corrected(&self, reconciler: &str) {
        *self
            .lock()
            .drift_corrections
            .entry(reconciler.to_owned())
            .or_default() += 1;
    }

    pub fn next_poll(&self, seconds: f64) {
        self.lock().next_poll_in = Some(seconds);
    }

    /// Prometheus text exposition of the status.
    pub fn metrics(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        let agent = &s.agent;
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{{agent=\"{agent}\"{labels}}} {value}");
            }
        };
        metric(
            "kowabunga_agent_generation_version",
            "gauge",
            "Version of the desired-state document in force (0: none).",
            vec![(String::new(), s.version.unwrap_or(0).to_string())],
        );
        metric(
            "kowabunga_agent_generation",
            "gauge",
            "Sequence number of the generation in force (0: none).",
            vec![(String::new(), s.generation.unwrap_or(0).to_string())],
        );
        metric(
            "kowabunga_agent_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful apply or check (0: never).",
            vec![(String::new(), s.last_success.unwrap_or(0).to_string())],
        );
        metric(
            "kowabunga_agent_failures_total",
            "counter",
            "Documents rejected or reverted, by reason.",
            s.failures
                .iter()
                .map(|(reason, n)| (format!(",reason=\"{}\"", reason.as_str()), n.to_string()))
                .collect(),
        );
        metric(
            "kowabunga_agent_drift_corrections_total",
            "counter",
            "Times a reconciler found the system drifted from the generation in force and put it back.",
            s.drift_corrections
                .iter()
                .map(|(r, n)| (format!(",reconciler=\"{r}\""), n.to_string()))
                .collect(),
        );
        metric(
            "kowabunga_agent_fetch_failures_total",
            "counter",
            "Polls of the config endpoint that failed.",
            vec![(String::new(), s.fetch_failures.to_string())],
        );
        out
    }
}

/// Serve the board on `addr` (loopback only) until the task is dropped.
pub async fn serve(board: StatusBoard, addr: SocketAddr) -> Result<(), String> {
    if !addr.ip().is_loopback() {
        return Err(format!(
            "status endpoint {addr}: only loopback addresses are allowed"
        ));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("status endpoint {addr}: {e}"))?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("status endpoint: accept: {e}");
                continue;
            }
        };
        let board = board.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let board = board.clone();
                async move { Ok::<_, Infallible>(respond(&board, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("status endpoint: {e}");
            }
        });
    }
}

fn respond<B>(board: &StatusBoard, req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => match serde_json::to_vec_pretty(&board.snapshot()) {
            Ok(json) => (StatusCode::OK, "application/json", json),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string().into_bytes(),
            ),
        },
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            board.metrics().into_bytes(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            b"try /status or /metrics\n".to_vec(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_failures_by_reason() {
        let board = StatusBoard::new("kiwi", "n1", false);
        board.attempt(&Outcome::applied(3, 1));
        board.attempt(&Outcome::rejected(Some(2), Reason::Replay, "old"));
        board.attempt(&Outcome::rejected(Some(2), Reason::Replay, "old"));
        board.fetch_failed("down");
        let text = board.metrics();
        assert!(
            text.contains("kowabunga_agent_generation_version{agent=\"kiwi\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("kowabunga_agent_failures_total{agent=\"kiwi\",reason=\"replay\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kowabunga_agent_fetch_failures_total{agent=\"kiwi\"} 1"),
            "{text}"
        );
        assert_eq!(board.snapshot().generation, Some(1));
    }
}
