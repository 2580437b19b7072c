//! Typed `kowabunga.*` boot parameters, read from the kernel command line.
//!
//! Parsing checks every value without touching the system (no file is opened, nothing is
//! resolved). Every field is optional here: credentials may also come from a persisted file
//! or an upstream YAML file, and the agent core merges those sources.
//!
//! Semantics follow the kernel's own parameter handling:
//! - keys are compared with `-` and `_` equivalent (`kowabunga.agent-id` is
//!   `kowabunga.agent_id`);
//! - a single-valued key given more than once keeps its **last** value, as the kernel does
//!   when it calls a parameter's setter once per occurrence, and a [`Warning::Repeated`] is
//!   returned. Unlike the kernel, an invalid occurrence is an error even if a later one is
//!   valid: bad input is refused as a whole;
//! - parameters after a bare `--` belong to init and are ignored.
//!
//! Keys outside `kowabunga.` are ignored; unknown `kowabunga.*` keys give a
//! [`Warning::UnknownKey`]. Warnings are returned, never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http_url::{HttpUrl, InvalidUrl};
use crate::minisign::MinisignPublicKey;
use crate::secret::Secret;
use crate::tokenize::tokenize;
use base64::Engine;

/// Prefix of every Kowabunga key.
pub const PREFIX: &str = "kowabunga.";
/// Where the running kernel exposes its command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";
/// Placeholder in `kowabunga.config_url`, replaced by the percent-encoded agent id.
pub const ID_PLACEHOLDER: &str = "{id}";
/// Path appended to the Kahuna URL when `kowabunga.config_url` is absent.
pub const DEFAULT_CONFIG_PATH: &str = "/api/v1/agents/{id}/config";
/// Poll interval when `kowabunga.interval` is absent.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Accepted `kowabunga.interval`, in seconds.
pub const INTERVAL_RANGE: RangeInclusive<u64> = 5..=86_400;
/// Confirmation window when `kowabunga.confirm_window` is absent.
pub const DEFAULT_CONFIRM_WINDOW: Duration = Duration::from_secs(90);
/// Accepted `kowabunga.confirm_window`, in seconds.
pub const CONFIRM_WINDOW_RANGE: RangeInclusive<u64> = 1..=3_600;

/// The `kowabunga.*` parameters found on a kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// `kowabunga.kahuna`: Kahuna base URL, without trailing slash.
    pub kahuna: Option<HttpUrl>,
    /// `kowabunga.agent_id`: the id Kahuna issued for this agent.
    pub agent_id: Option<String>,
    /// `kowabunga.api_key` or `kowabunga.api_key_file`.
    pub api_key: Option<ApiKey>,
    /// `kowabunga.config_url` as given, possibly with `{id}`; see [`BootParams::config_url`].
    pub config_url_template: Option<String>,
    /// `kowabunga.pubkey`, in command-line order, without duplicates.
    pub pubkeys: Vec<MinisignPublicKey>,
    /// `kowabunga.interval`; see [`BootParams::interval_or_default`].
    pub interval: Option<Duration>,
    /// `kowabunga.confirm_window`; see [`BootParams::confirm_window_or_default`].
    pub confirm_window: Option<Duration>,
    /// `kowabunga.insecure`: development only; allows `http://` URLs.
    pub insecure: bool,
    /// `kowabunga.ca_file`: CA bundle to trust instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// `kowabunga.ceph_key=CLIENT:KEY`, by cephx client (a Kaktus node's `rbd` pools).
    pub ceph_keys: BTreeMap<String, Secret>,
}

/// Where the agent's API key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKey {
    /// `kowabunga.api_key=KEY`. Note that `/proc/cmdline` is readable by every local user.
    Inline(Secret),
    /// `kowabunga.api_key_file=PATH`: read by the agent core, not by this crate.
    File(PathBuf),
}

/// Something wrong with the command line that does not stop the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A `kowabunga.*` key this version does not know, as written (its value is not kept).
    UnknownKey { key: String },
    /// A single-valued key given more than once; the last value was kept.
    Repeated { key: &'static str },
    /// The same `kowabunga.pubkey` given more than once; it is kept once.
    DuplicatePubkey { key_id: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey { key } => write!(f, "{key:?}: unknown kernel parameter, ignored"),
            Self::Repeated { key } => write!(f, "{key}: given more than once, the last one wins"),
            Self::DuplicatePubkey { key_id } => {
                write!(f, "kowabunga.pubkey: key {key_id} given more than once")
            }
        }
    }
}

