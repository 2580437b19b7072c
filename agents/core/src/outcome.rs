//! What became of one attempt to bring a document into force.

use std::fmt;

use serde::Serialize;

/// The state reported to Kahuna after each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The document is now in force.
    Applied,
    /// The document was already in force; nothing was done (not reported).
    Unchanged,
    /// The document was refused before anything on the system changed.
    Rejected,
    /// The document was applied, then undone: the previous generation is in force.
    Reverted,
    /// The document could not be brought into force now, through no fault of its own
    /// (the system could not be read, the disk was full, the agent was shutting down):
    /// the generation in force stays, and the same version is tried again later.
    Deferred,
}

/// Why an attempt failed; failures are counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Signature,
    Parse,
    WrongNode,
    Expired,
    NotYetValid,
    Replay,
    Invalid,
    Observe,
    Apply,
    Unhealthy,
    Unreachable,
    Interrupted,
    Store,
    /// The agent was asked to stop while the document was being brought into force.
    Shutdown,
}

impl Reason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [Reason; 14] = [
        Reason::Signature,
        Reason::Parse,
        Reason::WrongNode,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Replay,
        Reason::Invalid,
        Reason::Observe,
        Reason::Apply,
        Reason::Unhealthy,
        Reason::Unreachable,
        Reason::Interrupted,
        Reason::Store,
        Reason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Signature => "signature",
            Reason::Parse => "parse",
            Reason::WrongNode => "wrong_node",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Replay => "replay",
            Reason::Invalid => "invalid",
            Reason::Observe => "observe",
            Reason::Apply => "apply",
            Reason::Unhealthy => "unhealthy",
            Reason::Unreachable => "unreachable",
            Reason::Interrupted => "interrupted",
            Reason::Store => "store",
            Reason::Shutdown => "shutdown",
        }
    }
}

impl From<kowabunga_model::ErrorKind> for Reason {
    fn from(kind: kowabunga_model::ErrorKind) -> Self {
        use kowabunga_model::ErrorKind;
        match kind {
            ErrorKind::Invalid => Reason::Invalid,
            ErrorKind::Observe => Reason::Observe,
            ErrorKind::Apply => Reason::Apply,
            ErrorKind::Unhealthy => Reason::Unhealthy,
        }
    }
}

/// The result of one attempt. Serialises as the report body of `docs/config-api.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Version of the document attempted, when it could be read.
    pub version: Option<u64>,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub error: Option<String>,
    /// Generation sequence number in force after the attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl Outcome {
    pub fn applied(version: u64, generation: u64) -> Self {
        Self {
            version: Some(version),
            state: State::Applied,
            reason: None,
            error: None,
            generation: Some(generation),
        }
    }

    pub fn unchanged(version: u64, generation: Option<u64>) -> Self {
        Self {
            version: Some(version),
            state: State::Unchanged,
            reason: None,
            error: None,
            generation,
        }
    }

    pub fn rejected(version: Option<u64>, reason: Reason, error: impl fmt::Display) -> Self {
        Self {
            version,
            state: State::Rejected,
            reason: Some(reason),
            error: Some(error.to_string()),
            generation: None,
        }
    }

    pub fn reverted(version: u64, reason: Reason, error: impl fmt::Display) -> Self {
        Self {
            version: Some(version),
            state: State::Reverted,
            reason: Some(reason),
            error: Some(error.to_string()),
            generation: None,
        }
    }

    /// Not brought into force now; to be tried again (see [`State::Deferred`]).
    pub fn deferred(version: Option<u64>, reason: Reason, error: impl fmt::Display) -> Self {
        Self {
            version,
            state: State::Deferred,
            reason: Some(reason),
            error: Some(error.to_string()),
            generation: None,
        }
    }

    pub fn with_generation(mut self, generation: Option<u64>) -> Self {
        self.generation = generation;
        self
    }

    /// Rejected, reverted or deferred: the document is not in force.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.state,
            State::Rejected | State::Reverted | State::Deferred
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self
            .version
            .map_or_else(|| "?".to_owned(), |v| v.to_string());
        let state = match self.state {
            State::Applied => "applied",
            State::Unchanged => "unchanged",
            State::Rejected => "rejected",
            State::Reverted => "reverted",
            State::Deferred => "deferred",
        };
        write!(f, "version {version} {state}")?;
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}
