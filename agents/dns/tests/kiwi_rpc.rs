//! Kiwi end to end: a fake Kahuna (real WebSocket on loopback, acting as upstream's
//! RPC client) drives the agent's `Kiwi.*` methods; the records are checked with `dig`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    FakeRecursor, Pipeline, PipelinePusher, RejectingPusher, dig, free_port, signed_doc, tempdir,
};
use kowabunga_dns::KiwiService;
use kowabunga_rpc::fake_kahuna::{Conn, Expect, FakeKahuna};
use kowabunga_rpc::{Agent, Credentials, Link, MISSING_PARAMS, Options};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(10);

fn expect() -> Expect {
    Expect {
        kind: "Kiwi".into(),
        agent_id: "kiwi-eu-1".into(),
        api_key: "k1w1-s3cret".into(),
    }
}

async fn dig_a(port: u16, name: &str, extra: &[&str]) -> (String, Vec<String>) {
    let (name, extra): (String, Vec<String>) = (
        name.to_owned(),
        extra.iter().map(|s| (*s).to_owned()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let d = dig(port, &name, "A", &extra);
        (d.status, d.answers)
    })
    .await
    .unwrap()
}

/// Upstream Kahuna's `Kiwi.Reload` after a connect: every project's records.
fn realistic_reload() -> Value {
    let mut domains = Vec::new();
    for project in ["acme", "globex", "initech"] {
        let mut records = Vec::new();
        for i in 1..=20 {
            records.push(json!({"Name": format!("vm-{i:02}"), "Type": "A", "Addresses": [format!("10.{}.0.{i}", project.len())]}));
        }
        records.push(json!({"Name": "www", "Type": "A", "Addresses": ["10.50.0.1", "10.50.0.2"]}));
        records.push(json!({"Name": "www", "Type": "AAAA", "Addresses": ["fd00:50::1"]}));
        // Upstream skips types it does not serve.
        records.push(json!({"Name": "alias", "Type": "CNAME", "Addresses": ["www"]}));
        domains.push(json!({"Name": format!("{project}.eu.kowabunga.local"), "Records": records}));
    }
    json!({ "Domains": domains })
}

struct Kiwi {
    pipeline: Arc<Pipeline>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    link: tokio::sync::watch::Receiver<Link>,
}

impl Kiwi {
    async fn start(kahuna_url: &str, pipeline: Arc<Pipeline>, options: Options) -> Self {
        let pusher = PipelinePusher(Arc::clone(&pipeline));
        let service = Arc::new(KiwiService::new(pipeline.server().clone(), pusher));
        let creds = Credentials {
            kind: "Kiwi",
            kahuna_url: kahuna_url.into(),
            agent_id: "kiwi-eu-1".into(),
            api_key: "k1w1-s3cret".into(),
        };
        let agent = Agent::new(creds, options, service).unwrap();
        let link = agent.link();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async {
            let _ = rx.await;
        }));
        Self {
            pipeline,
            stop: Some(tx),
            task,
            link,
        }
    }

    fn port(&self) -> u16 {
        self.pipeline.port()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(T, self.task).await.unwrap().unwrap();
        self.pipeline.server().shutdown().await;
    }
}

fn options() -> Options {
    Options {
        insecure: true,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        max_frame_bytes: 256 << 10,
        ..Options::default()
    }
}

/// What upstream Kahuna does on connect: Capabilities, then Reload.
async fn handshake(conn: &mut Conn) {
    let (version, methods) = conn.capabilities("Kiwi").await;
    assert_eq!(version, "0.1");
    assert_eq!(
        methods,
        [
            "Capabilities",
            "CreateDnsRecord",
            "CreateDnsZone",
            "DeleteDnsRecord",
            "DeleteDnsZone",
            "Reload",
            "UpdateDnsRecord"
        ]
    );
    let r = conn.call("Kiwi.Reload", realistic_reload()).await;
    assert_eq!((r.error, r.result), (None, json!({})));
}