/// Why the Kowabunga boot parameters cannot be used. Every variant names its key(s).
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// A value is missing or malformed.
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    /// Both ways of giving the API key were used.
    #[error("kowabunga.api_key and kowabunga.api_key_file are mutually exclusive: give only one")]
    ApiKeyConflict,
    /// A value needed to derive another one is absent.
    #[error("{key} is needed to {purpose}")]
    Missing {
        key: &'static str,
        purpose: &'static str,
    },
    /// The command-line file could not be read.
    #[error("cannot read the kernel command line from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A known key; `name()` is its canonical spelling (with `_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Kahuna,
    AgentId,
    ApiKey,
    ApiKeyFile,
    ConfigUrl,
    Pubkey,
    Interval,
    ConfirmWindow,
    Insecure,
    CaFile,
    CephKey,
}

impl Field {
    const ALL: [Self; 11] = [
        Self::Kahuna,
        Self::AgentId,
        Self::ApiKey,
        Self::ApiKeyFile,
        Self::ConfigUrl,
        Self::Pubkey,
        Self::Interval,
        Self::ConfirmWindow,
        Self::Insecure,
        Self::CaFile,
        Self::CephKey,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Kahuna => "kowabunga.kahuna",
            Self::AgentId => "kowabunga.agent_id",
            Self::ApiKey => "kowabunga.api_key",
            Self::ApiKeyFile => "kowabunga.api_key_file",
            Self::ConfigUrl => "kowabunga.config_url",
            Self::Pubkey => "kowabunga.pubkey",
            Self::Interval => "kowabunga.interval",
            Self::ConfirmWindow => "kowabunga.confirm_window",
            Self::Insecure => "kowabunga.insecure",
            Self::CaFile => "kowabunga.ca_file",
            Self::CephKey => "kowabunga.ceph_key",
        }
    }

    /// Placeholder for the value, used in error messages.
    fn syntax(self) -> &'static str {
        match self {
            Self::Kahuna | Self::ConfigUrl => "URL",
            Self::AgentId => "ID",
            Self::ApiKey => "KEY",
            Self::ApiKeyFile | Self::CaFile => "PATH",
            Self::Pubkey => "BASE64",
            Self::Interval | Self::ConfirmWindow => "SECONDS",
            Self::Insecure => "BOOL",
            Self::CephKey => "CLIENT:KEY",
        }
    }

    fn invalid(self, problem: impl Into<String>) -> CmdlineError {
        CmdlineError::Invalid {
            key: self.name(),
            problem: problem.into(),
        }
    }
}

/// The canonical names of every key this crate understands.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    Field::ALL.into_iter().map(Field::name)
}

impl BootParams {
    /// Read and parse [`PROC_CMDLINE`].
    pub fn from_proc() -> Result<(Self, Vec<Warning>), CmdlineError> {
        Self::from_file(PROC_CMDLINE)
    }

