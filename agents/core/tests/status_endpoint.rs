//! The loopback status endpoint, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kowabunga_agent::outcome::{Outcome, Reason};
use kowabunga_agent::status::{StatusBoard, serve};

/// The clock is paused: the start-up retries below wait in virtual time, so a slow
/// machine cannot run out of them before the server task has bound its port.
#[tokio::test(start_paused = true)]
async fn serves_json_and_prometheus_on_loopback_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let board = StatusBoard::new("kiwi", "n1", false);
    board.attempt(&Outcome::applied(7, 3));
    board.attempt(&Outcome::rejected(Some(8), Reason::Expired, "expired"));

    let err = serve(board.clone(), "0.0.0.0:9721".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("only loopback"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    tokio::spawn(serve(board, addr.parse().unwrap()));
    let client = reqwest::Client::new();
    let mut status = None;
    for _ in 0..50 {
        if let Ok(response) = client.get(format!("http://{addr}/status")).send().await {
            status = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = status.expect("status endpoint answered");
    assert_eq!(status["version"], 7);
    assert_eq!(status["generation"], 3);
    assert_eq!(status["failures"]["expired"], 1);
    assert_eq!(status["last_attempt"]["state"], "rejected");

    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("kowabunga_agent_failures_total{agent=\"kiwi\",reason=\"expired\"} 1"),
        "{text}"
    );
    let missing = client
        .get(format!("http://{addr}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// The A/B health gate against a real status endpoint: it fails, naming what is
/// missing, until the board shows a restored generation and a reached endpoint. Real
/// time (the requests are real): each failing wait makes at least one request and
/// ends after its one-second deadline.
#[tokio::test]
async fn the_health_gate_passes_only_once_the_board_shows_a_good_boot() {
    use kowabunga_agent::health_gate::wait;
    use std::time::Duration;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let board = StatusBoard::new("kiwi", "n1", false);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(serve(board.clone(), addr));
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client
            .get(format!("http://{addr}/status"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gate = || wait(addr, Duration::from_secs(1), Duration::from_millis(100));

    let err = gate().await.unwrap_err();
    assert!(err.contains("no generation"), "{err}");
    board.in_force(Some(4), Some(9));
    board.fetch_failed("connection refused");
    let err = gate().await.unwrap_err();
    assert!(err.contains("connection refused"), "{err}");
    board.attempt(&Outcome::reverted(10, Reason::Unhealthy, "dns: no answer"));
    board.fetch_ok();
    let err = gate().await.unwrap_err();
    assert!(err.contains("reverted"), "{err}");
    board.attempt(&Outcome::applied(10, 5));
    gate().await.unwrap();
}
