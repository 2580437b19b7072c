//! The command line every agent binary shares: `run`, `apply FILE`, `verify FILE`,
//! `status`. A role binary (`kiwi`, ...) is `fn main() { cli::main(TheRole::new()) }`.
//!
//! Exit codes: 0 applied or already in force, 1 error (setup, I/O, bad arguments
//! after parsing), 2 usage, 3 document rejected (nothing changed), 4 document applied
//! then reverted.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};
use kernel_cmdline::BootParams;
use kowabunga_model::{DynReconciler, Format};
use tokio::sync::Mutex;

use crate::credentials::{self, Credentials, Sources};
use crate::daemon::{Daemon, log_outcome, shutdown_signal};
use crate::fetch::{EndpointProbe, FetchConfig, Fetcher};
use crate::generations::{GenerationStore, Source};
use crate::outcome::{Outcome, State};
use crate::pipeline::{Candidate, ConfirmPolicy, Pipeline};
use crate::schedule::Schedule;
use crate::status::{self, StatusBoard};
use crate::trust::{IMAGE_TRUSTED_KEYS_DIR, TrustPolicy};

/// A background service of a role (DNS server, Kahuna RPC...).
pub type Service = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the `run` command hands a role's services.
pub struct ServiceContext {
    pub pipeline: Arc<Mutex<Pipeline>>,
    pub credentials: Credentials,
    pub insecure: bool,
    pub board: StatusBoard,
}

/// One kind of agent: its names, its reconcilers and its services.
pub trait Role: 'static {
    /// Binary and state directory name (`kiwi`).
    const NAME: &'static str;
    /// Agent kind in Kahuna's protocol (`Kiwi`): header value and RPC method prefix.
    const KIND: &'static str;
    /// Reconcilers, in the order they apply.
    fn reconcilers(&self) -> Result<Vec<Box<dyn DynReconciler>>, String>;
    /// Services `run` starts beside the poll loop.
    fn services(&self, _context: ServiceContext) -> Vec<Service> {
        Vec::new()
    }
}

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
        /// Loopback address of the status endpoint.
        #[arg(long, default_value = status::DEFAULT_ADDR)]
        status_addr: SocketAddr,
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
    /// Show the agent's status (from the running agent, else from its state directory).
    Status {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = status::DEFAULT_ADDR)]
        status_addr: SocketAddr,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Root of the agent's state (generations, persisted credentials).
    #[arg(long, default_value = "/var/lib/kowabunga")]
    state_root: PathBuf,
    /// Kernel command line to read `kowabunga.*` keys from.
    #[arg(long, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// Directory of trusted minisign public keys (`*.pub`).
    #[arg(long, default_value = IMAGE_TRUSTED_KEYS_DIR)]
    trusted_keys: PathBuf,
    /// Upstream configuration file (`global: {id, endpoint, apiKey}`); default
    /// /etc/kowabunga/<agent>.yml.
    #[arg(long)]
    upstream_config: Option<PathBuf>,
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
    crate::logging::init("info");
    let matches = <Cli as clap::CommandFactory>::command()
        .name(R::NAME)
        .bin_name(R::NAME)
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
        } => run(role, &common, status_addr)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Apply {
            file,
            local,
            common,
            confirm_window,
        } => apply(role, &file, &local, &common, confirm_window, false).await,
        Command::Verify {
            file,
            local,
            common,
        } => apply(role, &file, &local, &common, None, true).await,
        Command::Status {
            common,
            status_addr,
        } => show_status::<R>(&common, status_addr).await,
    }
}