    /// Read and parse a file holding a kernel command line. Bytes that are not UTF-8 are
    /// replaced (they can only matter to other programs' parameters).
    pub fn from_file(path: impl AsRef<Path>) -> Result<(Self, Vec<Warning>), CmdlineError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CmdlineError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_cmdline(&String::from_utf8_lossy(&bytes))
    }

    /// Parse the `kowabunga.*` parameters of a kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Result<(Self, Vec<Warning>), CmdlineError> {
        let mut params = Self::default();
        let mut warnings = Vec::new();
        let mut seen = [false; Field::ALL.len()];
        for param in tokenize(cmdline) {
            if !param.key.starts_with(PREFIX) {
                continue;
            }
            let Some(key) = Field::ALL.into_iter().find(|k| k.name() == param.key) else {
                warnings.push(Warning::UnknownKey {
                    key: param.raw_key.to_owned(),
                });
                continue;
            };
            if std::mem::replace(&mut seen[key as usize], true)
                && !matches!(key, Field::Pubkey | Field::CephKey)
            {
                warnings.push(Warning::Repeated { key: key.name() });
            }
            params.set(key, param.value, &mut warnings)?;
        }
        if seen[Field::ApiKey as usize] && seen[Field::ApiKeyFile as usize] {
            return Err(CmdlineError::ApiKeyConflict);
        }
        params.check_schemes()?;
        Ok((params, warnings))
    }

    fn set(
        &mut self,
        key: Field,
        value: Option<&str>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), CmdlineError> {
        if key == Field::Insecure {
            self.insecure = parse_bool(key, value)?;
            return Ok(());
        }
        let value = match value {
            Some("") => return Err(key.invalid("empty value")),
            Some(value) => value,
            None => {
                return Err(key.invalid(format!(
                    "needs a value ({}={})",
                    key.name(),
                    key.syntax()
                )));
            }
        };
        match key {
            Field::Kahuna => {
                let url = HttpUrl::parse_base(value).map_err(|e| bad_url(key, value, e))?;
                self.kahuna = Some(url);
            }
            Field::AgentId => {
                if !is_header_token(value) {
                    return Err(
                        key.invalid(format!("{value:?} must be printable ASCII without spaces"))
                    );
                }
                self.agent_id = Some(value.to_owned());
            }
            Field::ApiKey => {
                if !is_header_token(value) {
                    // Never echo a secret, not even a malformed one.
                    return Err(key.invalid(
                        "the key must be printable ASCII without spaces (value not shown)",
                    ));
                }
                self.api_key = Some(ApiKey::Inline(Secret::new(value)));
            }
            Field::ApiKeyFile => self.api_key = Some(ApiKey::File(absolute_path(key, value)?)),
            Field::ConfigUrl => {
                template_url(value).map_err(|e| bad_url(key, value, e))?;
                self.config_url_template = Some(value.to_owned());
            }
            Field::Pubkey => {
                let pubkey = MinisignPublicKey::parse(value).map_err(|e| key.invalid(e))?;
                if self.pubkeys.contains(&pubkey) {
                    warnings.push(Warning::DuplicatePubkey {
                        key_id: pubkey.key_id_hex(),
                    });
                } else {
                    self.pubkeys.push(pubkey);
                }
            }
            Field::Interval => self.interval = Some(seconds(key, value, INTERVAL_RANGE)?),
            Field::ConfirmWindow => {
                self.confirm_window = Some(seconds(key, value, CONFIRM_WINDOW_RANGE)?);
            }
            Field::CaFile => self.ca_file = Some(absolute_path(key, value)?),
            Field::CephKey => {
                let (client, secret) = value
                    .split_once(':')
                    .ok_or_else(|| key.invalid("expected CLIENT:KEY (value not shown)"))?;
                let client_ok = !client.is_empty()
                    && client.len() <= 100
                    && !client.starts_with(['.', '-'])
                    && client
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !client_ok {
                    return Err(key.invalid(format!(
                        "client {client:?} is not a Ceph name (letters, digits, `_`, `-`, `.`)"
                    )));
                }
                let decoded = base64::engine::general_purpose::STANDARD.decode(secret);
                if !decoded.is_ok_and(|k| !k.is_empty()) {
                    // Never echo a secret, not even a malformed one.
                    return Err(key.invalid(format!(
                        "the key of client {client} is not base64 (value not shown)"
                    )));
                }
                if self
                    .ceph_keys
                    .insert(client.to_owned(), Secret::new(secret))
                    .is_some()
                {
                    warnings.push(Warning::Repeated { key: key.name() });
                }
            }
            Field::Insecure => {}
        }
        Ok(())
    }

    /// Plain `http://` only with `kowabunga.insecure`, wherever it appears on the line.
    fn check_schemes(&self) -> Result<(), CmdlineError> {
        if self.insecure {
            return Ok(());
        }
        let plain = |key: Field, url: &str| {
            key.invalid(format!(
                "{url:?} uses plain http://, which needs kowabunga.insecure"
            ))
        };
        if let Some(url) = &self.kahuna
            && !url.is_https()
        {
            return Err(plain(Field::Kahuna, url.as_str()));
        }
        if let Some(template) = &self.config_url_template
            && template_url(template).is_ok_and(|url| !url.is_https())
        {
            return Err(plain(Field::ConfigUrl, template));
        }
        Ok(())
    }

    /// The URL of this agent's desired-state document: `kowabunga.config_url` with `{id}`
    /// filled in, or [`DEFAULT_CONFIG_PATH`] under `kowabunga.kahuna`.
    pub fn config_url(&self) -> Result<String, CmdlineError> {
        resolve_config_url(
            self.config_url_template.as_deref(),
            self.kahuna.as_ref(),
            self.agent_id.as_deref(),
        )
    }

    /// `kowabunga.interval`, or [`DEFAULT_INTERVAL`].
    pub fn interval_or_default(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// `kowabunga.confirm_window`, or [`DEFAULT_CONFIRM_WINDOW`].
    pub fn confirm_window_or_default(&self) -> Duration {
        self.confirm_window.unwrap_or(DEFAULT_CONFIRM_WINDOW)
    }
}

