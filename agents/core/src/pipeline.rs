//! The apply pipeline: admit -> plan (every reconciler validates) -> stage -> apply ->
//! confirm (health checks within the confirm window) -> commit, or revert by applying
//! the generation that was in force before.
//!
//! Nothing on the system changes before every reconciler has planned successfully, so a
//! rejected document never touches the running system. Once a generation is staged, the
//! store's `pending` pointer marks it: if the agent dies before the commit, the next start
//! re-applies `current` (see [`Pipeline::restore`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kowabunga_model::{Document, DynReconciler, Format, ReconcileError, Timestamp};
use tokio::time::Instant;

use crate::failpoint::Failpoints;
use crate::generations::{
    Generation, GenerationStore, Interrupted, NewGeneration, Source, sha256_hex,
};
use crate::outcome::{Outcome, Reason};
use crate::trust::TrustPolicy;

/// How far in the future `issued_at` may be, for clocks that disagree a little.
const CLOCK_SKEW: i64 = 300;

/// How long a new generation has to prove healthy before it is committed.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmPolicy {
    /// Deadline for the health checks to pass (default 90 s).
    pub window: Duration,
    /// Pause between two rounds of checks.
    pub retry_every: Duration,
}

impl Default for ConfirmPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(90),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// A check that the agent can still reach what manages it (the config endpoint): if a
/// new generation cuts that path, it is reverted.
pub trait Probe: Send + Sync {
    /// `Ok` when the endpoint answered.
    fn reachable(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// A document received, before it is believed.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub format: Format,
    pub source: Source,
}

pub struct Pipeline {
    node: String,
    reconcilers: Vec<Box<dyn DynReconciler>>,
    store: GenerationStore,
    trust: TrustPolicy,
    confirm: ConfirmPolicy,
    probe: Option<Box<dyn Probe>>,
    failpoints: Failpoints,
}

/// A generation being brought into force.
struct Attempt {
    document: Document,
    bytes: Vec<u8>,
    signature: Option<Vec<u8>>,
    format: Format,
    source: Source,
}

impl Pipeline {
    /// A pipeline for agent `node`, running `reconcilers` in order.
    pub fn new(
        node: impl Into<String>,
        reconcilers: Vec<Box<dyn DynReconciler>>,
        store: GenerationStore,
        trust: TrustPolicy,
    ) -> Self {
        Self {
            node: node.into(),
            reconcilers,
            store,
            trust,
            confirm: ConfirmPolicy::default(),
            probe: None,
            failpoints: Failpoints::from_env(),
        }
    }

    pub fn with_confirm(mut self, confirm: ConfirmPolicy) -> Self {
        self.confirm = confirm;
        self
    }

    /// Check reachability of the management path during the confirm window.
    pub fn with_probe(mut self, probe: Box<dyn Probe>) -> Self {
        self.probe = Some(probe);
        self
    }

