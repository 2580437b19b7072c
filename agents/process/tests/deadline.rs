//! Real children (`sh`, `sleep`, `cat`): a deadline kills and reaps, output is
//! captured and capped, failures name the command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use kowabunga_process::{Invocation, ProcessError};

/// Whether a process with this id still exists (a zombie counts: not reaped).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_child_past_its_deadline_is_killed_reaped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The shell notes its own pid and a grandchild's, then waits on the grandchild.
    let script = format!("sleep 30 & echo $$ $! > {}; wait", pids.display());
    let run = Invocation::new("sh", Duration::from_millis(500)).args(["-c", &script]);
    let err = run.run().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let text = err.to_string();
    assert!(text.contains("`sh -c sleep 30 &"), "{text}");
    assert!(
        text.contains("did not finish within 500ms: killed"),
        "{text}"
    );
    let noted = std::fs::read_to_string(&pids).unwrap();
    let ids: Vec<u32> = noted
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{noted}");
    // The child is killed and reaped at once.
    assert!(!exists(ids[0]), "the child {} is still there", ids[0]);
    // The grandchild (its own process group's member) was killed too; init reaps it,
    // which may take a moment.
    for _ in 0..100 {
        if !exists(ids[1]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!exists(ids[1]), "the grandchild {} is still there", ids[1]);
}

#[tokio::test]
async fn stdin_is_fed_and_output_captured() {
    let out = Invocation::new("sh", Duration::from_secs(20))
        .args(["-c", "cat; echo oops >&2; exit 3"])
        .stdin("hello\n")
        .run()
        .await
        .unwrap();
    assert!(!out.success());
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout_lossy(), "hello\n");
    assert_eq!(out.stderr_lossy(), "oops\n");
    assert!(!out.truncated);
}

#[tokio::test]
async fn large_input_and_output_do_not_deadlock_and_output_is_capped() {
    // 1 MiB in, echoed back: both pipes fill up many times over.
    let input = vec![b'x'; 1024 * 1024];
    let out = Invocation::new("cat", Duration::from_secs(20))
        .stdin(input)
        .capture_limit(1000)
        .run()
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.truncated);
}

#[tokio::test]
async fn a_missing_program_names_itself() {
    let err = Invocation::new("/nonexistent/tool", Duration::from_secs(1))
        .arg("-v")
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot run `/nonexistent/tool -v`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_child_that_ignores_its_input_is_not_an_error() {
    let out = Invocation::new("true", Duration::from_secs(20))
        .stdin(vec![b'y'; 1024 * 1024])
        .run()
        .await
        .unwrap();
    assert!(out.success());
}
