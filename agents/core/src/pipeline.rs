//! The apply pipeline: admit -> plan (every reconciler validates) -> stage -> apply ->
//! confirm (health checks within the confirm window) -> commit, or revert by applying
//! the generation that was in force before.
//!
//! Nothing on the system changes before every reconciler has planned successfully, so a
//! rejected document never touches the running system. Once a generation is staged, the
//! store's `pending` pointer marks it: if the agent dies before the commit, the next start
//! re-applies `current` (see [`Pipeline::restore`]). A reconciler whose apply is one
//! transaction the system takes or refuses whole (nftables) is checked by the system
//! before anything changes ([`precheck`](kowabunga_model::Reconciler::precheck)) only
//! when an earlier reconciler changes something; as the generation's first change, its
//! apply is the check, and a refusal there rejects the document, nothing changed.
//!
//! Failures are sorted by whose fault they are. A bad document (signature, header,
//! validation) is **rejected** and its version used up. A document that could not be
//! brought into force *now* (the kernel could not be read, the disk refused the
//! generation, the agent is stopping) is **deferred**: the generation in force stays
//! and the same version is tried again later. A document that was applied and failed
//! its health checks is **reverted**.
//!
//! Every step is bounded: planning by [`PLAN_DEADLINE`], each reconciler's apply by its
//! own [`apply_deadline`](kowabunga_model::Reconciler::apply_deadline), the checks by
//! the confirm window. A stop request ([`Pipeline::set_shutdown`]) ends the attempt in
//! a whole generation: the previous one, with the version kept applicable.
//!
//! The generation store's writes and fsyncs run on the blocking thread pool, never on
//! the runtime thread that also carries the RPC keepalive and DNS over TCP.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kowabunga_model::{Document, DynReconciler, ErrorKind, Format, ReconcileError, Timestamp};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use crate::failpoint::Failpoints;
use crate::generations::{
    Generation, GenerationStore, Interrupted, NewGeneration, Source, StoreError, sha256_hex,
};
use crate::outcome::{Outcome, Reason};
use crate::trust::TrustPolicy;

/// How far in the future `issued_at` may be, for clocks that disagree a little.
const CLOCK_SKEW: i64 = 300;

/// How long one reconciler may take to plan (observe the system, check a ruleset).
/// Past it the attempt is deferred, not rejected: the document is not at fault.
pub const PLAN_DEADLINE: Duration = Duration::from_secs(60);

