//! The agent core end to end, in process: a fake config endpoint on loopback serves
//! documents signed by the real `minisign` CLI; the daemon pulls, verifies and applies
//! them with a file-writing reconciler, and reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kernel_cmdline::Secret;
use kowabunga_agent::credentials::Credentials;
use kowabunga_agent::daemon::Daemon;
use kowabunga_agent::fetch::{FetchConfig, Fetcher, Poll};
use kowabunga_agent::generations::GenerationStore;
use kowabunga_agent::outcome::{Outcome, Reason, State};
use kowabunga_agent::pipeline::{ConfirmPolicy, Pipeline, Probe};
use kowabunga_agent::record::Recorder;
use kowabunga_agent::schedule::Schedule;
use kowabunga_agent::status::StatusBoard;
use kowabunga_agent::trust::TrustPolicy;
use kowabunga_model::erase;
use support::*;
use tokio::sync::Mutex;

struct Agent {
    daemon: Daemon,
    pipeline: Arc<Mutex<Pipeline>>,
    board: StatusBoard,
    files: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn credentials(kahuna: &FakeKahuna) -> Credentials {
    Credentials {
        kahuna: kernel_cmdline::HttpUrl::parse_base(&kahuna.base_url()).unwrap(),
        agent_id: NODE.into(),
        api_key: Secret::new(API_KEY),
        config_url: None,
        ca_file: None,
    }
}

fn agent(kahuna: &FakeKahuna, trusted: &Key, tweak: impl FnOnce(&mut FetchConfig)) -> Agent {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(trusted.public_file(), keys.join("kahuna.pub")).unwrap();
    let creds = credentials(kahuna);
    // Plain HTTP on loopback; signatures are still required (trust is not insecure).
    let mut config = FetchConfig::new(&creds, "Kiwi", true).unwrap();
    tweak(&mut config);
    let fetcher = Arc::new(Mutex::new(Fetcher::new(config, &creds).unwrap()));
    let store = GenerationStore::open(tmp.path().join("state/kiwi")).unwrap();
    let pipeline = Pipeline::new(
        NODE,
        vec![erase(FilesReconciler::new("files", files.clone()))],
        store,
        TrustPolicy::load(&keys, &[], false).unwrap(),
    )
    .with_confirm(ConfirmPolicy {
        window: Duration::from_millis(300),
        retry_every: Duration::from_millis(50),
    });
    let pipeline = Arc::new(Mutex::new(pipeline));
    let board = StatusBoard::new("kiwi", NODE, false);
    let recorder = Recorder::new(board.clone(), fetcher.clone());
    let daemon = Daemon::new(
        pipeline.clone(),
        fetcher,
        recorder,
        Schedule::with_interval(Duration::from_secs(60)),
    );
    Agent {
        daemon,
        pipeline,
        board,
        files,
        _tmp: tmp,
    }
}

/// A signing key, a fake Kahuna serving v1 (`files` files), and an agent that applied it.
async fn agent_on_v1(tmp: &Path, files: usize) -> (Key, FakeKahuna, Agent) {
    let key = Key::generate(tmp, "k");
    let kahuna = FakeKahuna::start().await;
    let agent = agent(&kahuna, &key, |_| {});
    let v1 = document(1, &files_body("v1", files));
    kahuna.serve(v1.clone(), Some(key.sign(&v1)));
    expect(agent.daemon.tick().await.unwrap(), State::Applied, None);
    (key, kahuna, agent)
}

/// Polls every 40 ms, backing off from 40 ms up to `backoff_max` (±10 %).
fn fast_schedule(backoff_max: Duration) -> Schedule {
    Schedule {
        interval: Duration::from_millis(40),
        backoff_min: Duration::from_millis(40),
        backoff_max,
        jitter: 0.1,
    }
}

impl Agent {
    async fn in_force(&self) -> Option<u64> {
        let pipeline = self.pipeline.lock().await;
        pipeline.store().current().unwrap().map(|g| g.meta.version)
    }
}

fn expect(outcome: Option<Outcome>, state: State, reason: Option<Reason>) -> Outcome {
    let outcome = outcome.expect("a document was submitted");
    assert_eq!(
        (outcome.state, outcome.reason),
        (state, reason),
        "{outcome}"
    );
    outcome
}

#[tokio::test]
async fn signed_documents_apply_and_every_bad_one_is_refused_without_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let trusted = Key::generate(tmp.path(), "trusted");
    let stranger = Key::generate(tmp.path(), "stranger");
    let kahuna = FakeKahuna::start().await;
    let agent = agent(&kahuna, &trusted, |c| c.max_body = 16 * 1024);

