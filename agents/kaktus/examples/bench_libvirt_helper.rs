//! What the libvirt helper process costs a request (run by
//! `scripts/bench-agent-memory.sh kaktus`):
//!
//!   bench_libvirt_helper URI ROUNDS
//!
//! Prints one `name: seconds` line per figure, each the median of ROUNDS:
//! - `cold`: a request that starts the helper (exec, libvirt's libraries loaded, the
//!   connection opened), as after an idle exit;
//! - `warm`: the same request to a running helper (a pipe round trip, and libvirt's
//!   own to its daemon).

use std::time::{Duration, Instant};

use kaktus::Libvirt;
use kaktus::libvirt_protocol::Request;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [uri, rounds] = args.as_slice() else {
        return Err("usage: bench_libvirt_helper URI ROUNDS".into());
    };
    let rounds: usize = rounds
        .parse()
        .map_err(|e| format!("ROUNDS {rounds:?}: {e}"))?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..rounds.max(1) {
        let libvirt = Libvirt::new(uri);
        let started = Instant::now();
        let _: String = libvirt.request(Request::Hostname).await?;
        cold.push(started.elapsed());
        let started = Instant::now();
        let _: String = libvirt.request(Request::Hostname).await?;
        warm.push(started.elapsed());
    }
    println!("cold: {:.6}", median(&mut cold));
    println!("warm: {:.6}", median(&mut warm));
    Ok(())
}

fn median(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64()
}
