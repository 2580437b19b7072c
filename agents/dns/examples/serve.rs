//! Serve the `[dns]` section of a document, standalone: what `scripts/bench-dns.sh`
//! measures. The document goes through the real reconciler (plan, apply, check).
//!
//!     cargo run --release -p kowabunga-dns --example serve -- doc.toml

use std::process::ExitCode;

use kowabunga_dns::{DnsReconciler, DnsServer};
use kowabunga_model::{Document, Format, Reconciler};

#[tokio::main]
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
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: serve DOCUMENT.toml")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let doc = Document::parse(&bytes, Format::from_file_name(&path))
        .map_err(|e| format!("{path}: {e}"))?;
    let reconciler = DnsReconciler::new(DnsServer::new());
    let planned = reconciler
        .plan(&doc, None)
        .await
        .map_err(|e| e.to_string())?;
    reconciler
        .apply(planned.payload)
        .await
        .map_err(|e| e.to_string())?;
    reconciler.check(&doc).await.map_err(|e| e.to_string())?;
    let state = reconciler.server().current();
    println!(
        "serving {} names on {:?}",
        state.config.record_count(),
        reconciler.server().bound()
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}
