//! Boots one QEMU guest and watches its serial console.
//!
//! Acceleration: TCG unless `KOWABUNGA_QEMU_ACCEL=kvm` (on the project's machines
//! /dev/kvm opens but KVM runs fail, so it is never assumed).
//! Management network: QEMU user-mode networking with `restrict=on` (the guest reaches
//! nothing outside), plus one `guestfwd` rule that connects the guest's Kahuna address
//! ([`KAHUNA_GUEST_ADDR`]) to the fake Kahuna on the host's loopback.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::arch::Arch;

/// Where the guest sees the fake Kahuna (port 80, plain HTTP).
pub const KAHUNA_GUEST_ADDR: &str = "10.0.2.100";
/// Port of [`KAHUNA_GUEST_ADDR`] forwarded to a Kahuna RPC (WebSocket) server, when
/// [`VmConfig::rpc_port`] is set: the agent's `kowabunga.kahuna` then names this port
/// and `kowabunga.config_url` the documents on port 80.
pub const KAHUNA_RPC_GUEST_PORT: u16 = 81;

/// What every image prints on its console once the real root is mounted
/// (overlays/common/usr/lib/kowabunga/boot-banner).
pub const BOOT_BANNER: &str = "kowabunga: image=";
/// A guest that has not printed [`BOOT_BANNER`] this long after QEMU started is taken as
/// hung in early boot. A normal boot prints it after 20-60 s under TCG; CI once saw a
/// guest print nothing more after the initrd's systemd started, for 420 s (no "start job"
/// line, no kernel warning): an emulator stall, not a slow job.
pub const EARLY_HANG_AFTER: Duration = Duration::from_secs(240);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Qemu(String),
    #[error("{what} not seen on the serial console within {secs}s; last console lines:\n{tail}")]
    Timeout {
        what: String,
        secs: u64,
        tail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// How the guest boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// UEFI firmware (OVMF, AAVMF on arm64) boots the disk: systemd-boot, UKI, its
    /// embedded command line.
    Uefi { disk: PathBuf },
    /// QEMU loads kernel and initrd itself (PXE-style), with this command line.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
    /// The firmware (SeaBIOS) boots from the network: the iPXE option ROM QEMU gives
    /// the first extra NIC does DHCP and chains the boot file it is handed. `disk` is
    /// attached as it is (an empty disk: a node that has never been installed).
    Network { disk: PathBuf },
    /// QEMU's Raspberry Pi 4 (`raspi4b`: its own CPUs and 2 GiB, no network, no PCIe):
    /// QEMU loads kernel, device tree and initrd as the Pi's firmware would, with this
    /// command line; `sd` is the SD card (its size a power of two).
    Raspi4 {
        kernel: PathBuf,
        dtb: PathBuf,
        initrd: PathBuf,
        cmdline: String,
        sd: PathBuf,
    },
}

/// Extra NIC joined to a QEMU socket network (to a peer VM or a test process).
#[derive(Clone, Debug)]
pub struct SocketNic {
    pub mac: String,
    /// `listen=127.0.0.1:PORT` or `connect=127.0.0.1:PORT`.
    pub socket: String,
}

