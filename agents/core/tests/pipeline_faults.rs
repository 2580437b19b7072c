//! Faults that are not the document's: a stop request mid-apply, a system that cannot
//! be read for a moment, an apply that hangs, a slow disk. Each must end in a whole
//! generation, never consume a good version, and never block the runtime thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kernel_cmdline::Secret;
use kowabunga_agent::credentials::Credentials;
use kowabunga_agent::daemon::Daemon;
use kowabunga_agent::fetch::{FetchConfig, Fetcher};
use kowabunga_agent::generations::{GenerationStore, Source};
use kowabunga_agent::outcome::{Reason, State};
use kowabunga_agent::pipeline::{Candidate, ConfirmPolicy, Pipeline};
use kowabunga_agent::push::PipelinePusher;
use kowabunga_agent::record::Recorder;
use kowabunga_agent::schedule::Schedule;
use kowabunga_agent::status::StatusBoard;
use kowabunga_agent::trust::TrustPolicy;
use kowabunga_model::{Document, Format, Planned, Pusher, ReconcileError, Reconciler, erase};
use support::*;
use tokio::sync::{Mutex, watch};

/// A reconciler whose observation fails while `broken` is set, whose health check
/// passes only while `healthy` is set, and whose apply takes `apply_takes` (beyond its
/// 1 s deadline when long).
#[derive(Clone)]
struct Gate {
    broken: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    apply_takes: Duration,
    applied: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Gate {
    fn new() -> Self {
        Self {
            broken: Arc::new(AtomicBool::new(false)),
            healthy: Arc::new(AtomicBool::new(true)),
            apply_takes: Duration::ZERO,
            applied: Arc::default(),
        }
    }
}

impl Reconciler for Gate {
    type Plan = u64;

    fn name(&self) -> &'static str {
        "gate"
    }

    fn apply_deadline(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<u64>, ReconcileError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(ReconcileError::observe("netlink: EBUSY (injected)"));
        }
        Ok(Planned::nothing(desired.header.version))
    }

    async fn apply(&self, version: u64) -> Result<(), ReconcileError> {
        tokio::time::sleep(self.apply_takes).await;
        self.applied.lock().unwrap().push(version);
        Ok(())
    }

    async fn check(&self, _desired: &Document) -> Result<(), ReconcileError> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ReconcileError::unhealthy("not healthy yet (injected)"))
        }
    }
}

fn local(version: u64, tag: &str) -> Candidate {
    Candidate {
        bytes: document(version, &files_body(tag, 2)),
        signature: None,
        format: Format::Toml,
        source: Source::Local,
    }
}

fn pipeline(dir: &std::path::Path, gate: &Gate) -> Pipeline {
    Pipeline::new(
        NODE,
        vec![
            erase(FilesReconciler::new("files", dir.join("files"))),
            erase(gate.clone()),
        ],
        GenerationStore::open(dir.join("state")).unwrap(),
        TrustPolicy::load(std::path::Path::new("/nonexistent"), &[], true).unwrap(),
    )
    .with_confirm(ConfirmPolicy {
        window: Duration::from_secs(90),
        retry_every: Duration::from_secs(2),
    })
}

fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("files")).unwrap();
    tmp
}

/// A stop during the confirm window ends the wait at once: the system goes back to the
/// generation in force, the outcome is deferred (not reverted), and after a restart the
/// very same version applies. Before the fix the stop was only seen between polls: the
/// window ran out and the version was used up.
#[tokio::test(start_paused = true)]
async fn a_stop_during_the_confirm_window_keeps_the_version_applicable() {
    let tmp = scratch();
    let gate = Gate::new();
    let mut first = pipeline(tmp.path(), &gate);
    let outcome = first.submit(local(1, "v1")).await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    let v1_files = dir_state(&tmp.path().join("files"));

    gate.healthy.store(false, Ordering::SeqCst);
    let (stop, stop_rx) = watch::channel(false);
    first.set_shutdown(stop_rx);
    let attempt = tokio::spawn(async move { (first.submit(local(2, "v2")).await, first) });
    // Virtual time: the confirm window (90 s) is open and failing its checks.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!attempt.is_finished());
    let stopped_at = tokio::time::Instant::now();
    stop.send(true).unwrap();
    let (outcome, first) = attempt.await.unwrap();
    assert_eq!(outcome.state, State::Deferred, "{outcome}");
    assert_eq!(outcome.reason, Some(Reason::Shutdown), "{outcome}");
    // Ended by the stop, not by the window (virtual time: exact).
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    assert_eq!(dir_state(&tmp.path().join("files")), v1_files);
    assert_eq!(first.store().current().unwrap().unwrap().meta.version, 1);
    assert_eq!(first.store().pointer("pending").unwrap(), None);
    drop(first);

    // Restart: the same document applies.
    gate.healthy.store(true, Ordering::SeqCst);
    let mut restarted = pipeline(tmp.path(), &gate);
    assert!(restarted.restore().await.unwrap().is_none());
    let outcome = restarted.submit(local(2, "v2")).await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    assert!(
        dir_state(&tmp.path().join("files"))
            .values()
            .all(|v| v.starts_with("v2"))
    );
}