    // v1, then v2: applied.
    let v1 = document(1, &files_body("v1", 3));
    kahuna.serve(v1.clone(), Some(trusted.sign(&v1)));
    expect(agent.daemon.tick().await.unwrap(), State::Applied, None);
    assert_eq!(dir_state(&agent.files)["f0"], "v1-0");
    let v2 = document(2, &files_body("v2", 2));
    kahuna.serve(v2.clone(), Some(trusted.sign(&v2)));
    expect(agent.daemon.tick().await.unwrap(), State::Applied, None);
    let good = dir_state(&agent.files);
    assert_eq!(good.len(), 2, "f2 of v1 was removed: {good:?}");
    assert_eq!(agent.in_force().await, Some(2));

    // Unchanged endpoint: a conditional GET answered 304, nothing submitted.
    assert_eq!(agent.daemon.tick().await.unwrap(), None);
    assert!(kahuna.served.lock().unwrap().not_modified >= 1);

    let mut tampered = document(3, &files_body("v3", 2));
    let signature = trusted.sign(&tampered);
    tampered.extend_from_slice(b"[files.entries]\nevil = \"1\"\n");
    let oversized = document(
        3,
        &format!("# {}\n{}", "x".repeat(20_000), files_body("v3", 1)),
    );
    let unknown_key = document(3, "[files]\nentries = {}\nentires = {}\n");
    let cases: Vec<(&str, Vec<u8>, Option<Vec<u8>>, Option<Reason>, &str)> = vec![
        (
            "tampered body",
            tampered,
            Some(signature),
            Some(Reason::Signature),
            "does not verify",
        ),
        (
            "untrusted key",
            document(3, ""),
            None,
            Some(Reason::Signature),
            "does not verify",
        ),
        (
            "replay of v1",
            v1.clone(),
            Some(trusted.sign(&v1)),
            Some(Reason::Replay),
            "not newer than version 2",
        ),
        (
            "expired",
            document_for(NODE, 3, "2026-02-01T00:00:00Z", ""),
            None,
            Some(Reason::Expired),
            "expired",
        ),
        (
            "other node",
            document_for("kiwi-other", 3, "2099-01-01T00:00:00Z", ""),
            None,
            Some(Reason::WrongNode),
            "kiwi-other",
        ),
        (
            "malformed TOML",
            document(3, "[files\n"),
            None,
            Some(Reason::Parse),
            "not valid TOML",
        ),
        (
            "unknown key",
            unknown_key,
            None,
            Some(Reason::Invalid),
            "unknown field `entires`",
        ),
        (
            "unsigned",
            document(3, ""),
            None,
            Some(Reason::Signature),
            "not signed",
        ),
        (
            "oversized",
            oversized,
            None,
            None,
            "larger than 16384 bytes",
        ),
    ];
    for (name, bytes, signature, reason, message) in cases {
        let signature = match (name, signature) {
            ("untrusted key", _) => Some(stranger.sign(&bytes)),
            ("unsigned", _) => None,
            (_, Some(signature)) => Some(signature),
            (_, None) => Some(trusted.sign(&bytes)),
        };
        kahuna.serve(bytes, signature);
        let result = agent.daemon.tick().await;
        match reason {
            Some(reason) => {
                let outcome = expect(result.unwrap(), State::Rejected, Some(reason));
                let error = outcome.error.unwrap();
                assert!(error.contains(message), "{name}: {error}");
            }
            None => {
                let error = result.unwrap_err();
                assert!(error.contains(message), "{name}: {error}");
            }
        }
        assert_eq!(agent.in_force().await, Some(2), "{name}");
        assert_eq!(dir_state(&agent.files), good, "{name} changed the system");
    }

