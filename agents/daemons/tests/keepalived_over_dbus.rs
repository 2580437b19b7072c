//! The daemons reconciler against a private D-Bus (`dbus-daemon`) on which the test
//! plays systemd's manager, and the real `keepalived --config-test` (Debian's
//! keepalived; `scripts/install-deps.sh --for test` installs it). No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kowabunga_daemons::{Bus, DaemonsReconciler, KEEPALIVED, SECTION};
use kowabunga_model::{Document, ErrorKind, Format, Reconciler};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

const GOOD: &str = "virtual_server 10.0.0.1 80 {\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    real_server 10.0.0.2 80 {\n        TCP_CHECK {\n            connect_timeout 3\n        }\n    }\n}\n";
const UNIT_PATH: &str = "/org/freedesktop/systemd1/unit/keepalived_2eservice";

/// `dbus-daemon` on a socket in `dir`, killed on drop.
struct PrivateBus {
    child: Child,
    address: String,
}

impl PrivateBus {
    fn start(dir: &Path) -> PrivateBus {
        let socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/><allow own=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus-daemon: scripts/install-deps.sh --for test)");
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(
            socket.exists(),
            "dbus-daemon did not create {}",
            socket.display()
        );
        PrivateBus {
            child,
            address: format!("unix:path={}", socket.display()),
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the fake systemd was asked, and the unit's state it reports.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    /// `None`: the unit is not loaded (GetUnit answers NoSuchUnit).
    state: Mutex<Option<String>>,
    /// How the next jobs end (`JobRemoved`'s result); `None` = `done`.
    job_result: Mutex<Option<String>>,
    jobs: Mutex<u32>,
}

impl Fake {
    /// A new job: its id, path and result.
    fn job(&self) -> (u32, OwnedObjectPath, String) {
        let mut jobs = self.jobs.lock().unwrap();
        *jobs += 1;
        let path = format!("/org/freedesktop/systemd1/job/{jobs}");
        let result = self
            .job_result
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "done".into());
        (*jobs, OwnedObjectPath::try_from(path).unwrap(), result)
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SystemdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
    AlreadySubscribed(String),
}

struct Manager(Arc<Fake>);

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    /// As systemd: a client subscribes once; a second call is refused as such.
    async fn subscribe(&self) -> Result<(), SystemdError> {
        let mut calls = self.0.calls.lock().unwrap();
        let again = calls.iter().any(|c| c == "Subscribe");
        calls.push("Subscribe".into());
        if again {
            return Err(SystemdError::AlreadySubscribed(
                "Client is already subscribed.".into(),
            ));
        }
        Ok(())
    }

    async fn reload_or_restart_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.0
            .calls
            .lock()
            .unwrap()
            .push(format!("ReloadOrRestartUnit {name} {mode}"));
        *self.0.state.lock().unwrap() = Some("active".into());
        let (id, job, result) = self.0.job();
        Self::job_removed(&emitter, id, job.as_ref(), &name, &result)
            .await
            .unwrap();
        job
    }

    async fn stop_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.0
            .calls
            .lock()
            .unwrap()
            .push(format!("StopUnit {name} {mode}"));
        *self.0.state.lock().unwrap() = None;
        let (id, job, result) = self.0.job();
        Self::job_removed(&emitter, id, job.as_ref(), &name, &result)
            .await
            .unwrap();
        job
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;

    async fn get_unit(&self, name: String) -> Result<OwnedObjectPath, SystemdError> {
        if name != "keepalived.service" || self.0.state.lock().unwrap().is_none() {
            return Err(SystemdError::NoSuchUnit(format!("Unit {name} not loaded.")));
        }
        Ok(OwnedObjectPath::try_from(UNIT_PATH).unwrap())
    }
}

struct Unit(Arc<Fake>);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    async fn active_state(&self) -> String {
        self.0
            .state
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "inactive".into())
    }
}

async fn fake_systemd(address: &str, fake: Arc<Fake>) -> zbus::Connection {
    let build = zbus::connection::Builder::address(address)
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", Manager(fake.clone()))
        .unwrap()
        .serve_at(UNIT_PATH, Unit(fake))
        .unwrap()
        .build();
    tokio::time::timeout(Duration::from_secs(30), build)
        .await
        .expect("the fake systemd did not get its name on the private bus")
        .unwrap()
}