/// A stop that arrives while planning ends the attempt before anything is staged.
#[tokio::test(start_paused = true)]
async fn a_stop_before_apply_changes_nothing() {
    let tmp = scratch();
    let gate = Gate::new();
    let mut agent = pipeline(tmp.path(), &gate);
    let (stop, stop_rx) = watch::channel(false);
    agent.set_shutdown(stop_rx);
    stop.send(true).unwrap();
    let outcome = agent.submit(local(1, "v1")).await;
    assert_eq!(outcome.state, State::Deferred, "{outcome}");
    assert!(dir_state(&tmp.path().join("files")).is_empty());
    assert_eq!(agent.store().highest_version().unwrap(), 0);
}

/// An apply that does not finish within its reconciler's deadline is a failed apply:
/// reverted, never a hang.
#[tokio::test(start_paused = true)]
async fn an_apply_past_its_deadline_is_reverted() {
    let tmp = scratch();
    let mut gate = Gate::new();
    let mut agent = pipeline(tmp.path(), &gate);
    assert_eq!(agent.submit(local(1, "v1")).await.state, State::Applied);
    drop(agent);
    gate.apply_takes = Duration::from_secs(3600);
    let mut agent = pipeline(tmp.path(), &gate);
    let outcome = agent.submit(local(2, "v2")).await;
    assert_eq!(outcome.state, State::Reverted, "{outcome}");
    assert_eq!(outcome.reason, Some(Reason::Apply), "{outcome}");
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("did not finish within 1s"),
        "{outcome}"
    );
    assert_eq!(agent.store().current().unwrap().unwrap().meta.version, 1);
}

/// A plan that fails because the system could not be read is deferred: nothing is used
/// up, and the daemon submits the same document again at the next poll (the server
/// answers 304 by then) until it applies. Before the fix it was rejected and never
/// retried until a restart.
#[tokio::test]
async fn a_transient_observe_failure_is_retried_until_it_applies() {
    let tmp = scratch();
    let key = Key::generate(tmp.path(), "k");
    let kahuna = FakeKahuna::start().await;
    let gate = Gate::new();
    let (daemon, _pipeline) = daemon(tmp.path(), &kahuna, &key, &gate);
    let v1 = document(1, &files_body("v1", 2));
    kahuna.serve(v1.clone(), Some(key.sign(&v1)));

    gate.broken.store(true, Ordering::SeqCst);
    let outcome = daemon
        .tick()
        .await
        .unwrap()
        .expect("a document was submitted");
    assert_eq!(outcome.state, State::Deferred, "{outcome}");
    assert_eq!(outcome.reason, Some(Reason::Observe), "{outcome}");
    assert!(dir_state(&tmp.path().join("files")).is_empty());

    gate.broken.store(false, Ordering::SeqCst);
    let outcome = daemon.tick().await.unwrap().expect("submitted again");
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    assert_eq!(dir_state(&tmp.path().join("files")).len(), 2);
    let reports = kahuna.reports();
    let states: Vec<&str> = reports.iter().filter_map(|r| r["state"].as_str()).collect();
    assert_eq!(states, ["deferred", "applied"]);
}

/// State pushed over RPC goes through the pipeline and is reported to Kahuna like a
/// pulled document. Before the fix only pulled documents were reported.
#[tokio::test]
async fn pushed_state_is_reported_like_pulled_state() {
    let tmp = scratch();
    let key = Key::generate(tmp.path(), "k");
    let kahuna = FakeKahuna::start().await;
    let gate = Gate::new();
    let (daemon, pipeline) = daemon(tmp.path(), &kahuna, &key, &gate);
    let v1 = document(1, &files_body("v1", 1));
    kahuna.serve(v1.clone(), Some(key.sign(&v1)));
    assert_eq!(daemon.tick().await.unwrap().unwrap().state, State::Applied);
    let board = StatusBoard::new("kiwi", NODE, false);
    let recorder = Recorder::new(board.clone(), daemon_fetcher(&kahuna));
    let pusher = PipelinePusher::new(pipeline.clone(), recorder);
    let table: toml::Table = toml::from_str("answer = 42").unwrap();
    pusher.push("extra", table).await.unwrap();

    let reports = kahuna.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[1]["state"], "applied");
    assert_eq!(reports[1]["generation"], 2);
    assert_eq!(board.snapshot().generation, Some(2));
}

