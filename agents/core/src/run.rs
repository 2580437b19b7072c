//! `<agent> run`: wire a role onto the core (credentials, fetcher, pipeline, status,
//! the RPC link to Kahuna, supervised services), then run the daemon loop until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use kowabunga_model::Supervised;
use tokio::sync::Mutex;

use crate::cli::Common;
use crate::credentials::{self, Credentials};
use crate::daemon::{Daemon, shutdown_signal};
use crate::fetch::{EndpointProbe, FetchConfig, Fetcher};
use crate::os_image::{OsImage, OsSource};
use crate::pipeline::{ConfirmPolicy, Pipeline};
use crate::push::PipelinePusher;
use crate::record::Recorder;
use crate::role::{Role, StateSource, pipeline_reconcilers};
use crate::schedule::Schedule;
use crate::status::{self, StatusBoard};
use crate::supervise::{RestartPolicy, supervise};
use crate::trust::TrustPolicy;
use crate::update::{SystemdInstaller, UpdateDir, Updater};

pub(crate) async fn run<R: Role>(
    role: R,
    common: &Common,
    status_addr: SocketAddr,
) -> Result<(), String> {
    let boot = common.boot_params()?;
    let (credentials, insecure) = match role.kahuna_link() {
        Some(link) => {
            let link = link?;
            (link.credentials, link.insecure)
        }
        None => (
            credentials::resolve(&boot, &common.sources::<R>()).map_err(|e| e.to_string())?,
            boot.insecure,
        ),
    };
    let pulls = R::STATE_SOURCE == StateSource::Pull;
    let trust = TrustPolicy::load(&common.trusted_keys, &common.pubkeys(&boot), boot.insecure)
        .map_err(|e| e.to_string())?;
    if pulls && trust.key_count() == 0 && !boot.insecure {
        return Err(format!(
            "no trusted key in {} nor kowabunga.pubkey=: every document would be refused",
            common.trusted_keys.display()
        ));
    }
    let mut context = common.role_context::<R>(&boot);
    context.signed.insecure = insecure;
    context.signed.ca_file = credentials.ca_file.clone();
    // What the node runs, with the A/B updater's state (roles that pull documents run
    // one), read afresh at each status request, scrape and report.
    let update_dir = UpdateDir::new(&context.os_update_dir);
    let os: OsSource = if pulls {
        let dir = update_dir.clone();
        OsSource::new(move || OsImage::read_system().with_update(dir.state().unwrap_or_default()))
    } else {
        OsSource::new(OsImage::read_system)
    };
    tracing::info!("{}", os.read().summary());
    let fetcher = if pulls {
        let config =
            FetchConfig::new(&credentials, R::KIND, insecure).map_err(|e| e.to_string())?;
        let fetcher = Fetcher::new(config, &credentials)
            .map_err(|e| e.to_string())?
            .with_os(os.clone());
        tracing::info!(
            "agent {} pulling {} every {}s",
            credentials.agent_id,
            fetcher.url(),
            boot.interval_or_default().as_secs()
        );
        Some(Arc::new(Mutex::new(fetcher)))
    } else {
        tracing::info!(
            "agent {}: state pushed by the role only, nothing pulled",
            credentials.agent_id
        );
        None
    };
    let (os_target, os_target_rx) =
        tokio::sync::watch::channel(update_dir.target().unwrap_or_else(|e| {
            tracing::warn!("os update: {e}; no target until the next document");
            None
        }));
    let reconcilers = pipeline_reconcilers(&role, &context, os.clone(), os_target)?;
    let board = StatusBoard::new(R::NAME, &credentials.agent_id, boot.insecure)
        .with_reconcilers(reconcilers.iter().map(|r| r.name()))
        .with_progress(context.progress.clone())
        .with_os(os.clone());
    let mut pipeline = Pipeline::new(
        credentials.agent_id.clone(),
        reconcilers,
        common.open_store::<R>()?,
        trust,
    )
    .with_confirm(ConfirmPolicy {
        window: boot.confirm_window_or_default(),
        ..ConfirmPolicy::default()
    });
    if let Some(fetcher) = &fetcher {
        pipeline = pipeline.with_probe(Box::new(EndpointProbe(fetcher.clone())));
    }
    let pipeline = Arc::new(Mutex::new(pipeline));
    let recorder = match &fetcher {
        Some(fetcher) => Recorder::new(board.clone(), fetcher.clone()),
        None => Recorder::unreported(board.clone()),
    };

    let status_board = board.clone();
    tokio::spawn(async move {
        if let Err(e) = status::serve(status_board, status_addr).await {
            tracing::error!("{e}");
        }
    });
    let pusher = PipelinePusher::new(pipeline.clone(), recorder.clone());
    let rpc = Arc::new(role.rpc(&context, pusher.clone()));
    let mut services = role.services(&context, pusher);
    if let Some(fetcher) = &fetcher {
        fetcher.lock().await.set_services(&services);
    }
    services.push(kahuna_link::<R>(rpc, &credentials, insecure, &board));
    if pulls {
        let trust = TrustPolicy::load(&common.trusted_keys, &common.pubkeys(&boot), boot.insecure)
            .map_err(|e| e.to_string())?;
        let updater = Updater::new(
            R::NAME,
            update_dir,
            trust,
            Arc::new(SystemdInstaller::new()),
            os,
            os_target_rx,
            insecure,
            credentials.ca_file.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = updater.run().await {
                tracing::error!("os update: {e}");
            }
        });
    }
    for service in services {
        tokio::spawn(supervise(service, board.clone(), RestartPolicy::default()));
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    pipeline.lock().await.set_shutdown(shutdown_rx.clone());
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop requested");
        let _ = shutdown_tx.send(true);
    });
    let schedule = Schedule::with_interval(boot.interval_or_default());
    let daemon = match fetcher {
        Some(fetcher) => Daemon::new(pipeline.clone(), fetcher, recorder, schedule),
        None => Daemon::without_pull(pipeline.clone(), recorder, schedule),
    };
    let mut stop = shutdown_rx;
    daemon
        .run(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    Ok(())
}