    let reports = kahuna.reports();
    let states: Vec<&str> = reports
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states[..3], ["applied", "applied", "rejected"]);
    assert_eq!(reports.len(), 10, "{reports:?}");
    assert_eq!(reports[4]["version"], 1);
    assert!(reports[4]["error"].as_str().unwrap().contains("replayed"));
    assert_eq!(kahuna.served.lock().unwrap().unauthorized, 0);
    let status = agent.board.snapshot();
    assert_eq!(status.version, Some(2));
    assert_eq!(status.failures[&Reason::Signature], 3);
    assert!(
        status.last_fetch_error.is_none(),
        "a later poll would clear it"
    );
}

#[tokio::test]
async fn failing_reconciler_reverts_to_the_previous_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, kahuna, agent) = agent_on_v1(tmp.path(), 4).await;
    let before = dir_state(&agent.files);

    // Fails in apply after writing half of its files.
    let v2 = document(2, &failing_files_body("v2", 6, "apply"));
    kahuna.serve(v2.clone(), Some(key.sign(&v2)));
    let outcome = expect(
        agent.daemon.tick().await.unwrap(),
        State::Reverted,
        Some(Reason::Apply),
    );
    assert!(outcome.error.unwrap().contains("injected failure"));
    assert_eq!(
        dir_state(&agent.files),
        before,
        "the half-applied v2 was undone"
    );
    assert_eq!(agent.in_force().await, Some(1));

    // Unhealthy during the confirm window.
    let v3 = document(3, &failing_files_body("v3", 2, "check"));
    kahuna.serve(v3.clone(), Some(key.sign(&v3)));
    let outcome = expect(
        agent.daemon.tick().await.unwrap(),
        State::Reverted,
        Some(Reason::Unhealthy),
    );
    assert!(outcome.error.unwrap().contains("injected unhealthy"));
    assert_eq!(dir_state(&agent.files), before);

    let reports = kahuna.reports();
    assert_eq!(reports.last().unwrap()["state"], "reverted");
    assert_eq!(reports.last().unwrap()["version"], 3);
    // A reverted version is consumed: serving it again is a replay.
    let v4 = document(4, &files_body("v4", 1));
    kahuna.serve(v4.clone(), Some(key.sign(&v4)));
    expect(agent.daemon.tick().await.unwrap(), State::Applied, None);
}

struct Unreachable;

impl Probe for Unreachable {
    fn reachable(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async { Err("connection refused".to_owned()) })
    }
}

#[tokio::test]
async fn losing_the_management_path_reverts() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut pipeline = Pipeline::new(
        NODE,
        vec![erase(FilesReconciler::new("files", files.clone()))],
        GenerationStore::open(tmp.path().join("state")).unwrap(),
        TrustPolicy::load(Path::new("/nonexistent"), &[], true).unwrap(),
    )
    .with_confirm(ConfirmPolicy {
        window: Duration::from_millis(200),
        retry_every: Duration::from_millis(20),
    })
    .with_probe(Box::new(Unreachable));
    let candidate = kowabunga_agent::pipeline::Candidate {
        bytes: document(1, &files_body("v1", 2)),
        signature: None,
        format: kowabunga_model::Format::Toml,
        source: kowabunga_agent::generations::Source::Local,
    };
    let outcome = pipeline.submit(candidate).await;
    assert_eq!(
        (outcome.state, outcome.reason),
        (State::Reverted, Some(Reason::Unreachable))
    );
    assert!(
        outcome
            .error
            .unwrap()
            .contains("config endpoint unreachable")
    );
    assert!(
        dir_state(&files).is_empty(),
        "first generation reverted to nothing"
    );
    assert!(pipeline.store().current().unwrap().is_none());
}