/// The store's writes and fsyncs run on the blocking pool: while one is under way, the
/// runtime thread (which also carries the RPC keepalive and DNS over TCP) keeps running
/// other tasks. The hook blocks inside the store until a task on the (single-threaded)
/// runtime has run, for at most 10 s; before the fix that task could not run.
#[tokio::test(flavor = "current_thread")]
async fn store_writes_leave_the_runtime_thread_free() {
    let tmp = scratch();
    let gate = Gate::new();
    let ran = Arc::new(AtomicBool::new(false));
    let seen_during_write = Arc::new(AtomicBool::new(false));
    let (ran_hook, seen) = (ran.clone(), seen_during_write.clone());
    let hook = Arc::new(move |op: &'static str| {
        if op != "stage" {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if ran_hook.load(Ordering::SeqCst) {
                seen.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut agent = pipeline(tmp.path(), &gate).with_store_hook(hook);
    let ran_task = ran.clone();
    let other_task = tokio::spawn(async move {
        // Runs only when the runtime thread is free.
        ran_task.store(true, Ordering::SeqCst);
    });
    let outcome = agent.submit(local(1, "v1")).await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    other_task.await.unwrap();
    assert!(
        seen_during_write.load(Ordering::SeqCst),
        "the runtime thread was blocked while the generation was being written"
    );
}

/// The daemon loop pings systemd's watchdog (`WATCHDOG=1` on `$NOTIFY_SOCKET`) when
/// the unit sets `WatchdogSec=`, so that a wedged agent is restarted. Before the fix it
/// never pinged.
#[tokio::test]
#[allow(unsafe_code)]
async fn the_main_loop_feeds_the_watchdog() {
    let tmp = scratch();
    let socket_path = tmp.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // SAFETY: the only test of this binary that reads these variables; the others
    // ignore a notify socket.
    unsafe {
        std::env::set_var("NOTIFY_SOCKET", &socket_path);
        std::env::set_var("WATCHDOG_USEC", "200000");
    }
    let key = Key::generate(tmp.path(), "k");
    let kahuna = FakeKahuna::start().await;
    let gate = Gate::new();
    let (daemon, _pipeline) = daemon(tmp.path(), &kahuna, &key, &gate);
    let (stop, mut stop_rx) = watch::channel(false);
    let running = tokio::spawn(daemon.run(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let received = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        // A ping from the poll loop: after READY=1.
        let pinged_after_ready = |seen: &[String]| {
            seen.iter()
                .skip_while(|m| !m.contains("READY=1"))
                .any(|m| m.contains("WATCHDOG=1"))
        };
        while !pinged_after_ready(&seen) {
            let Ok(n) = socket.recv(&mut buf) else { break };
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    running.await.unwrap();
    assert!(
        received.iter().any(|m| m.contains("READY=1")),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .skip_while(|m| !m.contains("READY=1"))
            .any(|m| m.contains("WATCHDOG=1")),
        "no watchdog ping from the poll loop within 10 s: {received:?}"
    );
}

fn daemon_fetcher(kahuna: &FakeKahuna) -> Arc<Mutex<Fetcher>> {
    let creds = Credentials {
        kahuna: kernel_cmdline::HttpUrl::parse_base(&kahuna.base_url()).unwrap(),
        agent_id: NODE.into(),
        api_key: Secret::new(API_KEY),
        config_url: None,
        ca_file: None,
    };
    let config = FetchConfig::new(&creds, "Kiwi", true).unwrap();
    Arc::new(Mutex::new(Fetcher::new(config, &creds).unwrap()))
}

fn daemon(
    dir: &std::path::Path,
    kahuna: &FakeKahuna,
    key: &Key,
    gate: &Gate,
) -> (Daemon, Arc<Mutex<Pipeline>>) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(key.public_file(), keys.join("kahuna.pub")).unwrap();
    let fetcher = daemon_fetcher(kahuna);
    let pipeline = Pipeline::new(
        NODE,
        vec![
            erase(FilesReconciler::new("files", dir.join("files"))),
            erase(gate.clone()),
        ],
        GenerationStore::open(dir.join("state")).unwrap(),
        TrustPolicy::load(&keys, &[], false).unwrap(),
    )
    .with_confirm(ConfirmPolicy {
        window: Duration::from_millis(300),
        retry_every: Duration::from_millis(50),
    });
    let pipeline = Arc::new(Mutex::new(pipeline));
    let recorder = Recorder::new(StatusBoard::new("kiwi", NODE, false), fetcher.clone());
    let daemon = Daemon::new(
        pipeline.clone(),
        fetcher,
        recorder,
        Schedule::with_interval(Duration::from_secs(60)),
    );
    (daemon, pipeline)
}
