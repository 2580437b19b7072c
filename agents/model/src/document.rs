//! The desired-state document: a header that says which node it is for and how long it
//! is valid, then one table per concern (`[network]`, `[firewall]`, `[dns]`, ...).
//!
//! Parsing is two-staged, like ripgrep's arguments: [`Document::parse`] checks only the
//! header and keeps every section as an untyped table; each reconciler then reads the
//! sections it owns with [`Document::section`], strictly (unknown keys are errors). A
//! role ignores the sections it does not own, so one document can serve several roles.
//!
//! Besides the signed sections, a document may carry *pushed* tables: state that Kahuna
//! sent over its RPC channel (DNS records, for instance). They are stored with the
//! generation but are not part of the signed bytes; see `docs/desired-state.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use thiserror::Error;
use toml::{Table, Value};

use crate::Timestamp;

/// Serialisation of a document's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML: the format pulled documents use.
    Toml,
    /// YAML: accepted for local files (`kiwi apply`).
    Yaml,
}

impl Format {
    /// The format a file name implies: `.yml`/`.yaml` is YAML, anything else TOML.
    pub fn from_file_name(name: &str) -> Self {
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            Format::Yaml
        } else {
            Format::Toml
        }
    }
}

/// Why a document, or one of its sections, is not acceptable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("document is not valid UTF-8")]
    NotUtf8,
    #[error("document is not valid TOML: {0}")]
    Toml(String),
    #[error("document is not valid YAML: {0}")]
    Yaml(String),
    #[error("header: {0}")]
    Header(String),
    #[error(
        "unknown top-level key {0:?} (allowed: version, node, issued_at, expires_at, or a [section])"
    )]
    UnknownTopLevelKey(String),
    #[error("[{section}] {detail}")]
    Section { section: String, detail: String },
}

/// What the document is, for whom, and when it is valid.
///
/// Parsed by hand (`take_header`); the JSON Schema derived here says the same for
/// editors and CI (`<agent> schema`). A TOML datetime (`2026-11-22T10:00:00Z`, unquoted)
/// is a string in the JSON view editors validate.
#[derive(Debug, Clone, PartialEq, Eq, schemars::JsonSchema)]
pub struct Header {
    /// Strictly increasing across the documents a node accepts.
    #[schemars(range(min = 1, max = i64::MAX))]
    pub version: u64,
    /// The agent id the document is for.
    #[schemars(regex(pattern = r"\S"))]
    pub node: String,
    /// When the document was issued (RFC 3339 with a UTC offset); at most 5 minutes in
    /// the future of the agent's clock.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub issued_at: Timestamp,
    /// When the document stops being valid (RFC 3339 with a UTC offset); after
    /// `issued_at`.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub expires_at: Timestamp,
}

impl Header {
    /// Whether the document is valid at `now`: issued, and not yet expired.
    pub fn check_validity(&self, now: Timestamp) -> Result<(), String> {
        if now >= self.expires_at {
            return Err(format!(
                "document version {} expired at {} (now {now})",
                self.version, self.expires_at
            ));
        }
        Ok(())
    }
}

/// Where a reconciler reads the state it owns: the document's `[section]` (pulled,
/// signed documents) or the table of that name pushed by the role (the kontroller,
/// whose state comes from its seed and Kahuna's instance metadata, not a document).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    #[default]
    Section,
    Pushed,
}

/// A parsed desired-state document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub header: Header,
    sections: BTreeMap<String, Table>,
    pushed: BTreeMap<String, Table>,
}