fn boot_params(common: &Common) -> Result<BootParams, String> {
    let (boot, warnings) = BootParams::from_file(&common.cmdline)
        .map_err(|e| format!("{}: {e}", common.cmdline.display()))?;
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

fn pubkeys(boot: &BootParams) -> Vec<String> {
    boot.pubkeys
        .iter()
        .map(|k| k.as_base64().to_owned())
        .collect()
}

fn sources<R: Role>(common: &Common) -> Sources {
    let mut sources = Sources::for_agent(R::NAME);
    sources.persisted = common.state_root.join("credentials.toml");
    if let Some(path) = &common.upstream_config {
        sources.upstream = path.clone();
    }
    sources
}

fn open_store<R: Role>(common: &Common) -> Result<GenerationStore, String> {
    GenerationStore::open(common.state_root.join(R::NAME)).map_err(|e| e.to_string())
}

async fn run<R: Role>(role: R, common: &Common, status_addr: SocketAddr) -> Result<(), String> {
    let boot = boot_params(common)?;
    let credentials =
        credentials::resolve(&boot, &sources::<R>(common)).map_err(|e| e.to_string())?;
    let trust = TrustPolicy::load(&common.trusted_keys, &pubkeys(&boot), boot.insecure)
        .map_err(|e| e.to_string())?;
    if trust.key_count() == 0 && !boot.insecure {
        return Err(format!(
            "no trusted key in {} nor kowabunga.pubkey=: every document would be refused",
            common.trusted_keys.display()
        ));
    }
    let config =
        FetchConfig::new(&credentials, R::KIND, boot.insecure).map_err(|e| e.to_string())?;
    let fetcher = Fetcher::new(config, &credentials).map_err(|e| e.to_string())?;
    tracing::info!(
        "agent {} pulling {} every {}s",
        credentials.agent_id,
        fetcher.url(),
        boot.interval_or_default().as_secs()
    );
    let fetcher = Arc::new(Mutex::new(fetcher));
    let pipeline = Pipeline::new(
        credentials.agent_id.clone(),
        role.reconcilers()?,
        open_store::<R>(common)?,
        trust,
    )
    .with_confirm(ConfirmPolicy {
        window: boot.confirm_window_or_default(),
        ..ConfirmPolicy::default()
    })
    .with_probe(Box::new(EndpointProbe(fetcher.clone())));
    let pipeline = Arc::new(Mutex::new(pipeline));
    let board = StatusBoard::new(R::NAME, &credentials.agent_id, boot.insecure);

    let status_board = board.clone();
    tokio::spawn(async move {
        if let Err(e) = status::serve(status_board, status_addr).await {
            tracing::error!("{e}");
        }
    });
    for service in role.services(ServiceContext {
        pipeline: pipeline.clone(),
        credentials: credentials.clone(),
        insecure: boot.insecure,
        board: board.clone(),
    }) {
        tokio::spawn(service);
    }
    Daemon::new(
        pipeline,
        fetcher,
        board,
        Schedule::with_interval(boot.interval_or_default()),
    )
    .run(shutdown_signal())
    .await;
    Ok(())
}

async fn apply<R: Role>(
    role: R,
    file: &Path,
    local: &Local,
    common: &Common,
    confirm_window: Option<u64>,
    dry_run: bool,
) -> Result<ExitCode, String> {
    let boot = boot_params(common)?;
    let insecure = local.insecure || boot.insecure;
    let node = match &local.node {
        Some(node) => node.clone(),
        None => credentials::agent_id(&boot, &sources::<R>(common))
            .map_err(|e| e.to_string())?
            .ok_or("no agent id: pass --node, or set kowabunga.agent_id")?,
    };
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let signature_path = match &local.signature {
        Some(path) => Some(path.clone()),
        None => {
            let default = PathBuf::from(format!("{}.minisig", file.display()));
            default.exists().then_some(default)
        }
    };
    let signature = signature_path
        .map(|p| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()?;
    let trust = TrustPolicy::load(&common.trusted_keys, &pubkeys(&boot), insecure)
        .map_err(|e| e.to_string())?;
    let window = confirm_window.map_or(boot.confirm_window_or_default(), Duration::from_secs);
    let mut pipeline = Pipeline::new(node, role.reconcilers()?, open_store::<R>(common)?, trust)
        .with_confirm(ConfirmPolicy {
            window,
            ..ConfirmPolicy::default()
        });
    let candidate = Candidate {
        bytes,
        signature,
        format: Format::from_file_name(&file.to_string_lossy()),
        source: Source::Local,
    };
    if dry_run {
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

fn exit_code(outcome: &Outcome) -> ExitCode {
    match outcome.state {
        State::Applied | State::Unchanged => ExitCode::SUCCESS,
        State::Rejected => ExitCode::from(3),
        State::Reverted => ExitCode::from(4),
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
    let store = GenerationStore::open_read_only(common.state_root.join(R::NAME));
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
