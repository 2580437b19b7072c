//! systemd's manager over D-Bus: reload (or start) a unit, stop it, read its state.
//!
//! The calls are `org.freedesktop.systemd1.Manager`'s `ReloadOrRestartUnit`, `StopUnit`
//! and `GetUnit`, and the unit's `ActiveState` property, as `systemctl reload-or-restart`,
//! `systemctl stop` and `systemctl is-active` make them, without a child process.
//! Like `systemctl`, a reload or stop waits for its job to end (the manager's
//! `JobRemoved` signal) and fails unless the job's result is `done`: a reload whose
//! `ExecReload=` fails (strongSwan's `swanctl --load-all` refusing a connection) is a
//! failed step, not a success with the old configuration still loaded.
//! Each call and each job has a deadline: a wedged bus is a failure of the step, never
//! a hang.

use std::time::Duration;

use futures_util::StreamExt as _;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::{Connection, Proxy};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";

/// How long one D-Bus call may take. systemd answers a job request at once (the job
/// runs after the reply), so seconds are plenty.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(20);
/// How long a job may run: a reload's `ExecReload=`, a start's `ExecStartPost=`, a
/// daemon's own start-up (systemd's default start timeout).
pub const DEFAULT_JOB_DEADLINE: Duration = Duration::from_secs(90);

/// Why a call to systemd failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("D-Bus {bus}: {source}")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd {method}({unit}): {source}")]
    Call {
        method: &'static str,
        unit: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd {method}({unit}): the job ended `{result}` (journalctl -u {unit})")]
    Job {
        method: &'static str,
        unit: String,
        result: String,
    },
    #[error("systemd {method}({unit}): no answer within {deadline:?}")]
    Timeout {
        method: &'static str,
        unit: String,
        deadline: Duration,
    },
}

/// Which bus systemd is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`).
    System,
    /// A bus at this address (`unix:path=...`): tests run a private one.
    Address(String),
}

impl std::fmt::Display for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bus::System => f.write_str("system bus"),
            Bus::Address(a) => write!(f, "bus {a}"),
        }
    }
}

/// A unit's `ActiveState` (`active`, `reloading`, `failed`...), or `inactive` for a
/// unit systemd has not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveState(pub String);

impl ActiveState {
    pub fn is_active(&self) -> bool {
        self.0 == "active"
    }
}

/// systemd's manager, reached over D-Bus. The connection is made on first use and
/// kept; a failed call drops it, so the next one reconnects (systemd or the bus
/// restarted).
#[derive(Debug)]
pub struct Systemd {
    bus: Bus,
    deadline: Duration,
    job_deadline: Duration,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl Systemd {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            deadline: DEFAULT_CALL_DEADLINE,
            job_deadline: DEFAULT_JOB_DEADLINE,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long a reload or stop job may run before the step fails.
    pub fn with_job_deadline(mut self, deadline: Duration) -> Self {
        self.job_deadline = deadline;
        self
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// `systemctl reload-or-restart UNIT`: reload it if it runs, start it otherwise;
    /// done when the job ended `done`.
    pub async fn reload_or_restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.job("ReloadOrRestartUnit", unit).await
    }

    /// `systemctl start UNIT`, done when the job ended `done` (for a oneshot service:
    /// when its command exited 0).
    pub async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.job("StartUnit", unit).await
    }

    /// `systemctl reboot`: queue `reboot.target` so that nothing can cancel it. Returns
    /// once queued; the system goes down without waiting for our answer.
    pub async fn reboot(&self) -> Result<(), SystemdError> {
        self.manager_call::<OwnedObjectPath>(
            "StartUnit",
            "reboot.target",
            &("reboot.target", "replace-irreversibly"),
        )
        .await
        .map(drop)
    }

