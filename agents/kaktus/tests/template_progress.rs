//! Template downloads that stall: the stall timeout ends them with a clear error, the
//! progress line shows the download while it runs and is cleared after, and nothing
//! is left in the pool. (libvirt's test driver: the pool is only refreshed on success.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kaktus::instances::Instances;
use kaktus::storage::Storage;
use kaktus::template::Templates;
use kaktus::{Libvirt, NodeInventory, Pool, SharedInventory};
use kowabunga_model::Progress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server that sends the headers and 9 MiB of a 64 MiB body, then goes silent.
async fn stalling_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/big.raw", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            64u64 << 20
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&vec![0u8; 9 << 20]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_download_fails_clearly_shows_progress_and_leaves_nothing() {
    let pool = tempfile::tempdir().unwrap();
    let mut inventory = NodeInventory::new();
    inventory
        .pools
        .insert("local".into(), Pool::local("local", pool.path()));
    let inventory = SharedInventory::new(inventory);
    let instances = Instances::new(Libvirt::new("test:///default"), inventory.clone());
    let progress = Progress::new();
    let templates = Templates::new(Storage::new(inventory, instances), progress.clone())
        .with_timeouts(Duration::from_secs(60), Duration::from_secs(3));
    let (url, server) = stalling_server().await;

    let download = tokio::spawn({
        let templates = templates.clone();
        async move { templates.create("local", "big", &url).await }
    });
    // While it runs: the progress line names the template and what arrived.
    let mut seen = None;
    for _ in 0..500 {
        if let Some(line) = progress.snapshot().get("template local/big")
            && line.starts_with("downloaded")
        {
            seen = Some(line.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.as_deref(), Some("downloaded 8 MiB of 64 MiB"));

    let err = download.await.unwrap().unwrap_err();
    assert!(
        err.starts_with("template local/big from http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains("stalled: nothing received for 3s after 9437184 bytes"),
        "{err}"
    );
    assert!(progress.snapshot().is_empty(), "progress not cleared");
    assert_eq!(
        std::fs::read_dir(pool.path()).unwrap().count(),
        0,
        "left something behind"
    );
    server.abort();
}
