//! The updater: a service beside the pipeline that brings the node to the `[os]` target
//! of the generation in force, one step at a time, recording each step in
//! `os-update/state.json` before taking it (docs/images.md, "The update flow"):
//!
//! ```text
//! idle -> staging(V) -> installing(V) -> installed(V) -> rebooting(V) -> booted(V)
//!            |               |                                  `-> rolled_back(V)
//!            `-> refused(V) <'
//! ```
//!
//! - staging: [`stage`] downloads and verifies (a transport failure, such as the network
//!   not up yet at boot, is retried after a back-off from 15 s to 10 min,
//!   [`Updater::with_retry`]; a verification failure refuses the version for that URL);
//! - installing: the [`Installer`] runs systemd-sysupdate from the staging directory;
//! - installed: waits for the reboot the policy allows (now, the daily window, or a
//!   later document), then records `rebooting` and reboots;
//! - on the next start ([`Updater::resume`]): running V is `booted` (the health gate and
//!   systemd-bless-boot decide whether it stays); running anything else means V was
//!   rolled back by boot counting: V joins `failed` and is never installed again.
//!   `staging` or `installing` found at start (power cut, crash) start over.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kowabunga_backoff::Exponential;
use tokio::sync::watch;

use super::section::{OsSection, RebootPolicy};
use super::staging::{UpdateConfig, UpdateError, clear_staging, stage};
use super::state::{Phase, UpdateDir, UpdateState};
use crate::fetch::FetchError;
use crate::os_image::{Boot, OsSource};
use crate::trust::TrustPolicy;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What writes the other slot and reboots: systemd on a node, a fake in tests.
pub trait Installer: Send + Sync + 'static {
    /// Install the verified `version` in `staging` into the other slot.
    fn install<'a>(
        &'a self,
        staging: &'a Path,
        version: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Reboot the node (returns once the reboot is under way).
    fn reboot(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The image's units, started over D-Bus: `kowabunga-os-install@VERSION.service` runs
/// `systemd-sysupdate --transfer-source=<state root>/os-update/staging update VERSION`
/// (overlays/common), outside the agent's sandbox; the reboot is `reboot.target`.
pub struct SystemdInstaller {
    systemd: kowabunga_daemons::Systemd,
}

/// A slot is ~700 MiB decompressed: far longer than a daemon reload.
const INSTALL_DEADLINE: Duration = Duration::from_secs(30 * 60);

impl SystemdInstaller {
    pub fn new() -> Self {
        Self {
            systemd: kowabunga_daemons::Systemd::new(kowabunga_daemons::Bus::System)
                .with_job_deadline(INSTALL_DEADLINE),
        }
    }
}

impl Default for SystemdInstaller {
    fn default() -> Self {
        Self::new()
    }
}

impl Installer for SystemdInstaller {
    fn install<'a>(
        &'a self,
        _staging: &'a Path,
        version: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let unit = format!("kowabunga-os-install@{version}.service");
            self.systemd
                .start(&unit)
                .await
                .map_err(|e| format!("{unit}: {e} (journalctl -u {unit})"))
        })
    }

    fn reboot(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.systemd.reboot().await.map_err(|e| e.to_string()) })
    }
}

/// The UTC minute of the day now (0..1440).
pub fn utc_minute() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ((secs % 86_400) / 60) as u32
}

/// Brings the node to its `[os]` target.
pub struct Updater {
    role: String,
    arch: String,
    dir: UpdateDir,
    trust: TrustPolicy,
    installer: Arc<dyn Installer>,
    os: OsSource,
    target: watch::Receiver<Option<OsSection>>,
    insecure: bool,
    ca_file: Option<PathBuf>,
    retry: Exponential,
    /// Transport failures in a row (reset by a download that gets through).
    transient_failures: AtomicU32,
    clock: fn() -> u32,
}

/// What a step leaves the loop to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing until the target changes.
    Wait,
    /// Look again after this long (a retry, or the reboot window's opening).
    After(Duration),
}

