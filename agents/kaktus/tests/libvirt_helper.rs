//! The agent's libvirt helper process (`kaktus-libvirt`): started on the first request,
//! answering concurrent requests, exiting when idle and started again, and failures
//! named (no helper, a helper that dies, no daemon).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use kaktus::Libvirt;
use kaktus::libvirt_protocol::Request;

const URI: &str = "test:///default";

/// Waits (up to a minute, polling) for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within a minute: {what}");
}

#[tokio::test]
async fn starts_on_demand_answers_concurrently_and_exits_when_idle() {
    // Found next to the test binary's directory, as the agent finds it next to its own.
    let libvirt = Libvirt::new(URI).with_idle_exit(Duration::from_millis(300));
    assert_eq!(libvirt.helper_pid(), None, "not started before a request");

    let requests = (0..16).map(|_| {
        let libvirt = libvirt.clone();
        async move { libvirt.request::<String>(Request::Hostname).await }
    });
    for host in futures_join_all(requests).await {
        assert!(!host.unwrap().is_empty());
    }
    let first = libvirt.helper_pid().expect("a helper runs after a request");

    // Idle: its stdin is closed, it exits and is reaped.
    eventually("the idle helper exits", || libvirt.helper_pid().is_none()).await;
    eventually("the helper process is gone", || {
        !std::path::Path::new(&format!("/proc/{first}")).exists()
    })
    .await;

    // The next request starts another one.
    let host: String = libvirt.request(Request::Hostname).await.unwrap();
    assert!(!host.is_empty());
    let second = libvirt.helper_pid().unwrap();
    assert_ne!(first, second);

    // Killed under the agent: the next request starts a fresh one.
    kill_9(second);
    eventually("the killed helper is noticed", || {
        libvirt.helper_pid() != Some(second)
    })
    .await;
    let host: String = libvirt.request(Request::Hostname).await.unwrap();
    assert!(!host.is_empty());
}

#[tokio::test]
async fn failures_are_named() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("no-such-helper");
    let err = Libvirt::with_helper(&missing, URI)
        .request::<String>(Request::Hostname)
        .await
        .unwrap_err();
    assert!(
        err.contains("cannot start the libvirt helper") && err.contains("no-such-helper"),
        "{err}"
    );

    // A helper that reads the request and dies without answering.
    let dying = dir.path().join("dying-helper");
    std::fs::write(&dying, "#!/bin/sh\nread request\nexit 3\n").unwrap();
    std::fs::set_permissions(&dying, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = Libvirt::with_helper(&dying, URI)
        .request::<String>(Request::Hostname)
        .await
        .unwrap_err();
    assert!(err.contains("exited before answering hostname"), "{err}");

    // No daemon: the helper says which URI it could not reach.
    let err = Libvirt::new("qemu+unix:///system?socket=/nonexistent/kaktus-sock")
        .request::<String>(Request::Hostname)
        .await
        .unwrap_err();
    assert!(
        err.contains("cannot connect to libvirt at qemu+unix"),
        "{err}"
    );

    // An answer of another shape than asked is an error, not a panic.
    let err = Libvirt::new(URI)
        .request::<u64>(Request::Hostname)
        .await
        .unwrap_err();
    assert!(err.contains("unexpected answer to hostname"), "{err}");
}

#[test]
fn the_helper_refuses_to_run_without_its_uri() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kaktus-libvirt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: kaktus-libvirt --uri URI"));
}

#[test]
fn the_agent_binary_does_not_link_libvirt() {
    let out = std::process::Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_kaktus")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(dynamic.contains("NEEDED"), "{dynamic}");
    assert!(!dynamic.contains("libvirt"), "{dynamic}");
    let out = std::process::Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_kaktus-libvirt")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("libvirt.so"));
}

/// Runs the futures as tasks, at once, and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