#[tokio::test(flavor = "multi_thread")]
async fn kahuna_drives_kiwi_dns() {
    let recursor = FakeRecursor::start().await;
    let dir = tempdir("kiwi");
    let store = dir.join("pushed-dns.toml");
    let signed = signed_doc(free_port(), recursor.addr);
    let pipeline = Pipeline::start(&signed, &store).await;
    let mut kahuna = FakeKahuna::start(expect()).await.unwrap();
    let kiwi = Kiwi::start(&kahuna.url(), pipeline, options()).await;
    let port = kiwi.port();
    let mut conn = kahuna.accept(T).await;

    handshake(&mut conn).await;
    assert_eq!(
        dig_a(port, "vm-07.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.0.7"]
    );
    assert_eq!(
        dig_a(port, "vm-20.initech.eu.kowabunga.local", &["+tcp"])
            .await
            .1,
        ["A 10.7.0.20"]
    );
    assert_eq!(
        dig_a(port, "www.globex.eu.kowabunga.local", &[]).await.1,
        ["A 10.50.0.1", "A 10.50.0.2"]
    );
    assert_eq!(
        dig_a(port, "alias.globex.eu.kowabunga.local", &[]).await.0,
        "NXDOMAIN"
    );
    // The signed zone is still there beside the pushed ones.
    assert_eq!(
        dig_a(port, "kahuna.infra.acme.local", &[]).await.1,
        ["A 10.0.0.2"]
    );

    // Create, update, delete one record.
    let r = conn
        .call(
            "Kiwi.CreateDnsRecord",
            json!({"Domain": "acme.eu.kowabunga.local", "Entry": "db", "Addresses": ["10.4.1.1"]}),
        )
        .await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "db.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.1.1"]
    );
    let r = conn.call("Kiwi.UpdateDnsRecord", json!({"Domain": "acme.eu.kowabunga.local", "Entry": "db", "Addresses": ["10.4.1.2", "10.4.1.3"]})).await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "db.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.1.2", "A 10.4.1.3"]
    );
    let r = conn
        .call(
            "Kiwi.DeleteDnsRecord",
            json!({"Domain": "acme.eu.kowabunga.local", "Entry": "db"}),
        )
        .await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "db.acme.eu.kowabunga.local", &[]).await.0,
        "NXDOMAIN"
    );
    // Upstream semantics: update of a missing record fails, delete is idempotent.
    let r = conn.call("Kiwi.UpdateDnsRecord", json!({"Domain": "acme.eu.kowabunga.local", "Entry": "ghost", "Addresses": ["10.4.1.9"]})).await;
    assert_eq!(
        r.error.as_deref(),
        Some("Kiwi.UpdateDnsRecord: record ghost.acme.eu.kowabunga.local does not exist")
    );
    let r = conn
        .call(
            "Kiwi.DeleteDnsRecord",
            json!({"Domain": "acme.eu.kowabunga.local", "Entry": "ghost"}),
        )
        .await;
    assert_eq!(r.error, None);
    // Pushed wins over signed: Kahuna can re-point and hide a signed name.
    let r = conn
        .call(
            "Kiwi.UpdateDnsRecord",
            json!({"Domain": "infra.acme.local", "Entry": "ntp", "Addresses": ["10.0.0.30"]}),
        )
        .await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "ntp.infra.acme.local", &[]).await.1,
        ["A 10.0.0.30"]
    );
    let r = conn
        .call(
            "Kiwi.DeleteDnsRecord",
            json!({"Domain": "infra.acme.local", "Entry": "ntp"}),
        )
        .await;
    assert_eq!(r.error, None);
    assert_eq!(dig_a(port, "ntp.infra.acme.local", &[]).await.0, "NXDOMAIN");

    // Zones: create (empty zone: NXDOMAIN, not forwarded), delete; signed zones stay.
    let r = conn
        .call(
            "Kiwi.CreateDnsZone",
            json!({"Domain": "new.eu.kowabunga.local"}),
        )
        .await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "x.new.eu.kowabunga.local", &[]).await.0,
        "NXDOMAIN"
    );
    let r = conn
        .call(
            "Kiwi.DeleteDnsZone",
            json!({"Domain": "new.eu.kowabunga.local"}),
        )
        .await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "x.new.eu.kowabunga.local", &[]).await.1,
        ["A 192.0.2.53"],
        "forwarded again"
    );
    let r = conn
        .call("Kiwi.DeleteDnsZone", json!({"Domain": "infra.acme.local"}))
        .await;
    assert!(r.error.unwrap().contains("signed [dns] section"));

    // Bad input: a clear error, nothing changes.
    let before = std::fs::read_to_string(&store).unwrap();
    let r = conn.call("Kiwi.Reload", json!({"Domains": [{"Name": "acme.eu.kowabunga.local", "Records": [{"Name": "x", "Type": "A", "Addresses": ["10.0.0.300"]}]}]})).await;
    assert_eq!(
        r.error.as_deref(),
        Some("Kiwi.Reload: x.acme.eu.kowabunga.local: invalid address \"10.0.0.300\"")
    );
    let r = conn
        .call(
            "Kiwi.CreateDnsRecord",
            json!({"Domain": "acme..local", "Entry": "x", "Addresses": ["10.0.0.1"]}),
        )
        .await;
    assert!(r.error.unwrap().contains("empty label"));
    let r = conn
        .call(
            "Kiwi.CreateDnsRecord",
            json!({"Domain": "acme.eu.kowabunga.local", "Entry": "x", "Addresses": "10.0.0.1"}),
        )
        .await;
    assert!(
        r.error
            .unwrap()
            .starts_with("Kiwi.CreateDnsRecord: invalid params")
    );
    assert_eq!(std::fs::read_to_string(&store).unwrap(), before);
    assert_eq!(
        dig_a(port, "vm-07.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.0.7"]
    );

    // Protocol abuse: answered or dropped, and the agent keeps serving.
    let r = conn.call("Kiwi.Reload", Value::Null).await;
    assert_eq!(r.error.as_deref(), Some(MISSING_PARAMS));
    let r = conn.call("Kiwi.FormatDisk", json!({})).await;
    assert_eq!(
        r.error.as_deref(),
        Some("wsrpc: can't find method Kiwi.FormatDisk")
    );
    conn.send_raw(b"{\"id\": 99, \"method\": \"Kiwi.Reload\", \"params\": {".to_vec());
    assert_eq!(conn.next_reply(Duration::from_millis(300)).await, None);
    conn.send_raw(b"\x00\x01garbage".to_vec());
    let r = conn.call("Kiwi.CreateDnsRecord", json!({"Domain": "acme.eu.kowabunga.local", "Entry": "after-garbage", "Addresses": ["10.4.2.1"]})).await;
    assert_eq!(r.error, None);
    assert_eq!(
        dig_a(port, "after-garbage.acme.eu.kowabunga.local", &[])
            .await
            .1,
        ["A 10.4.2.1"]
    );

    // Oversized frame: the link is closed (1009), the agent reconnects and serves.
    let huge = json!({"id": 500, "method": "Kiwi.Reload", "params": {"Domains": [{"Name": "x".repeat(300 << 10)}]}});
    conn.send_raw(serde_json::to_vec(&huge).unwrap());
    assert!(conn.closed_within(T).await);
    let mut conn = kahuna.accept(T).await;
    handshake(&mut conn).await;
    assert_eq!(
        dig_a(port, "vm-01.globex.eu.kowabunga.local", &[]).await.1,
        ["A 10.6.0.1"]
    );
    // Reload replaced every pushed record: the RPC-made ones and the override of the
    // signed `ntp` are gone, the signed value is back.
    assert_eq!(
        dig_a(port, "after-garbage.acme.eu.kowabunga.local", &[])
            .await
            .0,
        "NXDOMAIN"
    );
    assert_eq!(
        dig_a(port, "ntp.infra.acme.local", &[]).await.1,
        ["A 10.0.0.3"]
    );
    let r = conn.call("Kiwi.CreateDnsRecord", json!({"Domain": "acme.eu.kowabunga.local", "Entry": "kept", "Addresses": ["10.4.3.1"]})).await;
    assert_eq!(r.error, None);
    let r = conn
        .call(
            "Kiwi.DeleteDnsRecord",
            json!({"Domain": "infra.acme.local", "Entry": "ntp"}),
        )
        .await;
    assert_eq!(r.error, None);

    // Kahuna restarts: records are served meanwhile, the agent comes back by itself.
    let addr = kahuna.addr();
    kahuna.stop().await;
    assert!(conn.closed_within(T).await);
    assert_eq!(
        dig_a(port, "vm-03.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.0.3"]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut kahuna = FakeKahuna::start_on(addr, expect()).await.unwrap();
    let mut conn = kahuna.accept(T).await;
    let (_, methods) = conn.capabilities("Kiwi").await;
    assert_eq!(methods.len(), 7);
    assert_eq!(*kiwi.link.borrow(), Link::Connected);
    assert_eq!(
        dig_a(port, "kept.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.3.1"]
    );

    // The agent restarts (process gone, generation kept): records come back from disk.
    kiwi.stop().await;
    drop(conn);
    let pipeline = Pipeline::start(&signed, &store).await;
    assert_eq!(pipeline.port(), port);
    assert_eq!(
        dig_a(port, "kept.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.3.1"]
    );
    assert_eq!(
        dig_a(port, "vm-20.acme.eu.kowabunga.local", &[]).await.1,
        ["A 10.4.0.20"]
    );
    assert_eq!(
        dig_a(port, "ntp.infra.acme.local", &[]).await.0,
        "NXDOMAIN",
        "tombstone kept"
    );
    let kiwi = Kiwi::start(&kahuna.url(), pipeline, options()).await;
    let mut conn = kahuna.accept(T).await;
    handshake(&mut conn).await;
    kiwi.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_the_pipeline_rejects_is_an_error_reply() {
    let recursor = FakeRecursor::start().await;
    let dir = tempdir("reject");
    let pipeline =
        Pipeline::start(&signed_doc(free_port(), recursor.addr), &dir.join("d.toml")).await;
    let server = pipeline.server().clone();
    let service = KiwiService::new(
        server,
        RejectingPusher("reverted: dns: the server does not run the desired record set"),
    );
    use kowabunga_rpc::Service;
    let err = service
        .call(
            "CreateDnsRecord",
            json!({"Domain": "a.local", "Entry": "x", "Addresses": ["10.0.0.1"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "Kiwi.CreateDnsRecord: reverted: dns: the server does not run the desired record set"
    );
    // No change at all: no push.
    let service = KiwiService::new(
        pipeline.server().clone(),
        RejectingPusher("must not be called"),
    );
    service
        .call(
            "DeleteDnsRecord",
            json!({"Domain": "a.local", "Entry": "x"}),
        )
        .await
        .unwrap();
    service
        .call("Reload", json!({"Domains": null}))
        .await
        .unwrap();
}
