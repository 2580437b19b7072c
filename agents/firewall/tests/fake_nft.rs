//! What the reconciler asks of `nft`, and when: a fake `nft` (a shell script) keeps the
//! "kernel" state in a file (the last script loaded: its table blocks read like a
//! listing), logs every run, and refuses checks and loads on demand. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use kowabunga_firewall::FirewallReconciler;
use kowabunga_model::{Document, ErrorKind, Format, Reconciler};

struct FakeNft {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl FakeNft {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("nft");
        let d = dir.path().display();
        std::fs::write(
            &bin,
            format!(
                r#"#!/bin/sh
echo "$*" >> {d}/log
case "$*" in
  "list ruleset") cat {d}/state 2>/dev/null || true ;;
  "-c -f -")
    cat > /dev/null
    if [ -e {d}/refuse ]; then
      echo "/dev/stdin:11:3-8: Error: Could not process rule: Operation not supported" >&2
      exit 1
    fi ;;
  "-f -")
    if [ -e {d}/refuse ]; then
      cat > /dev/null
      echo "/dev/stdin:11:3-8: Error: Could not process rule: Operation not supported" >&2
      exit 1
    fi
    cat > {d}/state ;;
esac
exit 0
"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, bin }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The runs since the last call, as argument strings.
    fn runs(&self) -> Vec<String> {
        let log = self.path("log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        text.lines().map(str::to_owned).collect()
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.path("state")).unwrap_or_default()
    }

    fn edit_state(&self, f: impl FnOnce(&str) -> String) {
        let edited = f(&self.state());
        std::fs::write(self.path("state"), edited).unwrap();
    }

    fn refuse(&self, yes: bool) {
        if yes {
            std::fs::write(self.path("refuse"), "").unwrap();
        } else {
            let _ = std::fs::remove_file(self.path("refuse"));
        }
    }
}

fn document(rules: &[u16]) -> Document {
    let mut text = String::from(
        "version = 1\nnode = \"n\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[firewall]\ninput = \"drop\"\n",
    );
    for port in rules {
        text.push_str(&format!(
            "[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = {port}\naction = \"accept\"\n"
        ));
    }
    Document::parse(text.as_bytes(), Format::Toml).unwrap()
}

/// Plan, precheck (as the pipeline does when another reconciler changes the node
/// first), apply, check; returns the nft runs of each step.
async fn converge(fw: &FirewallReconciler, nft: &FakeNft, doc: &Document) -> [Vec<String>; 4] {
    let planned = fw.plan(doc, None).await.unwrap();
    let plan = nft.runs();
    fw.precheck(&planned.payload).await.unwrap();
    let precheck = nft.runs();
    fw.apply(planned.payload).await.unwrap();
    let apply = nft.runs();
    fw.check(doc).await.unwrap();
    [plan, precheck, apply, nft.runs()]
}

#[tokio::test]
async fn a_new_ruleset_is_listed_at_plan_checked_by_the_kernel_and_loaded_without_read_back() {
    let nft = FakeNft::new();
    let fw = FirewallReconciler::with_nft(&nft.bin);
    let a = document(&[22, 80]);
    let [plan, precheck, apply, check] = converge(&fw, &nft, &a).await;
    assert_eq!(plan, ["list ruleset"]);
    assert_eq!(precheck, ["-c -f -"]);
    assert_eq!(apply, ["-f -"], "apply is one transaction, no read-back");
    assert_eq!(check, ["list ruleset"]);
    assert!(nft.state().contains("tcp dport 80 accept"));

    // In force: a drift check lists, nothing else.
    assert!(fw.plan(&a, Some(&a)).await.unwrap().actions.is_empty());
    assert_eq!(nft.runs(), ["list ruleset"]);
    assert_eq!((fw.checks(), fw.loads()), (1, 1));
}

#[tokio::test]
async fn a_ruleset_the_kernel_refuses_at_precheck_is_invalid_and_nothing_is_loaded() {
    let nft = FakeNft::new();
    let fw = FirewallReconciler::with_nft(&nft.bin);
    nft.refuse(true);
    let planned = fw.plan(&document(&[22]), None).await.unwrap();
    let err = fw.precheck(&planned.payload).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    assert!(
        err.message
            .contains("the kernel refuses the ruleset: Could not process rule"),
        "{err}"
    );
    assert_eq!(nft.runs(), ["list ruleset", "-c -f -"]);
    assert_eq!(nft.state(), "", "nothing loaded");
}

