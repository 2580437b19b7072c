//! The agent's way to libvirt: a helper process, `kaktus-libvirt`, the only binary that
//! links libvirt.
//!
//! The helper is started on the first [`Libvirt::request`], answers requests
//! concurrently (libvirt's C API blocks: a busy QEMU monitor must not hold the others),
//! and is told to exit (its stdin closed) once no request has been made for
//! [`IDLE_EXIT`]; the next request starts a new one. An agent that is not driving
//! libvirt therefore carries none of libvirt's libraries (docs/benchmarks.md has the
//! figures). The helper opens its connection on first use and reopens it after libvirt
//! reports it dead, so the agent starts and answers while libvirtd is still coming up.
//! The wire format is [`crate::libvirt_protocol`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::libvirt_protocol::{Envelope, HELPER, Reply, Request};

/// libvirt URI used when the `[kaktus]` section names none.
pub const DEFAULT_URI: &str = "qemu:///system";

/// How long the helper stays up without a request. The agent's drift check plans
/// against libvirt once a poll (60 s by default): shorter, so it exits in between.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// A handle on the helper for one libvirt URI. Cloning shares it.
#[derive(Clone)]
pub struct Libvirt(Arc<Shared>);

struct Shared {
    helper: PathBuf,
    idle_exit: Duration,
    next_id: AtomicU64,
    state: Mutex<State>,
}

struct State {
    uri: String,
    link: Option<Arc<Link>>,
}

type Waiter = oneshot::Sender<Result<serde_json::Value, String>>;

/// One running helper.
struct Link {
    pid: Option<u32>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// Requests between [`Libvirt::link`] and their answer: the link is not closed
    /// while any is under way.
    active: AtomicUsize,
    last_used: Mutex<Instant>,
    /// The helper's stdout ended: it exited (or was told to).
    gone: AtomicBool,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt").field("uri", &self.uri()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Libvirt {
    /// A handle for `uri`, with the helper found next to this program's binary (or one
    /// directory up, where cargo puts test and example binaries).
    pub fn new(uri: &str) -> Self {
        Self::with_helper(default_helper(), uri)
    }

    /// A handle for `uri` served by the helper binary at `helper`.
    pub fn with_helper(helper: impl Into<PathBuf>, uri: &str) -> Self {
        Self(Arc::new(Shared {
            helper: helper.into(),
            idle_exit: IDLE_EXIT,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                uri: uri.to_owned(),
                link: None,
            }),
        }))
    }

    /// The same handle with another idle time (tests, benchmarks).
    pub fn with_idle_exit(self, idle_exit: Duration) -> Self {
        let state = lock(&self.0.state);
        Self(Arc::new(Shared {
            helper: self.0.helper.clone(),
            idle_exit,
            next_id: AtomicU64::new(1),
            state: Mutex::new(State {
                uri: state.uri.clone(),
                link: None,
            }),
        }))
    }

    pub fn uri(&self) -> String {
        lock(&self.0.state).uri.clone()
    }

    /// Use `uri` from now on: the helper for the old one exits once its requests are
    /// answered.
    pub fn set_uri(&self, uri: &str) {
        let mut state = lock(&self.0.state);
        if state.uri != uri {
            state.uri = uri.to_owned();
            state.link = None;
        }
    }

    /// The process id of the running helper, if one runs.
    pub fn helper_pid(&self) -> Option<u32> {
        let state = lock(&self.0.state);
        state
            .link
            .as_ref()
            .filter(|l| !l.gone.load(Ordering::SeqCst))
            .and_then(|l| l.pid)
    }

    /// Send `request` and decode its answer as `T`. `Err` is a message naming what
    /// failed.
    pub async fn request<T: DeserializeOwned>(&self, request: Request) -> Result<T, String> {
        let name = request.name();
        let value = self.exchange(request).await?;
        serde_json::from_value(value)
            .map_err(|e| format!("libvirt helper: unexpected answer to {name}: {e}"))
    }

    async fn exchange(&self, request: Request) -> Result<serde_json::Value, String> {
        let link = self.link()?;
        let _active = Active(&link);
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let name = request.name();
        let mut line = serde_json::to_vec(&Envelope { id, request })
            .map_err(|e| format!("libvirt helper: encoding {name}: {e}"))?;
        line.push(b'\n');
        let (tx, rx) = oneshot::channel();
        lock(&link.waiters).insert(id, tx);
        let written = match link.stdin.lock().await.as_mut() {
            Some(stdin) => stdin.write_all(&line).await.map_err(|e| e.to_string()),
            None => Err("its input is closed".to_owned()),
        };
        if let Err(e) = written {
            lock(&link.waiters).remove(&id);
            return Err(format!("libvirt helper: sending {name}: {e}"));
        }
        rx.await.map_err(|_| {
            format!(
                "libvirt helper {} exited before answering {name} (its messages are in the agent's log)",
                self.0.helper.display()
            )
        })?
    }

    /// The running helper, started if none runs. Marks a request under way.
    fn link(&self) -> Result<Arc<Link>, String> {
        let mut state = lock(&self.0.state);
        if let Some(link) = state
            .link
            .as_ref()
            .filter(|l| !l.gone.load(Ordering::SeqCst))
        {
            link.active.fetch_add(1, Ordering::SeqCst);
            return Ok(Arc::clone(link));
        }
        let (link, child, stdout) = spawn(&self.0.helper, &state.uri)?;
        link.active.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(read_answers(Arc::clone(&link), child, stdout));
        tokio::spawn(close_when_idle(
            Arc::downgrade(&self.0),
            Arc::clone(&link),
            self.0.idle_exit,
        ));
        state.link = Some(Arc::clone(&link));
        Ok(link)
    }
}

