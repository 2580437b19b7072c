//! `kontroller-seed-generator`: a systemd generator (linked from
//! `/usr/lib/systemd/system-generators/`). When the kernel command line names the seed
//! (`ds=nocloud;s=URL` or `s=/path/`), there is no `cidata` volume to wait for: it masks
//! `run-kowabunga-seed.mount` in the generator directory, so the boot does not wait
//! 90 s for a device that will not come. Otherwise it does nothing. It never fails
//! the boot: a bad `ds=` is reported here and again, as the reason, by first boot.

use std::path::PathBuf;
use std::process::ExitCode;

use kontroller::seed_source::{LOCAL_SEED_DIR, SeedSource};

const MOUNT_UNIT: &str = "run-kowabunga-seed.mount";

fn main() -> ExitCode {
    // systemd passes the normal, early and late generator directories.
    let Some(normal) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!(
            "kontroller-seed-generator: usage: kontroller-seed-generator NORMAL_DIR [EARLY_DIR LATE_DIR]"
        );
        return ExitCode::FAILURE;
    };
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(text) => text,
        Err(e) => {
            eprintln!("kontroller-seed-generator: reading /proc/cmdline: {e}");
            return ExitCode::SUCCESS;
        }
    };
    match SeedSource::resolve(None, &cmdline) {
        Ok(SeedSource::Dir(dir)) if dir == std::path::Path::new(LOCAL_SEED_DIR) => {}
        Ok(_) => {
            let mask = normal.join(MOUNT_UNIT);
            if let Err(e) = std::os::unix::fs::symlink("/dev/null", &mask) {
                eprintln!("kontroller-seed-generator: masking {}: {e}", mask.display());
            }
        }
        Err(e) => eprintln!("kontroller-seed-generator: {e}"),
    }
    ExitCode::SUCCESS
}
