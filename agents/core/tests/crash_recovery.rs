//! SIGKILL between the stages of an apply (failpoints), then a restart: the system is
//! on the old generation or the new one, never a mix. The agent is this test binary
//! re-executed: `agent_child` does the work when `CHILD_DIR` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use kowabunga_agent::generations::{GenerationStore, Source};
use kowabunga_agent::outcome::State;
use kowabunga_agent::pipeline::{Candidate, ConfirmPolicy, Pipeline};
use kowabunga_agent::trust::TrustPolicy;
use kowabunga_model::{Format, erase};
use support::*;

const CHILD_DIR: &str = "KOWABUNGA_TEST_CHILD_DIR";
const STOP_CHILD_DIR: &str = "KOWABUNGA_TEST_STOP_CHILD_DIR";
/// `healthy` or `unhealthy`: whether the child's v2 passes its checks (an unhealthy one
/// keeps the confirm window open, as a system still converging does).
const STOP_CHILD_V2: &str = "KOWABUNGA_TEST_STOP_CHILD_V2";

/// Two reconcilers, so a crash between them leaves the system half old, half new.
fn pipeline(dir: &Path) -> Pipeline {
    Pipeline::new(
        NODE,
        vec![
            erase(FilesReconciler::new("files", dir.join("files"))),
            erase(FilesReconciler::new("more", dir.join("more"))),
        ],
        GenerationStore::open(dir.join("state")).unwrap(),
        TrustPolicy::load(Path::new("/nonexistent"), &[], true).unwrap(),
    )
}

fn candidate(version: u64, tag: &str) -> Candidate {
    let body = format!(
        "{}{}",
        section_body("files", tag, 4),
        section_body("more", tag, 4)
    );
    Candidate {
        bytes: document(version, &body),
        signature: None,
        format: Format::Toml,
        source: Source::Local,
    }
}

/// Version 2 whose `more` check fails (the confirm window stays open), or passes.
fn candidate_v2(healthy: bool) -> Candidate {
    let more = if healthy {
        section_body("more", "v2", 4)
    } else {
        format!(
            "[more]\nfail = \"check\"\n{}",
            section_body("more", "v2", 4)
        )
    };
    Candidate {
        bytes: document(2, &format!("{}{more}", section_body("files", "v2", 4))),
        signature: None,
        format: Format::Toml,
        source: Source::Local,
    }
}

fn system(
    dir: &Path,
) -> (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
) {
    (dir_state(&dir.join("files")), dir_state(&dir.join("more")))
}

#[test]
fn agent_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // Not re-executed: nothing to do.
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let outcome = pipeline(Path::new(&dir)).submit(candidate(2, "v2")).await;
        eprintln!("failpoint did not fire: {outcome}");
    });
    std::process::exit(99);
}

/// The agent as systemd runs it: SIGTERM is a stop request the pipeline follows. Exits
/// 0 when v2 was applied, 5 when it was deferred, 1 otherwise.
#[test]
fn stoppable_agent_child() {
    let Ok(dir) = std::env::var(STOP_CHILD_DIR) else {
        return; // Not re-executed: nothing to do.
    };
    let healthy = std::env::var(STOP_CHILD_V2).as_deref() == Ok("healthy");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            kowabunga_agent::daemon::shutdown_signal().await;
            let _ = stop.send(true);
        });
        let mut agent = pipeline(Path::new(&dir)).with_confirm(ConfirmPolicy {
            window: std::time::Duration::from_secs(60),
            retry_every: std::time::Duration::from_millis(100),
        });
        agent.set_shutdown(stop_rx);
        let outcome = agent.submit(candidate_v2(healthy)).await;
        eprintln!("stoppable child: {outcome}");
        match outcome.state {
            State::Applied => 0,
            State::Deferred => 5,
            _ => 1,
        }
    });
    std::process::exit(code);
}