/// Called on the blocking thread before each write to the store (tests use it to prove
/// the runtime thread stays free).
pub type StoreHook = Arc<dyn Fn(&'static str) + Send + Sync>;

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
    store: Arc<GenerationStore>,
    trust: TrustPolicy,
    confirm: ConfirmPolicy,
    probe: Option<Box<dyn Probe>>,
    failpoints: Failpoints,
    shutdown: watch::Receiver<bool>,
    store_hook: Option<StoreHook>,
    local_retry: bool,
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
            store: Arc::new(store),
            trust,
            confirm: ConfirmPolicy::default(),
            probe: None,
            failpoints: Failpoints::from_env(),
            // Never changes unless `set_shutdown` gives a real one.
            shutdown: watch::channel(false).1,
            store_hook: None,
            local_retry: false,
        }
    }

    /// Local mode (`apply --retry FILE`): a local document whose version was used up by
    /// an earlier attempt (rejected or reverted) may be tried again, as long as it is
    /// newer than the generation in force. Pulled documents keep strict anti-replay.
    pub fn allow_local_retry(mut self) -> Self {
        self.local_retry = true;
        self
    }

    /// Follow a stop request: when it turns `true`, an attempt in progress ends in a
    /// whole generation (see the module documentation).
    pub fn set_shutdown(&mut self, shutdown: watch::Receiver<bool>) {
        self.shutdown = shutdown;
    }

    /// Run `hook` on the blocking thread before each write to the store (tests).
    pub fn with_store_hook(mut self, hook: StoreHook) -> Self {
        self.store_hook = Some(hook);
        self
    }

    /// Use these failpoints instead of the environment's (tests).
    pub fn with_failpoints(mut self, failpoints: Failpoints) -> Self {
        self.failpoints = failpoints;
        self
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

    pub fn reconcilers(&self) -> &[Box<dyn DynReconciler>] {
        &self.reconcilers
    }

    /// Run `op` on the store from the blocking thread pool.
    async fn with_store<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&GenerationStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = Arc::clone(&self.store);
        let hook = self.store_hook.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(hook) = hook {
                hook(op);
            }
            work(&store)
        })
        .await
        .map_err(|e| format!("generation store ({op}): {e}"))?
        .map_err(|e| e.to_string())
    }

    /// The generation in force and the highest version ever staged.
    async fn in_force(&self) -> Result<(Option<Generation>, u64), String> {
        self.with_store("read", |store| {
            let current = store.current()?;
            let highest = store.highest_version()?;
            Ok((current, highest))
        })
        .await
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Verify, admit and bring `candidate` into force.
    pub async fn submit(&mut self, candidate: Candidate) -> Outcome {
        let (current, highest) = match self.in_force().await {
            Ok(found) => found,
            Err(e) => return Outcome::deferred(None, Reason::Store, e),
        };
        let document = match self.admit(&candidate, current.as_ref(), highest) {
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
        self.run(attempt, current, highest).await
    }

    /// Admit and plan `candidate` without changing anything: the actions applying it
    /// would take, or the outcome that refuses it.
    pub async fn dry_run(&self, candidate: Candidate) -> Result<Vec<String>, Outcome> {
        let (current, highest) = self
            .in_force()
            .await
            .map_err(|e| Outcome::deferred(None, Reason::Store, e))?;
        let document = match self.admit(&candidate, current.as_ref(), highest)? {
            Admitted::New(document) => document,
            Admitted::AlreadyInForce(_) => return Ok(Vec::new()),
        };
        validate_sections(&self.reconcilers, &document)?;
        let in_force = current.as_ref().map(|g| &g.document);
        let mut actions = Vec::new();
        for reconciler in &self.reconcilers {
            let refused = |e| plan_failure(reconciler.name(), document.header.version, e);
            let plan = plan_one(reconciler.as_ref(), &document, in_force)
                .await
                .map_err(refused)?;
            // Nothing is applied here: every change is checked by the system.
            if !plan.actions.is_empty() {
                precheck_one(reconciler.as_ref(), plan.payload.as_ref())
                    .await
                    .map_err(refused)?;
            }
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
        self.push_tables(std::iter::once((name.to_owned(), table)).collect())
            .await
    }

    /// Replaces several pushed tables in one generation (all in force, or none).
    pub async fn push_tables(&mut self, tables: BTreeMap<String, toml::Table>) -> Outcome {
        let (current, highest) = match self.in_force().await {
            Ok(found) => found,
            Err(e) => return Outcome::deferred(None, Reason::Store, e),
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
        let pushed = attempt.document.pushed_tables();
        if tables
            .iter()
            .all(|(name, table)| pushed.get(name) == Some(table))
        {
            let version = attempt.document.header.version;
            return Outcome::unchanged(version, current.map(|g| g.meta.seq));
        }
        for (name, table) in tables {
            attempt.document.set_pushed(&name, table);
        }
        self.run(attempt, current, highest).await
    }

    /// The pushed table `name` of the generation in force.
    pub async fn pushed_table(&self, name: &str) -> Option<toml::Table> {
        let (current, _) = self.in_force().await.ok()?;
        current?.document.pushed_tables().get(name).cloned()
    }

    /// Between documents: puts back what changed under the generation in force (a link
    /// deleted by hand, a table flushed by another tool). Each reconciler plans the
    /// generation against itself, which is empty when the system matches it; a
    /// non-empty plan is drift, applied at once. Returns the reconcilers that corrected
    /// something.
    pub async fn correct_drift(&mut self) -> Result<Vec<&'static str>, String> {
        let Some(current) = self.in_force().await?.0 else {
            return Ok(Vec::new());
        };
        let doc = &current.document;
        let mut corrected = Vec::new();
        for reconciler in &self.reconcilers {
            let name = reconciler.name();
            let plan = plan_one(reconciler.as_ref(), doc, Some(doc))
                .await
                .map_err(|e| {
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
            apply_one(reconciler.as_ref(), plan.payload)
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
        let interrupted = match self.with_store("recover", |store| store.recover()).await? {
            Interrupted::Nothing => None,
            Interrupted::CommitFinished => {
                tracing::info!("a commit had finished before the agent stopped");
                None
            }
            Interrupted::Apply { seq } => {
                let (broken, current) = self
                    .with_store("read", move |store| {
                        Ok((store.load(seq)?, store.current()?))
                    })
                    .await?;
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
                        Consumed::Yes,
                    )
                    .await;
                Some(outcome)
            }
        };
        if let Some(current) = self.in_force().await?.0 {
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
        highest: u64,
    ) -> Result<Admitted, Outcome> {
        let document = verify_and_parse(&self.trust, candidate)?;
        check_header(&document, Some(&self.node), Timestamp::now())?;
        let header = &document.header;
        let version = Some(header.version);
        if let Some(current) = current
            && current.meta.version == header.version
            && current.meta.sha256 == sha256_hex(&candidate.bytes)
        {
            return Ok(Admitted::AlreadyInForce(header.version));
        }
        let in_force_version = current.map_or(0, |g| g.meta.version);
        let retry = self.local_retry
            && candidate.source == Source::Local
            && header.version > in_force_version;
        if retry && header.version <= highest {
            tracing::warn!(
                "retrying version {} (already attempted) at the operator's request",
                header.version
            );
            return Ok(Admitted::New(document));
        }
        let highest = highest.max(in_force_version);
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

    async fn run(
        &mut self,
        attempt: Attempt,
        current: Option<Generation>,
        highest: u64,
    ) -> Outcome {
        let version = attempt.document.header.version;
        let in_force = current.as_ref().map(|g| &g.document);
        let current_seq = current.as_ref().map(|g| g.meta.seq);
        let stopping = || {
            Outcome::deferred(
                Some(version),
                Reason::Shutdown,
                "the agent is stopping; the document will be applied at the next start",
            )
            .with_generation(current_seq)
        };
        if self.stopping() {
            return stopping();
        }

        // 1. Validate, then plan: every reconciler checks and observes; nothing changes.
        if let Err(outcome) = validate_sections(&self.reconcilers, &attempt.document) {
            return outcome.with_generation(current_seq);
        }
        let mut plans = Vec::with_capacity(self.reconcilers.len());
        for reconciler in &self.reconcilers {
            let planned = tokio::select! {
                planned = plan_one(reconciler.as_ref(), &attempt.document, in_force) => planned,
                () = stop_requested(self.shutdown.clone()) => return stopping(),
            };
            match planned {
                Ok(plan) => plans.push(plan),
                Err(e) => {
                    return plan_failure(reconciler.name(), version, e)
                        .with_generation(current_seq);
                }
            }
        }
        // The system's own check of a whole-or-nothing plan (nftables), where an earlier
        // reconciler changes something first; otherwise that apply is the check.
        let first_change = plans.iter().position(|p| !p.actions.is_empty());
        let later_changes =
            self.reconcilers
                .iter()
                .zip(&plans)
                .enumerate()
                .filter(|(i, (_, plan))| {
                    first_change.is_some_and(|f| f < *i) && !plan.actions.is_empty()
                });
        for (_, (reconciler, plan)) in later_changes {
            let checked = tokio::select! {
                checked = precheck_one(reconciler.as_ref(), plan.payload.as_ref()) => checked,
                () = stop_requested(self.shutdown.clone()) => return stopping(),
            };
            if let Err(e) = checked {
                return plan_failure(reconciler.name(), version, e).with_generation(current_seq);
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
        let new = NewGeneration {
            version,
            node: self.node.clone(),
            source: attempt.source,
            format: attempt.format,
            bytes: attempt.bytes.clone(),
            signature: attempt.signature.clone(),
            pushed: attempt.document.pushed_tables().clone(),
            actions,
            artifacts,
        };
        let seq = match self
            .with_store("stage", move |store| store.stage(new))
            .await
        {
            Ok(seq) => seq,
            Err(e) => {
                // The disk, not the document: give the version back and try later.
                let _ = self
                    .with_store("release", move |store| store.give_back_version(highest))
                    .await;
                return Outcome::deferred(Some(version), Reason::Store, e)
                    .with_generation(current_seq);
            }
        };
        self.failpoints.hit("staged");

        // 3. Apply, in order, each within its deadline.
        let mut changed_before = false;
        for (reconciler, plan) in self.reconcilers.iter().zip(plans) {
            if self.stopping() {
                let error = "the agent is stopping".to_owned();
                return self
                    .revert(
                        &attempt.document,
                        seq,
                        current.as_ref(),
                        Reason::Shutdown,
                        error,
                        Consumed::No { highest },
                    )
                    .await;
            }
            let changes = !plan.actions.is_empty();
            if let Err(e) = apply_one(reconciler.as_ref(), plan.payload).await {
                let error = format!("{}: {e}", reconciler.name());
                if e.kind == ErrorKind::Invalid && !changed_before {
                    // Refused whole by the system, the first change of the generation
                    // (its precheck): nothing changed, the document is at fault.
                    tracing::warn!("apply {version}: refused, nothing changed: {error}");
                    return self.refused_whole(seq, version, error, current_seq).await;
                }
                tracing::error!("apply {version}: {error}");
                return self
                    .revert(
                        &attempt.document,
                        seq,
                        current.as_ref(),
                        e.kind.into(),
                        error,
                        Consumed::Yes,
                    )
                    .await;
            }
            changed_before |= changes;
            self.failpoints
                .hit(&format!("applied:{}", reconciler.name()));
        }

        // 4. Confirm within the window, else revert.
        if let Err((reason, error)) = self.confirm(&attempt.document).await {
            tracing::error!("confirm {version}: {error}");
            let consumed = if reason == Reason::Shutdown {
                Consumed::No { highest }
            } else {
                Consumed::Yes
            };
            return self
                .revert(
                    &attempt.document,
                    seq,
                    current.as_ref(),
                    reason,
                    error,
                    consumed,
                )
                .await;
        }
        self.failpoints.hit("confirmed");

        // 5. Commit.
        let failpoints = self.failpoints.clone();
        let committed = self
            .with_store("commit", move |store| {
                store.commit(seq, || failpoints.hit("commit"))
            })
            .await;
        if let Err(e) = committed {
            let error = format!("committing generation {seq}: {e}");
            return self
                .revert(
                    &attempt.document,
                    seq,
                    current.as_ref(),
                    Reason::Store,
                    error,
                    Consumed::Yes,
                )
                .await;
        }
        tracing::info!("generation {seq} (version {version}) committed");
        Outcome::applied(version, seq)
    }

    /// Run the probe and every reconciler's check until all pass or the window closes.
    /// A stop request ends the wait at once with [`Reason::Shutdown`].
    async fn confirm(&self, desired: &Document) -> Result<(), (Reason, String)> {
        tokio::select! {
            confirmed = self.confirm_until_deadline(desired) => confirmed,
            () = stop_requested(self.shutdown.clone()) => Err((
                Reason::Shutdown,
                "the agent was stopped during the confirm window".to_owned(),
            )),
        }
    }

    async fn confirm_until_deadline(&self, desired: &Document) -> Result<(), (Reason, String)> {
        let deadline = Instant::now() + self.confirm.window;
        loop {
            let result = match timeout(
                deadline.saturating_duration_since(Instant::now()) + self.confirm.retry_every,
                self.health(desired),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err((
                    Reason::Unhealthy,
                    format!(
                        "health checks did not answer within the confirm window ({:?})",
                        self.confirm.window
                    ),
                )),
            };
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

    /// Generation `seq` was refused whole by its first change (see
    /// [`Reconciler::precheck`](kowabunga_model::Reconciler::precheck)): the system is
    /// as it was, so nothing is undone; the generation is recorded as reverted with the
    /// refusal, and the document is rejected (its version used up).
    async fn refused_whole(
        &mut self,
        seq: u64,
        version: u64,
        error: String,
        in_force: Option<u64>,
    ) -> Outcome {
        let recorded = error.clone();
        if let Err(e) = self
            .with_store("abandon", move |store| store.abandon(seq, &recorded))
            .await
        {
            tracing::error!("recording the refusal of generation {seq}: {e}");
        }
        Outcome::rejected(Some(version), Reason::Invalid, error).with_generation(in_force)
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
        consumed: Consumed,
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
        let recorded = error.clone();
        let recorded = match consumed {
            Consumed::Yes => {
                self.with_store("abandon", move |store| store.abandon(seq, &recorded))
                    .await
            }
            Consumed::No { highest } => {
                self.with_store("release", move |store| {
                    store.release(seq, &recorded, highest)
                })
                .await
            }
        };
        if let Err(e) = recorded {
            tracing::error!("recording the revert of generation {seq}: {e}");
        }
        let in_force = current.map(|g| g.meta.seq);
        match consumed {
            Consumed::Yes => Outcome::reverted(version, reason, error).with_generation(in_force),
            Consumed::No { .. } => Outcome::deferred(
                Some(version),
                reason,
                format!("{error}; reverted, the document will be applied again"),
            )
            .with_generation(in_force),
        }
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
            let result = match plan_one(reconciler.as_ref(), desired, in_force).await {
                Ok(plan) => apply_one(reconciler.as_ref(), plan.payload).await,
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

/// Completes when a stop is requested; never, when nobody can request one.
async fn stop_requested(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether a reverted attempt uses up its version.
#[derive(Debug, Clone, Copy)]
enum Consumed {
    /// The document failed: a later one must be newer.
    Yes,
    /// Not the document's fault (a stop): the highest version returns to `highest`.
    No { highest: u64 },
}

/// Check the signature and parse the document. A document that fails either is
/// rejected; nothing else of an unverified document is used.
pub fn verify_and_parse(trust: &TrustPolicy, candidate: &Candidate) -> Result<Document, Outcome> {
    // Read the version for the report even before the signature is checked.
    let version = Document::parse(&candidate.bytes, candidate.format)
        .ok()
        .map(|d| d.header.version);
    let verified = trust
        .verify(&candidate.bytes, candidate.signature.as_deref())
        .map_err(|e| Outcome::rejected(version, Reason::Signature, e))?;
    if verified == crate::trust::Verified::UnsignedInsecure {
        tracing::warn!("INSECURE MODE: accepting an unsigned document");
    }
    Document::parse(&candidate.bytes, candidate.format)
        .map_err(|e| Outcome::rejected(version, Reason::Parse, e))
}

/// The header's node (when `node` is given) and validity period at `now`.
pub fn check_header(
    document: &Document,
    node: Option<&str>,
    now: Timestamp,
) -> Result<(), Outcome> {
    let header = &document.header;
    let version = Some(header.version);
    if let Some(node) = node
        && header.node != node
    {
        return Err(Outcome::rejected(
            version,
            Reason::WrongNode,
            format!(
                "document is for node {:?}, this agent is {node:?}",
                header.node
            ),
        ));
    }
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
    Ok(())
}

/// Every reconciler's offline validation of its sections, in order; the first error
/// rejects the document (`<reconciler>: <message>`, as plan would say it).
pub fn validate_sections(
    reconcilers: &[Box<dyn DynReconciler>],
    document: &Document,
) -> Result<(), Outcome> {
    for reconciler in reconcilers {
        reconciler.validate(document).map_err(|e| {
            Outcome::rejected(
                Some(document.header.version),
                e.kind.into(),
                format!("{}: {e}", reconciler.name()),
            )
        })?;
    }
    Ok(())
}

/// A plan failure: the document's fault (invalid) rejects it; anything else (the
/// system could not be read, a check timed out) defers it.
fn plan_failure(name: &str, version: u64, e: ReconcileError) -> Outcome {
    let error = format!("{name}: {e}");
    if e.kind == ErrorKind::Invalid {
        Outcome::rejected(Some(version), e.kind.into(), error)
    } else {
        Outcome::deferred(Some(version), e.kind.into(), error)
    }
}

/// One reconciler's plan, within [`PLAN_DEADLINE`].
async fn plan_one(
    reconciler: &dyn DynReconciler,
    desired: &Document,
    in_force: Option<&Document>,
) -> Result<kowabunga_model::Planned<Box<dyn std::any::Any + Send + Sync>>, ReconcileError> {
    timeout(PLAN_DEADLINE, reconciler.plan(desired, in_force))
        .await
        .unwrap_or_else(|_| {
            Err(ReconcileError::observe(format!(
                "planning did not finish within {PLAN_DEADLINE:?}"
            )))
        })
}

/// One reconciler's precheck, within [`PLAN_DEADLINE`] (it is part of planning).
async fn precheck_one(
    reconciler: &dyn DynReconciler,
    payload: &(dyn std::any::Any + Send + Sync),
) -> Result<(), ReconcileError> {
    timeout(PLAN_DEADLINE, reconciler.precheck(payload))
        .await
        .unwrap_or_else(|_| {
            Err(ReconcileError::observe(format!(
                "the system's check did not finish within {PLAN_DEADLINE:?}"
            )))
        })
}

/// One reconciler's apply, within its own deadline; a timeout is a failed apply.
async fn apply_one(
    reconciler: &dyn DynReconciler,
    payload: Box<dyn std::any::Any + Send + Sync>,
) -> Result<(), ReconcileError> {
    let deadline = reconciler.apply_deadline();
    timeout(deadline, reconciler.apply(payload))
        .await
        .unwrap_or_else(|_| {
            Err(ReconcileError::apply(format!(
                "applying did not finish within {deadline:?}"
            )))
        })
}
