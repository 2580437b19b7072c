//! Why a metadata document is refused: the key path of the offending value, and what is
//! wrong with it (the value is part of the message).

/// A refusal. Nothing is rendered when a conversion returns one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Refused {
    /// Key path in the metadata document, `kawaii.fw_nat_rules[2].ports`.
    pub path: String,
    /// What is wrong, naming the value (`port range 200-100 is reversed`).
    pub problem: String,
}

impl Refused {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// The first line of a parser message (serde-saphyr adds a source snippet below it).
pub(crate) fn one_line(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}
