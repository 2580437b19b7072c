//! The transport against a Kahuna double over real WebSockets on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kowabunga_rpc::fake_kahuna::{Expect, FakeKahuna};
use kowabunga_rpc::{Agent, Credentials, Link, MISSING_PARAMS, Options, Service};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

const T: Duration = Duration::from_secs(10);

struct Echo;

impl Service for Echo {
    fn version(&self) -> String {
        "0.1".into()
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Reload", "Slow"]
    }
    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        if method == "Slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(json!({ "Echo": params }))
    }
}

fn expect() -> Expect {
    Expect {
        kind: "Kiwi".into(),
        agent_id: "kiwi-1".into(),
        api_key: "the-real-key".into(),
    }
}

fn fast() -> Options {
    Options {
        insecure: true,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..Options::default()
    }
}

struct Running {
    link: watch::Receiver<Link>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(T, self.task).await.unwrap().unwrap();
    }
}

fn spawn(url: &str, key: &str, options: Options) -> Running {
    let creds = Credentials {
        kind: "Kiwi",
        kahuna_url: url.into(),
        agent_id: "kiwi-1".into(),
        api_key: key.into(),
    };
    let agent = Agent::new(creds, options, Arc::new(Echo)).unwrap();
    let link = agent.link();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = rx.await;
    }));
    Running {
        link,
        stop: Some(tx),
        task,
    }
}

#[tokio::test]
async fn kahuna_refuses_requests_without_headers() {
    let fake = FakeKahuna::start(expect()).await.unwrap();
    let url = format!("{}/ws", fake.url());
    let tcp = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let err = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(
        fake.refusals(),
        vec!["missing X-WS-Kowabunga-Agent".to_owned()]
    );
}

#[tokio::test]
async fn wrong_key_is_refused_and_never_logged() {
    let mut fake = FakeKahuna::start(expect()).await.unwrap();
    let mut agent = spawn(&fake.url(), "a-wrong-key", fast());
    let down = tokio::time::timeout(T, agent.link.wait_for(|l| matches!(l, Link::Down(_))))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let Link::Down(reason) = down else {
        unreachable!()
    };
    assert_eq!(reason, "Kahuna refused the agent: HTTP 401");
    assert!(!reason.contains("a-wrong-key"));
    // It keeps retrying, and is refused each time.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refusals = fake.refusals();
    assert!(refusals.len() >= 2, "{refusals:?}");
    assert!(
        refusals.iter().all(|r| r == "wrong X-WS-Kowabunga-Api-Key"),
        "{refusals:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), fake.accept(T))
            .await
            .is_err(),
        "an agent with a wrong key was accepted"
    );
    agent.stop().await;
}

