//! The `[os]` section of a desired-state document: which image version the node runs,
//! where that version's update artifacts are, and when the node may reboot into it.
//!
//! ```toml
//! [os]
//! version = "0.2.0"
//! url = "https://kahuna.example/images/kiwi/0.2.0/"
//! reboot = "window"        # "now", "window" (daily, UTC) or "manual"
//! window = "02:00-04:00"   # with reboot = "window"; may cross midnight
//! allow_downgrade = false  # an older version than the running one is refused otherwise
//! ```
//!
//! Checked here without I/O; what depends on the node (its role, running version, how
//! it boots, versions that failed on it) is checked by [`super::OsReconciler`] at plan.

use kowabunga_model::Document;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::staging::{UpdateError, parse_version};

/// The section's name in the document.
pub const SECTION: &str = "os";

/// When an installed version may be booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RebootPolicy {
    /// As soon as the new version is installed.
    Now,
    /// At the next start of the daily `window` (UTC).
    Window,
    /// Never by itself: install, then wait until a document says `now` or a window.
    Manual,
}

impl RebootPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RebootPolicy::Now => "now",
            RebootPolicy::Window => "window",
            RebootPolicy::Manual => "manual",
        }
    }
}

/// `[os]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OsSection {
    /// The image version to run (`IMAGE_VERSION`: letters, digits, `.` and `-`,
    /// starting with a digit).
    pub version: String,
    /// The directory URL of that version's artifacts (`SHA256SUMS` and
    /// `SHA256SUMS.minisig` under it): https, or http in insecure mode.
    pub url: String,
    /// When the node may reboot into the installed version.
    pub reboot: RebootPolicy,
    /// `HH:MM-HH:MM` (UTC), required with `reboot = "window"` and only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Accept a version older than the running one.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// A daily reboot window, in minutes after midnight UTC; `end` before `start` crosses
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

const DAY: u32 = 24 * 60;

impl Window {
    /// `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let minutes = |part: &str| -> Option<u32> {
            let (h, m) = part.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && part.trim().len() == 5).then_some(h * 60 + m)
        };
        let bad = || format!("window {text:?} is not HH:MM-HH:MM (UTC, 00:00 to 23:59)");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let window = Window {
            start: minutes(start).ok_or_else(bad)?,
            end: minutes(end).ok_or_else(bad)?,
        };
        if window.start == window.end {
            return Err(format!(
                "window {text:?} is empty (start and end are equal)"
            ));
        }
        Ok(window)
    }

    /// Whether `minute` (of the UTC day) is inside the window.
    pub fn contains(self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window next opens (0 inside it).
    pub fn minutes_until_open(self, minute: u32) -> u32 {
        if self.contains(minute) {
            0
        } else {
            (self.start + DAY - minute) % DAY
        }
    }
}

/// Why `[os]` is not acceptable, naming the key.
fn invalid(key: &str, detail: impl std::fmt::Display) -> String {
    format!("[{SECTION}] {key}: {detail}")
}

impl OsSection {
    /// The reboot window, when the policy has one.
    pub fn window(&self) -> Option<Window> {
        self.window.as_deref().and_then(|w| Window::parse(w).ok())
    }