/// Without a precheck (the firewall is the generation's first change) the load is the
/// check: the kernel refuses the transaction whole, and that is the document's fault.
#[tokio::test]
async fn a_ruleset_the_kernel_refuses_at_load_is_invalid_and_changes_nothing() {
    let nft = FakeNft::new();
    let fw = FirewallReconciler::with_nft(&nft.bin);
    let a = document(&[22]);
    converge(&fw, &nft, &a).await;
    let before = nft.state();
    nft.refuse(true);
    let planned = fw.plan(&document(&[80]), Some(&a)).await.unwrap();
    let err = fw.apply(planned.payload).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    assert!(
        err.message.contains("the kernel refuses the ruleset"),
        "{err}"
    );
    assert_eq!(nft.runs(), ["list ruleset", "-f -"]);
    assert_eq!(nft.state(), before);
    // The ruleset in force is still recognised as in force.
    nft.refuse(false);
    assert!(fw.plan(&a, Some(&a)).await.unwrap().actions.is_empty());
}

#[tokio::test]
async fn drift_is_detected_before_and_after_the_first_observation() {
    let nft = FakeNft::new();
    let fw = FirewallReconciler::with_nft(&nft.bin);
    let a = document(&[22, 80]);
    let planned = fw.plan(&a, None).await.unwrap();
    fw.precheck(&planned.payload).await.unwrap();
    fw.apply(planned.payload).await.unwrap();
    // A rule deleted between the load and the first observation: the shape differs.
    nft.edit_state(|s| s.replace("\t\ttcp dport 80 accept\n", ""));
    let err = fw.check(&a).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unhealthy, "{err}");
    nft.runs();

    // Put back without a kernel check: the kernel took this very script before.
    let planned = fw.plan(&a, Some(&a)).await.unwrap();
    assert_eq!(planned.actions.len(), 1, "{:?}", planned.actions);
    fw.precheck(&planned.payload).await.unwrap();
    assert_eq!(nft.runs(), ["list ruleset"]);
    fw.apply(planned.payload).await.unwrap();
    fw.check(&a).await.unwrap();
    nft.runs();

    // After the first observation, an edit keeping the shape is noticed too.
    nft.edit_state(|s| s.replace("tcp dport 80 accept", "tcp dport 81 accept"));
    assert_eq!(fw.plan(&a, Some(&a)).await.unwrap().actions.len(), 1);
    assert_eq!(nft.runs(), ["list ruleset"]);
    assert_eq!((fw.checks(), fw.loads()), (1, 2));
}

#[tokio::test]
async fn a_revert_to_a_ruleset_loaded_before_needs_no_check() {
    let nft = FakeNft::new();
    let fw = FirewallReconciler::with_nft(&nft.bin);
    let (a, b) = (document(&[22]), document(&[80]));
    converge(&fw, &nft, &a).await;
    converge(&fw, &nft, &b).await;
    assert_eq!(fw.checks(), 2);
    let [plan, precheck, apply, _] = converge(&fw, &nft, &a).await;
    assert_eq!(plan, ["list ruleset"]);
    assert!(precheck.is_empty(), "{precheck:?}");
    assert_eq!(apply, ["-f -"]);
    assert_eq!((fw.checks(), fw.loads()), (2, 3));
    assert!(nft.state().contains("tcp dport 22 accept"));
}

#[tokio::test]
async fn tables_found_after_a_restart_are_adopted_when_they_have_the_shape() {
    let nft = FakeNft::new();
    let a = document(&[22, 80]);
    {
        let earlier = FirewallReconciler::with_nft(&nft.bin);
        converge(&earlier, &nft, &a).await;
    }
    // A new process: nothing remembered, the tables carry the digest and the shape.
    let fw = FirewallReconciler::with_nft(&nft.bin);
    assert!(fw.plan(&a, Some(&a)).await.unwrap().actions.is_empty());
    assert_eq!(fw.loads(), 0);
    // A restart after a rule was deleted by hand: put back.
    let fw = FirewallReconciler::with_nft(&nft.bin);
    nft.edit_state(|s| s.replace("\t\ttcp dport 22 accept\n", ""));
    assert_eq!(fw.plan(&a, Some(&a)).await.unwrap().actions.len(), 1);
}
