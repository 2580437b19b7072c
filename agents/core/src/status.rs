//! The agent's own view of itself: a status board updated by the daemon, served on a
//! loopback-only HTTP endpoint as JSON (`/status`) and Prometheus text (`/metrics`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::os_image::OsSource;
use kowabunga_model::Report;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::outcome::{Outcome, Reason, State};

/// The status endpoint of a role listening on `port` (loopback only).
pub fn default_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A supervised background service, as last seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    pub running: bool,
    /// Times it was started again after its run ended.
    pub restarts: u64,
    pub last_error: Option<String>,
    /// The service's own figures ([`Report::status`]), when it reports any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

/// A service's [`Report`], read at each request.
#[derive(Clone)]
struct Reporter(Arc<dyn Report>);

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

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
    /// Unix seconds of the last poll the config endpoint answered (the health gate
    /// asks whether it answered during this boot).
    pub last_fetch_ok: Option<i64>,
    /// Corrections of drift from the generation in force since start, by reconciler.
    pub drift_corrections: BTreeMap<String, u64>,
    /// Seconds until the next poll, as last scheduled.
    pub next_poll_in: Option<f64>,
    pub insecure: bool,
    /// The role's background services (DNS server, link to Kahuna...), by name.
    pub services: BTreeMap<String, ServiceStatus>,
    /// The link to Kahuna's RPC: `connecting`, `connected`, `down: <why>`, `stopped`.
    pub kahuna_link: Option<String>,
    /// Long tasks under way (template downloads...), by task.
    pub progress: BTreeMap<String, String>,
    /// The OS image: running version, the other A/B slot, how the node updates (read
    /// at each snapshot: slot labels change under a running agent).
    pub os: Option<crate::os_image::OsImage>,
    #[serde(skip)]
    os_source: Option<OsSource>,
    /// Reconcilers of the role, in order: every metric by reconciler starts at zero.
    #[serde(skip)]
    pub reconcilers: Vec<String>,
    #[serde(skip)]
    progress_source: kowabunga_model::Progress,
    /// Services' reports, by service.
    #[serde(skip)]
    reports: BTreeMap<String, Reporter>,
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

    /// The status now, services' reports read (outside the board's lock).
    pub fn snapshot(&self) -> Status {
        let mut status = self.lock().clone();
        status.progress = status.progress_source.snapshot();
        status.os = status.os_source.as_ref().map(OsSource::read);
        let reports = std::mem::take(&mut status.reports);
        for (name, reporter) in reports {
            status.services.entry(name).or_default().report = Some(reporter.0.status());
        }
        status
    }

    /// Show `report` for service `name` in `/status` and `/metrics`.
    pub fn service_report(&self, name: &str, report: Arc<dyn Report>) {
        self.lock()
            .reports
            .insert(name.to_owned(), Reporter(report));
    }

    /// Show the tasks of `progress` (shared with the role's reconcilers) in `/status`.
    pub fn with_progress(self, progress: kowabunga_model::Progress) -> Self {
        self.lock().progress_source = progress;
        self
    }

    /// Show the OS image the node runs, as `read` gives it at each snapshot and scrape
    /// (`OsImage::read_system`).
    pub fn with_os(self, read: OsSource) -> Self {
        self.lock().os_source = Some(read);
        self
    }

    /// Name the role's reconcilers, so that their counters exist from the first scrape.
    pub fn with_reconcilers(self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.lock().reconcilers = names.into_iter().map(Into::into).collect();
        self
    }

    /// A supervised service (re)started.
    pub fn service_running(&self, name: &str) {
        self.lock()
            .services
            .entry(name.to_owned())
            .or_default()
            .running = true;
    }

    /// A supervised service's run ended; it will be started again.
    pub fn service_failed(&self, name: &str, error: &str) {
        let mut status = self.lock();
        let service = status.services.entry(name.to_owned()).or_default();
        service.running = false;
        service.restarts += 1;
        service.last_error = Some(error.to_owned());
    }

    /// The state of the link to Kahuna's RPC changed.
    pub fn kahuna_link(&self, state: impl Into<String>) {
        self.lock().kahuna_link = Some(state.into());
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
            State::Rejected | State::Reverted | State::Deferred => {
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
        status.last_fetch_ok = Some(kowabunga_model::Timestamp::now().as_unix_seconds());
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
        // Reports are read below, once, for their metrics only.
        let s = self.lock().clone();
        let mut out = String::new();
        let agent = escape_label(&s.agent);
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{{agent=\"{agent}\"{labels}}} {value}");
            }
        };
        let label = |key: &str, value: &str| format!(",{key}=\"{}\"", escape_label(value));
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
            // Every reason from zero, so that rate() and alerts work from the first scrape.
            Reason::ALL
                .iter()
                .map(|reason| {
                    let n = s.failures.get(reason).copied().unwrap_or(0);
                    (label("reason", reason.as_str()), n.to_string())
                })
                .collect(),
        );
        metric(
            "kowabunga_agent_drift_corrections_total",
            "counter",
            "Times a reconciler found the system drifted from the generation in force and put it back.",
            zero_based(&s.reconcilers, &s.drift_corrections)
                .map(|(r, n)| (label("reconciler", r), n.to_string()))
                .collect(),
        );
        metric(
            "kowabunga_agent_fetch_failures_total",
            "counter",
            "Polls of the config endpoint that failed.",
            vec![(String::new(), s.fetch_failures.to_string())],
        );
        metric(
            "kowabunga_agent_service_up",
            "gauge",
            "Whether a supervised background service is running (1) or waiting to restart (0).",
            s.services
                .iter()
                .map(|(name, svc)| (label("service", name), u8::from(svc.running).to_string()))
                .collect(),
        );
        metric(
            "kowabunga_agent_service_restarts_total",
            "counter",
            "Times a supervised background service was started again after its run ended.",
            s.services
                .iter()
                .map(|(name, svc)| (label("service", name), svc.restarts.to_string()))
                .collect(),
        );
        if let Some(os) = s.os_source.as_ref().map(OsSource::read) {
            let other = match &os.other_slot {
                Some(crate::os_image::OtherSlot::Version(v)) => v.as_str(),
                Some(crate::os_image::OtherSlot::Empty) => "empty",
                Some(crate::os_image::OtherSlot::None) | None => "none",
            };
            metric(
                "kowabunga_os_info",
                "gauge",
                "The OS image running (version), how it booted, and the other A/B slot's version.",
                vec![(
                    label("image", os.image_id.as_deref().unwrap_or(""))
                        + &label("version", os.version.as_deref().unwrap_or(""))
                        + &label("boot", os.boot.as_str())
                        + &label("other_slot", other),
                    "1".to_string(),
                )],
            );
            if let Some(update) = &os.update {
                metric(
                    "kowabunga_os_update_info",
                    "gauge",
                    "Where the A/B updater is (state) and the version it is about.",
                    vec![(
                        label("state", update.phase.name())
                            + &label("version", update.phase.version().unwrap_or("")),
                        "1".to_string(),
                    )],
                );
                metric(
                    "kowabunga_os_update_failed_versions",
                    "gauge",
                    "Versions booted on this node and rolled back (never installed again).",
                    vec![(String::new(), update.failed.len().to_string())],
                );
            }
        }
        metric(
            "kowabunga_agent_kahuna_connected",
            "gauge",
            "Whether the RPC link to Kahuna is up.",
            vec![(
                String::new(),
                u8::from(s.kahuna_link.as_deref() == Some("connected")).to_string(),
            )],
        );
        for reporter in s.reports.values() {
            for family in reporter.0.metrics() {
                metric(
                    family.name,
                    family.kind.as_str(),
                    family.help,
                    family
                        .samples
                        .iter()
                        .map(|sample| {
                            let labels: String =
                                sample.labels.iter().map(|(k, v)| label(k, v)).collect();
                            (labels, sample.value.to_string())
                        })
                        .collect(),
                );
            }
        }
        out
    }
}