impl Document {
    /// Parse `bytes` and check the header; sections are kept untyped until a
    /// reconciler asks for them.
    pub fn parse(bytes: &[u8], format: Format) -> Result<Self, DocumentError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DocumentError::NotUtf8)?;
        let mut table: Table = match format {
            Format::Toml => toml::from_str(text).map_err(|e| DocumentError::Toml(one_line(&e)))?,
            Format::Yaml => {
                serde_saphyr::from_str(text).map_err(|e| DocumentError::Yaml(one_line(&e)))?
            }
        };
        let header = take_header(&mut table)?;
        let mut sections = BTreeMap::new();
        for (key, value) in table {
            match value {
                Value::Table(section) => {
                    sections.insert(key, section);
                }
                _ => return Err(DocumentError::UnknownTopLevelKey(key)),
            }
        }
        Ok(Self {
            header,
            sections,
            pushed: BTreeMap::new(),
        })
    }

    /// A document that declares nothing: what the system returns to when the first
    /// generation it ever tried has to be undone.
    pub fn empty(node: &str) -> Self {
        Self {
            header: Header {
                version: 0,
                node: node.to_owned(),
                issued_at: Timestamp::EPOCH,
                expires_at: Timestamp::MAX,
            },
            sections: BTreeMap::new(),
            pushed: BTreeMap::new(),
        }
    }

    /// Names of the sections present, sorted.
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// Whether the document has a `[name]` section.
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.contains_key(name)
    }

    /// Read the `[name]` section as `T`, or `None` when absent. `T` should deny unknown
    /// fields: errors name the section and the path of the offending key.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DocumentError> {
        self.sections
            .get(name)
            .map(|table| typed(name, table))
            .transpose()
    }

    /// Read `name` from where `origin` says: the document's section or the pushed table.
    pub fn read<T: DeserializeOwned>(
        &self,
        origin: Origin,
        name: &str,
    ) -> Result<Option<T>, DocumentError> {
        match origin {
            Origin::Section => self.section(name),
            Origin::Pushed => self.pushed(name),
        }
    }

    /// Read the pushed table `name` (state sent by Kahuna over RPC), or `None`.
    pub fn pushed<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DocumentError> {
        self.pushed
            .get(name)
            .map(|table| typed(name, table))
            .transpose()
    }

    /// All pushed tables, as stored beside the generation.
    pub fn pushed_tables(&self) -> &BTreeMap<String, Table> {
        &self.pushed
    }

    /// Replace the pushed table `name`.
    pub fn set_pushed(&mut self, name: &str, table: Table) {
        self.pushed.insert(name.to_owned(), table);
    }

    /// Replace every pushed table.
    pub fn with_pushed(mut self, pushed: BTreeMap<String, Table>) -> Self {
        self.pushed = pushed;
        self
    }
}

fn typed<T: DeserializeOwned>(name: &str, table: &Table) -> Result<T, DocumentError> {
    let value = Value::Table(table.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = one_line(e.inner());
        DocumentError::Section {
            section: name.to_owned(),
            detail: if path == "." {
                detail
            } else {
                format!("{path}: {detail}")
            },
        }
    })
}

fn take_header(table: &mut Table) -> Result<Header, DocumentError> {
    let header = |msg: String| DocumentError::Header(msg);
    let version = match table.remove("version") {
        Some(Value::Integer(v)) if v >= 1 => v as u64,
        Some(other) => {
            return Err(header(format!(
                "version must be an integer >= 1, got {other}"
            )));
        }
        None => return Err(header("missing `version`".into())),
    };
    let node = match table.remove("node") {
        Some(Value::String(node)) if !node.trim().is_empty() => node,
        Some(other) => {
            return Err(header(format!(
                "node must be a non-empty string, got {other}"
            )));
        }
        None => return Err(header("missing `node`".into())),
    };
    let mut instant = |key: &str| -> Result<Timestamp, DocumentError> {
        let text = match table.remove(key) {
            Some(Value::String(text)) => text,
            Some(Value::Datetime(dt)) => dt.to_string(),
            Some(other) => {
                return Err(header(format!(
                    "{key} must be an RFC 3339 time, got {other}"
                )));
            }
            None => return Err(header(format!("missing `{key}`"))),
        };
        text.parse().map_err(|e| header(format!("{key}: {e}")))
    };
    let issued_at = instant("issued_at")?;
    let expires_at = instant("expires_at")?;
    if expires_at <= issued_at {
        return Err(header(format!(
            "expires_at ({expires_at}) is not after issued_at ({issued_at})"
        )));
    }
    Ok(Header {
        version,
        node,
        issued_at,
        expires_at,
    })
}