/// A request under way on a link: ends it (and restarts the idle clock) when dropped.
struct Active<'a>(&'a Link);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        *lock(&self.0.last_used) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `kaktus-libvirt` next to the running binary, or one directory up (cargo's `deps/`
/// and `examples/`).
fn default_helper() -> PathBuf {
    let Ok(exe) = std::env::current_exe() else {
        return PathBuf::from(HELPER);
    };
    let Some(dir) = exe.parent() else {
        return PathBuf::from(HELPER);
    };
    let beside = dir.join(HELPER);
    match dir.parent() {
        Some(up) if !beside.exists() && up.join(HELPER).exists() => up.join(HELPER),
        _ => beside,
    }
}

fn spawn(helper: &Path, uri: &str) -> Result<(Arc<Link>, Child, ChildStdout), String> {
    let mut child = Command::new(helper)
        .arg("--uri")
        .arg(uri)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the libvirt helper {}: {e}", helper.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(format!(
            "libvirt helper {}: no pipes to it",
            helper.display()
        ));
    };
    tracing::debug!("libvirt helper started for {uri} (pid {:?})", child.id());
    let link = Arc::new(Link {
        pid: child.id(),
        stdin: tokio::sync::Mutex::new(Some(stdin)),
        waiters: Mutex::new(HashMap::new()),
        active: AtomicUsize::new(0),
        last_used: Mutex::new(Instant::now()),
        gone: AtomicBool::new(false),
    });
    Ok((link, child, stdout))
}

/// Hands each answer to its request until the helper's stdout ends; then fails what is
/// still waiting and reaps the helper.
async fn read_answers(link: Arc<Link>, mut child: Child, stdout: ChildStdout) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                Ok(reply) => {
                    if let Some(waiter) = lock(&link.waiters).remove(&reply.id) {
                        let _ = waiter.send(reply.result);
                    }
                }
                Err(e) => tracing::warn!("libvirt helper: unreadable answer ignored: {e}"),
            },
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("libvirt helper: reading its answers: {e}");
                break;
            }
        }
    }
    link.gone.store(true, Ordering::SeqCst);
    // Dropping the senders fails the requests still waiting.
    lock(&link.waiters).clear();
    drop(link.stdin.lock().await.take());
    match child.wait().await {
        Ok(status) if status.success() => tracing::debug!("libvirt helper exited"),
        Ok(status) => tracing::warn!("libvirt helper exited: {status}"),
        Err(e) => tracing::warn!("libvirt helper: waiting for it: {e}"),
    }
}

/// Closes the helper's stdin (it then exits) once no request has been under way for
/// `idle`, or once the handle has moved to another helper (another URI) or is gone.
async fn close_when_idle(owner: Weak<Shared>, link: Arc<Link>, idle: Duration) {
    loop {
        // Not before `idle` after the last answer, and not in a busy loop while a
        // request is under way.
        let wake = *lock(&link.last_used) + idle;
        tokio::time::sleep_until(wake.max(Instant::now() + idle.min(Duration::from_secs(1)))).await;
        if link.gone.load(Ordering::SeqCst) {
            return;
        }
        let detached = {
            let Some(shared) = owner.upgrade() else {
                break;
            };
            let mut state = lock(&shared.state);
            let current = state.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link));
            let quiet =
                link.active.load(Ordering::SeqCst) == 0 && lock(&link.last_used).elapsed() >= idle;
            if current && quiet {
                state.link = None;
            }
            !current || quiet
        };
        if detached && link.active.load(Ordering::SeqCst) == 0 {
            break;
        }
    }
    tracing::debug!("libvirt helper idle: closing it");
    drop(link.stdin.lock().await.take());
}
