//! Storage figures of the `local` backend, driven through the same code the
//! `Kaktus.*` RPC methods run (run by `scripts/bench-kaktus.sh`, which prepares the
//! files, serves them over HTTP and times `qemu-img` on the same files):
//!
//!   bench_storage POOL_DIR RAW_URL QCOW2_URL SMALL_TEMPLATE_BYTES
//!
//! Prints one `name: seconds` line per figure:
//! - `import_raw`, `import_qcow2`: `CreateTemplateVolume` of each URL (download,
//!   checks, qcow2 -> raw conversion);
//! - `os_clone_large`, `os_clone_small`: `CreateOsVolume` from the imported template
//!   and from a small one (median of 5), to show the clone does not depend on the
//!   template's size.
//!
//! libvirt is the `test:///default` driver: the pool refresh after each volume is
//! libvirt's bookkeeping, not part of the figures (and fails quietly here).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kaktus::Libvirt;
use kaktus::instances::Instances;
use kaktus::inventory::{NodeInventory, Pool, SharedInventory};
use kaktus::storage::Storage;
use kaktus::template::Templates;
use kowabunga_model::Progress;

type Result<T> = std::result::Result<T, String>;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, raw_url, qcow2_url, small] = args.as_slice() else {
        return Err("usage: bench_storage POOL_DIR RAW_URL QCOW2_URL SMALL_TEMPLATE_BYTES".into());
    };
    let small: u64 = small
        .parse()
        .map_err(|e| format!("SMALL_TEMPLATE_BYTES {small:?}: {e}"))?;

    let mut inventory = NodeInventory::new();
    inventory
        .pools
        .insert("bench".into(), Pool::local("bench", PathBuf::from(dir)));
    let inventory = SharedInventory::new(inventory);
    let instances = Instances::new(Libvirt::new("test:///default"), inventory.clone());
    let storage = Storage::new(inventory, instances);
    let templates = Templates::new(storage.clone(), Progress::new())
        .with_timeouts(Duration::from_secs(3600), Duration::from_secs(60));

    let t = Instant::now();
    templates.create("bench", "tpl-raw", raw_url).await?;
    report("import_raw", t.elapsed());
    let t = Instant::now();
    templates.create("bench", "tpl-qcow2", qcow2_url).await?;
    report("import_qcow2", t.elapsed());

    storage.create_raw("bench", "tpl-small", small).await?;
    let large = clone_median(&storage, "tpl-raw").await?;
    report("os_clone_large", large);
    let small = clone_median(&storage, "tpl-small").await?;
    report("os_clone_small", small);
    Ok(())
}

/// Median of 5 `CreateOsVolume` from `template`, each clone deleted after.
async fn clone_median(storage: &Storage, template: &str) -> Result<Duration> {
    let mut times = Vec::new();
    for i in 0..5 {
        let volume = format!("os-{template}-{i}");
        let t = Instant::now();
        storage.create_os("bench", &volume, 0, template).await?;
        times.push(t.elapsed());
        storage.delete("bench", &volume).await?;
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn report(name: &str, d: Duration) {
    println!("{name}: {:.3}", d.as_secs_f64());
}