#[derive(Clone, Debug)]
pub struct VmConfig {
    pub name: String,
    /// The guest's architecture (the image's): emulator, machine and firmware.
    pub arch: Arch,
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Port of the fake Kahuna on 127.0.0.1, forwarded to [`KAHUNA_GUEST_ADDR`]:80.
    pub kahuna_port: Option<u16>,
    /// Port of a Kahuna RPC server on 127.0.0.1, forwarded to
    /// [`KAHUNA_GUEST_ADDR`]:[`KAHUNA_RPC_GUEST_PORT`].
    pub rpc_port: Option<u16>,
    pub extra_nics: Vec<SocketNic>,
    /// Port on 127.0.0.1 forwarded to the guest's SSH port (22) on the management NIC.
    pub ssh_port: Option<u16>,
    /// More `(host port on 127.0.0.1, guest port)` forwards to the management NIC.
    pub host_forwards: Vec<(u16, u16)>,
    /// Read-only virtio disks after the boot disk (a NoCloud seed ISO).
    pub readonly_disks: Vec<PathBuf>,
    /// The user-mode management NIC (first NIC); the peer VM goes without.
    pub management_nic: bool,
    /// The guest is one of our images and must print [`BOOT_BANNER`]: if it has not
    /// within this time ([`EARLY_HANG_AFTER`] by default), its vCPU state is logged and
    /// it is reset, once; a second stall fails the test. `None` for the peer VM and for
    /// boots that must not reach the root.
    pub early_hang_after: Option<Duration>,
}

impl VmConfig {
    pub fn new(name: &str, boot: Boot) -> Self {
        Self {
            name: name.to_owned(),
            arch: Arch::X86_64,
            boot,
            memory_mib: 1024,
            cpus: 2,
            kahuna_port: None,
            rpc_port: None,
            extra_nics: Vec::new(),
            readonly_disks: Vec::new(),
            ssh_port: None,
            host_forwards: Vec::new(),
            management_nic: true,
            early_hang_after: Some(EARLY_HANG_AFTER),
        }
    }
}

/// A free TCP port on 127.0.0.1 (for a QEMU socket network).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub struct Vm {
    name: String,
    child: Option<Child>,
    serial: PathBuf,
    monitor: PathBuf,
    started: Instant,
    early_hang: Option<EarlyHangWatch>,
    early_hang_resets: u32,
}

/// Watches one boot for [`BOOT_BANNER`] (see [`VmConfig::watch_early_hang`]).
struct EarlyHangWatch {
    after: Duration,
    since: Instant,
    /// Console bytes written before the current boot (after a reset, the banner must
    /// come again).
    console_offset: usize,
}

pub fn accel() -> String {
    match std::env::var("KOWABUNGA_QEMU_ACCEL").as_deref() {
        Ok("kvm") => "kvm".into(),
        _ => "tcg".into(),
    }
}