/// Resolves once `done` says so; checked every 10 ms of (paused, virtual) time.
async fn until(done: impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deterministic on a loaded machine: the clock is paused (sleeps end when the
/// runtime is idle, in virtual time), the run ends on an event (the n-th poll), and
/// the assertions are on the delays the daemon chose, not on wall-clock gaps.
#[tokio::test]
async fn unreachable_endpoint_keeps_the_generation_and_backs_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (_key, kahuna, agent) = agent_on_v1(tmp.path(), 2).await;
    let before = dir_state(&agent.files);
    tokio::time::pause();

    // Kahuna becomes unavailable (503 to every request); each poll notes when it
    // arrived and which delay the daemon had chosen before it (the status board's
    // `next_poll_in`, set before each sleep).
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let observed = agent.board.clone();
    {
        let mut served = kahuna.served.lock().unwrap();
        served.unavailable = true;
        served.on_request = Some(Arc::new(move || {
            let chosen = observed.snapshot().next_poll_in;
            seen.lock()
                .unwrap()
                .push((tokio::time::Instant::now(), chosen));
        }));
    }
    let Agent {
        daemon,
        pipeline,
        board,
        files,
        _tmp,
    } = agent;
    let daemon = daemon.with_schedule(fast_schedule(Duration::from_secs(10)));
    let polls = 6;
    let counted = arrivals.clone();
    // The first request is the restore's report (503 as well), then the polls.
    daemon
        .run(until(move || counted.lock().unwrap().len() > polls))
        .await;

    let arrivals = arrivals.lock().unwrap()[1..].to_vec();
    assert!(arrivals.len() >= polls, "{arrivals:?}");
    assert_eq!(arrivals[0].1, None, "the first poll follows no back-off");
    // 40 ms, 80, 160, 320, 640 (±10 %): doubled after each failure, where a fixed
    // interval would have stayed at 40 ms.
    let chosen: Vec<f64> = arrivals[1..polls]
        .iter()
        .map(|(_, delay)| delay.expect("a delay was chosen before each later poll"))
        .collect();
    for (i, delay) in chosen.iter().enumerate() {
        let base = 0.040 * f64::from(1u32 << i);
        assert!(
            (base * 0.9..=base * 1.1).contains(delay),
            "delay {i}: {delay} s, expected {base} s ±10 %: {chosen:?}"
        );
    }
    // And the daemon did wait each chosen delay before polling again.
    for (pair, delay) in arrivals[..polls].windows(2).zip(&chosen) {
        let gap = (pair[1].0 - pair[0].0).as_secs_f64();
        assert!(
            gap >= delay - 0.001,
            "gap {gap} s shorter than the delay {delay} s"
        );
    }
    let status = board.snapshot();
    assert!(
        status.consecutive_fetch_failures >= polls as u32,
        "{status:?}"
    );
    assert!(status.last_fetch_error.is_some());
    let current = pipeline.lock().await.store().current().unwrap().unwrap();
    assert_eq!(current.meta.version, 1, "last good generation stays");
    assert_eq!(dir_state(&files), before);
}

#[tokio::test]
async fn drift_from_the_generation_in_force_is_put_back_even_with_kahuna_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (_key, kahuna, agent) = agent_on_v1(tmp.path(), 3).await;
    let good = dir_state(&agent.files);

    // Nothing drifted: nothing to do, nothing counted.
    agent.daemon.correct_drift().await;
    assert!(agent.board.snapshot().drift_corrections.is_empty());

    // Someone edits one file and deletes another behind the agent's back.
    std::fs::write(agent.files.join("f0"), "edited by hand").unwrap();
    std::fs::remove_file(agent.files.join("f1")).unwrap();
    agent.daemon.correct_drift().await;
    assert_eq!(dir_state(&agent.files), good);
    assert_eq!(agent.board.snapshot().drift_corrections["files"], 1);
    assert!(agent.board.metrics().contains(
        "kowabunga_agent_drift_corrections_total{agent=\"kiwi\",reconciler=\"files\"} 1"
    ));

    // Kahuna gone: the daemon's loop still holds the generation in force (a file
    // removed while it runs, after its start-up restore, comes back). Paused clock and
    // event-driven end: the run stops once the file is back, however slow the machine.
    tokio::time::pause();
    kahuna.stop();
    let Agent {
        daemon,
        board,
        files,
        _tmp,
        ..
    } = agent;
    let daemon = daemon.with_schedule(fast_schedule(Duration::from_millis(80)));
    let victim = files.join("f2");
    let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (gone, watched) = (removed.clone(), victim.clone());
    let observed = board.clone();
    tokio::spawn(async move {
        // After the daemon's start-up restore (its first poll has failed).
        until(|| observed.snapshot().consecutive_fetch_failures >= 1).await;
        std::fs::remove_file(&victim).unwrap();
        gone.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    daemon
        .run(until(move || {
            removed.load(std::sync::atomic::Ordering::SeqCst) && watched.exists()
        }))
        .await;
    assert_eq!(dir_state(&files), good);
    let status = board.snapshot();
    assert!(status.consecutive_fetch_failures >= 1, "{status:?}");
    assert_eq!(status.drift_corrections["files"], 2, "{status:?}");
}

/// HTTPS with a pinned CA (`kowabunga.ca_file`), as a Kahuna behind a private CA is
/// reached: trusted when it is that CA, refused before any request when it is another,
/// and a CA file that is not PEM is an error at start.
#[tokio::test]
async fn https_with_a_pinned_ca_and_refusal_of_another() {
    let tmp = tempfile::tempdir().unwrap();
    let key = Key::generate(tmp.path(), "k");
    let pki = kowabunga_testkit::make_pki(tmp.path(), "kahuna");
    let other = kowabunga_testkit::make_pki(tmp.path(), "other");
    let kahuna = FakeKahuna::start_tls(&pki).await;
    assert!(kahuna.base_url().starts_with("https://"));
    let v1 = document(1, &files_body("v1", 1));
    kahuna.serve(v1.clone(), Some(key.sign(&v1)));

    let fetcher = |ca: &Path| {
        let creds = Credentials {
            ca_file: Some(ca.to_owned()),
            ..credentials(&kahuna)
        };
        // insecure = false: HTTPS only, certificates checked.
        let config = FetchConfig::new(&creds, "Kiwi", false).unwrap();
        Fetcher::new(config, &creds)
    };

    let mut pinned = fetcher(&pki.ca).unwrap();
    match pinned.poll().await.unwrap() {
        Poll::Document(fetched) => assert_eq!(fetched.bytes, v1),
        _ => panic!("no document over HTTPS"),
    }

    let before = kahuna.served.lock().unwrap().gets;
    let mut wrong = fetcher(&other.ca).unwrap();
    let err = wrong.poll().await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(
        kahuna.served.lock().unwrap().gets,
        before,
        "a request reached a server the pinned CA does not vouch for"
    );

    let bogus = tmp.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let err = fetcher(&bogus)
        .err()
        .expect("a CA file without PEM is refused");
    assert!(err.to_string().contains("bogus.pem"), "{err}");
}

/// The restore at boot comes before the uplink is up: its report fails, and it is the
/// report that tells Kahuna what the node runs after a reboot (an OS update, a
/// rollback). It is sent again once a poll gets through, not lost.
#[tokio::test]
async fn a_report_that_could_not_be_sent_is_sent_after_the_next_poll_that_gets_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (_key, kahuna, agent) = agent_on_v1(tmp.path(), 1).await;
    let reported = kahuna.reports().len();
    tokio::time::pause();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let mut served = kahuna.served.lock().unwrap();
        served.unavailable = true;
        let counted = requests.clone();
        served.on_request = Some(Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    let daemon = agent
        .daemon
        .with_schedule(fast_schedule(Duration::from_secs(1)));
    let seen = requests.clone();
    let served = kahuna.served.clone();
    daemon
        .run(until(move || {
            let mut served = served.lock().unwrap();
            // The restore's report and two polls failed: Kahuna comes back.
            if seen.load(std::sync::atomic::Ordering::SeqCst) >= 3 {
                served.unavailable = false;
            }
            served.reports.len() > reported
        }))
        .await;
    let reports = kahuna.reports();
    assert_eq!(reports.len(), reported + 1, "{reports:?}");
    let last = reports.last().unwrap();
    assert_eq!(last["version"], 1, "{last}");
    assert_eq!(last["state"], "applied", "{last}");
}
