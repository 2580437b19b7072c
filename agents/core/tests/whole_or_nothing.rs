//! A reconciler whose apply is one transaction the system takes whole or refuses whole
//! (nftables): its precheck runs only when an earlier reconciler changes the node
//! first; otherwise its apply is the check, and a refusal there rejects the document
//! with nothing changed and nothing to undo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kowabunga_agent::generations::{GenerationStore, Source};
use kowabunga_agent::outcome::{Reason, State};
use kowabunga_agent::pipeline::{Candidate, ConfirmPolicy, Pipeline};
use kowabunga_agent::trust::TrustPolicy;
use kowabunga_model::{Action, Document, Format, Planned, ReconcileError, Reconciler, erase};
use serde::Deserialize;
use support::*;

/// `[tx]`: the value the "system" should hold, and whether the system refuses it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxSection {
    #[serde(default)]
    value: String,
    #[serde(default)]
    refuse: bool,
}

/// What the fake system saw: its value, and every call made on it.
#[derive(Debug, Default)]
struct TxSystem {
    value: String,
    calls: Vec<&'static str>,
}

/// The test double: a value held by a system that checks each transaction whole.
#[derive(Clone, Default)]
struct Transaction(Arc<Mutex<TxSystem>>);

impl Transaction {
    fn calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }
    fn value(&self) -> String {
        self.0.lock().unwrap().value.clone()
    }
}

fn refusal() -> ReconcileError {
    ReconcileError::invalid("the system refuses the transaction (injected)")
}

impl Reconciler for Transaction {
    type Plan = Option<TxSection>;

    fn name(&self) -> &'static str {
        "tx"
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<Self::Plan>, ReconcileError> {
        let want: TxSection = desired.section("tx")?.unwrap_or_default();
        if want.value == self.value() {
            return Ok(Planned::nothing(None));
        }
        Ok(Planned {
            actions: vec![Action(format!("set {}", want.value))],
            artifacts: Vec::new(),
            payload: Some(want),
        })
    }

    async fn precheck(&self, plan: &Self::Plan) -> Result<(), ReconcileError> {
        self.0.lock().unwrap().calls.push("precheck");
        match plan {
            Some(tx) if tx.refuse => Err(refusal()),
            _ => Ok(()),
        }
    }

    async fn apply(&self, plan: Self::Plan) -> Result<(), ReconcileError> {
        let mut system = self.0.lock().unwrap();
        system.calls.push("apply");
        match plan {
            Some(tx) if tx.refuse => Err(refusal()),
            Some(tx) => {
                system.value = tx.value;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn check(&self, _desired: &Document) -> Result<(), ReconcileError> {
        Ok(())
    }
}

fn pipeline(dir: &std::path::Path, tx: &Transaction) -> Pipeline {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    Pipeline::new(
        NODE,
        vec![
            erase(FilesReconciler::new("files", dir.join("files"))),
            erase(tx.clone()),
        ],
        GenerationStore::open(dir.join("state")).unwrap(),
        TrustPolicy::load(std::path::Path::new("/nonexistent"), &[], true).unwrap(),
    )
    .with_confirm(ConfirmPolicy {
        window: Duration::from_secs(5),
        retry_every: Duration::from_millis(100),
    })
}

fn local(version: u64, files: &str, tx: &str) -> Candidate {
    Candidate {
        bytes: document(version, &format!("{files}[tx]\n{tx}\n")),
        signature: None,
        format: Format::Toml,
        source: Source::Local,
    }
}

#[tokio::test]
async fn refused_as_the_first_change_is_rejected_by_the_apply_and_nothing_is_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let tx = Transaction::default();
    let mut agent = pipeline(tmp.path(), &tx);
    let files = files_body("v1", 2);
    let outcome = agent.submit(local(1, &files, "value = \"a\"")).await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    // The files changed first: the transaction was checked before anything changed.
    assert_eq!(tx.calls(), ["precheck", "apply"]);
    let before = dir_state(&tmp.path().join("files"));

    // Only the transaction changes (it is the first change: no precheck), and the
    // system refuses it.
    let outcome = agent
        .submit(local(2, &files, "value = \"b\"\nrefuse = true"))
        .await;
    assert_eq!(outcome.state, State::Rejected, "{outcome}");
    assert_eq!(outcome.reason, Some(Reason::Invalid), "{outcome}");
    assert!(
        outcome
            .error
            .as_deref()
            .is_some_and(|e| e.contains("tx: the system refuses the transaction")),
        "{outcome}"
    );
    assert_eq!(outcome.generation, Some(1), "{outcome}");
    // The apply was the check; nothing was planned again to undo it.
    assert_eq!(tx.calls(), ["apply"]);
    assert_eq!(tx.value(), "a");
    assert_eq!(dir_state(&tmp.path().join("files")), before);
    assert_eq!(agent.store().current().unwrap().unwrap().meta.version, 1);
    assert_eq!(agent.store().pointer("pending").unwrap(), None);

    // The version is used up, like any rejection; a newer document applies.
    let outcome = agent
        .submit(local(2, &files, "value = \"b\"\nrefuse = true"))
        .await;
    assert_eq!(outcome.state, State::Rejected, "{outcome}");
    assert_eq!(outcome.reason, Some(Reason::Replay), "{outcome}");
    let outcome = agent.submit(local(3, &files, "value = \"c\"")).await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    assert_eq!(tx.value(), "c");
}

#[tokio::test]
async fn after_an_earlier_change_the_precheck_refuses_before_anything_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let tx = Transaction::default();
    let mut agent = pipeline(tmp.path(), &tx);
    let outcome = agent
        .submit(local(1, &files_body("v1", 2), "value = \"a\""))
        .await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    tx.calls();
    let before = dir_state(&tmp.path().join("files"));

    // The files change first, then the transaction the system refuses: checked before
    // the files are touched.
    let outcome = agent
        .submit(local(
            2,
            &files_body("v2", 2),
            "value = \"b\"\nrefuse = true",
        ))
        .await;
    assert_eq!(outcome.state, State::Rejected, "{outcome}");
    assert_eq!(outcome.reason, Some(Reason::Invalid), "{outcome}");
    assert_eq!(tx.calls(), ["precheck"]);
    assert_eq!(dir_state(&tmp.path().join("files")), before);
    assert_eq!(agent.store().current().unwrap().unwrap().meta.version, 1);

    // Accepted by the precheck: both apply.
    let outcome = agent
        .submit(local(3, &files_body("v3", 2), "value = \"c\""))
        .await;
    assert_eq!(outcome.state, State::Applied, "{outcome}");
    assert_eq!(tx.calls(), ["precheck", "apply"]);
    assert!(
        dir_state(&tmp.path().join("files"))
            .values()
            .all(|v| v.starts_with("v3"))
    );
}

#[tokio::test]
async fn a_dry_run_prechecks_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let tx = Transaction::default();
    let agent = pipeline(tmp.path(), &tx);
    let refused = agent
        .dry_run(local(1, "", "value = \"b\"\nrefuse = true"))
        .await
        .unwrap_err();
    assert_eq!(refused.state, State::Rejected, "{refused}");
    assert_eq!(tx.calls(), ["precheck"]);
    assert_eq!(tx.value(), "");
    let actions = agent.dry_run(local(1, "", "value = \"b\"")).await.unwrap();
    assert_eq!(actions, ["tx: set b"]);
    assert_eq!(tx.calls(), ["precheck"]);
}
