//! The A/B updater (`kowabunga_agent::update::Updater`) against a loopback server of
//! signed artifacts, with a fake installer in place of systemd (it records what it was
//! asked and checks the staged files are there when asked) and a fake running image.
//! Each test drives [`Updater::resume`] and [`Updater::step`] as `run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kowabunga_agent::os_image::{Boot, OsImage, OsSource, OtherSlot};
use kowabunga_agent::trust::TrustPolicy;
use kowabunga_agent::update::{
    Installer, Next, OsSection, Phase, RebootPolicy, UpdateDir, UpdateState, Updater,
};
use support::Key;
use support::artifacts::{Server, names, publish_version, staged};
use tokio::sync::watch;

#[derive(Default)]
struct FakeSystem {
    calls: Mutex<Vec<String>>,
    fail_install: Mutex<bool>,
}

impl Installer for FakeSystem {
    fn install<'a>(
        &'a self,
        staging: &'a Path,
        version: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let files = std::fs::read_dir(staging).unwrap().count();
            self.calls
                .lock()
                .unwrap()
                .push(format!("install {version} ({files} files)"));
            if *self.fail_install.lock().unwrap() {
                Err("systemd-sysupdate exited 1".into())
            } else {
                Ok(())
            }
        })
    }

    fn reboot(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("reboot".into());
            Ok(())
        })
    }
}

struct Node {
    tmp: tempfile::TempDir,
    server: Server,
    key: Key,
    system: Arc<FakeSystem>,
    running: Arc<Mutex<(String, Boot)>>,
}

fn target(server: &Server, version: &str, reboot: RebootPolicy) -> OsSection {
    OsSection {
        version: version.into(),
        url: server.url_for(version),
        reboot,
        window: (reboot == RebootPolicy::Window).then(|| "02:00-04:00".into()),
        allow_downgrade: false,
    }
}

impl Node {
    async fn new(running: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let key = Key::generate(tmp.path(), "trusted");
        Self {
            server: Server::start().await,
            key,
            system: Arc::default(),
            running: Arc::new(Mutex::new((running.into(), Boot::Disk))),
            tmp,
        }
    }

    fn dir(&self) -> UpdateDir {
        UpdateDir::new(self.tmp.path().join("os-update"))
    }

    fn state(&self) -> UpdateState {
        self.dir().state().unwrap()
    }

    fn calls(&self) -> Vec<String> {
        self.system.calls.lock().unwrap().clone()
    }

    /// A fresh updater, as after a (re)start of the agent, at UTC minute `clock`.
    fn updater(&self, clock: fn() -> u32) -> Updater {
        let keys = self.tmp.path().join("trusted-keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::copy(self.key.public_file(), keys.join("update.pub")).unwrap();
        let trust = TrustPolicy::load(&keys, &[], false).unwrap();
        let running = self.running.clone();
        let os = OsSource::new(move || {
            let (version, boot) = running.lock().unwrap().clone();
            OsImage {
                image_id: Some("kowabunga-kiwi".into()),
                version: Some(version),
                boot,
                other_slot: Some(OtherSlot::Empty),
                updates: "",
                update: None,
            }
        });
        Updater::new(
            "kiwi",
            self.dir(),
            trust,
            self.system.clone(),
            os,
            watch::channel(None).1,
            true,
            None,
        )
        .with_clock(clock)
        .with_retry(Duration::from_secs(5), Duration::from_secs(12))
    }

    fn boot_into(&self, version: &str) {
        self.running.lock().unwrap().0 = version.into();
    }
}

fn three_am() -> u32 {
    3 * 60
}

fn noon() -> u32 {
    12 * 60
}

#[tokio::test]
async fn a_signed_version_is_staged_installed_and_rebooted_into_then_reported_booted() {
    let node = Node::new("0.1.0").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    let updater = node.updater(noon);
    updater.resume().unwrap();
    let os = target(&node.server, "0.1.1", RebootPolicy::Now);
    assert_eq!(updater.step(Some(&os)).await.unwrap(), Next::Wait);
    // Three artifacts, SHA256SUMS and its signature were in staging for sysupdate,
    // and are gone once it installed them.
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)", "reboot"]);
    assert_eq!(std::fs::read_dir(node.dir().staging()).unwrap().count(), 0);
    assert_eq!(
        node.state().phase,
        Phase::Rebooting {
            version: "0.1.1".into(),
            from: "0.1.0".into()
        }
    );
    // The node comes back on 0.1.1: booted; the same target asks nothing more.
    node.boot_into("0.1.1");
    let updater = node.updater(noon);
    updater.resume().unwrap();
    assert_eq!(
        node.state().phase,
        Phase::Booted {
            version: "0.1.1".into()
        }
    );
    let requests = node.server.request_count();
    assert_eq!(updater.step(Some(&os)).await.unwrap(), Next::Wait);
    assert_eq!(node.server.request_count(), requests);
    assert_eq!(node.calls().len(), 2);
    assert!(node.state().failed.is_empty());
}