impl Vm {
    /// Starts QEMU; files (serial log, monitor socket, firmware variables) go to `dir`.
    pub fn start(config: &VmConfig, dir: &Path) -> Result<Self, VmError> {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let serial = dir.join(format!("{}.serial.log", config.name));
        let monitor = dir.join(format!("{}.monitor", config.name));
        let _ = fs::remove_file(&serial);
        let _ = fs::remove_file(&monitor);
        let accel = accel();
        let arch = config.arch;
        if arch != Arch::X86_64 && matches!(config.boot, Boot::Network { .. }) {
            return Err(VmError::Qemu(format!(
                "{}: a network boot goes through SeaBIOS's iPXE ROM, x86_64 only",
                config.name
            )));
        }
        let raspi = matches!(config.boot, Boot::Raspi4 { .. });
        if raspi
            && (arch != Arch::Aarch64 || config.management_nic || !config.extra_nics.is_empty())
        {
            return Err(VmError::Qemu(format!(
                "{}: QEMU's raspi4b is an arm64 board without network",
                config.name
            )));
        }
        let mut cmd = Command::new(arch.emulator());
        cmd.args([
            "-machine",
            if raspi { "raspi4b" } else { arch.machine() },
            "-accel",
            &accel,
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
        ]);
        // The board has its own CPUs and memory, and no PCI bus.
        if !raspi {
            if accel == "tcg" {
                cmd.args(["-cpu", arch.tcg_cpu()]);
            } else {
                cmd.args(["-cpu", "host"]);
            }
            cmd.args([
                "-m",
                &config.memory_mib.to_string(),
                "-smp",
                &config.cpus.to_string(),
            ]);
        }
        cmd.arg("-serial").arg(format!("file:{}", serial.display()));
        cmd.arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()));
        if !raspi {
            cmd.args(["-device", "virtio-rng-pci"]);
        }
        match &config.boot {
            Boot::Uefi { disk } => {
                let (code, vars_template) = arch.uefi_firmware();
                let vars = dir.join(format!("{}.vars.fd", config.name));
                fs::copy(vars_template, &vars).map_err(io(format!(
                    "copying {vars_template} ({})",
                    arch.install_hint()
                )))?;
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ));
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
                // discard=unmap: the guest's write-zeroes (repart and mkfs on first
                // boot zero the new /var) punch holes in the copy instead of
                // allocating gigabytes of the host's disk per scenario.
                cmd.arg("-drive").arg(format!(
                    "if=virtio,format=raw,file={},cache=unsafe,discard=unmap,detect-zeroes=unmap",
                    disk.display()
                ));
            }
            Boot::Direct {
                kernel,
                initrd,
                cmdline,
            } => {
                cmd.arg("-kernel")
                    .arg(kernel)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-append")
                    .arg(cmdline);
            }
            Boot::Network { .. } => {}
            Boot::Raspi4 {
                kernel,
                dtb,
                initrd,
                cmdline,
                sd,
            } => {
                cmd.arg("-kernel")
                    .arg(kernel)
                    .arg("-dtb")
                    .arg(dtb)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-append")
                    .arg(cmdline);
                // As for virtio disks: the zeros the first boot writes over the new
                // partitions become holes, not gigabytes of the host's disk.
                cmd.arg("-drive").arg(format!(
                    "if=sd,format=raw,file={},cache=unsafe,discard=unmap,detect-zeroes=unmap",
                    sd.display()
                ));
            }
        }
        let net_boot = matches!(config.boot, Boot::Network { .. });
        if let Boot::Network { disk } = &config.boot {
            cmd.arg("-drive").arg(format!(
                "if=virtio,format=raw,file={},cache=unsafe",
                disk.display()
            ));
        }
        for disk in &config.readonly_disks {
            cmd.arg("-drive").arg(format!(
                "if=virtio,format=raw,readonly=on,file={}",
                disk.display()
            ));
        }
        if config.management_nic {
            let mut netdev = String::from("user,id=mgmt,restrict=on");
            if let Some(port) = config.kahuna_port {
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{KAHUNA_GUEST_ADDR}:80-cmd:socat STDIO TCP:127.0.0.1:{port}"
                ));
            }
            if let Some(port) = config.rpc_port {
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{KAHUNA_GUEST_ADDR}:{KAHUNA_RPC_GUEST_PORT}-cmd:socat STDIO TCP:127.0.0.1:{port}"
                ));
            }
            if let Some(port) = config.ssh_port {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:22"));
            }
            for (host, guest) in &config.host_forwards {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            }
            cmd.arg("-netdev").arg(netdev);
            // A network boot goes out of the first extra NIC only: no ROM here.
            let rom = if net_boot { ",romfile=" } else { "" };
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev=mgmt,mac=52:54:00:12:34:01{rom}"
            ));
        }
        for (i, nic) in config.extra_nics.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!("socket,id=nic{i},{}", nic.socket));
            let boot = if net_boot && i == 0 {
                ",bootindex=1"
            } else {
                ""
            };
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev=nic{i},mac={}{boot}",
                nic.mac
            ));
        }
        let log = fs::File::create(dir.join(format!("{}.qemu.log", config.name)))
            .map_err(io("creating the qemu log"))?;
        let log2 = log.try_clone().map_err(io("creating the qemu log"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(io(format!(
            "starting {} ({})",
            arch.emulator(),
            arch.install_hint()
        )))?;
        Ok(Self {
            name: config.name.clone(),
            child: Some(child),
            serial,
            monitor,
            started: Instant::now(),
            early_hang: config.early_hang_after.map(|after| EarlyHangWatch {
                after,
                since: Instant::now(),
                console_offset: 0,
            }),
            early_hang_resets: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial console so far (escape sequences and all).
    pub fn console(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Fails if QEMU exited, or if the guest stalled in early boot twice (see
    /// [`VmConfig::watch_early_hang`]).
    pub fn check_running(&mut self) -> Result<(), VmError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(VmError::Qemu(format!(
                "{}: qemu exited ({status})",
                self.name
            )));
        }
        self.watch_early_hang()
    }

    /// How many times the guest was reset for stalling in early boot.
    pub fn early_hang_resets(&self) -> u32 {
        self.early_hang_resets
    }

    fn watch_early_hang(&mut self) -> Result<(), VmError> {
        let Some(watch) = self.early_hang.as_ref() else {
            return Ok(());
        };
        let console = self.console();
        if console
            .get(watch.console_offset..)
            .is_some_and(|boot| boot.contains(BOOT_BANNER))
        {
            self.early_hang = None;
            return Ok(());
        }
        if watch.since.elapsed() < watch.after {
            return Ok(());
        }
        let state = self.vcpu_state();
        let after = watch.after;
        if self.early_hang_resets > 0 {
            return Err(VmError::Qemu(format!(
                "{}: no {BOOT_BANNER:?} on the console within {}s, again after a reset; \
                 vCPU state:\n{state}",
                self.name,
                after.as_secs()
            )));
        }
        eprintln!(
            "{}: EARLY-BOOT STALL: no {BOOT_BANNER:?} on the console within {}s; \
             resetting the guest once. vCPU state:\n{state}",
            self.name,
            after.as_secs()
        );
        self.monitor_command("system_reset")?;
        self.early_hang = Some(EarlyHangWatch {
            after,
            since: Instant::now(),
            console_offset: console.len(),
        });
        self.early_hang_resets += 1;
        Ok(())
    }

    /// QEMU's view of the guest (run state, each vCPU's instruction pointer), for failure
    /// messages: tells a guest spinning in the kernel from one waiting in userspace.
    pub fn vcpu_state(&self) -> String {
        let status = self
            .monitor_query("info status")
            .unwrap_or_else(|e| format!("info status: {e}"));
        // Each vCPU's header and instruction pointer (the full dump is ~30 lines each).
        let registers = match self.monitor_query("info registers -a") {
            Ok(dump) => dump
                .lines()
                .filter(|l| l.starts_with("CPU#") || l.contains("RIP="))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("info registers: {e}"),
        };
        format!("{status}\n{registers}")
    }

    /// One HMP command and its answer (the monitor's banner and prompts removed).
    fn monitor_query(&self, command: &str) -> Result<String, VmError> {
        let mut stream =
            UnixStream::connect(&self.monitor).map_err(io("connecting to the qemu monitor"))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(io("setting a monitor read timeout"))?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io("writing to the qemu monitor"))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // Quiet for 500 ms once something came: the answer is complete.
                Err(_) if !answer.is_empty() => break,
                Err(_) => {}
            }
        }
        Ok(String::from_utf8_lossy(&answer)
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.starts_with("QEMU ") && !l.starts_with("(qemu)"))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Waits for a console line containing `needle`; returns that line.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Ok(line.trim_end_matches('\r').to_owned());
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("{}: {needle:?}", self.name),
                    secs: timeout.as_secs(),
                    tail: crate::kahuna::tail(&text, 40),
                });
            }
            self.check_running()?;
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn monitor_command(&self, command: &str) -> Result<(), VmError> {
        let mut stream =
            UnixStream::connect(&self.monitor).map_err(io("connecting to the qemu monitor"))?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io("writing to the qemu monitor"))?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    /// ACPI power button, then waits for the guest to power off (kills it after `timeout`).
    /// Returns whether it powered off cleanly.
    pub fn powerdown(&mut self, timeout: Duration) -> bool {
        let _ = self.monitor_command("system_powerdown");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.child = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        self.kill();
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