    /// Every check that needs no I/O; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        parse_version(&self.version).map_err(|e| match e {
            UpdateError::InvalidVersion(_) => invalid("version", e),
            other => invalid("version", other),
        })?;
        let url = reqwest::Url::parse(&self.url).map_err(|e| invalid("url", e))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(invalid(
                "url",
                format!("{:?}: only https (or http in insecure mode)", self.url),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "url",
                "carries credentials: update artifacts are public and signed, no secret belongs in a URL",
            ));
        }
        match (self.reboot, &self.window) {
            (RebootPolicy::Window, None) => Err(invalid(
                "window",
                "required with reboot = \"window\" (HH:MM-HH:MM, UTC)",
            )),
            (RebootPolicy::Window, Some(w)) => {
                Window::parse(w).map(drop).map_err(|e| invalid("window", e))
            }
            (policy, Some(_)) => Err(invalid(
                "window",
                format!(
                    "only with reboot = \"window\" (reboot is \"{}\")",
                    policy.as_str()
                ),
            )),
            (_, None) => Ok(()),
        }
    }

    /// `[os]` of `desired`, strictly parsed and validated; `None` when absent.
    pub fn from_document(desired: &Document) -> Result<Option<Self>, String> {
        let section: Option<Self> = desired.section(SECTION).map_err(|e| e.to_string())?;
        if let Some(section) = &section {
            section.validate()?;
        }
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    fn doc(os: &str) -> Document {
        Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{os}"
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    fn refused(os: &str) -> String {
        OsSection::from_document(&doc(os)).unwrap_err()
    }

    #[test]
    fn a_complete_section_parses_and_an_absent_one_is_none() {
        let os = OsSection::from_document(&doc(
            "[os]\nversion = \"0.2.0\"\nurl = \"https://k.example/kiwi/0.2.0/\"\nreboot = \"window\"\nwindow = \"23:30-01:00\"\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(os.version, "0.2.0");
        assert_eq!(os.reboot, RebootPolicy::Window);
        assert_eq!(
            os.window(),
            Some(Window {
                start: 23 * 60 + 30,
                end: 60
            })
        );
        assert!(!os.allow_downgrade);
        assert_eq!(OsSection::from_document(&doc("")).unwrap(), None);
    }

    #[test]
    fn refusals_name_the_key() {
        let base = "url = \"https://k.example/u/\"\nreboot = \"now\"\n";
        for (os, expect) in [
            (format!("[os]\nversion = \"v2\"\n{base}"), "version"),
            (format!("[os]\nversion = \"0.2_1\"\n{base}"), "version"),
            (
                "[os]\nversion = \"0.2\"\nurl = \"ftp://k.example/\"\nreboot = \"now\"\n".into(),
                "url",
            ),
            (
                "[os]\nversion = \"0.2\"\nurl = \"not a url\"\nreboot = \"now\"\n".into(),
                "url",
            ),
            (
                "[os]\nversion = \"0.2\"\nurl = \"https://u:p@k.example/\"\nreboot = \"now\"\n"
                    .into(),
                "url",
            ),
            (
                "[os]\nversion = \"0.2\"\nurl = \"https://k.example/\"\nreboot = \"window\"\n"
                    .into(),
                "window",
            ),
            (
                "[os]\nversion = \"0.2\"\nurl = \"https://k.example/\"\nreboot = \"now\"\nwindow = \"01:00-02:00\"\n"
                    .into(),
                "window",
            ),
            (
                "[os]\nversion = \"0.2\"\nurl = \"https://k.example/\"\nreboot = \"window\"\nwindow = \"25:00-02:00\"\n"
                    .into(),
                "window",
            ),
            (
                "[os]\nversion = \"0.2\"\nurl = \"https://k.example/\"\nreboot = \"later\"\n".into(),
                "reboot",
            ),
            (format!("[os]\nversion = \"0.2\"\n{base}colour = 1\n"), "colour"),
            ("[os]\nurl = \"https://k.example/\"\nreboot = \"now\"\n".into(), "version"),
        ] {
            let err = refused(&os);
            assert!(err.contains("[os]") && err.contains(expect), "{os}: {err}");
        }
    }

    #[test]
    fn windows_parse_and_wrap_midnight() {
        let w = Window::parse("02:00-04:00").unwrap();
        assert!(w.contains(120) && w.contains(239) && !w.contains(240) && !w.contains(60));
        assert_eq!(w.minutes_until_open(60), 60);
        assert_eq!(w.minutes_until_open(240), DAY - 120);
        assert_eq!(w.minutes_until_open(150), 0);
        let night = Window::parse("23:00-01:30").unwrap();
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(89));
        assert!(!night.contains(90) && !night.contains(22 * 60 + 59));
        assert_eq!(night.minutes_until_open(22 * 60), 60);
        for bad in [
            "2:00-04:00",
            "02:00",
            "02:00-02:00",
            "02:60-03:00",
            "aa:bb-cc:dd",
            "24:00-01:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
