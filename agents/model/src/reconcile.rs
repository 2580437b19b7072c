//! The contract between the apply pipeline and the reconcilers of a role.
//!
//! A reconciler owns one concern (network links, firewall, DNS...). For each generation
//! the pipeline asks every reconciler to [`plan`](Reconciler::plan) first: parse and
//! validate its sections, observe the system, and list the changes, without making any.
//! Only when every reconciler has planned successfully does the pipeline
//! [`apply`](Reconciler::apply) the plans, then [`check`](Reconciler::check) them during
//! the confirm window. Undoing a generation is planning and applying the previous one.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;

use crate::{Document, DocumentError};

/// One change a plan will make, in words (`create vlan101 (id 101 on eth0)`). The list
/// of actions is also what a dry run prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action(pub String);

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file a reconciler rendered from the desired state (an nft ruleset, a keepalived
/// configuration...), kept in the generation's directory for inspection and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// File name inside the generation's `rendered/<reconciler>/` directory.
    pub name: String,
    pub contents: Vec<u8>,
}

/// What [`Reconciler::plan`] produces: the actions in words, the rendered artifacts,
/// and the reconciler's own payload that [`Reconciler::apply`] will carry out.
#[derive(Debug)]
pub struct Planned<P> {
    pub actions: Vec<Action>,
    pub artifacts: Vec<Artifact>,
    pub payload: P,
}

impl<P> Planned<P> {
    /// A plan with nothing to change.
    pub fn nothing(payload: P) -> Self {
        Self {
            actions: Vec::new(),
            artifacts: Vec::new(),
            payload,
        }
    }
}

/// At which step a reconciler failed; the pipeline reports and counts failures by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The desired state is not acceptable (nothing was changed).
    Invalid,
    /// The system's current state could not be read.
    Observe,
    /// A change was refused by the system.
    Apply,
    /// The applied state does not pass its health check.
    Unhealthy,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Observe => "observe",
            ErrorKind::Apply => "apply",
            ErrorKind::Unhealthy => "unhealthy",
        }
    }
}

/// A reconciler's failure: which step, and a message naming the object and the cause
/// (`vlan101: parent eth9 does not exist`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ReconcileError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ReconcileError {
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn observe(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Observe, message)
    }
    pub fn apply(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Apply, message)
    }
    pub fn unhealthy(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unhealthy, message)
    }
}

impl From<DocumentError> for ReconcileError {
    fn from(err: DocumentError) -> Self {
        Self::invalid(err)
    }
}

/// One concern of a role, driven by the apply pipeline.
pub trait Reconciler: Send + Sync + 'static {
    /// What `plan` hands to `apply`.
    type Plan: Send + Sync + 'static;

    /// Short name for logs, metrics and the generation's `rendered/` directory
    /// (`network`, `firewall`, `dns`).
    fn name(&self) -> &'static str;

    /// Check the sections this reconciler owns in `desired`, without I/O: no kernel, no
    /// files, no root. Everything this refuses, [`plan`](Reconciler::plan) refuses too
    /// with the same error; the pipeline calls it before planning, and `<agent> check`
    /// calls only this (offline validation in an operator's CI).
    fn validate(&self, _desired: &Document) -> Result<(), ReconcileError> {
        Ok(())
    }

    /// The JSON Schema of each section this reconciler owns, by section name: `<agent>
    /// schema` assembles the role's document schema from them (for editors and CI).
    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        Vec::new()
    }

    /// How long one [`apply`](Reconciler::apply) may take before it counts as failed
    /// (the generation is then reverted). Separate from the confirm window: a template
    /// download may need an hour, an nft transaction a few seconds.
    fn apply_deadline(&self) -> Duration {
        DEFAULT_APPLY_DEADLINE
    }

    /// Validate `desired` (strictly, for the sections this reconciler owns), observe the
    /// system and compute the changes that bring it to `desired`. `in_force` is the
    /// generation the system was last set to: together with `desired` it says which
    /// objects this reconciler owns (and may change or delete). Changes nothing.
    fn plan(
        &self,
        desired: &Document,
        in_force: Option<&Document>,
    ) -> impl Future<Output = Result<Planned<Self::Plan>, ReconcileError>> + Send;

    /// The system's own check of a plan, without changing anything, for a reconciler
    /// whose [`apply`](Reconciler::apply) is one transaction the system takes whole or
    /// refuses whole (an `nft -f`). The pipeline calls it before anything changes, and
    /// only when an earlier reconciler of the same generation changes something: when
    /// none does, the apply is the check, at no extra cost. Such an apply returns
    /// [`ErrorKind::Invalid`] when the system refuses the transaction, and only then,
    /// having changed nothing; the pipeline rejects the document as if this had
    /// refused it. Reconcilers without such a transaction keep the default (nothing to
    /// check beyond `plan`) and never return `Invalid` from `apply`.
    fn precheck(
        &self,
        _plan: &Self::Plan,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send {
        async { Ok(()) }
    }

    /// Carry out a plan made by `plan` for the current system state.
    fn apply(&self, plan: Self::Plan) -> impl Future<Output = Result<(), ReconcileError>> + Send;

    /// Whether the system is healthy under `desired`. Called after every reconciler has
    /// applied, repeatedly during the confirm window, until it passes.
    fn check(&self, desired: &Document) -> impl Future<Output = Result<(), ReconcileError>> + Send;
}