#[tokio::test]
async fn a_version_that_comes_back_on_the_old_one_is_rolled_back_and_never_tried_again() {
    let node = Node::new("0.1.1").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.2", "x86-64");
    let updater = node.updater(noon);
    let os = target(&node.server, "0.1.2", RebootPolicy::Now);
    updater.step(Some(&os)).await.unwrap();
    assert_eq!(node.calls(), ["install 0.1.2 (5 files)", "reboot"]);
    // 0.1.2 fails its health gate three times; systemd-boot starts 0.1.1 again.
    let updater = node.updater(noon);
    let state = updater.resume().unwrap();
    assert_eq!(
        state.phase,
        Phase::RolledBack {
            version: "0.1.2".into(),
            running: "0.1.1".into()
        }
    );
    assert_eq!(state.failed, ["0.1.2"]);
    // The document still asks for 0.1.2: nothing is downloaded or installed, and the
    // rollback stays what the node reports, across restarts too.
    let requests = node.server.request_count();
    updater.step(Some(&os)).await.unwrap();
    let updater = node.updater(noon);
    updater.resume().unwrap();
    updater.step(Some(&os)).await.unwrap();
    assert_eq!(node.server.request_count(), requests);
    assert_eq!(node.calls().len(), 2);
    assert_eq!(node.state(), state);
    // A newer version is installed as usual.
    publish_version(&node.server, &node.key, "kiwi", "0.1.3", "x86-64");
    updater
        .step(Some(&target(&node.server, "0.1.3", RebootPolicy::Now)))
        .await
        .unwrap();
    assert_eq!(node.calls()[2], "install 0.1.3 (5 files)");
    assert_eq!(node.state().failed, ["0.1.2"]);
}

#[tokio::test]
async fn refused_artifacts_install_nothing_and_are_not_fetched_again_for_the_same_url() {
    let node = Node::new("0.1.0").await;
    let other = Key::generate(node.tmp.path(), "other");
    publish_version(&node.server, &other, "kiwi", "0.1.1", "x86-64");
    let updater = node.updater(noon);
    let os = target(&node.server, "0.1.1", RebootPolicy::Now);
    assert_eq!(updater.step(Some(&os)).await.unwrap(), Next::Wait);
    let Phase::Refused {
        version, reason, ..
    } = node.state().phase
    else {
        panic!("{:?}", node.state())
    };
    assert_eq!(version, "0.1.1");
    assert!(reason.contains("SHA256SUMS"), "{reason}");
    assert!(node.calls().is_empty());
    assert_eq!(
        std::fs::read_dir(node.dir().staging()).unwrap().count(),
        0,
        "staging must be empty"
    );
    let requests = node.server.request_count();
    updater.step(Some(&os)).await.unwrap();
    assert_eq!(node.server.request_count(), requests);
    // Fixed at another URL (the server serves every directory): fetched and installed.
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    let mut fixed = os.clone();
    fixed.url = format!("{}/", fixed.url);
    updater.step(Some(&fixed)).await.unwrap();
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)", "reboot"]);
}

#[tokio::test]
async fn a_failed_install_is_refused_with_the_reason_and_no_reboot() {
    let node = Node::new("0.1.0").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    *node.system.fail_install.lock().unwrap() = true;
    let updater = node.updater(noon);
    updater
        .step(Some(&target(&node.server, "0.1.1", RebootPolicy::Now)))
        .await
        .unwrap();
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)"]);
    let Phase::Refused { reason, .. } = node.state().phase else {
        panic!("{:?}", node.state())
    };
    assert!(reason.contains("sysupdate exited 1"), "{reason}");
}

#[tokio::test]
async fn the_reboot_waits_for_the_window_or_for_a_document_that_says_now() {
    let node = Node::new("0.1.0").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    // 12:00 UTC, window 02:00-04:00: installed, the reboot in 14 h.
    let updater = node.updater(noon);
    let os = target(&node.server, "0.1.1", RebootPolicy::Window);
    assert_eq!(
        updater.step(Some(&os)).await.unwrap(),
        Next::After(Duration::from_secs(14 * 3600))
    );
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)"]);
    assert_eq!(
        node.state().phase,
        Phase::Installed {
            version: "0.1.1".into(),
            reboot: "window".into()
        }
    );
    // 03:00: inside the window, rebooted without downloading again.
    let requests = node.server.request_count();
    let updater = node.updater(three_am);
    updater.resume().unwrap();
    assert_eq!(updater.step(Some(&os)).await.unwrap(), Next::Wait);
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)", "reboot"]);
    assert_eq!(node.server.request_count(), requests);

    // Manual: installed, then waits for the document to change.
    let node = Node::new("0.1.0").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    let updater = node.updater(three_am);
    let manual = target(&node.server, "0.1.1", RebootPolicy::Manual);
    assert_eq!(updater.step(Some(&manual)).await.unwrap(), Next::Wait);
    assert_eq!(updater.step(Some(&manual)).await.unwrap(), Next::Wait);
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)"]);
    let now = target(&node.server, "0.1.1", RebootPolicy::Now);
    updater.step(Some(&now)).await.unwrap();
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)", "reboot"]);
}

