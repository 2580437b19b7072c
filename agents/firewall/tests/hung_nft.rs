//! A hung `nft` (a fake binary that never exits) fails the step it was run for with
//! the timeout error, and is killed: plan and apply never hang the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kowabunga_firewall::FirewallReconciler;
use kowabunga_model::{Document, ErrorKind, Format, Reconciler};

fn document() -> Document {
    Document::parse(
        b"version = 1\nnode = \"n\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[firewall]\ninput = \"drop\"\n",
        Format::Toml,
    )
    .unwrap()
}

/// A fake `nft`: `hang_on` is a shell `case` pattern over its arguments; a matching
/// run writes its pid to `pid` and sleeps, any other run succeeds printing nothing.
fn fake_nft(dir: &Path, hang_on: &str) -> (PathBuf, PathBuf) {
    let bin = dir.join("nft");
    let pid = dir.join("pid");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  {hang_on}) echo $$ > {}; exec sleep 30 ;;\nesac\ncat > /dev/null\nexit 0\n",
            pid.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, pid)
}

fn assert_gone(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the hung nft {} is still there",
        pid.trim()
    );
}

#[tokio::test]
async fn a_hung_listing_fails_plan_with_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, pid) = fake_nft(dir.path(), "list*");
    let fw = FirewallReconciler::with_nft(&bin).with_nft_deadline(Duration::from_millis(300));
    let err = fw.plan(&document(), None).await.map(drop).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Observe, "{err}");
    assert!(
        err.message.contains(&format!(
            "`{} list ruleset` did not finish within 300ms",
            bin.display()
        )),
        "{err}"
    );
    assert_gone(&pid);
}

#[tokio::test]
async fn a_hung_check_fails_the_precheck_with_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, pid) = fake_nft(dir.path(), "-c*");
    let fw = FirewallReconciler::with_nft(&bin).with_nft_deadline(Duration::from_millis(300));
    let planned = fw.plan(&document(), None).await.unwrap();
    let err = fw.precheck(&planned.payload).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Observe, "{err}");
    assert!(
        err.message.contains("-c -f -` did not finish within 300ms"),
        "{err}"
    );
    assert_gone(&pid);
}

#[tokio::test]
async fn a_hung_load_fails_apply_with_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, pid) = fake_nft(dir.path(), "-f*");
    let fw = FirewallReconciler::with_nft(&bin).with_nft_deadline(Duration::from_millis(300));
    let planned = fw.plan(&document(), None).await.unwrap();
    assert!(!planned.actions.is_empty());
    let err = fw.apply(planned.payload).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Apply, "{err}");
    assert!(
        err.message
            .contains("-f -` did not finish within 300ms: killed"),
        "{err}"
    );
    assert_gone(&pid);
}

#[test]
fn apply_has_a_deadline_of_its_own() {
    let fw = FirewallReconciler::with_nft("/nonexistent/nft");
    assert_eq!(fw.apply_deadline(), Duration::from_secs(30));
}