/// Resolve the config URL from values that may come from different sources (command line,
/// persisted state, YAML). `template` is a checked `kowabunga.config_url`; without it the
/// URL is `kahuna` + [`DEFAULT_CONFIG_PATH`]. `{id}` becomes the percent-encoded agent id.
pub fn resolve_config_url(
    template: Option<&str>,
    kahuna: Option<&HttpUrl>,
    agent_id: Option<&str>,
) -> Result<String, CmdlineError> {
    let template = match (template, kahuna) {
        (Some(template), _) => template.to_owned(),
        (None, Some(kahuna)) => format!("{kahuna}{DEFAULT_CONFIG_PATH}"),
        (None, None) => {
            return Err(CmdlineError::Missing {
                key: Field::Kahuna.name(),
                purpose: "build the default config URL (or set kowabunga.config_url)",
            });
        }
    };
    if !template.contains(ID_PLACEHOLDER) {
        return Ok(template);
    }
    let agent_id = agent_id.ok_or(CmdlineError::Missing {
        key: Field::AgentId.name(),
        purpose: "fill {id} in the config URL",
    })?;
    Ok(template.replace(ID_PLACEHOLDER, &percent_encode(agent_id)))
}

/// Check a config URL template as the URL it becomes once `{id}` is filled.
fn template_url(template: &str) -> Result<HttpUrl, InvalidUrl> {
    HttpUrl::parse(&template.replace(ID_PLACEHOLDER, "id"))
}

fn bad_url(key: Field, value: &str, e: InvalidUrl) -> CmdlineError {
    key.invalid(format!("{value:?} is not a valid URL: {e}"))
}

/// Non-empty printable ASCII without spaces: what an HTTP header value can carry as is.
fn is_header_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Kernel-style booleans: a bare flag means true.
fn parse_bool(key: Field, value: Option<&str>) -> Result<bool, CmdlineError> {
    let Some(value) = value else { return Ok(true) };
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" => Ok(true),
        "0" | "no" | "false" => Ok(false),
        _ => Err(key.invalid(format!(
            "{value:?} is not a boolean (use 1/0, yes/no or true/false)"
        ))),
    }
}

fn seconds(key: Field, value: &str, range: RangeInclusive<u64>) -> Result<Duration, CmdlineError> {
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(key.invalid(format!("{value:?} is not a number of seconds")));
    }
    match value.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(key.invalid(format!(
            "{value} seconds is outside {}..={}",
            range.start(),
            range.end()
        ))),
    }
}