fn doc(keepalived: Option<&str>) -> Document {
    let mut doc = Document::parse(
        b"version = 1\nnode = \"n\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n",
        Format::Toml,
    )
    .unwrap();
    let mut table = toml::Table::new();
    if let Some(text) = keepalived {
        table.insert("keepalived".into(), toml::Value::String(text.into()));
    }
    doc.set_pushed(SECTION, table);
    doc
}

async fn reconcile(
    r: &DaemonsReconciler,
    desired: &Document,
) -> Result<usize, kowabunga_model::ReconcileError> {
    let plan = r.plan(desired, None).await?;
    let n = plan.actions.len();
    r.apply(plan.payload).await?;
    Ok(n)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalived_is_checked_written_when_changed_reloaded_and_stopped_over_dbus() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start(tmp.path());
    let fake = Arc::new(Fake::default());
    let _systemd = fake_systemd(&bus.address, fake.clone()).await;
    let dir = tmp.path().join("daemons");
    let r = DaemonsReconciler::on_bus(&dir, vec![KEEPALIVED], Bus::Address(bus.address.clone()));
    let conf = dir.join("keepalived.conf");
    // The calls that change something (each job is preceded by a Subscribe).
    let calls = || {
        let mut calls = fake.calls.lock().unwrap().clone();
        calls.retain(|c| c != "Subscribe");
        calls
    };

    // A good file: checked, written, the unit reloaded (started: it was not running).
    assert_eq!(reconcile(&r, &doc(Some(GOOD))).await.unwrap(), 1);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), GOOD);
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "daemon files may hold secrets");
    assert_eq!(calls(), ["ReloadOrRestartUnit keepalived.service replace"]);
    r.check(&doc(Some(GOOD))).await.unwrap();

    // The same file again: nothing written, nothing reloaded.
    assert_eq!(reconcile(&r, &doc(Some(GOOD))).await.unwrap(), 0);
    assert_eq!(calls().len(), 1);
    assert_eq!(
        fake.calls.lock().unwrap()[0],
        "Subscribe",
        "signals asked for first"
    );

    // keepalived's own check refuses a file: named, the file in force untouched, no
    // reload, no candidate left behind.
    let bad = GOOD.replace("protocol TCP", "protocol TCP\n    frobnicate 1");
    let e = reconcile(&r, &doc(Some(&bad))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Apply);
    assert!(e.message.contains("Unknown keyword 'frobnicate'"), "{e}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), GOOD);
    assert_eq!(calls().len(), 1);
    assert_eq!(files_in(&dir), std::slice::from_ref(&conf));

    // A reload whose job fails (ExecReload= refused the file): a failed step,
    // named, for the pipeline to revert.
    *fake.job_result.lock().unwrap() = Some("failed".into());
    let changed = GOOD.replace("lb_algo rr", "lb_algo wrr");
    let e = reconcile(&r, &doc(Some(&changed))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Apply);
    assert!(
        e.message
            .contains("ReloadOrRestartUnit(keepalived.service): the job ended `failed`"),
        "{e}"
    );
    *fake.job_result.lock().unwrap() = None;
    assert_eq!(reconcile(&r, &doc(Some(GOOD))).await.unwrap(), 1);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), GOOD);

    // The unit fails after a reload: the confirm window's check says so.
    *fake.state.lock().unwrap() = Some("failed".into());
    let e = r.check(&doc(Some(GOOD))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unhealthy);
    assert_eq!(e.message, "keepalived: keepalived.service is failed");

    // The file changed behind the agent's back: unhealthy too.
    *fake.state.lock().unwrap() = Some("active".into());
    std::fs::write(&conf, "# edited\n").unwrap();
    let e = r.check(&doc(Some(GOOD))).await.unwrap_err();
    assert!(e.message.contains("differs"), "{e}");
    assert_eq!(reconcile(&r, &doc(Some(GOOD))).await.unwrap(), 1);
    r.check(&doc(Some(GOOD))).await.unwrap();

    // No longer wanted: stopped, then removed.
    assert_eq!(reconcile(&r, &doc(None)).await.unwrap(), 1);
    assert!(!conf.exists());
    assert_eq!(
        calls().last().unwrap(),
        "StopUnit keepalived.service replace"
    );
    r.check(&doc(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bus_is_an_apply_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", tmp.path().join("no-bus").display());
    let r = DaemonsReconciler::on_bus(
        tmp.path().join("daemons"),
        vec![KEEPALIVED],
        Bus::Address(address.clone()),
    );
    let e = reconcile(&r, &doc(Some(GOOD))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Apply);
    assert!(e.message.contains(&address), "{e}");
}