/// [`Reconciler::apply_deadline`] when a reconciler does not choose its own.
pub const DEFAULT_APPLY_DEADLINE: Duration = Duration::from_secs(120);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type AnyPlan = Box<dyn Any + Send + Sync>;

/// A [`Reconciler`] with its plan type erased, so a pipeline can hold several kinds.
/// Obtain one with [`erase`].
pub trait DynReconciler: Send + Sync {
    fn name(&self) -> &'static str;
    fn validate(&self, desired: &Document) -> Result<(), ReconcileError>;
    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)>;
    fn apply_deadline(&self) -> Duration;
    fn plan<'a>(
        &'a self,
        desired: &'a Document,
        in_force: Option<&'a Document>,
    ) -> BoxFuture<'a, Result<Planned<AnyPlan>, ReconcileError>>;
    fn precheck<'a>(
        &'a self,
        plan: &'a (dyn Any + Send + Sync),
    ) -> BoxFuture<'a, Result<(), ReconcileError>>;
    fn apply(&self, plan: AnyPlan) -> BoxFuture<'_, Result<(), ReconcileError>>;
    fn check<'a>(&'a self, desired: &'a Document) -> BoxFuture<'a, Result<(), ReconcileError>>;
}

struct Erased<R>(R);

impl<R: Reconciler> DynReconciler for Erased<R> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        self.0.validate(desired)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        self.0.section_schemas()
    }

    fn apply_deadline(&self) -> Duration {
        self.0.apply_deadline()
    }

    fn plan<'a>(
        &'a self,
        desired: &'a Document,
        in_force: Option<&'a Document>,
    ) -> BoxFuture<'a, Result<Planned<AnyPlan>, ReconcileError>> {
        Box::pin(async move {
            let planned = self.0.plan(desired, in_force).await?;
            Ok(Planned {
                actions: planned.actions,
                artifacts: planned.artifacts,
                payload: Box::new(planned.payload) as AnyPlan,
            })
        })
    }

    fn precheck<'a>(
        &'a self,
        plan: &'a (dyn Any + Send + Sync),
    ) -> BoxFuture<'a, Result<(), ReconcileError>> {
        Box::pin(async move {
            match plan.downcast_ref::<R::Plan>() {
                Some(plan) => self.0.precheck(plan).await,
                None => Err(foreign_plan(self.0.name())),
            }
        })
    }

    fn apply(&self, plan: AnyPlan) -> BoxFuture<'_, Result<(), ReconcileError>> {
        Box::pin(async move {
            match plan.downcast::<R::Plan>() {
                Ok(plan) => self.0.apply(*plan).await,
                Err(_) => Err(foreign_plan(self.0.name())),
            }
        })
    }

    fn check<'a>(&'a self, desired: &'a Document) -> BoxFuture<'a, Result<(), ReconcileError>> {
        Box::pin(self.0.check(desired))
    }
}

fn foreign_plan(name: &str) -> ReconcileError {
    ReconcileError::apply(format!(
        "{name}: was handed a plan made by another reconciler"
    ))
}

/// Box a reconciler for a pipeline.
pub fn erase<R: Reconciler>(reconciler: R) -> Box<dyn DynReconciler> {
    Box::new(Erased(reconciler))
}