fn absolute_path(key: Field, value: &str) -> Result<PathBuf, CmdlineError> {
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(key.invalid(format!("{value:?} is not an absolute path")));
    }
    Ok(path)
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PUBKEY: &str = "RWRD1Pjuhi0xDBWsipqaOPx4h7bpm0HlgC9YdBwyk47/AdoPuCw2CCS4";
    /// minisign's own release key, from its README.
    const PUBKEY2: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    fn parse(cmdline: &str) -> (BootParams, Vec<Warning>) {
        BootParams::from_cmdline(cmdline).unwrap()
    }

    fn error(cmdline: &str) -> String {
        BootParams::from_cmdline(cmdline).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_key() {
        let line = format!(
            "BOOT_IMAGE=/vmlinuz ro quiet kowabunga.kahuna=https://kahuna.acme.com/ \
             kowabunga.agent_id=6650a1b2c3d4e5f6a7b8c9d0 kowabunga.api_key=s3cr3t \
             kowabunga.config_url=https://cfg.acme.com/agents/{{id}}.yaml?v=2 \
             kowabunga.pubkey={PUBKEY} kowabunga.pubkey={PUBKEY2} kowabunga.interval=30 \
             kowabunga.confirm_window=120 kowabunga.ca_file=/etc/kowabunga/ca.pem\n"
        );
        let (params, warnings) = parse(&line);
        assert_eq!(warnings, []);
        assert_eq!(
            params.kahuna.as_ref().unwrap().as_str(),
            "https://kahuna.acme.com"
        );
        assert_eq!(params.agent_id.as_deref(), Some("6650a1b2c3d4e5f6a7b8c9d0"));
        assert_eq!(params.api_key, Some(ApiKey::Inline(Secret::new("s3cr3t"))));
        assert_eq!(
            params.config_url().unwrap(),
            "https://cfg.acme.com/agents/6650a1b2c3d4e5f6a7b8c9d0.yaml?v=2"
        );
        let ids: Vec<_> = params.pubkeys.iter().map(|k| k.as_base64()).collect();
        assert_eq!(ids, [PUBKEY, PUBKEY2]);
        assert_eq!(params.interval, Some(Duration::from_secs(30)));
        assert_eq!(params.confirm_window, Some(Duration::from_secs(120)));
        assert!(!params.insecure);
        assert_eq!(params.ca_file, Some(PathBuf::from("/etc/kowabunga/ca.pem")));
    }

    #[test]
    fn everything_is_optional_with_defaults() {
        let (params, warnings) = parse("ro quiet console=ttyS0\n");
        assert_eq!(params, BootParams::default());
        assert_eq!(warnings, []);
        assert_eq!(params.interval_or_default(), Duration::from_secs(60));
        assert_eq!(params.confirm_window_or_default(), Duration::from_secs(90));
        assert_eq!(parse("").0, BootParams::default());
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let (params, _) = parse("kowabunga.api_key=hunter2");
        assert!(!format!("{params:?}").contains("hunter2"));
        assert!(format!("{params:?}").contains("Inline(***)"));
        let err = error("kowabunga.api_key=\"hunter2 oops\"");
        assert_eq!(
            err,
            "kowabunga.api_key: the key must be printable ASCII without spaces (value not shown)"
        );
        // A mistyped key is named, but its value is not kept.
        let (_, warnings) = parse("kowabunga.apikey=hunter2");
        assert_eq!(
            warnings,
            [Warning::UnknownKey {
                key: "kowabunga.apikey".into()
            }]
        );
        assert!(!warnings[0].to_string().contains("hunter2"));
    }

    #[test]
    fn api_key_file() {
        let (params, _) = parse("kowabunga.api-key-file=/run/credentials/kowabunga.key");
        assert_eq!(
            params.api_key,
            Some(ApiKey::File("/run/credentials/kowabunga.key".into()))
        );
        assert_eq!(
            error("kowabunga.api_key_file=key.txt"),
            "kowabunga.api_key_file: \"key.txt\" is not an absolute path"
        );
    }

    #[test]
    fn api_key_and_api_key_file_conflict() {
        for line in [
            "kowabunga.api_key=a kowabunga.api_key_file=/k",
            "kowabunga.api_key_file=/k kowabunga.api_key=a",
        ] {
            assert!(matches!(
                BootParams::from_cmdline(line),
                Err(CmdlineError::ApiKeyConflict)
            ));
        }
        assert_eq!(
            error("kowabunga.api_key=a kowabunga.api_key_file=/k"),
            "kowabunga.api_key and kowabunga.api_key_file are mutually exclusive: give only one"
        );
    }

    #[test]
    fn kahuna_must_be_https_unless_insecure() {
        assert_eq!(
            error("kowabunga.kahuna=http://10.0.0.1:8080"),
            "kowabunga.kahuna: \"http://10.0.0.1:8080\" uses plain http://, which needs kowabunga.insecure"
        );
        for line in [
            "kowabunga.kahuna=http://10.0.0.1:8080 kowabunga.insecure",
            "kowabunga.insecure=yes kowabunga.kahuna=http://10.0.0.1:8080",
        ] {
            let (params, _) = parse(line);
            assert!(params.insecure);
            assert!(!params.kahuna.unwrap().is_https());
        }
        // The last kowabunga.insecure wins, so this one is not insecure.
        assert!(
            BootParams::from_cmdline(
                "kowabunga.insecure kowabunga.kahuna=http://k kowabunga.insecure=0"
            )
            .is_err()
        );
    }

    #[test]
    fn kahuna_errors_name_key_value_and_problem() {
        assert_eq!(
            error("kowabunga.kahuna=ftp://k"),
            "kowabunga.kahuna: \"ftp://k\" is not a valid URL: scheme \"ftp\" is not supported (use https://)"
        );
        assert_eq!(
            error("kowabunga.kahuna=https://k/?x"),
            "kowabunga.kahuna: \"https://k/?x\" is not a valid URL: a base URL cannot have a query (?) or fragment (#)"
        );
        assert_eq!(
            error("kowabunga.kahuna"),
            "kowabunga.kahuna: needs a value (kowabunga.kahuna=URL)"
        );
        assert_eq!(error("kowabunga.kahuna="), "kowabunga.kahuna: empty value");
        assert_eq!(
            error("kowabunga.kahuna=\"\""),
            "kowabunga.kahuna: empty value"
        );
    }

    #[test]
    fn agent_id_must_be_a_printable_token() {
        assert_eq!(
            parse("kowabunga.agent-id=a.b-c_d").0.agent_id.as_deref(),
            Some("a.b-c_d")
        );
        for bad in ["\"a b\"", "\"\"", "é", "\"a\tb\""] {
            assert!(
                error(&format!("kowabunga.agent_id={bad}")).starts_with("kowabunga.agent_id: "),
                "{bad}"
            );
        }
        assert_eq!(
            error("kowabunga.agent_id=\"a b\""),
            "kowabunga.agent_id: \"a b\" must be printable ASCII without spaces"
        );
    }

    #[test]
    fn default_config_url_uses_kahuna_and_encoded_id() {
        let (params, _) = parse("kowabunga.kahuna=https://k.acme.com/ kowabunga.agent_id=a/b?c");
        assert_eq!(
            params.config_url().unwrap(),
            "https://k.acme.com/api/v1/agents/a%2Fb%3Fc/config"
        );
    }

    #[test]
    fn kahuna_is_a_server_without_path() {
        // Upstream Kahuna serves /ws at the root of its host: a path would be dropped for
        // the WebSocket and kept for the document, so it is refused.
        assert_eq!(
            error("kowabunga.kahuna=https://k.acme.com/base/"),
            "kowabunga.kahuna: \"https://k.acme.com/base/\" is not a valid URL: a Kahuna URL is \
             scheme://host[:port] without a path (found \"/base\"): the agent adds /ws and \
             /api/v1/... to it itself"
        );
        let (params, _) = parse("kowabunga.kahuna=https://k.acme.com:8443/");
        let kahuna = params.kahuna.unwrap();
        assert_eq!(kahuna.as_str(), "https://k.acme.com:8443");
        assert_eq!(kahuna.websocket_url(), "wss://k.acme.com:8443/ws");
    }

    #[test]
    fn config_url_without_id_needs_no_agent_id() {
        let (params, _) = parse("kowabunga.config_url=https://cfg/static.yaml");
        assert_eq!(params.config_url().unwrap(), "https://cfg/static.yaml");
    }

    #[test]
    fn config_url_reports_what_is_missing() {
        assert_eq!(
            BootParams::default().config_url().unwrap_err().to_string(),
            "kowabunga.kahuna is needed to build the default config URL (or set kowabunga.config_url)"
        );
        let (params, _) = parse("kowabunga.kahuna=https://k");
        assert_eq!(
            params.config_url().unwrap_err().to_string(),
            "kowabunga.agent_id is needed to fill {id} in the config URL"
        );
        let kahuna = HttpUrl::parse_base("https://k").unwrap();
        assert_eq!(
            resolve_config_url(None, Some(&kahuna), Some("x1")).unwrap(),
            "https://k/api/v1/agents/x1/config"
        );
    }

    #[test]
    fn config_url_template_is_checked() {
        assert_eq!(
            error("kowabunga.config_url=https://cfg/{ID}"),
            "kowabunga.config_url: \"https://cfg/{ID}\" is not a valid URL: character '{' is not allowed in a URL (percent-encode it)"
        );
        assert_eq!(
            error("kowabunga.config_url=http://cfg/{id}"),
            "kowabunga.config_url: \"http://cfg/{id}\" uses plain http://, which needs kowabunga.insecure"
        );
        assert!(
            BootParams::from_cmdline("kowabunga.config_url=http://cfg/{id} kowabunga.insecure")
                .is_ok()
        );
    }

    #[test]
    fn pubkeys_accumulate_and_duplicates_warn() {
        let (params, warnings) = parse(&format!(
            "kowabunga.pubkey={PUBKEY} kowabunga.pubkey={PUBKEY2} kowabunga.pubkey={PUBKEY}"
        ));
        assert_eq!(params.pubkeys.len(), 2);
        assert_eq!(
            warnings,
            [Warning::DuplicatePubkey {
                key_id: "C312D86EEF8D443".into()
            }]
        );
        assert_eq!(
            warnings[0].to_string(),
            "kowabunga.pubkey: key C312D86EEF8D443 given more than once"
        );
    }

    #[test]
    fn bad_pubkey_is_an_error() {
        assert_eq!(
            error("kowabunga.pubkey=RWRD"),
            "kowabunga.pubkey: \"RWRD\" decodes to 3 bytes, a minisign public key has 42"
        );
        assert!(error("kowabunga.pubkey=untrusted").starts_with("kowabunga.pubkey: "));
    }

    #[test]
    fn interval_bounds() {
        let interval = |v: &str| BootParams::from_cmdline(&format!("kowabunga.interval={v}"));
        assert_eq!(
            interval("5").unwrap().0.interval,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            interval("86400").unwrap().0.interval_or_default(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            interval("4").unwrap_err().to_string(),
            "kowabunga.interval: 4 seconds is outside 5..=86400"
        );
        assert!(interval("86401").is_err());
        assert!(interval("99999999999999999999999").is_err());
        assert_eq!(
            interval("abc").unwrap_err().to_string(),
            "kowabunga.interval: \"abc\" is not a number of seconds"
        );
        for bad in ["-5", "+5", "5s", "1e3", " 5"] {
            assert!(interval(&format!("\"{bad}\"")).is_err(), "{bad}");
        }
    }

    #[test]
    fn confirm_window_bounds() {
        let window = |v: &str| BootParams::from_cmdline(&format!("kowabunga.confirm-window={v}"));
        assert_eq!(
            window("1").unwrap().0.confirm_window,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            window("3600").unwrap().0.confirm_window_or_default(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            window("0").unwrap_err().to_string(),
            "kowabunga.confirm_window: 0 seconds is outside 1..=3600"
        );
        assert!(window("3601").is_err());
    }

    #[test]
    fn insecure_flag_forms() {
        for (form, expected) in [
            ("kowabunga.insecure", true),
            ("kowabunga.insecure=1", true),
            ("kowabunga.insecure=yes", true),
            ("kowabunga.insecure=TRUE", true),
            ("kowabunga.insecure=0", false),
            ("kowabunga.insecure=no", false),
            ("kowabunga.insecure=false", false),
        ] {
            assert_eq!(parse(form).0.insecure, expected, "{form}");
        }
        assert_eq!(
            error("kowabunga.insecure=maybe"),
            "kowabunga.insecure: \"maybe\" is not a boolean (use 1/0, yes/no or true/false)"
        );
        assert!(BootParams::from_cmdline("kowabunga.insecure=").is_err());
    }

    #[test]
    fn ca_file_must_be_absolute() {
        assert_eq!(
            error("kowabunga.ca_file=ca.pem"),
            "kowabunga.ca_file: \"ca.pem\" is not an absolute path"
        );
    }

    #[test]
    fn repeated_key_last_wins_with_warning() {
        let (params, warnings) = parse(
            "kowabunga.interval=10 kowabunga.agent_id=a kowabunga.interval=20 kowabunga.interval=30",
        );
        assert_eq!(params.interval, Some(Duration::from_secs(30)));
        let repeated = Warning::Repeated {
            key: "kowabunga.interval",
        };
        assert_eq!(warnings, [repeated.clone(), repeated]);
        assert_eq!(
            warnings[0].to_string(),
            "kowabunga.interval: given more than once, the last one wins"
        );
    }

    #[test]
    fn dash_and_underscore_spellings_count_as_the_same_key() {
        let (params, warnings) = parse("kowabunga.agent_id=a kowabunga.agent-id=b");
        assert_eq!(params.agent_id.as_deref(), Some("b"));
        assert_eq!(
            warnings,
            [Warning::Repeated {
                key: "kowabunga.agent_id"
            }]
        );
    }

    #[test]
    fn unknown_kowabunga_keys_warn_by_their_written_name() {
        let (_, warnings) = parse("kowabunga.fancy-mode=1 kowabunga. kowabunga.interval_secs=5");
        let keys: Vec<_> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            keys,
            [
                "\"kowabunga.fancy-mode\": unknown kernel parameter, ignored",
                "\"kowabunga.\": unknown kernel parameter, ignored",
                "\"kowabunga.interval_secs\": unknown kernel parameter, ignored",
            ]
        );
    }

    #[test]
    fn other_keys_are_ignored() {
        let (params, warnings) = parse(
            "kowabunga=1 kowabungax.interval=1 Kowabunga.interval=1 KOWABUNGA.kahuna=x k.interval=x",
        );
        assert_eq!(params, BootParams::default());
        assert_eq!(warnings, []);
    }

    #[test]
    fn init_arguments_after_double_dash_are_ignored() {
        let (params, warnings) =
            parse("kowabunga.interval=30 -- kowabunga.interval=abc kowabunga.bogus\n");
        assert_eq!(params.interval, Some(Duration::from_secs(30)));
        assert_eq!(warnings, []);
    }

    #[test]
    fn quoted_values_are_unquoted() {
        let (params, _) = parse("\"kowabunga.ca_file=/etc/my ca.pem\" kowabunga.agent_id=\"x1\"");
        assert_eq!(params.ca_file, Some(PathBuf::from("/etc/my ca.pem")));
        assert_eq!(params.agent_id.as_deref(), Some("x1"));
    }

    #[test]
    fn reads_a_cmdline_file() {
        let path = std::env::temp_dir().join(format!("kernel-cmdline-test-{}", std::process::id()));
        std::fs::write(&path, b"ro \xff\xfe kowabunga.interval=42\n").unwrap();
        let result = BootParams::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(result.unwrap().0.interval, Some(Duration::from_secs(42)));
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = BootParams::from_file("/nonexistent/cmdline").unwrap_err();
        assert!(matches!(err, CmdlineError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read the kernel command line from /nonexistent/cmdline: "),
            "{err}"
        );
    }

    #[test]
    fn reads_proc_cmdline() {
        // This machine's own command line has no kowabunga.* keys we could get wrong, but
        // reading it must work.
        let result = BootParams::from_proc();
        assert!(
            !matches!(result, Err(CmdlineError::Read { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn ceph_keys_by_client_never_echoed() {
        let key = "AQACAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
        let (p, w) = BootParams::from_cmdline(&format!(
            "kowabunga.ceph_key=libvirt:{key} kowabunga.ceph-key=kaktus:{key}"
        ))
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.ceph_keys.len(), 2);
        assert_eq!(p.ceph_keys["libvirt"].expose(), key);
        assert!(!format!("{p:?}").contains("AQAC"));
        let (_, w) = BootParams::from_cmdline(&format!(
            "kowabunga.ceph_key=libvirt:{key} kowabunga.ceph_key=libvirt:{key}"
        ))
        .unwrap();
        assert_eq!(
            w,
            [Warning::Repeated {
                key: "kowabunga.ceph_key"
            }]
        );
        for (bad, want) in [
            ("kowabunga.ceph_key=nocolonS3cret", "expected CLIENT:KEY"),
            ("kowabunga.ceph_key=-x:AQAC", "is not a Ceph name"),
            ("kowabunga.ceph_key=libvirt:S3cret!!", "is not base64"),
        ] {
            let err = BootParams::from_cmdline(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
            assert!(!err.contains("S3cret"), "{bad}: the secret echoed: {err}");
        }
    }

    #[test]
    fn readme_documents_every_key_and_default() {
        let readme = include_str!("../README.md");
        for key in known_keys() {
            assert!(readme.contains(&format!("`{key}")), "README lacks {key}");
        }
        for fact in [
            DEFAULT_CONFIG_PATH.to_owned(),
            format!("{}..={}", INTERVAL_RANGE.start(), INTERVAL_RANGE.end()),
            format!(
                "{}..={}",
                CONFIRM_WINDOW_RANGE.start(),
                CONFIRM_WINDOW_RANGE.end()
            ),
            format!("| {} ", DEFAULT_INTERVAL.as_secs()),
            format!("| {} ", DEFAULT_CONFIRM_WINDOW.as_secs()),
        ] {
            assert!(readme.contains(&fact), "README lacks {fact}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = BootParams::from_cmdline(&s);
        }

        #[test]
        fn never_panics_on_kowabunga_values(
            key in prop::sample::select(Field::ALL.to_vec()),
            value in r#"[ -~\t]{0,80}"#,
        ) {
            let line = format!("{}=\"{value}\"", key.name());
            if let Err(e) = BootParams::from_cmdline(&line) {
                prop_assert!(e.to_string().contains("kowabunga."), "{e}");
            }
        }

        #[test]
        fn intervals_in_range_round_trip(n in INTERVAL_RANGE) {
            let (params, _) = BootParams::from_cmdline(&format!("kowabunga.interval={n}")).unwrap();
            prop_assert_eq!(params.interval_or_default(), Duration::from_secs(n));
        }

        #[test]
        fn agent_ids_round_trip_under_any_key_spelling(
            id in "[!-~&&[^\"]]{1,40}",
            dash in any::<bool>(),
        ) {
            let key = if dash { "kowabunga.agent-id" } else { "kowabunga.agent_id" };
            let (params, warnings) = BootParams::from_cmdline(&format!("{key}=\"{id}\"")).unwrap();
            prop_assert_eq!(params.agent_id, Some(id));
            prop_assert_eq!(warnings, vec![]);
        }

        #[test]
        fn resolved_config_urls_are_valid_urls(id in "[!-~]{1,40}") {
            let kahuna = HttpUrl::parse_base("https://k.example").unwrap();
            let url = resolve_config_url(None, Some(&kahuna), Some(&id)).unwrap();
            prop_assert!(HttpUrl::parse(&url).is_ok(), "{url}");
        }
    }
}