/// `known` names first (at zero when never counted), then any other counted name.
fn zero_based<'a>(
    known: &'a [String],
    counts: &'a BTreeMap<String, u64>,
) -> impl Iterator<Item = (&'a str, u64)> + 'a {
    let known_iter = known
        .iter()
        .map(|name| (name.as_str(), counts.get(name).copied().unwrap_or(0)));
    let others = counts
        .iter()
        .filter(|(name, _)| !known.contains(name))
        .map(|(name, n)| (name.as_str(), *n));
    known_iter.chain(others)
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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
    fn the_os_image_shows_in_status_and_metrics() {
        use crate::os_image::{Boot, OsImage, OtherSlot};
        let board = StatusBoard::new("kiwi", "n1", false);
        assert!(!board.metrics().contains("kowabunga_os_info"));
        fn updated() -> OsImage {
            OsImage {
                image_id: Some("kowabunga-kiwi".into()),
                version: Some("0.1.1".into()),
                boot: Boot::Disk,
                other_slot: Some(OtherSlot::Version("0.1.0".into())),
                updates: "A/B",
                update: Some(crate::update::UpdateState {
                    phase: crate::update::Phase::RolledBack {
                        version: "0.1.2".into(),
                        running: "0.1.1".into(),
                    },
                    failed: vec!["0.1.2".into()],
                }),
            }
        }
        let board = board.with_os(OsSource::new(updated));
        let text = board.metrics();
        assert!(
            text.contains(
                "kowabunga_os_info{agent=\"kiwi\",image=\"kowabunga-kiwi\",version=\"0.1.1\",boot=\"disk\",other_slot=\"0.1.0\"} 1"
            ),
            "{text}"
        );
        let json = serde_json::to_value(board.snapshot()).unwrap();
        assert_eq!(json["os"]["version"], "0.1.1");
        assert_eq!(json["os"]["other_slot"]["version"], "0.1.0");
        assert_eq!(json["os"]["update"]["state"], "rolled_back");
        assert_eq!(json["os"]["update"]["failed"][0], "0.1.2");
        assert!(
            text.contains(
                "kowabunga_os_update_info{agent=\"kiwi\",state=\"rolled_back\",version=\"0.1.2\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("kowabunga_os_update_failed_versions{agent=\"kiwi\"} 1"),
            "{text}"
        );
    }

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

    #[test]
    fn failure_and_drift_families_start_at_zero() {
        let board = StatusBoard::new("kiwi", "n1", false).with_reconcilers(["network", "dns"]);
        let text = board.metrics();
        for reason in Reason::ALL {
            let line = format!(
                "kowabunga_agent_failures_total{{agent=\"kiwi\",reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        for reconciler in ["network", "dns"] {
            let line = format!(
                "kowabunga_agent_drift_corrections_total{{agent=\"kiwi\",reconciler=\"{reconciler}\"}} 0"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    struct Fake;

    impl Report for Fake {
        fn status(&self) -> serde_json::Value {
            serde_json::json!({ "links": { "eth1": { "acks": 2 } } })
        }

        fn metrics(&self) -> Vec<kowabunga_model::Metric> {
            use kowabunga_model::{Metric, MetricKind, Sample};
            vec![Metric {
                name: "kowabunga_fake_acks_total",
                kind: MetricKind::Counter,
                help: "ACKs sent.",
                samples: vec![Sample::labelled("link", "eth\"1", 2), Sample::plain(5)],
            }]
        }
    }

    /// A service's report is under the service in `/status` and in `/metrics`, with the
    /// agent label and its own labels escaped.
    #[test]
    fn service_reports_show_in_status_and_metrics() {
        let board = StatusBoard::new("kiwi", "n1", false);
        board.service_running("dhcp");
        board.service_report("dhcp", Arc::new(Fake));
        let json = serde_json::to_value(board.snapshot()).unwrap_or_default();
        assert_eq!(
            json["services"]["dhcp"]["report"]["links"]["eth1"]["acks"], 2,
            "{json}"
        );
        assert_eq!(json["services"]["dhcp"]["running"], true, "{json}");
        let text = board.metrics();
        assert!(
            text.contains(
                "# HELP kowabunga_fake_acks_total ACKs sent.\n# TYPE kowabunga_fake_acks_total counter\n\
                 kowabunga_fake_acks_total{agent=\"kiwi\",link=\"eth\\\"1\"} 2\n\
                 kowabunga_fake_acks_total{agent=\"kiwi\"} 5\n"
            ),
            "{text}"
        );
        // A service without a report shows none.
        board.service_running("dns");
        let json = serde_json::to_value(board.snapshot()).unwrap_or_default();
        assert!(json["services"]["dns"].get("report").is_none(), "{json}");
    }

    #[test]
    fn label_values_are_escaped() {
        let board = StatusBoard::new("ki\"wi\\\n", "n1", false);
        board.service_failed("dns \"udp\"", "bind");
        let text = board.metrics();
        assert!(
            text.contains("kowabunga_agent_generation{agent=\"ki\\\"wi\\\\\\n\"} 0"),
            "{text}"
        );
        assert!(text.contains("service=\"dns \\\"udp\\\"\"} 1"), "{text}");
        // Every sample line has balanced quotes: no label value broke out.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let unescaped_quotes = line
                .char_indices()
                .filter(|&(i, c)| c == '"' && (i == 0 || &line[i - 1..i] != "\\"))
                .count();
            assert_eq!(unescaped_quotes % 2, 0, "{line}");
        }
    }
}
