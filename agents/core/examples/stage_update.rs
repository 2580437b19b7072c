//! Stage one image version's update as the agent does: download over HTTP(S), check the
//! minisign signature of `SHA256SUMS` and every file's sha256, unpack the zstd files
//! (run by `scripts/test-sysupdate.sh`, and `scripts/bench-update.sh` through it):
//!
//!   stage_update BASE_URL ROLE RUNNING_VERSION VERSION STAGING_DIR TRUSTED_KEYS_DIR
//!
//! Plain http is allowed (a loopback server); the signature is still required. Prints
//! `staged: BYTES bytes (UNPACKED unpacked) in SECONDS s` on success.

use std::path::Path;
use std::time::Instant;

use kowabunga_agent::trust::TrustPolicy;
use kowabunga_agent::update::{UpdateConfig, stage};

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base_url, role, running, version, staging, keys] = args.as_slice() else {
        return Err(
            "usage: stage_update BASE_URL ROLE RUNNING_VERSION VERSION STAGING_DIR TRUSTED_KEYS_DIR"
                .into(),
        );
    };
    let trust = TrustPolicy::load(Path::new(keys), &[], false).map_err(|e| e.to_string())?;
    let mut config = UpdateConfig::new(
        base_url,
        role,
        "x86-64",
        running,
        version,
        Path::new(staging),
    );
    config.insecure = true;
    let started = Instant::now();
    let staged = stage(&config, &trust).await.map_err(|e| e.to_string())?;
    println!(
        "staged: {} bytes ({} unpacked) in {:.3} s",
        staged.bytes,
        staged.unpacked_bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
