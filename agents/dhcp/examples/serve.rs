//! Serve the `[dhcp]` section of a document, standalone, keeping leases in a directory:
//! what `scripts/bench-dhcp.sh` measures. The document goes through the real
//! reconciler (plan, apply, check); runs until SIGINT or SIGTERM.
//!
//!     cargo run --release -p kowabunga-dhcp --example serve -- doc.toml STATE_DIR

use std::process::ExitCode;

use kowabunga_dhcp::{DhcpReconciler, DhcpServer};
use kowabunga_model::{Document, Format, Reconciler};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("serve: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(state)) = (args.next(), args.next()) else {
        return Err("usage: serve DOCUMENT.toml STATE_DIR".into());
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let doc = Document::parse(&bytes, Format::from_file_name(&path))
        .map_err(|e| format!("{path}: {e}"))?;
    let server = DhcpServer::new();
    server.set_state_dir(state);
    let reconciler = DhcpReconciler::new(server);
    let planned = reconciler
        .plan(&doc, None)
        .await
        .map_err(|e| e.to_string())?;
    reconciler
        .apply(planned.payload)
        .await
        .map_err(|e| e.to_string())?;
    reconciler.check(&doc).await.map_err(|e| e.to_string())?;
    let links: Vec<String> = reconciler.server().current().links.into_keys().collect();
    println!("serving {links:?}");
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string())?,
        _ = term.recv() => {}
    }
    reconciler.server().shutdown().await;
    Ok(())
}
