//! The command line every agent binary shares: `run`, `apply FILE`, `verify FILE`,
//! `check FILE`, `schema`, `status`. A role binary (`kiwi`, ...) is
//! `fn main() { cli::main(TheRole::new()) }`.
//!
//! Exit codes: 0 applied or already in force (`check`: valid), 1 error (setup, I/O, bad
//! arguments after parsing), 2 usage, 3 document rejected (nothing changed), 4 document
//! applied then reverted, 5 deferred (not applied now through no fault of the document:
//! the system could not be read, or the agent was stopping; nothing changed).
//!
//! `check` and `schema` work offline, for an operator's CI: no root, no kernel, no
//! state directory, no kernel command line unless `--cmdline` is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};
use kernel_cmdline::BootParams;
use kowabunga_model::{Format, Progress};

use crate::credentials::{self, Sources};
use crate::generations::{GenerationStore, Source};
use crate::os_image::{OsImage, OsSource};
use crate::outcome::{Outcome, State};
use crate::pipeline::{Candidate, ConfirmPolicy, Pipeline};
use crate::record::log_outcome;
use crate::role::{Role, RoleContext};
use crate::signed_files::SignedSource;
use crate::status;
use crate::trust::{IMAGE_TRUSTED_KEYS_DIR, TrustPolicy};