/// systemd's name for this build's architecture, as in the artifacts' names.
pub fn systemd_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Updater {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        role: &str,
        dir: UpdateDir,
        trust: TrustPolicy,
        installer: Arc<dyn Installer>,
        os: OsSource,
        target: watch::Receiver<Option<OsSection>>,
        insecure: bool,
        ca_file: Option<PathBuf>,
    ) -> Self {
        Self {
            role: role.to_owned(),
            arch: systemd_arch().to_owned(),
            dir,
            trust,
            installer,
            os,
            target,
            insecure,
            ca_file,
            retry: Exponential::new(Duration::from_secs(15), Duration::from_secs(600)),
            transient_failures: AtomicU32::new(0),
            clock: utc_minute,
        }
    }

    /// How long after a transport failure the download is tried again: `first` after
    /// the first, doubled after each further one, at most `max` (15 s to 10 min).
    pub fn with_retry(mut self, first: Duration, max: Duration) -> Self {
        self.retry = Exponential::new(first, max);
        self
    }

    /// The UTC minute of the day (tests set the time of day).
    pub fn with_clock(mut self, clock: fn() -> u32) -> Self {
        self.clock = clock;
        self
    }

    /// Settle what the previous run left, once, at start: a reboot into V either
    /// brought V up (booted) or came back on the other version (rolled back, V failed);
    /// an install cut short starts over.
    pub fn resume(&self) -> Result<UpdateState, String> {
        let mut state = self.dir.state()?;
        let running = self.os.read().version.unwrap_or_default();
        let next = match &state.phase {
            Phase::Rebooting { version, .. } | Phase::Booted { version } => {
                if *version == running {
                    Phase::Booted {
                        version: version.clone(),
                    }
                } else {
                    tracing::warn!(
                        "os update: version {version} was booted and rolled back (its health gate failed or it never came up); running {running}, {version} is not installed again"
                    );
                    if !state.failed.contains(version) {
                        state.failed.push(version.clone());
                    }
                    Phase::RolledBack {
                        version: version.clone(),
                        running: running.clone(),
                    }
                }
            }
            Phase::Staging { .. } | Phase::Installing { .. } => Phase::Idle,
            other => other.clone(),
        };
        if next != state.phase {
            state.phase = next;
            self.dir.set_state(&state)?;
        }
        Ok(state)
    }

    /// Run until the pipeline's end of the target channel is gone.
    pub async fn run(mut self) -> Result<(), String> {
        self.resume()?;
        loop {
            let target = self.target.borrow_and_update().clone();
            let next = match self.step(target.as_ref()).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("os update: {e}");
                    Next::After(self.retry.max())
                }
            };
            let changed = match next {
                Next::Wait => self.target.changed().await.is_ok(),
                Next::After(delay) => tokio::select! {
                    changed = self.target.changed() => changed.is_ok(),
                    () = tokio::time::sleep(delay) => true,
                },
            };
            if !changed {
                return Ok(());
            }
        }
    }

    fn set(&self, state: &mut UpdateState, phase: Phase) -> Result<(), String> {
        if state.phase != phase {
            tracing::info!("os update: {} -> {}", state.phase.name(), phase.name());
            state.phase = phase;
            self.dir.set_state(state)?;
        }
        Ok(())
    }

    /// One pass toward `target` ([`Updater::run`] calls it at each change of the target
    /// and when the returned delay has passed).
    pub async fn step(&self, target: Option<&OsSection>) -> Result<Next, String> {
        let mut state = self.dir.state()?;
        let image = self.os.read();
        let running = image.version.clone().unwrap_or_default();
        let Some(os) = target else {
            // Nothing asked: forget unfinished work, keep what happened (booted,
            // rolled back) for the reports.
            if matches!(
                state.phase,
                Phase::Staging { .. }
                    | Phase::Installing { .. }
                    | Phase::Refused { .. }
                    | Phase::Installed { .. }
            ) {
                self.set(&mut state, Phase::Idle)?;
            }
            return Ok(Next::Wait);
        };
        let version = os.version.clone();
        if image.boot != Boot::Disk {
            let reason = match image.boot {
                Boot::Diskless => {
                    "this node is netbooted (diskless): it has no slots and runs what the netboot server serves; serve the new version there and reboot the node"
                }
                Boot::BoardFirmware => {
                    "this node is started by its board's firmware, not UEFI: A/B updates need a UKI and boot counting; write the new version's board image to its card"
                }
                _ => {
                    "the agent runs from a package, not a Kowabunga image: update it with the host's package manager"
                }
            };
            self.refuse(&mut state, os, reason)?;
            return Ok(Next::Wait);
        }
        if version == running {
            if !matches!(&state.phase, Phase::Booted { version: v } if *v == running) {
                self.set(&mut state, Phase::Idle)?;
            }
            return Ok(Next::Wait);
        }
        if state.failed.contains(&version) {
            if !matches!(&state.phase, Phase::RolledBack { version: v, .. } if *v == version) {
                self.refuse(
                    &mut state,
                    os,
                    "this version was booted on this node and rolled back (its health gate failed): ask for a newer version",
                )?;
            }
            return Ok(Next::Wait);
        }
        match &state.phase {
            Phase::Refused {
                version: v, url, ..
            } if *v == version && *url == os.url => return Ok(Next::Wait),
            Phase::Installed { version: v, .. } | Phase::Rebooting { version: v, .. }
                if *v == version =>
            {
                return self.reboot_when_allowed(&mut state, os, &running).await;
            }
            _ => {}
        }

        self.set(
            &mut state,
            Phase::Staging {
                version: version.clone(),
            },
        )?;
        let mut config = UpdateConfig::new(
            &os.url,
            &self.role,
            &self.arch,
            &running,
            &version,
            &self.dir.staging(),
        );
        config.allow_downgrade = os.allow_downgrade;
        config.insecure = self.insecure;
        config.ca_file = self.ca_file.clone();
        let staged = match stage(&config, &self.trust).await {
            Ok(staged) => {
                self.transient_failures.store(0, Ordering::Relaxed);
                staged
            }
            Err(e) if is_transient(&e) => {
                let failures = self.transient_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let delay = self.retry.delay(failures);
                tracing::warn!(
                    "os update: downloading {version}: {e}; trying again in {}s",
                    delay.as_secs()
                );
                return Ok(Next::After(delay));
            }
            Err(e) => {
                self.refuse(&mut state, os, &e.to_string())?;
                return Ok(Next::Wait);
            }
        };
        tracing::info!(
            "os update: {version} verified ({} bytes), installing into the other slot",
            staged.bytes
        );
        self.set(
            &mut state,
            Phase::Installing {
                version: version.clone(),
            },
        )?;
        let installed = self.installer.install(&staged.dir, &version).await;
        // ~80 MiB on /var (the slot's zeros are holes): not kept past the install.
        clear_staging(&staged.dir).await;
        if let Err(e) = installed {
            self.refuse(&mut state, os, &format!("installing: {e}"))?;
            return Ok(Next::Wait);
        }
        self.set(
            &mut state,
            Phase::Installed {
                version: version.clone(),
                reboot: os.reboot.as_str().to_owned(),
            },
        )?;
        self.reboot_when_allowed(&mut state, os, &running).await
    }

    fn refuse(&self, state: &mut UpdateState, os: &OsSection, reason: &str) -> Result<(), String> {
        if !matches!(&state.phase, Phase::Refused { version, url, .. } if *version == os.version && *url == os.url)
        {
            tracing::warn!("os update: version {} refused: {reason}", os.version);
        }
        self.set(
            state,
            Phase::Refused {
                version: os.version.clone(),
                url: os.url.clone(),
                reason: reason.to_owned(),
            },
        )
    }

    async fn reboot_when_allowed(
        &self,
        state: &mut UpdateState,
        os: &OsSection,
        running: &str,
    ) -> Result<Next, String> {
        let wait = match (os.reboot, os.window()) {
            (RebootPolicy::Now, _) => 0,
            (RebootPolicy::Window, Some(window)) => window.minutes_until_open((self.clock)()),
            (RebootPolicy::Window, None) | (RebootPolicy::Manual, _) => {
                if !matches!(state.phase, Phase::Installed { .. }) {
                    self.set(
                        state,
                        Phase::Installed {
                            version: os.version.clone(),
                            reboot: os.reboot.as_str().to_owned(),
                        },
                    )?;
                }
                return Ok(Next::Wait);
            }
        };
        if wait > 0 {
            tracing::info!(
                "os update: {} installed, rebooting into it in {wait} min (window {})",
                os.version,
                os.window.as_deref().unwrap_or("")
            );
            return Ok(Next::After(Duration::from_secs(u64::from(wait) * 60)));
        }
        self.set(
            state,
            Phase::Rebooting {
                version: os.version.clone(),
                from: running.to_owned(),
            },
        )?;
        tracing::info!("os update: rebooting from {running} into {}", os.version);
        match self.installer.reboot().await {
            Ok(()) => Ok(Next::Wait),
            Err(e) => {
                self.set(
                    state,
                    Phase::Installed {
                        version: os.version.clone(),
                        reboot: os.reboot.as_str().to_owned(),
                    },
                )?;
                Err(format!("rebooting into {}: {e}", os.version))
            }
        }
    }
}

/// A failure a later try may not meet: the server or the network, not the artifacts.
fn is_transient(e: &UpdateError) -> bool {
    match e {
        UpdateError::Fetch(FetchError::Transport { .. }) => true,
        UpdateError::Fetch(FetchError::Status { status, .. }) => *status >= 500 || *status == 429,
        UpdateError::Io { .. } => true,
        _ => false,
    }
}