    pub fn store(&self) -> &GenerationStore {
        &self.store
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Verify, admit and bring `candidate` into force.
    pub async fn submit(&mut self, candidate: Candidate) -> Outcome {
        let current = match self.store.current() {
            Ok(current) => current,
            Err(e) => return Outcome::rejected(None, Reason::Store, e),
        };
        let document = match self.admit(&candidate, current.as_ref()) {
            Ok(Admitted::New(document)) => document,
            Ok(Admitted::AlreadyInForce(version)) => {
                return Outcome::unchanged(version, current.map(|g| g.meta.seq));
            }
            Err(outcome) => return outcome,
        };
        // State pushed over RPC carries over to the new document.
        let pushed = current
            .as_ref()
            .map(|g| g.document.pushed_tables().clone())
            .unwrap_or_default();
        let attempt = Attempt {
            document: document.with_pushed(pushed),
            bytes: candidate.bytes,
            signature: candidate.signature,
            format: candidate.format,
            source: candidate.source,
        };
        self.run(attempt, current).await
    }

    /// Admit and plan `candidate` without changing anything: the actions applying it
    /// would take, or the outcome that refuses it.
    pub async fn dry_run(&self, candidate: Candidate) -> Result<Vec<String>, Outcome> {
        let current = self
            .store
            .current()
            .map_err(|e| Outcome::rejected(None, Reason::Store, e))?;
        let document = match self.admit(&candidate, current.as_ref())? {
            Admitted::New(document) => document,
            Admitted::AlreadyInForce(_) => return Ok(Vec::new()),
        };
        let in_force = current.as_ref().map(|g| &g.document);
        let mut actions = Vec::new();
        for reconciler in &self.reconcilers {
            let plan = reconciler.plan(&document, in_force).await.map_err(|e| {
                Outcome::rejected(
                    Some(document.header.version),
                    e.kind.into(),
                    format!("{}: {e}", reconciler.name()),
                )
            })?;
            actions.extend(
                plan.actions
                    .iter()
                    .map(|a| format!("{}: {a}", reconciler.name())),
            );
        }
        Ok(actions)
    }

    /// Replace the pushed table `name` (state Kahuna sent over RPC) and bring the result
    /// into force through the same stages as a pulled document.
    pub async fn push(&mut self, name: &str, table: toml::Table) -> Outcome {
        let current = match self.store.current() {
            Ok(current) => current,
            Err(e) => return Outcome::rejected(None, Reason::Store, e),
        };
        let mut attempt = match &current {
            Some(g) => Attempt {
                document: g.document.clone(),
                bytes: g.bytes.clone(),
                signature: g.signature.clone(),
                format: g.format,
                source: Source::Rpc,
            },
            None => Attempt {
                document: Document::empty(&self.node),
                bytes: Vec::new(),
                signature: None,
                format: Format::Toml,
                source: Source::Rpc,
            },
        };
        if attempt.document.pushed_tables().get(name) == Some(&table) {
            let version = attempt.document.header.version;
            return Outcome::unchanged(version, current.map(|g| g.meta.seq));
        }
        attempt.document.set_pushed(name, table);
        self.run(attempt, current).await
    }

    /// The pushed table `name` of the generation in force.
    pub fn pushed_table(&self, name: &str) -> Option<toml::Table> {
        let current = self.store.current().ok()??;
        current.document.pushed_tables().get(name).cloned()
    }

    /// Between documents: puts back what changed under the generation in force (a link
    /// deleted by hand, a table flushed by another tool). Each reconciler plans the
    /// generation against itself, which is empty when the system matches it; a
    /// non-empty plan is drift, applied at once. Returns the reconcilers that corrected
    /// something.
    pub async fn correct_drift(&mut self) -> Result<Vec<&'static str>, String> {
        let Some(current) = self.store.current().map_err(|e| e.to_string())? else {
            return Ok(Vec::new());
        };
        let doc = &current.document;
        let mut corrected = Vec::new();
        for reconciler in &self.reconcilers {
            let name = reconciler.name();
            let plan = reconciler.plan(doc, Some(doc)).await.map_err(|e| {
                format!(
                    "drift check of generation {}: {name}: {e}",
                    current.meta.seq
                )
            })?;
            if plan.actions.is_empty() {
                continue;
            }
            for action in &plan.actions {
                tracing::warn!(
                    "drift from generation {}: {name}: {action}",
                    current.meta.seq
                );
            }
            reconciler
                .apply(plan.payload)
                .await
                .map_err(|e| format!("correcting drift: {name}: {e}"))?;
            corrected.push(name);
        }
        Ok(corrected)
    }

    /// At start: undo an apply a crash interrupted, then re-apply the generation in force
    /// (after a reboot the kernel holds none of it). Returns the outcome to report for
    /// the interrupted generation, if there was one.
    pub async fn restore(&mut self) -> Result<Option<Outcome>, String> {
        let interrupted = match self.store.recover().map_err(|e| e.to_string())? {
            Interrupted::Nothing => None,
            Interrupted::CommitFinished => {
                tracing::info!("a commit had finished before the agent stopped");
                None
            }
            Interrupted::Apply { seq } => {
                let broken = self.store.load(seq).map_err(|e| e.to_string())?;
                let current = self.store.current().map_err(|e| e.to_string())?;
                let error = format!(
                    "the agent stopped while applying generation {seq} (version {})",
                    broken.meta.version
                );
                tracing::warn!("{error}; setting the system back to the generation in force");
                let outcome = self
                    .revert(
                        &broken.document,
                        seq,
                        current.as_ref(),
                        Reason::Interrupted,
                        error,
                    )
                    .await;
                Some(outcome)
            }
        };
        if let Some(current) = self.store.current().map_err(|e| e.to_string())? {
            let seq = current.meta.seq;
            tracing::info!(
                "restoring generation {seq} (version {})",
                current.meta.version
            );
            self.converge(&current.document, Some(&current.document))
                .await
                .map_err(|e| format!("restoring generation {seq}: {e}"))?;
        }
        Ok(interrupted)
    }

