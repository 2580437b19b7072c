//! Child processes of the agents, always with a deadline.
//!
//! An agent runs its children (`nft` today) while it holds the pipeline lock: a child
//! that hangs (a kernel stuck on a lock, a helper waiting on a terminal) must not hang
//! the agent with it. [`Invocation::run`] gives the child a deadline; when it passes,
//! the child's whole process group is killed, the child is reaped, and the caller gets
//! [`ProcessError::TimedOut`] naming the command and the deadline: a failure of that
//! step, never a hang.
//!
//! The child gets its input on stdin (or `/dev/null`), and its stdout and stderr are
//! captured up to a cap each (a runaway child cannot fill the agent's memory; what it
//! prints past the cap is read and dropped, so it never blocks on a full pipe).
//!
//! The child is spawned from the calling task, so it inherits the calling thread's
//! network namespace (the kernel tests rely on it).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// What [`Invocation`] keeps of each of stdout and stderr unless told otherwise.
pub const DEFAULT_CAPTURE_LIMIT: usize = 4 * 1024 * 1024;

/// How long reaping a killed child may take before it is left to the runtime's
/// orphan reaper (a process in uninterruptible sleep does not die at once).
const REAP_GRACE: Duration = Duration::from_secs(5);

/// Why a child process did not run to completion. Every variant names the command.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}`: {what}: {source}")]
    Io {
        command: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not finish within {deadline:?}: killed")]
    TimedOut { command: String, deadline: Duration },
}

impl ProcessError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProcessError::TimedOut { .. })
    }
}

/// What a child left when it exited (successfully or not: see [`Output::success`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr went past the capture limit (and was cut there).
    pub truncated: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// One command to run: program, arguments, input, deadline.
#[derive(Debug, Clone)]
pub struct Invocation {
    program: PathBuf,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    deadline: Duration,
    capture_limit: usize,
}

impl Invocation {
    /// Run `program` (a path, or a name looked up in `$PATH`), given at most
    /// `deadline` from spawn to exit.
    pub fn new(program: impl AsRef<Path>, deadline: Duration) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            stdin: None,
            deadline,
            capture_limit: DEFAULT_CAPTURE_LIMIT,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Bytes written to the child's stdin (then closed); without it stdin is
    /// `/dev/null`.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Keep at most `bytes` of each of stdout and stderr.
    pub fn capture_limit(mut self, bytes: usize) -> Self {
        self.capture_limit = bytes;
        self
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The command line, for messages (`/usr/sbin/nft -c -f -`).
    pub fn command_line(&self) -> String {
        self.to_string()
    }

    /// Run the child to its exit, or kill it when the deadline passes.
    pub async fn run(&self) -> Result<Output, ProcessError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a deadline kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            command: self.command_line(),
            source,
        })?;
        let finished = tokio::time::timeout(self.deadline, self.complete(&mut child)).await;
        match finished {
            Ok(result) => result,
            Err(_elapsed) => {
                kill_group(&mut child);
                // Reap it (no zombie left behind); kill_on_drop and the runtime's
                // orphan reaper take over if it does not die within the grace.
                let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                Err(ProcessError::TimedOut {
                    command: self.command_line(),
                    deadline: self.deadline,
                })
            }
        }
    }

    /// Feed stdin, drain stdout and stderr, and wait for the exit, all at once (a
    /// child blocked writing a full pipe would otherwise never read its input).
    async fn complete(&self, child: &mut Child) -> Result<Output, ProcessError> {
        let io_err = |what: &'static str| {
            move |source| ProcessError::Io {
                command: self.command_line(),
                what,
                source,
            }
        };
        let input = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let feed = async {
            if let (Some(mut pipe), Some(bytes)) = (input, self.stdin.as_deref()) {
                match pipe.write_all(bytes).await {
                    // The child exited or closed stdin without reading it all: its
                    // exit status says whether that was a failure.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    other => other?,
                }
                // Dropping the pipe closes it: end of input.
            }
            Ok(())
        };
        let (fed, out, err, status) = tokio::join!(
            feed,
            read_capped(stdout, self.capture_limit),
            read_capped(stderr, self.capture_limit),
            child.wait(),
        );
        fed.map_err(io_err("writing its stdin"))?;
        let (stdout, cut_out) = out.map_err(io_err("reading its stdout"))?;
        let (stderr, cut_err) = err.map_err(io_err("reading its stderr"))?;
        let status = status.map_err(io_err("waiting for it"))?;
        Ok(Output {
            status,
            stdout,
            stderr,
            truncated: cut_out || cut_err,
        })
    }
}

impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Read a pipe to its end, keeping the first `limit` bytes.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
) -> io::Result<(Vec<u8>, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = limit.saturating_sub(kept.len());
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// SIGKILL the child's process group (it leads it: spawned with `process_group(0)`),
/// or at least the child itself.
fn kill_group(child: &mut Child) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.start_kill();
}
