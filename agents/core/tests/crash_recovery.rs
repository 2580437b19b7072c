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
use kowabunga_agent::pipeline::{Candidate, Pipeline};
use kowabunga_agent::trust::TrustPolicy;
use kowabunga_model::{Format, erase};
use support::*;

const CHILD_DIR: &str = "KOWABUNGA_TEST_CHILD_DIR";

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
