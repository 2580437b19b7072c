//! The QEMU tier of the Kowabunga test suite: boots the images that
//! `scripts/build-image.sh` wrote to `dist/` under QEMU, with a fake Kahuna on the host,
//! and checks from outside the guest what the agent did (the requests it made and the
//! reports it sent, the console, traffic on the guest's test NIC).
//!
//! The tests in `tests/` are `#[ignore]`d in the fast tier; `scripts/test.sh --qemu` runs
//! them with `--ignored` and `KOWABUNGA_QEMU_TESTS=1`, and then a missing image is a
//! failure, not a skip. See `docs/images.md`.

pub mod arch;
pub mod artifacts;
pub mod board;
pub mod document;
pub mod kahuna;
pub mod peer;
pub mod sign;
pub mod vm;

/// Whether the QEMU tier is enabled (`KOWABUNGA_QEMU_TESTS=1`).
pub fn enabled() -> bool {
    std::env::var("KOWABUNGA_QEMU_TESTS").is_ok_and(|v| v == "1")
}

/// A scratch directory under the workspace's `target/`, emptied first.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = artifacts::workspace_root()
        .join("target")
        .join("qemu-test")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}