#[tokio::test]
async fn an_install_cut_short_starts_over_at_the_next_start() {
    let node = Node::new("0.1.0").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    // The power went while sysupdate wrote the other slot: still 0.1.0.
    node.dir()
        .set_state(&UpdateState {
            phase: Phase::Installing {
                version: "0.1.1".into(),
            },
            failed: vec![],
        })
        .unwrap();
    let updater = node.updater(noon);
    assert_eq!(updater.resume().unwrap().phase, Phase::Idle);
    updater
        .step(Some(&target(&node.server, "0.1.1", RebootPolicy::Now)))
        .await
        .unwrap();
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)", "reboot"]);
}

/// A node that cannot take an A/B update is told so, and nothing is downloaded.
async fn refused_without_a_download(boot: Boot, says: &str) {
    let node = Node::new("0.1.0").await;
    node.running.lock().unwrap().1 = boot;
    let updater = node.updater(noon);
    updater
        .step(Some(&target(&node.server, "0.1.1", RebootPolicy::Now)))
        .await
        .unwrap();
    let Phase::Refused { reason, .. } = node.state().phase else {
        panic!("{:?}", node.state())
    };
    assert!(reason.contains(says), "{reason}");
    assert_eq!(node.server.request_count(), 0);
    assert!(node.calls().is_empty());
}

#[tokio::test]
async fn a_netbooted_node_reports_how_it_updates_instead_of_failing() {
    refused_without_a_download(Boot::Diskless, "netboot server").await;
}

#[tokio::test]
async fn a_node_started_by_its_board_firmware_is_told_to_reflash_instead_of_failing() {
    refused_without_a_download(Boot::BoardFirmware, "write the new version's board image").await;
}

#[tokio::test]
async fn a_transport_failure_is_retried_later_not_refused() {
    let node = Node::new("0.1.0").await;
    let mut os = target(&node.server, "0.1.1", RebootPolicy::Now);
    // Nothing listens there.
    os.url = "http://127.0.0.1:9/v/0.1.1".into();
    let updater = node.updater(noon);
    assert_eq!(
        updater.step(Some(&os)).await.unwrap(),
        Next::After(Duration::from_secs(5))
    );
    // Backing off: doubled, then capped.
    assert_eq!(
        updater.step(Some(&os)).await.unwrap(),
        Next::After(Duration::from_secs(10))
    );
    assert_eq!(
        updater.step(Some(&os)).await.unwrap(),
        Next::After(Duration::from_secs(12))
    );
    assert_eq!(
        node.state().phase,
        Phase::Staging {
            version: "0.1.1".into()
        }
    );
    let [uki, ..] = names("kiwi", "0.1.1", "x86-64");
    assert!(!node.dir().staging().join(staged(&uki)).exists());
}

#[tokio::test]
async fn run_follows_the_target_and_ends_with_the_pipeline() {
    let node = Node::new("0.1.0").await;
    publish_version(&node.server, &node.key, "kiwi", "0.1.1", "x86-64");
    let keys = node.tmp.path().join("trusted-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(node.key.public_file(), keys.join("update.pub")).unwrap();
    let (tx, rx) = watch::channel(None);
    let running = node.running.clone();
    let updater = Updater::new(
        "kiwi",
        node.dir(),
        TrustPolicy::load(&keys, &[], false).unwrap(),
        node.system.clone(),
        OsSource::new(move || OsImage {
            image_id: Some("kowabunga-kiwi".into()),
            version: Some(running.lock().unwrap().0.clone()),
            boot: Boot::Disk,
            other_slot: Some(OtherSlot::Empty),
            updates: "",
            update: None,
        }),
        rx,
        true,
        None,
    );
    let task = tokio::spawn(updater.run());
    tx.send_replace(Some(target(&node.server, "0.1.1", RebootPolicy::Now)));
    for _ in 0..500 {
        if node.calls().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.calls(), ["install 0.1.1 (5 files)", "reboot"]);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run ends when the sender is dropped")
        .unwrap()
        .unwrap();
}
