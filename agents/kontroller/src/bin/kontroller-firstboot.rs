//! `kontroller-firstboot`: a service VM's first boot from its NoCloud seed (hostname,
//! name servers, users and SSH keys, `write_files`), before the agent starts. A oneshot
//! unit runs it at every boot; what lives on `/var` is done once per instance-id (see
//! `kontroller::first_boot`). Prints one `kowabunga: first boot: ...` line per step on
//! the console, where an operator (and the QEMU tier) reads it.
//!
//! A seed URL on the kernel command line (`ds=nocloud;s=URL`) is fetched first, over
//! DHCP on the NICs (`kontroller::seed_source`): networkd runs DHCP from a runtime
//! `.network` file while the seed is fetched, and keeps it only when the seed has no
//! `network-config` (as cloud-init's fallback network does); otherwise the agent
//! configures the NICs from the seed, as for a `cidata` volume.

use std::process::ExitCode;
use std::time::Duration;

use kontroller::first_boot::{self, Roots};
use kontroller::nocloud::Seed;
use kontroller::seed_source::{self, SeedSource};
use kowabunga_process::Invocation;

/// networkd's DHCP on the NICs while a seed URL is fetched.
const SEED_DHCP_NETWORK: &str = "/run/systemd/network/10-kowabunga-seed-dhcp.network";
const SEED_DHCP_NETWORK_TEXT: &str = "\
# Written by kontroller-firstboot for a seed URL (ds=nocloud;s=URL): DHCP on the NICs
# until the seed is fetched; removed when the seed has a network-config.
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
";
/// How long the network and the seed server may take to answer.
const SEED_FETCH_WITHIN: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kowabunga: first boot failed: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = SeedSource::of_this_boot()
        .and_then(|source| {
            if let SeedSource::Url(url) = &source {
                runtime.block_on(fetch_seed(url))?;
            }
            Ok(source.dir())
        })
        .and_then(|dir| {
            Seed::from_dir(&dir).map_err(|e| format!("NoCloud seed {}: {e}", dir.display()))
        })
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
                if let Err(e) =
                    runtime.block_on(systemctl("try-restart", "systemd-resolved.service"))
                {
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

/// DHCP on the NICs, the seed fetched into its runtime directory; DHCP given back
/// when the seed brings its own network-config.
async fn fetch_seed(url: &kernel_cmdline::HttpUrl) -> Result<(), String> {
    std::fs::create_dir_all("/run/systemd/network")
        .and_then(|()| std::fs::write(SEED_DHCP_NETWORK, SEED_DHCP_NETWORK_TEXT))
        .map_err(|e| format!("writing {SEED_DHCP_NETWORK}: {e}"))?;
    networkctl_reload().await?;
    let dir = std::path::Path::new(seed_source::FETCHED_SEED_DIR);
    let files = seed_source::fetch(url, dir, SEED_FETCH_WITHIN).await?;
    println!(
        "kowabunga: first boot: seed fetched from {url}: {}",
        files.join(", ")
    );
    if files.iter().any(|f| f == "network-config") {
        std::fs::remove_file(SEED_DHCP_NETWORK)
            .map_err(|e| format!("removing {SEED_DHCP_NETWORK}: {e}"))?;
        networkctl_reload().await?;
    } else {
        println!("kowabunga: first boot: the seed has no network-config: the NICs stay on DHCP");
    }
    Ok(())
}

async fn networkctl_reload() -> Result<(), String> {
    let out = Invocation::new("networkctl", Duration::from_secs(20))
        .arg("reload")
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(format!("networkctl reload: {}", out.stderr_lossy()))
    }
}

/// Queues `systemctl --no-block VERB UNIT` (this unit runs during boot).
async fn systemctl(verb: &str, unit: &str) -> Result<(), String> {
    let out = Invocation::new("systemctl", Duration::from_secs(20))
        .args(["--no-block", verb, unit])
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(out.stderr_lossy())
    }
}