#[tokio::test]
async fn serves_calls_and_survives_bad_frames() {
    let mut fake = FakeKahuna::start(expect()).await.unwrap();
    let agent = spawn(&fake.url(), "the-real-key", fast());
    let mut conn = fake.accept(T).await;

    let (version, methods) = conn.capabilities("Kiwi").await;
    assert_eq!(version, "0.1");
    assert_eq!(methods, ["Capabilities", "Reload", "Slow"]);

    let r = conn.call("Kiwi.Reload", json!({"Domains": []})).await;
    assert_eq!(
        (r.result, r.error),
        (json!({"Echo": {"Domains": []}}), None)
    );

    // Null params, unknown method, wrong service: error replies.
    let r = conn.call("Kiwi.Reload", Value::Null).await;
    assert_eq!(r.error.as_deref(), Some(MISSING_PARAMS));
    assert_eq!(r.result, Value::Null);
    let r = conn.call("Kiwi.Format", json!({})).await;
    assert_eq!(
        r.error.as_deref(),
        Some("wsrpc: can't find method Kiwi.Format")
    );
    let r = conn.call("Kaktus.Reload", json!({})).await;
    assert_eq!(
        r.error.as_deref(),
        Some("wsrpc: can't find service Kaktus.Reload")
    );

    // Malformed JSON with a readable id: answered. Without: dropped, nothing sent.
    conn.send_raw(br#"{"id": 41, "method": 12}"#.to_vec());
    let r = conn.next_reply(T).await.unwrap();
    assert_eq!(r.id, 41);
    assert!(r.error.unwrap().starts_with("wsrpc: malformed request"));
    conn.send_raw(b"{ this is not json".to_vec());
    conn.send_raw(vec![0xff; 64]);
    assert_eq!(conn.next_reply(Duration::from_millis(300)).await, None);

    // Still serving on the same connection.
    let r = conn.call("Kiwi.Reload", json!({"Domains": [1]})).await;
    assert_eq!(r.error, None);
    assert_eq!(*agent.link.borrow(), Link::Connected);
    agent.stop().await;
    assert!(
        conn.closed_within(T).await,
        "agent did not close on shutdown"
    );
}

#[tokio::test]
async fn calls_do_not_block_keepalive_or_each_other() {
    let mut fake = FakeKahuna::start(expect()).await.unwrap();
    let options = Options {
        ping_interval: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(250),
        ..fast()
    };
    let agent = spawn(&fake.url(), "the-real-key", options);
    let mut conn = fake.accept(T).await;
    // A call longer than the peer timeout: pings and pongs flow meanwhile.
    let r = conn.call("Kiwi.Slow", json!({})).await;
    assert_eq!(r.error, None);
    assert!(!conn.closed_within(Duration::from_millis(600)).await);
    agent.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_and_agent_comes_back() {
    let mut fake = FakeKahuna::start(expect()).await.unwrap();
    let options = Options {
        max_frame_bytes: 64 << 10,
        ..fast()
    };
    let mut agent = spawn(&fake.url(), "the-real-key", options);
    let mut conn = fake.accept(T).await;
    let big = json!({"id": 5, "method": "Kiwi.Reload", "params": {"Blob": "x".repeat(100 << 10)}});
    conn.send_raw(serde_json::to_vec(&big).unwrap());
    assert!(
        conn.closed_within(T).await,
        "oversized frame did not close the link"
    );
    let down = agent
        .link
        .wait_for(|l| matches!(l, Link::Down(_)))
        .await
        .unwrap()
        .clone();
    assert!(
        format!("{down:?}").contains("limit 65536 bytes"),
        "{down:?}"
    );
    // Reconnected, serving again.
    let mut conn = fake.accept(T).await;
    let (_, methods) = conn.capabilities("Kiwi").await;
    assert!(methods.contains(&"Reload".to_owned()));
    agent.stop().await;
}

#[tokio::test]
async fn silent_kahuna_is_dropped_and_redialled() {
    let mut fake = FakeKahuna::start(expect()).await.unwrap();
    let options = Options {
        ping_interval: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(300),
        ..fast()
    };
    let mut agent = spawn(&fake.url(), "the-real-key", options);
    let mut conn = fake.accept(T).await;
    conn.capabilities("Kiwi").await;
    conn.go_silent();
    let down = agent
        .link
        .wait_for(|l| matches!(l, Link::Down(_)))
        .await
        .unwrap()
        .clone();
    assert_eq!(down, Link::Down("Kahuna silent for 300ms".into()));
    let mut conn = fake.accept(T).await;
    conn.capabilities("Kiwi").await;
    agent.stop().await;
}

#[tokio::test]
async fn reconnects_after_kahuna_restarts() {
    let fake = FakeKahuna::start(expect()).await.unwrap();
    let addr = fake.addr();
    let url = fake.url();
    let mut fake = fake;
    let mut agent = spawn(&url, "the-real-key", fast());
    let mut conn = fake.accept(T).await;
    conn.capabilities("Kiwi").await;
    fake.stop().await;
    assert!(conn.closed_within(T).await);
    agent
        .link
        .wait_for(|l| matches!(l, Link::Down(_)))
        .await
        .unwrap();
    // Down for a while: attempts fail with connection refused, then Kahuna is back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fake = FakeKahuna::start_on(addr, expect()).await.unwrap();
    let mut conn = fake.accept(T).await;
    let (_, methods) = conn.capabilities("Kiwi").await;
    assert_eq!(methods.len(), 3);
    agent.stop().await;
}

#[test]
fn insecure_urls_need_insecure_mode() {
    let creds = Credentials {
        kind: "Kiwi",
        kahuna_url: "ws://127.0.0.1:1".into(),
        agent_id: "kiwi-1".into(),
        api_key: "k".into(),
    };
    let err = Agent::new(creds.clone(), Options::default(), Arc::new(Echo))
        .err()
        .unwrap();
    assert!(
        err.contains("only allowed with kowabunga.insecure"),
        "{err}"
    );
    let empty = Credentials {
        api_key: String::new(),
        ..creds
    };
    let err = Agent::new(empty, fast(), Arc::new(Echo)).err().unwrap();
    assert_eq!(err, "API key is empty");
}

#[tokio::test]
async fn wss_with_a_pinned_ca_and_refusal_of_an_unknown_one() {
    let dir = std::env::temp_dir().join(format!("kowabunga-rpc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kowabunga_testkit::Pki { ca, chain, key } = kowabunga_testkit::make_pki(&dir, "kahuna");
    let other_ca = kowabunga_testkit::make_pki(&dir, "other").ca;
    let mut fake = FakeKahuna::start_tls(expect(), &chain, &key).await.unwrap();
    let url = format!("wss://{}", fake.addr());

    // Pinned to the right CA: connected over TLS, served.
    let options = Options {
        insecure: false,
        ca_file: Some(ca),
        ..fast()
    };
    let agent = spawn(&url, "the-real-key", options);
    let mut conn = fake.accept(T).await;
    let (_, methods) = conn.capabilities("Kiwi").await;
    assert_eq!(methods, ["Capabilities", "Reload", "Slow"]);
    agent.stop().await;

    // Pinned to another CA: the TLS handshake fails, nothing is sent.
    let options = Options {
        insecure: false,
        ca_file: Some(other_ca),
        ..fast()
    };
    let mut agent = spawn(&url, "the-real-key", options);
    let down = agent
        .link
        .wait_for(|l| matches!(l, Link::Down(_)))
        .await
        .unwrap()
        .clone();
    let Link::Down(reason) = down else {
        unreachable!()
    };
    assert!(reason.starts_with("TLS with 127.0.0.1:"), "{reason}");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fake.accept(T))
            .await
            .is_err()
    );
    agent.stop().await;

    // A CA file that is not PEM: a clear error before anything is dialled.
    let bogus = dir.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let creds = Credentials {
        kind: "Kiwi",
        kahuna_url: url,
        agent_id: "kiwi-1".into(),
        api_key: "k".into(),
    };
    let err = Agent::new(
        creds,
        Options {
            ca_file: Some(bogus.clone()),
            ..Options::default()
        },
        Arc::new(Echo),
    )
    .err()
    .unwrap();
    assert!(err.contains(&bogus.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
