//! The `daemons` reconciler: one configuration file per daemon, from the pushed table
//! `daemons` (`keepalived = "<keepalived.conf>"`).
//!
//! - plan: the table names only daemons this agent knows; each file is compared with
//!   what is on disk. Changes nothing.
//! - apply: a changed file is written beside the real one, checked by the daemon's own
//!   check mode (`keepalived -t`), and only then renamed over it (fsynced), and the unit
//!   reloaded through systemd (`ReloadOrRestartUnit`: started if it was not running),
//!   waiting for the job to end `done` (a failed `ExecReload=` fails the step). Files
//!   are written 0600 (strongSwan's holds pre-shared keys).
//!   A daemon no longer in the table is stopped and its file removed. The check runs at
//!   apply, after the network reconciler: keepalived refuses a configuration naming an
//!   interface that does not exist yet, and a generation may create that interface.
//!   A refused file is never written; the pipeline reverts the generation.
//! - check (the confirm window): each wanted file is on disk as written and its unit is
//!   `active`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kowabunga_model::{Action, Artifact, Document, ErrorKind, Planned, ReconcileError, Reconciler};
use kowabunga_process::Invocation;

use crate::systemd::{Bus, Systemd};

/// The pushed table this reconciler reads.
pub const SECTION: &str = "daemons";

/// How long a daemon's check mode may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(20);

/// What the check may print before the agent stops keeping it.
const CHECK_OUTPUT_LIMIT: usize = 64 * 1024;

/// A daemon whose configuration file the agent writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Its key in the `daemons` table.
    pub name: &'static str,
    /// The systemd unit reloaded after a change.
    pub unit: &'static str,
    /// The file's name in the reconciler's directory (the unit reads it there).
    pub file: &'static str,
    /// The daemon's check mode, `{file}` standing for the candidate file.
    pub check: &'static [&'static str],
}

/// keepalived (VRRP and IPVS), checked with `keepalived -t`.
pub const KEEPALIVED: Daemon = Daemon {
    name: "keepalived",
    unit: "keepalived.service",
    file: "keepalived.conf",
    check: &["keepalived", "--config-test", "--use-file", "{file}"],
};

/// conntrackd (Kiwi's connection tracking sync, beside keepalived). It has no check
/// mode: a file it refuses fails the unit's (re)start, so the step; the image's
/// drop-in runs it on this file only when the file exists.
pub const CONNTRACKD: Daemon = Daemon {
    name: "conntrackd",
    unit: "conntrackd.service",
    file: "conntrackd.conf",
    check: &[],
};

/// strongSwan (`charon-systemd`, loaded with `swanctl`): Kawaii's IPsec. swanctl has no
/// offline check mode (it loads into a running charon over VICI): the connections are
/// checked when rendered (the kontroller's `ipsec.rs`), and the unit's reload
/// (`swanctl --load-all --file`, the image's drop-in) fails its job, so the step,
/// when charon refuses one. The file holds pre-shared keys: written 0600.
pub const STRONGSWAN: Daemon = Daemon {
    name: "strongswan",
    unit: "strongswan.service",
    file: "swanctl.conf",
    check: &[],
};

/// What one daemon's plan does.
#[derive(Debug)]
enum Change {
    Write { daemon: Daemon, text: String },
    Remove { daemon: Daemon },
}

/// The changes `apply` makes, in the daemons' order.
#[derive(Debug)]
pub struct DaemonsPlan(Vec<Change>);

/// Writes the daemons' configuration files in `dir` and reloads their units.
#[derive(Debug)]
pub struct DaemonsReconciler {
    dir: PathBuf,
    daemons: Vec<Daemon>,
    systemd: Systemd,
}

impl DaemonsReconciler {
    /// The `daemons` in `dir`, reloaded through systemd on the system bus.
    pub fn new(dir: impl Into<PathBuf>, daemons: Vec<Daemon>) -> Self {
        Self::on_bus(dir, daemons, Bus::System)
    }

    /// The same, with systemd on `bus` (tests run a private one).
    pub fn on_bus(dir: impl Into<PathBuf>, daemons: Vec<Daemon>, bus: Bus) -> Self {
        Self {
            dir: dir.into(),
            daemons,
            systemd: Systemd::new(bus),
        }
    }

    /// Where the daemon's file lives.
    pub fn path(&self, daemon: &Daemon) -> PathBuf {
        self.dir.join(daemon.file)
    }