/// Parser messages sometimes span lines (TOML shows the offending line); logs and
/// reports want one line.
fn one_line(err: &dyn fmt::Display) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    const HEAD: &str = r#"
version = 3
node = "kiwi-1"
issued_at = 2026-11-22T10:00:00Z
expires_at = "2026-11-29T10:00:00Z"
"#;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        name: String,
        #[serde(default)]
        items: Vec<u16>,
    }

    fn doc(body: &str) -> Result<Document, DocumentError> {
        Document::parse(format!("{HEAD}{body}").as_bytes(), Format::Toml)
    }

    #[test]
    fn header_accepts_native_and_quoted_datetimes() {
        let d = doc("").unwrap();
        assert_eq!(d.header.version, 3);
        assert_eq!(d.header.node, "kiwi-1");
        assert_eq!(d.header.issued_at.to_string(), "2026-11-22T10:00:00Z");
        assert_eq!(d.header.expires_at.to_string(), "2026-11-29T10:00:00Z");
    }

    #[test]
    fn sections_are_typed_on_demand_and_strict() {
        let d = doc("[demo]\nname = \"x\"\nitems = [1, 2]\n[other]\nanything = true\n").unwrap();
        let demo: Demo = d.section("demo").unwrap().unwrap();
        assert_eq!(demo.items, vec![1, 2]);
        assert_eq!(d.section::<Demo>("absent").unwrap(), None);
        let bad = doc("[demo]\nname = \"x\"\nnmae = 1\n").unwrap();
        let err = bad.section::<Demo>("demo").unwrap_err().to_string();
        assert!(
            err.contains("[demo]") && err.contains("unknown field `nmae`"),
            "{err}"
        );
    }

    #[test]
    fn section_errors_name_the_path() {
        let d = doc("[demo]\nname = \"x\"\nitems = [1, 70000]\n").unwrap();
        let err = d.section::<Demo>("demo").unwrap_err().to_string();
        assert!(err.contains("items[1]"), "{err}");
    }

    #[test]
    fn header_errors() {
        let cases = [
            (
                "node = \"a\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"",
                "missing `version`",
            ),
            (
                "version = 0\nnode = \"a\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"",
                "version must be",
            ),
            (
                "version = 1\nnode = \"\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"",
                "node must be",
            ),
            (
                "version = 1\nnode = \"a\"\nissued_at = \"2026-01-01T00:00:00\"\nexpires_at = \"2027-01-01T00:00:00Z\"",
                "UTC offset",
            ),
            (
                "version = 1\nnode = \"a\"\nissued_at = \"2027-01-01T00:00:00Z\"\nexpires_at = \"2026-01-01T00:00:00Z\"",
                "not after",
            ),
            (
                "version = 1\nnode = \"a\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"\nverison = 2",
                "unknown top-level key \"verison\"",
            ),
        ];
        for (text, want) in cases {
            let err = Document::parse(text.as_bytes(), Format::Toml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn malformed_toml_is_one_line_error() {
        let err = doc("[demo\n").unwrap_err().to_string();
        assert!(err.starts_with("document is not valid TOML"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn yaml_is_equivalent_to_toml() {
        let yaml = "version: 3\nnode: kiwi-1\nissued_at: \"2026-11-22T10:00:00Z\"\nexpires_at: \"2026-11-29T10:00:00Z\"\ndemo:\n  name: x\n  items: [1, 2]\n";
        let y = Document::parse(yaml.as_bytes(), Format::Yaml).unwrap();
        let t = doc("[demo]\nname = \"x\"\nitems = [1, 2]\n").unwrap();
        assert_eq!(y, t);
    }

    #[test]
    fn validity_window() {
        let d = doc("").unwrap();
        let before: Timestamp = "2026-11-29T09:59:59Z".parse().unwrap();
        let after: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        assert!(d.header.check_validity(before).is_ok());
        assert!(
            d.header
                .check_validity(after)
                .unwrap_err()
                .contains("expired")
        );
    }

    #[test]
    fn pushed_tables_are_separate_from_sections() {
        let mut d = doc("").unwrap();
        let mut t = Table::new();
        t.insert("name".into(), Value::String("p".into()));
        d.set_pushed("demo", t);
        assert!(!d.has_section("demo"));
        let demo: Demo = d.pushed("demo").unwrap().unwrap();
        assert_eq!(demo.name, "p");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Document::parse(&bytes, Format::Toml);
            let _ = Document::parse(&bytes, Format::Yaml);
        }

        #[test]
        fn version_round_trips(v in 1u64..i64::MAX as u64, node in "[a-z][a-z0-9-]{0,20}") {
            let text = format!("version = {v}\nnode = \"{node}\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"\n");
            let d = Document::parse(text.as_bytes(), Format::Toml).unwrap();
            prop_assert_eq!(d.header.version, v);
            prop_assert_eq!(d.header.node, node);
        }
    }
}