/// SIGTERM at each stage of an apply (as at a reboot): the agent ends on one whole
/// generation without being killed, and the version it was applying is not used up:
/// after a restart the same version applies (or is already in force). Before the fix
/// the stop was only seen between polls, the window ran out, and the version was lost.
#[tokio::test]
async fn sigterm_at_each_stage_ends_whole_and_keeps_the_version() {
    // (failpoint, v2 healthy?, exit code, version in force after the stop)
    let cases = [
        ("staged", false, 5, 1),
        ("applied:files", false, 5, 1),
        ("applied:more", false, 5, 1),
        ("confirmed", true, 0, 2),
        ("commit", true, 0, 2),
    ];
    for (failpoint, healthy, code, in_force) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("files")).unwrap();
        std::fs::create_dir(dir.join("more")).unwrap();
        let outcome = pipeline(dir).submit(candidate(1, "v1")).await;
        assert_eq!(outcome.state, State::Applied, "{outcome}");
        let v1 = system(dir);

        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stoppable_agent_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STOP_CHILD_DIR, dir)
            .env(STOP_CHILD_V2, if healthy { "healthy" } else { "unhealthy" })
            .env(
                kowabunga_agent::failpoint::ENV,
                format!("{failpoint}:sigterm"),
            )
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code), "{failpoint}: {status}");
        let store = GenerationStore::open(dir.join("state")).unwrap();
        assert_eq!(store.pointer("pending").unwrap(), None, "{failpoint}");
        assert_eq!(
            store.current().unwrap().unwrap().meta.version,
            in_force,
            "{failpoint}"
        );
        drop(store);
        let (files, more) = system(dir);
        if in_force == 1 {
            assert_eq!((files, more), v1, "{failpoint}: not wholly version 1");
        } else {
            assert!(
                files
                    .values()
                    .chain(more.values())
                    .all(|v| v.starts_with("v2")),
                "{failpoint}: not wholly version 2"
            );
        }

        // Restart: nothing to undo, and version 2 is still applicable.
        let mut restarted = pipeline(dir);
        assert!(restarted.restore().await.unwrap().is_none(), "{failpoint}");
        let outcome = restarted.submit(candidate_v2(true)).await;
        let expected = if in_force == 1 {
            State::Applied
        } else {
            State::Unchanged
        };
        assert_eq!(outcome.state, expected, "{failpoint}: {outcome}");
    }
}

#[tokio::test]
async fn sigkill_between_stages_recovers_to_one_whole_generation() {
    // (failpoint, version expected after recovery)
    let cases = [
        ("staged", 1),
        ("applied:files", 1),
        ("applied:more", 1),
        ("confirmed", 1),
        ("commit", 1),
    ];
    for (failpoint, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("files")).unwrap();
        std::fs::create_dir(dir.join("more")).unwrap();
        let outcome = pipeline(dir).submit(candidate(1, "v1")).await;
        assert_eq!(outcome.state, State::Applied, "{outcome}");
        let old = system(dir);

        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "agent_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .env(kowabunga_agent::failpoint::ENV, failpoint)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "{failpoint}: the agent was not killed: {status}"
        );
        if failpoint == "applied:files" {
            let (files, more) = system(dir);
            assert!(
                files["f0"].starts_with("v2") && more["f0"].starts_with("v1"),
                "a mix on disk"
            );
        }

        // Restart.
        let mut restarted = pipeline(dir);
        let interrupted = restarted
            .restore()
            .await
            .unwrap()
            .expect("an interrupted apply");
        assert_eq!(interrupted.state, State::Reverted, "{failpoint}");
        let current = restarted.store().current().unwrap().unwrap();
        assert_eq!(current.meta.version, expected, "{failpoint}");
        assert_eq!(
            system(dir),
            old,
            "{failpoint}: system is not wholly version 1"
        );
        assert_eq!(restarted.store().pointer("pending").unwrap(), None);

        // And the agent carries on: v3 applies cleanly on top.
        let outcome = restarted.submit(candidate(3, "v3")).await;
        assert_eq!(outcome.state, State::Applied, "{failpoint}: {outcome}");
        assert!(system(dir).0.values().all(|v| v.starts_with("v3")));
    }
}