    fn admit(
        &self,
        candidate: &Candidate,
        current: Option<&Generation>,
    ) -> Result<Admitted, Outcome> {
        // Read the version for the report even before the signature is checked; nothing
        // else of an unverified document is used.
        let version = Document::parse(&candidate.bytes, candidate.format)
            .ok()
            .map(|d| d.header.version);
        let verified = self
            .trust
            .verify(&candidate.bytes, candidate.signature.as_deref())
            .map_err(|e| Outcome::rejected(version, Reason::Signature, e))?;
        if verified == crate::trust::Verified::UnsignedInsecure {
            tracing::warn!("INSECURE MODE: accepting an unsigned document");
        }
        let document = Document::parse(&candidate.bytes, candidate.format)
            .map_err(|e| Outcome::rejected(version, Reason::Parse, e))?;
        let header = &document.header;
        let version = Some(header.version);
        if header.node != self.node {
            return Err(Outcome::rejected(
                version,
                Reason::WrongNode,
                format!(
                    "document is for node {:?}, this agent is {:?}",
                    header.node, self.node
                ),
            ));
        }
        let now = Timestamp::now();
        header
            .check_validity(now)
            .map_err(|e| Outcome::rejected(version, Reason::Expired, e))?;
        if header.issued_at.as_unix_seconds() > now.as_unix_seconds() + CLOCK_SKEW {
            return Err(Outcome::rejected(
                version,
                Reason::NotYetValid,
                format!(
                    "document is issued at {}, in the future (now {now})",
                    header.issued_at
                ),
            ));
        }
        if let Some(current) = current
            && current.meta.version == header.version
            && current.meta.sha256 == sha256_hex(&candidate.bytes)
        {
            return Ok(Admitted::AlreadyInForce(header.version));
        }
        let highest = self
            .store
            .highest_version()
            .map_err(|e| Outcome::rejected(version, Reason::Store, e))?
            .max(current.map_or(0, |g| g.meta.version));
        if header.version <= highest {
            return Err(Outcome::rejected(
                version,
                Reason::Replay,
                format!(
                    "version {} is not newer than version {highest} already seen (replayed or stale document)",
                    header.version
                ),
            ));
        }
        Ok(Admitted::New(document))
    }

    async fn run(&mut self, attempt: Attempt, current: Option<Generation>) -> Outcome {
        let version = attempt.document.header.version;
        let in_force = current.as_ref().map(|g| &g.document);
        let current_seq = current.as_ref().map(|g| g.meta.seq);

        // 1. Plan: every reconciler validates and observes; nothing changes yet.
        let mut plans = Vec::with_capacity(self.reconcilers.len());
        for reconciler in &self.reconcilers {
            match reconciler.plan(&attempt.document, in_force).await {
                Ok(plan) => plans.push(plan),
                Err(e) => {
                    let error = format!("{}: {e}", reconciler.name());
                    return Outcome::rejected(Some(version), e.kind.into(), error)
                        .with_generation(current_seq);
                }
            }
        }
        let actions: Vec<String> = self
            .reconcilers
            .iter()
            .zip(&plans)
            .flat_map(|(r, p)| p.actions.iter().map(move |a| format!("{}: {a}", r.name())))
            .collect();
        for action in &actions {
            tracing::info!("plan {version}: {action}");
        }

        // 2. Stage: the generation is on disk before anything changes.
        let artifacts = self
            .reconcilers
            .iter()
            .zip(&mut plans)
            .map(|(r, p)| (r.name(), std::mem::take(&mut p.artifacts)))
            .collect();
        let staged = self.store.stage(NewGeneration {
            version,
            node: &self.node,
            source: attempt.source,
            format: attempt.format,
            bytes: &attempt.bytes,
            signature: attempt.signature.as_deref(),
            pushed: attempt.document.pushed_tables(),
            actions,
            artifacts,
        });
        let seq = match staged {
            Ok(seq) => seq,
            Err(e) => {
                return Outcome::rejected(Some(version), Reason::Store, e)
                    .with_generation(current_seq);
            }
        };
        self.failpoints.hit("staged");

        // 3. Apply, in order.
        for (reconciler, plan) in self.reconcilers.iter().zip(plans) {
            if let Err(e) = reconciler.apply(plan.payload).await {
                let error = format!("{}: {e}", reconciler.name());
                tracing::error!("apply {version}: {error}");
                return self
                    .revert(
                        &attempt.document,
                        seq,
                        current.as_ref(),
                        e.kind.into(),
                        error,
                    )
                    .await;
            }
            self.failpoints
                .hit(&format!("applied:{}", reconciler.name()));
        }

        // 4. Confirm within the window, else revert.
        if let Err((reason, error)) = self.confirm(&attempt.document).await {
            tracing::error!("confirm {version}: {error}");
            return self
                .revert(&attempt.document, seq, current.as_ref(), reason, error)
                .await;
        }
        self.failpoints.hit("confirmed");

        // 5. Commit.
        let failpoints = self.failpoints.clone();
        if let Err(e) = self.store.commit(seq, || failpoints.hit("commit")) {
            let error = format!("committing generation {seq}: {e}");
            return self
                .revert(
                    &attempt.document,
                    seq,
                    current.as_ref(),
                    Reason::Store,
                    error,
                )
                .await;
        }
        tracing::info!("generation {seq} (version {version}) committed");
        Outcome::applied(version, seq)
    }

