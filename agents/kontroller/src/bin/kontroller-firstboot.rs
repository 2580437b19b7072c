//! `kontroller-firstboot`: a service VM's first boot from its NoCloud seed (hostname,
//! name servers, users and SSH keys, `write_files`), before the agent starts. A oneshot
//! unit runs it at every boot; what lives on `/var` is done once per instance-id (see
//! `kontroller::first_boot`). Prints one `kowabunga: first boot: ...` line per step on
//! the console, where an operator (and the QEMU tier) reads it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kontroller::first_boot::{self, Roots};
use kontroller::nocloud::Seed;

const SEED_DIR: &str = "/run/kowabunga/seed";

fn main() -> ExitCode {
    let dir = std::env::var_os("KOWABUNGA_SEED_DIR")
        .map_or_else(|| PathBuf::from(SEED_DIR), PathBuf::from);
    let done = Seed::from_dir(&dir)
        .map_err(|e| format!("NoCloud seed {}: {e}", dir.display()))
        .and_then(|seed| first_boot::plan(&seed))
        .and_then(|plan| {
            let report = first_boot::apply(&plan, &Roots::system())?;
            Ok((plan, report))
        });
    match done {
        Ok((plan, report)) => {
            for line in report.lines {
                println!("kowabunga: first boot: {line}");
            }
            if plan.resolved.is_some() {
                // resolved started before the drop-in was there; it reads it on restart.
                if let Err(e) = restart_resolved() {
                    eprintln!("kowabunga: first boot: restarting systemd-resolved: {e}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kowabunga: first boot failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Queues a restart of systemd-resolved (`--no-block`: this unit runs during boot).
fn restart_resolved() -> Result<(), String> {
    let systemctl = kowabunga_process::Invocation::new("systemctl", Duration::from_secs(20))
        .args(["--no-block", "try-restart", "systemd-resolved.service"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = runtime
        .block_on(systemctl.run())
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(out.stderr_lossy())
    }
}
