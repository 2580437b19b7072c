//! Throwaway network namespaces for kernel tests (root only).
//!
//! Each [`Netns`] is a named namespace (`ip netns add`), deleted on drop, even when the
//! test fails. Code runs inside one on a thread of its own that joined it with
//! `setns(2)`: sockets, netlink connections, `/proc/sys/net` and child processes such
//! as `nft` all follow the calling thread's namespace. Shared by the network and
//! firewall crates' tests (the firewall tests include this file by path).

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "kbt{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Run `f` on a thread inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
                setns(fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Run a future on a current-thread runtime inside this namespace.
    pub fn block_on<F, T>(&self, f: impl FnOnce() -> F + Send) -> T
    where
        F: Future<Output = T>,
        T: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }

    /// Run a shell command inside the namespace; panic with its output if it fails.
    pub fn sh(&self, cmd: &str) -> String {
        let (ok, out) = self.try_sh(cmd);
        assert!(ok, "in {}: `{cmd}` failed: {out}", self.name);
        out
    }

    /// Run a shell command inside the namespace: (success, stdout + stderr).
    pub fn try_sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("run ip netns exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Join two namespaces with a veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.sh(&format!(
        "ip link add {a_if} type veth peer name {b_if} netns {}",
        b.name
    ));
    a.sh(&format!("ip link set {a_if} up"));
    b.sh(&format!("ip link set {b_if} up"));
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
