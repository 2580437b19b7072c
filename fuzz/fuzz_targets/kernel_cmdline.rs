//! `/proc/cmdline` and `cmdline.txt`: whatever the boot loader or an SD card holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((params, _warnings)) = kernel_cmdline::BootParams::from_cmdline(text) {
            // Derived values must not panic either.
            let _ = params.config_url();
            let _ = params.interval_or_default();
            let _ = params.confirm_window_or_default();
        }
    }
});
