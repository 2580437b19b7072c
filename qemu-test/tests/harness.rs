//! The QEMU harness's own guard: a guest that never prints the boot banner is reset
//! once, then reported with its vCPU state (so a stalled boot fails with facts, and an
//! emulator stall seen once in CI does not fail a whole run).

use std::time::{Duration, Instant};

use qemu_test::artifacts::Artifacts;
use qemu_test::vm::{Arch, Boot, Vm, VmConfig};

#[test]
#[ignore = "boots the kiwi PXE kernel under QEMU: scripts/test.sh --qemu"]
fn a_guest_without_its_boot_banner_is_reset_once_then_reported() {
    assert!(
        qemu_test::enabled(),
        "set KOWABUNGA_QEMU_TESTS=1 (scripts/test.sh --qemu does) to boot the images"
    );
    let dir = qemu_test::scratch_dir("harness");
    let artifacts = Artifacts::find("kiwi", Arch::X86_64).unwrap_or_else(|e| panic!("{e}"));
    // The image's kernel with no initrd: it can never mount a root, so the banner
    // never comes, whatever the machine's speed.
    let boot = Boot::Direct {
        kernel: artifacts.pxe_kernel.clone(),
        initrd: dir.join("empty.initrd"),
        cmdline: "console=ttyS0 panic=0".into(),
    };
    std::fs::write(dir.join("empty.initrd"), b"").unwrap_or_else(|e| panic!("{e}"));
    let mut config = VmConfig::new("stalled", boot);
    config.management_nic = false;
    config.memory_mib = 256;
    config.cpus = 1;
    config.early_hang_after = Some(Duration::from_secs(5));
    let mut vm = Vm::start(&config, &dir).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let error = loop {
        if let Err(e) = vm.check_running() {
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "the stall was never reported");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(vm.early_hang_resets(), 1, "{error}");
    assert!(error.contains("again after a reset"), "{error}");
    assert!(error.contains("RIP="), "no vCPU state in: {error}");
}
