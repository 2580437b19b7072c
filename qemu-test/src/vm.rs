//! Boots one QEMU guest and watches its serial console.
//!
//! Acceleration: TCG unless `KOWABUNGA_QEMU_ACCEL=kvm` (on the project's machines
//! /dev/kvm opens but KVM runs fail, so it is never assumed).
//! Management network: QEMU user-mode networking with `restrict=on` (the guest reaches
//! nothing outside), plus one `guestfwd` rule that connects the guest's Kahuna address
//! ([`KAHUNA_GUEST_ADDR`]) to the fake Kahuna on the host's loopback.

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the guest sees the fake Kahuna (port 80, plain HTTP).
pub const KAHUNA_GUEST_ADDR: &str = "10.0.2.100";

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

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
    /// UEFI firmware (OVMF) boots the disk: systemd-boot, UKI, its embedded command line.
    Uefi { disk: PathBuf },
    /// QEMU loads kernel and initrd itself (PXE-style), with this command line.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
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
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Port of the fake Kahuna on 127.0.0.1, forwarded to [`KAHUNA_GUEST_ADDR`]:80.
    pub kahuna_port: Option<u16>,
    pub extra_nics: Vec<SocketNic>,
    /// The user-mode management NIC (first NIC); the peer VM goes without.
    pub management_nic: bool,
}

impl VmConfig {
    pub fn new(name: &str, boot: Boot) -> Self {
        Self {
            name: name.to_owned(),
            boot,
            memory_mib: 1024,
            cpus: 2,
            kahuna_port: None,
            extra_nics: Vec::new(),
            management_nic: true,
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
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine",
            "q35",
            "-accel",
            &accel,
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
        ]);
        if accel == "tcg" {
            cmd.args(["-cpu", "max"]);
        } else {
            cmd.args(["-cpu", "host"]);
        }
        cmd.args([
            "-m",
            &config.memory_mib.to_string(),
            "-smp",
            &config.cpus.to_string(),
        ]);
        cmd.arg("-serial").arg(format!("file:{}", serial.display()));
        cmd.arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()));
        cmd.args(["-device", "virtio-rng-pci"]);
        match &config.boot {
            Boot::Uefi { disk } => {
                let vars = dir.join(format!("{}.vars.fd", config.name));
                fs::copy(OVMF_VARS, &vars).map_err(io(format!("copying {OVMF_VARS}")))?;
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ));
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
                cmd.arg("-drive").arg(format!(
                    "if=virtio,format=raw,file={},cache=unsafe",
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
        }
        if config.management_nic {
            let mut netdev = String::from("user,id=mgmt,restrict=on");
            if let Some(port) = config.kahuna_port {
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{KAHUNA_GUEST_ADDR}:80-cmd:socat STDIO TCP:127.0.0.1:{port}"
                ));
            }
            cmd.arg("-netdev").arg(netdev);
            cmd.args([
                "-device",
                "virtio-net-pci,netdev=mgmt,mac=52:54:00:12:34:01",
            ]);
        }
        for (i, nic) in config.extra_nics.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!("socket,id=nic{i},{}", nic.socket));
            cmd.arg("-device")
                .arg(format!("virtio-net-pci,netdev=nic{i},mac={}", nic.mac));
        }
        let log = fs::File::create(dir.join(format!("{}.qemu.log", config.name)))
            .map_err(io("creating the qemu log"))?;
        let log2 = log.try_clone().map_err(io("creating the qemu log"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(io(
            "starting qemu-system-x86_64 (scripts/install-deps.sh --for qemu)",
        ))?;
        Ok(Self {
            name: config.name.clone(),
            child: Some(child),
            serial,
            monitor,
            started: Instant::now(),
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

    /// Fails if QEMU exited.
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
        Ok(())
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