    /// The table, each key a known daemon.
    fn wanted(&self, doc: &Document) -> Result<BTreeMap<String, String>, ReconcileError> {
        let wanted: BTreeMap<String, String> = doc.pushed(SECTION)?.unwrap_or_default();
        for name in wanted.keys() {
            if !self.daemons.iter().any(|d| d.name == name) {
                let known: Vec<&str> = self.daemons.iter().map(|d| d.name).collect();
                return Err(ReconcileError::invalid(format!(
                    "{SECTION}.{name}: not a daemon this agent configures (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(wanted)
    }

    /// Write `text` beside the daemon's file, run its check on it, then rename it over
    /// the file. A refusal leaves the file as it was.
    async fn install(&self, daemon: &Daemon, text: &str) -> Result<(), ReconcileError> {
        let dir = self.dir.clone();
        let contents = text.as_bytes().to_vec();
        let candidate = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let mut file = tempfile::Builder::new()
                .prefix(".candidate-")
                .tempfile_in(&dir)?;
            file.write_all(&contents)?;
            file.as_file().sync_all()?;
            Ok(file)
        })
        .await
        .map_err(|e| {
            ReconcileError::apply(format!(
                "{}: cannot stage {}: {e}",
                daemon.name, daemon.file
            ))
        })?;
        self.run_check(daemon, candidate.path()).await?;
        let target = self.path(daemon);
        let dir = self.dir.clone();
        blocking(move || {
            candidate.persist(&target).map_err(|e| e.error)?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| {
            ReconcileError::apply(format!(
                "{}: cannot write {}: {e}",
                daemon.name, daemon.file
            ))
        })
    }

    async fn run_check(&self, daemon: &Daemon, candidate: &Path) -> Result<(), ReconcileError> {
        let Some((program, args)) = daemon.check.split_first() else {
            return Ok(());
        };
        let args = args.iter().map(|a| {
            if *a == "{file}" {
                candidate.as_os_str().to_owned()
            } else {
                (*a).into()
            }
        });
        let out = Invocation::new(program, CHECK_DEADLINE)
            .args(args)
            .capture_limit(CHECK_OUTPUT_LIMIT)
            .run()
            .await
            .map_err(|e| ReconcileError::apply(format!("{}: check: {e}", daemon.name)))?;
        if out.success() {
            return Ok(());
        }
        let said = format!("{}\n{}", out.stderr_lossy(), out.stdout_lossy());
        let said: Vec<&str> = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(ReconcileError::apply(format!(
            "{}: its check (`{}`) refused the configuration: {}",
            daemon.name,
            daemon.check.join(" "),
            if said.is_empty() {
                "no reason given".into()
            } else {
                said.join("; ")
            }
        )))
    }

    async fn remove(&self, daemon: &Daemon) -> Result<(), ReconcileError> {
        self.systemd
            .stop(daemon.unit)
            .await
            .map_err(|e| ReconcileError::apply(format!("{}: {e}", daemon.name)))?;
        let path = self.path(daemon);
        let dir = self.dir.clone();
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            sync_dir(&dir)
        })
        .await
        .map_err(|e| {
            ReconcileError::apply(format!(
                "{}: cannot remove {}: {e}",
                daemon.name, daemon.file
            ))
        })
    }
}

async fn read_current(path: &Path) -> Result<Option<String>, ReconcileError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReconcileError::observe(format!("{}: {e}", path.display()))),
    }
}