#[derive(Debug, Parser)]
#[command(version, about = "Kowabunga agent", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: restore the generation in force, then pull, apply and report.
    Run {
        #[command(flatten)]
        common: Common,
        /// Loopback address of the status endpoint (default 127.0.0.1:<the role's port>).
        #[arg(long)]
        status_addr: Option<SocketAddr>,
    },
    /// Apply one document from a file (local mode, for tests and the bench).
    Apply {
        /// The document (TOML; `.yaml`/`.yml` for YAML).
        file: PathBuf,
        #[command(flatten)]
        local: Local,
        #[command(flatten)]
        common: Common,
        /// Seconds the health checks have to pass (default: kowabunga.confirm_window or 90).
        #[arg(long)]
        confirm_window: Option<u64>,
        /// Try again a version an earlier attempt used up (rejected or reverted), as long
        /// as it is newer than the generation in force. Local files only: pulled
        /// documents never get a second chance at the same version.
        #[arg(long)]
        retry: bool,
    },
    /// Check a document (signature, header, every reconciler's validation and plan) and
    /// print what applying it would change. Changes nothing.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        local: Local,
        #[command(flatten)]
        common: Common,
    },
    /// Check a document offline (no root, no kernel, no state), as CI would before
    /// publishing it.
    ///
    /// Header, validity against the clock, node (with `--node`), signature (when keys are
    /// given), and every section this agent reads, with the rules and messages of
    /// `verify` and the agent. Exit 0 valid, 3 rejected, 1 file or keys unreadable.
    Check {
        /// The document (TOML; `.yaml`/`.yml` for YAML).
        file: PathBuf,
        /// Directory of trusted minisign public keys (`*.pub`). Without any key (here
        /// or `kowabunga.pubkey` in `--cmdline`) the signature is not checked, and
        /// `check` says so.
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// Detached minisign signature (default: FILE.minisig).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Node the document must be for (default: not checked).
        #[arg(long)]
        node: Option<String>,
        /// Kernel command line to take `kowabunga.pubkey` keys from (default: none).
        #[arg(long)]
        cmdline: Option<PathBuf>,
    },
    /// Print the JSON Schema of this agent's document (for editors and CI).
    Schema,
    /// Exit 0 once the running agent shows a good boot (generation restored, last
    /// attempt not reverted, Kahuna or the config endpoint reached), 1 if it does not
    /// within the deadline: the A/B health gate run before `boot-complete.target`.
    HealthGate {
        /// Seconds to wait for a good boot.
        #[arg(long, default_value_t = 300)]
        deadline: u64,
        /// Address of the running agent's status endpoint (default: the role's).
        #[arg(long)]
        status_addr: Option<SocketAddr>,
    },
    /// Show the agent's status (from the running agent, else from its state directory).
    Status {
        #[command(flatten)]
        common: Common,
        /// Address of the running agent's status endpoint (default: the role's).
        #[arg(long)]
        status_addr: Option<SocketAddr>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Root of the agent's state (generations, persisted credentials).
    #[arg(long, default_value = "/var/lib/kowabunga")]
    pub(crate) state_root: PathBuf,
    /// Kernel command line to read `kowabunga.*` keys from.
    #[arg(long, default_value = "/proc/cmdline")]
    pub(crate) cmdline: PathBuf,
    /// Directory of trusted minisign public keys (`*.pub`).
    #[arg(long, default_value = IMAGE_TRUSTED_KEYS_DIR)]
    pub(crate) trusted_keys: PathBuf,
    /// Upstream configuration file (`global: {id, endpoint, apiKey}`); default
    /// /etc/kowabunga/<agent>.yml.
    #[arg(long)]
    pub(crate) upstream_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Local {
    /// Detached minisign signature (default: FILE.minisig when it exists).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// Accept an unsigned document (development only).
    #[arg(long)]
    insecure: bool,
    /// Node the document must be for (default: the agent id from the credentials).
    #[arg(long)]
    node: Option<String>,
}

/// Parse the arguments, run the command, exit with its code.
pub fn main<R: Role>(role: R) -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command()
        .name(R::NAME)
        .bin_name(R::NAME)
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The offline commands print their verdict; logs would only add noise to a CI job.
    let offline = matches!(cli.command, Command::Check { .. } | Command::Schema);
    crate::logging::init(if offline { "error" } else { "info" });
    // One TLS provider for the process (fetcher, RPC client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: starting the runtime: {e}", R::NAME);
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(role, cli.command)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch<R: Role>(role: R, command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Run {
            common,
            status_addr,
        } => crate::run::run(
            role,
            &common,
            status_addr.unwrap_or_else(|| status::default_addr(R::STATUS_PORT)),
        )
        .await
        .map(|()| ExitCode::SUCCESS),
        Command::Apply {
            file,
            local,
            common,
            confirm_window,
            retry,
        } => {
            let mode = Mode::Apply {
                confirm_window,
                retry,
            };
            apply(role, &file, &local, &common, mode).await
        }
        Command::Verify {
            file,
            local,
            common,
        } => apply(role, &file, &local, &common, Mode::DryRun).await,
        Command::Check {
            file,
            trusted_keys,
            signature,
            node,
            cmdline,
        } => {
            let keys = Keys {
                dir: trusted_keys,
                cmdline,
            };
            crate::check::check(&role, &file, signature.as_deref(), &keys, node.as_deref())
        }
        Command::Schema => crate::check::print_schema(&role),
        Command::HealthGate {
            deadline,
            status_addr,
        } => {
            let addr = status_addr.unwrap_or_else(|| status::default_addr(R::STATUS_PORT));
            match crate::health_gate::wait(
                addr,
                Duration::from_secs(deadline),
                Duration::from_secs(2),
            )
            .await
            {
                Ok(()) => {
                    println!("{}: this boot is good", R::NAME);
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    eprintln!("{}: health gate failed: {why}", R::NAME);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Status {
            common,
            status_addr,
        } => {
            let addr = status_addr.unwrap_or_else(|| status::default_addr(R::STATUS_PORT));
            show_status::<R>(&common, addr).await
        }
    }
}

impl Common {
    pub(crate) fn boot_params(&self) -> Result<BootParams, String> {
        let (boot, warnings) = BootParams::from_file(&self.cmdline)
            .map_err(|e| format!("{}: {e}", self.cmdline.display()))?;
        for warning in warnings {
            tracing::warn!("kernel command line: {warning}");
        }
        if boot.insecure {
            tracing::warn!(
                "INSECURE MODE (kowabunga.insecure): plain HTTP and unsigned documents are accepted"
            );
        }
        Ok(boot)
    }

    pub(crate) fn pubkeys(&self, boot: &BootParams) -> Vec<String> {
        boot.pubkeys
            .iter()
            .map(|k| k.as_base64().to_owned())
            .collect()
    }

    /// The role's own state: `<state root>/<NAME>` (generations, persisted
    /// credentials, reconcilers' records), so that two roles on one host never collide.
    pub(crate) fn state_dir<R: Role>(&self) -> PathBuf {
        self.state_root.join(R::NAME)
    }

    pub(crate) fn sources<R: Role>(&self) -> Sources {
        let mut sources = Sources::for_agent(R::NAME);
        sources.persisted = self.state_dir::<R>().join("credentials.toml");
        if let Some(path) = &self.upstream_config {
            sources.upstream = path.clone();
        }
        sources
    }

    pub(crate) fn open_store<R: Role>(&self) -> Result<GenerationStore, String> {
        GenerationStore::open(self.state_dir::<R>()).map_err(|e| e.to_string())
    }

    pub(crate) fn role_context<R: Role>(&self, boot: &BootParams) -> RoleContext {
        RoleContext {
            state_dir: self.state_dir::<R>(),
            progress: Progress::new(),
            boot: boot.clone(),
            os_update_dir: self.state_root.join("os-update"),
            signed: SignedSource {
                trusted_keys: self.trusted_keys.clone(),
                pubkeys: self.pubkeys(boot),
                insecure: boot.insecure,
                ca_file: boot.ca_file.clone(),
            },
        }
    }
}

/// What `apply` does with the document.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `verify`: admit and plan, change nothing.
    DryRun,
    Apply {
        confirm_window: Option<u64>,
        retry: bool,
    },
}

async fn apply<R: Role>(
    role: R,
    file: &Path,
    local: &Local,
    common: &Common,
    mode: Mode,
) -> Result<ExitCode, String> {
    let boot = common.boot_params()?;
    let insecure = local.insecure || boot.insecure;
    let node = match &local.node {
        Some(node) => node.clone(),
        None => credentials::agent_id(&boot, &common.sources::<R>())
            .map_err(|e| e.to_string())?
            .ok_or("no agent id: pass --node, or set kowabunga.agent_id")?,
    };
    let candidate = local_candidate(file, local.signature.as_deref())?;
    let trust = TrustPolicy::load(&common.trusted_keys, &common.pubkeys(&boot), insecure)
        .map_err(|e| e.to_string())?;
    let reconcilers = crate::role::pipeline_reconcilers(
        &role,
        &common.role_context::<R>(&boot),
        OsSource::new(OsImage::read_system),
        tokio::sync::watch::channel(None).0,
    )?;
    let mut pipeline = Pipeline::new(node, reconcilers, common.open_store::<R>()?, trust);
    if let Mode::Apply {
        confirm_window,
        retry,
    } = mode
    {
        let window = confirm_window.map_or(boot.confirm_window_or_default(), Duration::from_secs);
        pipeline = pipeline.with_confirm(ConfirmPolicy {
            window,
            ..ConfirmPolicy::default()
        });
        if retry {
            pipeline = pipeline.allow_local_retry();
        }
    }
    if let Mode::DryRun = mode {
        let report = pipeline.dry_run(candidate).await;
        return Ok(match report {
            Ok(actions) => {
                if actions.is_empty() {
                    println!("valid; applying it would change nothing");
                } else {
                    println!("valid; applying it would:");
                    for action in actions {
                        println!("  {action}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(outcome) => {
                println!("{outcome}");
                exit_code(&outcome)
            }
        });
    }
    if let Some(outcome) = pipeline.restore().await? {
        log_outcome(&outcome);
    }
    let outcome = pipeline.submit(candidate).await;
    log_outcome(&outcome);
    println!("{outcome}");
    Ok(exit_code(&outcome))
}

/// A local document and its signature (`signature`, else FILE.minisig when it exists).
pub(crate) fn local_candidate(file: &Path, signature: Option<&Path>) -> Result<Candidate, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let signature_path = match signature {
        Some(path) => Some(path.to_owned()),
        None => {
            let default = PathBuf::from(format!("{}.minisig", file.display()));
            default.exists().then_some(default)
        }
    };
    let signature = signature_path
        .map(|p| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()?;
    Ok(Candidate {
        bytes,
        signature,
        format: Format::from_file_name(&file.to_string_lossy()),
        source: Source::Local,
    })
}

/// Where `check` finds the keys it trusts.
#[derive(Debug)]
pub(crate) struct Keys {
    /// `--trusted-keys DIR`.
    pub(crate) dir: Option<PathBuf>,
    /// `--cmdline FILE` (its `kowabunga.pubkey` keys).
    pub(crate) cmdline: Option<PathBuf>,
}

pub(crate) fn exit_code(outcome: &Outcome) -> ExitCode {
    match outcome.state {
        State::Applied | State::Unchanged => ExitCode::SUCCESS,
        State::Rejected => ExitCode::from(3),
        State::Reverted => ExitCode::from(4),
        State::Deferred => ExitCode::from(5),
    }
}

async fn show_status<R: Role>(common: &Common, addr: SocketAddr) -> Result<ExitCode, String> {
    let url = format!("http://{addr}/status");
    let live = async {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    };
    match live.await {
        Ok(body) => {
            println!("{body}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => println!("{} is not running ({url}: {e})", R::NAME),
    }
    println!("{}", crate::os_image::OsImage::read_system().summary());
    let store = GenerationStore::open_read_only(common.state_dir::<R>());
    match store.current().map_err(|e| e.to_string())? {
        Some(g) => println!(
            "generation in force: {} (document version {}, {:?}, staged at {})",
            g.meta.seq, g.meta.version, g.meta.source, g.meta.staged_at
        ),
        None => println!("no generation in force"),
    }
    if let Some(seq) = store.pointer("pending").map_err(|e| e.to_string())? {
        println!("generation {seq} was being applied: it will be undone at the next start");
    }
    Ok(ExitCode::SUCCESS)
}
