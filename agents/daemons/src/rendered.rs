//! A reconciler whose only objects are daemons' files rendered from one section of the
//! document (Kiwi's `[vrrp]`: keepalived and conntrackd; `[ipsec]`: strongSwan). The
//! section's checks and rendering are the role crate's ([`Render`]); writing, the
//! daemon's check, reloading and removing are the [`DaemonsReconciler`]'s.

use std::marker::PhantomData;
use std::path::PathBuf;

use kowabunga_model::{Document, Planned, ReconcileError, Reconciler};

use crate::reconciler::{Daemon, DaemonsPlan, DaemonsReconciler, SECTION as DAEMONS};
use crate::systemd::Bus;

/// What a section renders to.
pub trait Render: Send + Sync + 'static {
    /// The section, and the reconciler's name.
    const SECTION: &'static str;
    /// The daemons whose files it renders, in the order they are written.
    const DAEMONS: &'static [Daemon];
    /// The section's JSON Schema.
    fn schema() -> schemars::Schema;
    /// Each daemon's file from `doc`, by daemon name; a daemon left out has no file
    /// (stopped, its file removed). An error names what in the section does not fit.
    fn render(doc: &Document) -> Result<Vec<(&'static str, String)>, String>;
}

/// Drives the daemons of `R` from the documents' `R::SECTION`.
pub struct RenderedReconciler<R> {
    daemons: DaemonsReconciler,
    render: PhantomData<fn() -> R>,
}

impl<R: Render> RenderedReconciler<R> {
    /// The files go to `dir` (the image's units read them there); the daemons are
    /// reloaded on the system bus.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::on_bus(dir, Bus::System)
    }

    /// The same on another bus (tests).
    pub fn on_bus(dir: impl Into<PathBuf>, bus: Bus) -> Self {
        Self {
            daemons: DaemonsReconciler::on_bus(dir, R::DAEMONS.to_vec(), bus),
            render: PhantomData,
        }
    }

    /// `desired` with the rendered files as its daemons table.
    fn with_daemons(desired: &Document) -> Result<Document, ReconcileError> {
        let files = R::render(desired).map_err(ReconcileError::invalid)?;
        let table = files
            .into_iter()
            .map(|(name, text)| (name.to_owned(), toml::Value::String(text)))
            .collect();
        let mut doc = desired.clone();
        doc.set_pushed(DAEMONS, table);
        Ok(doc)
    }
}

impl<R: Render> Reconciler for RenderedReconciler<R> {
    type Plan = DaemonsPlan;

    fn name(&self) -> &'static str {
        R::SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        R::render(desired)
            .map(drop)
            .map_err(ReconcileError::invalid)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(R::SECTION, R::schema())]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DaemonsPlan>, ReconcileError> {
        self.daemons.plan(&Self::with_daemons(desired)?, None).await
    }

    async fn apply(&self, plan: DaemonsPlan) -> Result<(), ReconcileError> {
        self.daemons.apply(plan).await
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        self.daemons.check(&Self::with_daemons(desired)?).await
    }
}