/// File writes and fsyncs run off the runtime thread (it also carries the RPC link).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Reconciler for DaemonsReconciler {
    type Plan = DaemonsPlan;

    fn name(&self) -> &'static str {
        "daemons"
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        self.wanted(desired).map(drop)
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DaemonsPlan>, ReconcileError> {
        let mut wanted = self.wanted(desired)?;
        let mut planned = Planned::nothing(DaemonsPlan(Vec::new()));
        for daemon in &self.daemons {
            let current = read_current(&self.path(daemon)).await?;
            match (wanted.remove(daemon.name), current) {
                (Some(text), Some(current)) if text == current => {}
                (Some(text), current) => {
                    planned.actions.push(Action(format!(
                        "{} {} ({} bytes), then reload-or-restart {}",
                        if current.is_some() {
                            "rewrite"
                        } else {
                            "write"
                        },
                        daemon.file,
                        text.len(),
                        daemon.unit
                    )));
                    planned.artifacts.push(Artifact {
                        name: daemon.file.to_owned(),
                        contents: text.clone().into_bytes(),
                    });
                    planned.payload.0.push(Change::Write {
                        daemon: daemon.clone(),
                        text,
                    });
                }
                (None, Some(_)) => {
                    planned.actions.push(Action(format!(
                        "stop {}, remove {}",
                        daemon.unit, daemon.file
                    )));
                    planned.payload.0.push(Change::Remove {
                        daemon: daemon.clone(),
                    });
                }
                (None, None) => {}
            }
        }
        Ok(planned)
    }

    async fn apply(&self, plan: DaemonsPlan) -> Result<(), ReconcileError> {
        for change in plan.0 {
            match change {
                Change::Write { daemon, text } => {
                    self.install(&daemon, &text).await?;
                    self.systemd
                        .reload_or_restart(daemon.unit)
                        .await
                        .map_err(|e| ReconcileError::apply(format!("{}: {e}", daemon.name)))?;
                    tracing::info!(
                        "{}: {} written, {} reloaded",
                        daemon.name,
                        daemon.file,
                        daemon.unit
                    );
                }
                Change::Remove { daemon } => {
                    self.remove(&daemon).await?;
                    tracing::info!(
                        "{}: {} stopped, {} removed",
                        daemon.name,
                        daemon.unit,
                        daemon.file
                    );
                }
            }
        }
        Ok(())
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        let wanted = self.wanted(desired)?;
        for daemon in &self.daemons {
            let Some(text) = wanted.get(daemon.name) else {
                continue;
            };
            if read_current(&self.path(daemon)).await?.as_deref() != Some(text.as_str()) {
                return Err(ReconcileError::new(
                    ErrorKind::Unhealthy,
                    format!(
                        "{}: {} differs from the generation's",
                        daemon.name, daemon.file
                    ),
                ));
            }
            let state = self
                .systemd
                .active_state(daemon.unit)
                .await
                .map_err(|e| ReconcileError::observe(format!("{}: {e}", daemon.name)))?;
            if !state.is_active() {
                return Err(ReconcileError::unhealthy(format!(
                    "{}: {} is {}",
                    daemon.name, daemon.unit, state.0
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kowabunga_model::Format;

    fn doc_with(table: Option<&str>) -> Document {
        let mut doc = Document::parse(
            b"version = 1\nnode = \"n\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n",
            Format::Toml,
        )
        .unwrap();
        if let Some(t) = table {
            doc.set_pushed(SECTION, toml::from_str(t).unwrap());
        }
        doc
    }

    #[tokio::test]
    async fn plans_writes_rewrites_and_removals_without_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let r = DaemonsReconciler::on_bus(
            dir.path().join("daemons"),
            vec![KEEPALIVED],
            Bus::Address("unix:path=/nonexistent".into()),
        );
        let plan = r
            .plan(&doc_with(Some("keepalived = \"a\"")), None)
            .await
            .unwrap();
        assert_eq!(plan.actions.len(), 1);
        assert!(
            plan.actions[0]
                .0
                .starts_with("write keepalived.conf (1 bytes)"),
            "{:?}",
            plan.actions
        );
        assert!(!dir.path().join("daemons").exists(), "plan wrote something");

        std::fs::create_dir_all(dir.path().join("daemons")).unwrap();
        std::fs::write(dir.path().join("daemons/keepalived.conf"), "a").unwrap();
        let same = r
            .plan(&doc_with(Some("keepalived = \"a\"")), None)
            .await
            .unwrap();
        assert!(same.actions.is_empty(), "{:?}", same.actions);
        let other = r
            .plan(&doc_with(Some("keepalived = \"b\"")), None)
            .await
            .unwrap();
        assert!(
            other.actions[0].0.starts_with("rewrite keepalived.conf"),
            "{:?}",
            other.actions
        );
        let gone = r.plan(&doc_with(None), None).await.unwrap();
        assert_eq!(
            gone.actions[0].0,
            "stop keepalived.service, remove keepalived.conf"
        );
    }

    #[test]
    fn refuses_a_daemon_it_does_not_know_by_name() {
        let r = DaemonsReconciler::new("/nonexistent", vec![KEEPALIVED]);
        let e = r.validate(&doc_with(Some("haproxy = \"x\""))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(
            e.message,
            "daemons.haproxy: not a daemon this agent configures (known: keepalived)"
        );
        let e = r.validate(&doc_with(Some("keepalived = 3"))).unwrap_err();
        assert!(e.message.contains("keepalived"), "{e}");
    }
}