    /// `systemctl stop UNIT`, done when the job ended `done`.
    pub async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.job("StopUnit", unit).await
    }

    /// `systemctl is-active UNIT`.
    pub async fn active_state(&self, unit: &str) -> Result<ActiveState, SystemdError> {
        let path = match self
            .manager_call::<OwnedObjectPath>("GetUnit", unit, &(unit,))
            .await
        {
            Ok(path) => path,
            Err(SystemdError::Call { source, .. }) if is_no_such_unit(&source) => {
                return Ok(ActiveState("inactive".into()));
            }
            Err(e) => return Err(e),
        };
        let connection = self.connection().await?;
        let property = async {
            let unit_proxy = proxy(&connection, path.into_inner(), UNIT).await?;
            unit_proxy.get_property::<String>("ActiveState").await
        };
        match tokio::time::timeout(self.deadline, property).await {
            Ok(Ok(state)) => Ok(ActiveState(state)),
            Ok(Err(source)) => Err(self.failed("ActiveState", unit, source).await),
            Err(_) => Err(self.timed_out("ActiveState", unit).await),
        }
    }

    /// Queue a job (`method(unit, "replace")`) and wait for its end; its result.
    async fn job(&self, method: &'static str, unit: &str) -> Result<(), SystemdError> {
        let connection = self.connection().await?;
        let run = async {
            let manager = proxy(
                &connection,
                ObjectPath::from_static_str_unchecked(MANAGER_PATH),
                MANAGER,
            )
            .await?;
            // Listen first: the job may end before its reply reaches us. systemd sends
            // its signals only once a client subscribed (a second Subscribe is refused
            // as such, which is fine).
            let mut removed = manager.receive_signal("JobRemoved").await?;
            match manager.call::<_, _, ()>("Subscribe", &()).await {
                Ok(()) => {}
                Err(e) if already_subscribed(&e) => {}
                Err(e) => return Err(e),
            }
            let job: OwnedObjectPath = manager.call(method, &(unit, "replace")).await?;
            while let Some(signal) = removed.next().await {
                let (_id, path, _unit, result): (u32, OwnedObjectPath, String, String) =
                    signal.body().deserialize()?;
                if path == job {
                    return Ok(result);
                }
            }
            Err(zbus::Error::Failure(
                "the bus closed before the job ended".into(),
            ))
        };
        match tokio::time::timeout(self.job_deadline, run).await {
            Ok(Ok(result)) if result == "done" => Ok(()),
            Ok(Ok(result)) => Err(SystemdError::Job {
                method,
                unit: unit.to_owned(),
                result,
            }),
            Ok(Err(source)) => Err(self.failed(method, unit, source).await),
            Err(_) => {
                self.connection.lock().await.take();
                Err(SystemdError::Timeout {
                    method,
                    unit: unit.to_owned(),
                    deadline: self.job_deadline,
                })
            }
        }
    }

    async fn manager_call<R>(
        &self,
        method: &'static str,
        unit: &str,
        body: &(impl serde::Serialize + zbus::zvariant::DynamicType + Sync),
    ) -> Result<R, SystemdError>
    where
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let connection = self.connection().await?;
        let call = async {
            let manager = proxy(
                &connection,
                ObjectPath::from_static_str_unchecked(MANAGER_PATH),
                MANAGER,
            )
            .await?;
            manager.call::<_, _, R>(method, body).await
        };
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) => Err(self.failed(method, unit, source).await),
            Err(_) => Err(self.timed_out(method, unit).await),
        }
    }

    async fn connection(&self) -> Result<Connection, SystemdError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connect = async {
            match &self.bus {
                Bus::System => Connection::system().await,
                Bus::Address(a) => {
                    zbus::connection::Builder::address(a.as_str())?
                        .build()
                        .await
                }
            }
        };
        let connection = match tokio::time::timeout(self.deadline, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => {
                return Err(SystemdError::Connect {
                    bus: self.bus.to_string(),
                    source,
                });
            }
            Err(_) => {
                return Err(SystemdError::Connect {
                    bus: self.bus.to_string(),
                    source: zbus::Error::Failure(format!(
                        "no connection within {:?}",
                        self.deadline
                    )),
                });
            }
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// A method error from systemd keeps the connection; a transport error drops it.
    async fn failed(&self, method: &'static str, unit: &str, source: zbus::Error) -> SystemdError {
        if !matches!(source, zbus::Error::MethodError(..)) {
            self.connection.lock().await.take();
        }
        SystemdError::Call {
            method,
            unit: unit.to_owned(),
            source,
        }
    }

    async fn timed_out(&self, method: &'static str, unit: &str) -> SystemdError {
        self.connection.lock().await.take();
        SystemdError::Timeout {
            method,
            unit: unit.to_owned(),
            deadline: self.deadline,
        }
    }
}

/// A proxy without the property cache: every read asks systemd (a cache would first
/// fetch all of the manager's properties, and could serve a unit's stale state).
async fn proxy<'a>(
    connection: &Connection,
    path: ObjectPath<'a>,
    interface: &'a str,
) -> zbus::Result<Proxy<'a>> {
    zbus::proxy::Builder::new(connection)
        .destination(DESTINATION)?
        .path(path)?
        .interface(interface)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// systemd refuses a second `Subscribe` from one connection
/// (`org.freedesktop.systemd1.AlreadySubscribed`, "Client is already subscribed.").
fn already_subscribed(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, message, _)
        if name.as_str().ends_with("AlreadySubscribed")
            || message
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().contains("already subscribed")))
}

fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, ..)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}
