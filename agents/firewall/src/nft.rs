//! Running the `nft` command: check a script, load it, list the agent's tables.
//!
//! Every run goes through [`kowabunga_process`]: it has a deadline (killed and failed
//! past it, never a hang while the pipeline lock is held). The child inherits the
//! calling thread's network namespace (tests rely on it), so it is spawned from the
//! calling task, never from a blocking-pool thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kowabunga_process::{Invocation, ProcessError};

use crate::render::{FILTER_TABLE, NAT_TABLE};

/// How long one `nft` run may take by default. Loading 500 rules takes well under a
/// second; a run past this is stuck (a kernel lock, a wedged netlink socket), and the
/// agent must not wait for it with the pipeline lock held.
pub const DEFAULT_NFT_DEADLINE: Duration = Duration::from_secs(10);

/// What `nft list` may print before the agent stops keeping it (its own tables are
/// a few hundred kilobytes at most; other owners' tables are skipped anyway).
const LISTING_LIMIT: usize = 16 * 1024 * 1024;

/// Why `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// It could not be run, or did not finish in time (killed).
    #[error(transparent)]
    Run(#[from] ProcessError),
    /// `nft` refused the script; `message` quotes the offending line.
    #[error("nft refused the ruleset: {message}")]
    Refused { message: String },
}

/// The `nft` binary to run, and how long each run may take.
#[derive(Debug, Clone)]
pub struct Nft {
    bin: PathBuf,
    deadline: Duration,
}

impl Nft {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            deadline: DEFAULT_NFT_DEADLINE,
        }
    }

    /// Each run is killed (and fails) after `deadline`.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// `nft -c -f -`: the kernel checks the whole transaction without committing it.
    pub async fn check(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-c", "-f", "-"], Some(script)).await.map(drop)
    }

    /// `nft -f -`: one transaction.
    pub async fn load(&self, script: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(script)).await.map(drop)
    }

    /// The listing of the agent's tables as `nft list ruleset` prints them, in a
    /// fixed order; tables that do not exist are left out.
    pub async fn list_own(&self) -> Result<OwnTables, NftError> {
        let out = self.run(&["list", "ruleset"], None).await?;
        Ok(OwnTables::extract(&out))
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let mut invocation = Invocation::new(&self.bin, self.deadline)
            .args(args)
            .capture_limit(LISTING_LIMIT);
        if let Some(text) = stdin {
            invocation = invocation.stdin(text);
        }
        let out = invocation.run().await?;
        if out.success() {
            return Ok(out.stdout_lossy());
        }
        Err(NftError::Refused {
            message: explain(&out.stderr_lossy(), stdin),
        })
    }
}

/// nft reports errors as `/dev/stdin:LINE:COLS: Error: what`, then the line and a
/// caret line. Keep the first error, and quote the script line it points to (which
/// names the rule: interface, ports, comment).
fn explain(stderr: &str, script: Option<&str>) -> String {
    let Some(first) = stderr.lines().find(|l| l.contains("Error:")) else {
        let text = stderr.trim();
        return if text.is_empty() {
            "no reason given".into()
        } else {
            text.replace('\n', " ")
        };
    };
    let what = first
        .split_once("Error:")
        .map(|(_, w)| w.trim())
        .unwrap_or(first);
    let line_no = first
        .strip_prefix("/dev/stdin:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse::<usize>().ok());
    match (line_no, script) {
        (Some(n), Some(script)) => match script.lines().nth(n.saturating_sub(1)) {
            Some(line) => format!("{what} (script line {n}: `{}`)", line.trim()),
            None => format!("{what} (script line {n})"),
        },
        _ => what.to_string(),
    }
}

/// The listings of the agent's tables, as found in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnTables {
    pub filter: Option<String>,
    pub nat: Option<String>,
}

impl OwnTables {
    /// Pick the agent's tables out of a full `nft list ruleset`: top-level blocks start
    /// with `table FAMILY NAME {` and end with `}` in the first column.
    pub fn extract(listing: &str) -> Self {
        let mut out = OwnTables::default();
        let mut current: Option<(&str, String)> = None;
        for line in listing.lines() {
            if let Some((which, mut text)) = current.take() {
                text.push_str(line);
                text.push('\n');
                if line == "}" {
                    match which {
                        "filter" => out.filter = Some(text),
                        _ => out.nat = Some(text),
                    }
                } else {
                    current = Some((which, text));
                }
                continue;
            }
            let start = |table: &str| line == format!("table {table} {{");
            if start(FILTER_TABLE) {
                current = Some(("filter", format!("{line}\n")));
            } else if start(NAT_TABLE) {
                current = Some(("nat", format!("{line}\n")));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_none() && self.nat.is_none()
    }

    /// The digest marker each present table carries.
    pub fn markers(&self) -> Vec<Option<&str>> {
        [&self.filter, &self.nat]
            .into_iter()
            .flatten()
            .map(|t| {
                t.lines()
                    .nth(1)
                    .and_then(|l| l.trim().strip_prefix("comment \""))
                    .and_then(|l| l.strip_suffix('"'))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_only_own_tables() {
        let listing = "table inet filter {\n\tchain input {\n\t}\n}\ntable inet kowabunga {\n\tcomment \"kowabunga sha256:ab\"\n\tchain input {\n\t}\n}\ntable ip kowabunga_nat {\n\tcomment \"kowabunga sha256:ab\"\n}\ntable ip libvirt {\n}\n";
        let t = OwnTables::extract(listing);
        assert_eq!(
            t.filter.as_deref(),
            Some(
                "table inet kowabunga {\n\tcomment \"kowabunga sha256:ab\"\n\tchain input {\n\t}\n}\n"
            )
        );
        assert!(
            t.nat
                .as_deref()
                .unwrap()
                .starts_with("table ip kowabunga_nat {")
        );
        assert_eq!(
            t.markers(),
            vec![Some("kowabunga sha256:ab"), Some("kowabunga sha256:ab")]
        );
        assert!(OwnTables::extract("table inet other {\n}\n").is_empty());
    }

    #[test]
    fn errors_quote_the_line() {
        let script = "table inet kowabunga\nchain x {\n\tiifname \"eth0\" tcp dport 22 acept\n}\n";
        let stderr = "/dev/stdin:3:29-33: Error: syntax error, unexpected string\n\tiifname \"eth0\" tcp dport 22 acept\n                            ^^^^^\n";
        assert_eq!(
            explain(stderr, Some(script)),
            "syntax error, unexpected string (script line 3: `iifname \"eth0\" tcp dport 22 acept`)"
        );
        assert_eq!(
            explain("Error: Operation not permitted\n", None),
            "Operation not permitted"
        );
        assert_eq!(explain("", None), "no reason given");
    }
}