/// The RPC link to Kahuna as a supervised service: a run dials, serves Kahuna's calls
/// and reconnects by itself; it ends only when the link cannot be set up at all (a
/// malformed Kahuna URL, an unreadable CA file), and is then retried with back-off.
fn kahuna_link<R: Role>(
    rpc: Arc<R::Rpc>,
    credentials: &Credentials,
    insecure: bool,
    board: &StatusBoard,
) -> Supervised {
    let rpc_credentials = kowabunga_rpc::Credentials {
        kind: R::KIND,
        kahuna_url: credentials.kahuna.as_str().to_owned(),
        agent_id: credentials.agent_id.clone(),
        api_key: credentials.api_key.expose().to_owned(),
    };
    let options = kowabunga_rpc::Options {
        insecure,
        ca_file: credentials.ca_file.clone(),
        ..kowabunga_rpc::Options::default()
    };
    let board = board.clone();
    Supervised::new("kahuna-rpc", move || {
        let agent =
            kowabunga_rpc::Agent::new(rpc_credentials.clone(), options.clone(), rpc.clone());
        let board = board.clone();
        async move {
            let agent = agent.map_err(|e| format!("Kahuna RPC: {e}"))?;
            let mut link = agent.link();
            let watch_link = async move {
                while link.changed().await.is_ok() {
                    let state = match &*link.borrow() {
                        kowabunga_rpc::Link::Connecting => "connecting".to_owned(),
                        kowabunga_rpc::Link::Connected => "connected".to_owned(),
                        kowabunga_rpc::Link::Down(why) => format!("down: {why}"),
                        kowabunga_rpc::Link::Stopped => "stopped".to_owned(),
                    };
                    board.kahuna_link(state);
                }
            };
            tokio::select! {
                () = agent.run(std::future::pending::<()>()) => {}
                () = watch_link => {}
            }
            Err("Kahuna RPC link ended".to_owned())
        }
    })
}