    /// Run the probe and every reconciler's check until all pass or the window closes.
    async fn confirm(&self, desired: &Document) -> Result<(), (Reason, String)> {
        let deadline = Instant::now() + self.confirm.window;
        loop {
            let result = self.health(desired).await;
            match result {
                Ok(()) => return Ok(()),
                Err(failure) if Instant::now() >= deadline => return Err(failure),
                Err((_, error)) => {
                    tracing::debug!("confirm: not healthy yet: {error}");
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(self.confirm.retry_every.min(left)).await;
                }
            }
        }
    }

    async fn health(&self, desired: &Document) -> Result<(), (Reason, String)> {
        if let Some(probe) = &self.probe {
            probe.reachable().await.map_err(|e| {
                (
                    Reason::Unreachable,
                    format!("config endpoint unreachable under the new generation: {e}"),
                )
            })?;
        }
        for reconciler in &self.reconcilers {
            reconciler
                .check(desired)
                .await
                .map_err(|e| (e.kind.into(), format!("{}: {e}", reconciler.name())))?;
        }
        Ok(())
    }

    /// Set the system back to `current` (or to nothing) after `failed` was partly or
    /// wholly applied, and record generation `seq` as reverted.
    async fn revert(
        &mut self,
        failed: &Document,
        seq: u64,
        current: Option<&Generation>,
        reason: Reason,
        error: String,
    ) -> Outcome {
        let version = failed.header.version;
        let empty;
        let target = match current {
            Some(g) => &g.document,
            None => {
                empty = Document::empty(&self.node);
                &empty
            }
        };
        tracing::warn!(
            "reverting version {version} to version {}: {error}",
            target.header.version
        );
        let mut error = error;
        if let Err(e) = self.converge(target, Some(failed)).await {
            tracing::error!("revert of version {version} incomplete: {e}");
            error = format!("{error}; revert incomplete: {e}");
        }
        if let Err(e) = self.store.abandon(seq, &error) {
            tracing::error!("recording the revert of generation {seq}: {e}");
        }
        Outcome::reverted(version, reason, error).with_generation(current.map(|g| g.meta.seq))
    }

    /// Plan and apply `desired` with every reconciler, continuing past failures so that
    /// as much as possible is restored; returns the first error.
    async fn converge(
        &self,
        desired: &Document,
        in_force: Option<&Document>,
    ) -> Result<(), ReconcileError> {
        let mut first_error = None;
        for reconciler in &self.reconcilers {
            let result = match reconciler.plan(desired, in_force).await {
                Ok(plan) => reconciler.apply(plan.payload).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let e = ReconcileError::new(e.kind, format!("{}: {e}", reconciler.name()));
                tracing::error!("{e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

enum Admitted {
    New(Document),
    AlreadyInForce(u64),
}
