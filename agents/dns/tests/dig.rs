//! The DNS server checked from outside with the real `dig`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{FakeRecursor, Pipeline, RECURSOR_ANSWER, dig, free_port, signed_doc, tempdir};

async fn setup(tag: &str) -> (Arc<Pipeline>, FakeRecursor) {
    let recursor = FakeRecursor::start().await;
    let dir = tempdir(tag);
    let p = Pipeline::start(
        &signed_doc(free_port(), recursor.addr),
        &dir.join("dns.toml"),
    )
    .await;
    (p, recursor)
}

// dig blocks: run it off the runtime's worker threads.
async fn dig_async(port: u16, name: &str, qtype: &str, extra: &[&str]) -> common::Dig {
    let (name, qtype) = (name.to_owned(), qtype.to_owned());
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        dig(port, &name, &qtype, &extra)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn authoritative_answers_over_udp_and_tcp() {
    let (p, _recursor) = setup("auth").await;
    let port = p.port();
    for extra in [&[][..], &["+tcp"][..]] {
        let d = dig_async(port, "kahuna.infra.acme.local", "A", extra).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.flags.contains(&"aa".to_owned()), "{}", d.raw);
        assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
        let d = dig_async(port, "KAHUNA.Infra.Acme.Local", "AAAA", extra).await;
        assert_eq!(d.answers, ["AAAA fd00::2"], "{}", d.raw);
        let d = dig_async(port, "infra.acme.local", "A", extra).await;
        assert_eq!(d.answers, ["A 10.0.0.1"], "{}", d.raw);
    }
    // A name with no AAAA: NOERROR, no answer, the SOA in authority.
    let d = dig_async(port, "ntp.infra.acme.local", "AAAA", &[]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.answers.is_empty(), "{}", d.raw);
    assert!(d.raw.contains("SOA"), "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn nxdomain_inside_managed_zones() {
    let (p, recursor) = setup("nx").await;
    let d = dig_async(p.port(), "nope.infra.acme.local", "A", &[]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(d.flags.contains(&"aa".to_owned()), "{}", d.raw);
    assert!(
        d.raw.contains("IN\tSOA") || d.raw.contains("IN SOA"),
        "{}",
        d.raw
    );
    let d = dig_async(p.port(), "deep.nope.infra.acme.local", "AAAA", &["+tcp"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(
        recursor.count(),
        0,
        "managed names must not reach the recursor"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_the_rest_then_servfail_when_recursor_is_down() {
    let (p, recursor) = setup("fwd").await;
    let port = p.port();
    for extra in [&[][..], &["+tcp"][..]] {
        let d = dig_async(port, "example.com", "A", extra).await;
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(!d.flags.contains(&"aa".to_owned()), "{}", d.raw);
        assert_eq!(d.answers, [format!("A {RECURSOR_ANSWER}")], "{}", d.raw);
    }
    assert_eq!(recursor.count(), 2);
    recursor.stop().await;
    for extra in [&[][..], &["+tcp"][..]] {
        let d = dig_async(port, "example.com", "A", extra).await;
        assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    }
    // Managed names are still answered.
    let d = dig_async(port, "ntp.infra.acme.local", "A", &[]).await;
    assert_eq!(d.answers, ["A 10.0.0.3"], "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_recursor_times_out_to_servfail() {
    // A UDP socket that never answers: the forward times out (500 ms), then SERVFAIL.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempdir("silent");
    let p = Pipeline::start(
        &signed_doc(free_port(), silent.local_addr().unwrap()),
        &dir.join("dns.toml"),
    )
    .await;
    let started = std::time::Instant::now();
    let d = dig_async(p.port(), "example.org", "A", &[]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_dropped_and_the_server_keeps_serving() {
    let (p, _recursor) = setup("garbage").await;
    let port = p.port();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", port)).await.unwrap();
    // Too short for a header: no reply. A header with a broken question: FORMERR.
    sock.send(&[1, 2, 3]).await.unwrap();
    let broken = [
        0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f,
    ];
    sock.send(&broken).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, 0xabcd);
    assert_eq!(
        reply.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
    let d = dig_async(port, "kahuna.infra.acme.local", "A", &[]).await;
    assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let (p, _recursor) = setup("tc").await;
    let mut table = toml::Table::new();
    let addrs: Vec<String> = (1..=60).map(|i| format!("10.20.0.{i}")).collect();
    let text = format!(
        "[zones.\"big.local\".records]\nmany = [{}]\n",
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    table.extend(toml::from_str::<toml::Table>(&text).unwrap());
    p.push(table).await.unwrap();
    // 60 A records (~1 KB) exceed 512 bytes without EDNS: truncated, dig retries on TCP.
    let d = dig_async(p.port(), "many.big.local", "A", &["+noedns", "+ignore"]).await;
    assert!(d.flags.contains(&"tc".to_owned()), "{}", d.raw);
    let d = dig_async(p.port(), "many.big.local", "A", &["+noedns"]).await;
    assert_eq!(d.answers.len(), 60, "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_listen_address_fails_apply_and_changes_nothing() {
    let (p, _recursor) = setup("badlisten").await;
    let port = p.port();
    // Take a port, then ask the server to listen there too.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let doc = signed_doc(port, "127.0.0.1:9".parse().unwrap())
        .replace(
            &format!("listen = [\"127.0.0.1:{port}\"]"),
            &format!("listen = [\"127.0.0.1:{port}\", \"127.0.0.1:{busy}\"]"),
        )
        .replace("ntp = [\"10.0.0.3\"]", "ntp = [\"10.0.0.33\"]");
    let desired =
        kowabunga_model::Document::parse(doc.as_bytes(), kowabunga_model::Format::Toml).unwrap();
    use kowabunga_model::Reconciler;
    let planned = p.reconciler.plan(&desired, None).await.unwrap();
    let actions: Vec<String> = planned.actions.iter().map(ToString::to_string).collect();
    assert!(
        actions
            .iter()
            .any(|a| a.contains(&format!("listen on 127.0.0.1:{busy}"))),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.contains("change ntp.infra.acme.local 10.0.0.3 -> 10.0.0.33")),
        "{actions:?}"
    );
    let err = p.reconciler.apply(planned.payload).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("listen on 127.0.0.1:{busy}")),
        "{err}"
    );
    let d = dig_async(port, "ntp.infra.acme.local", "A", &[]).await;
    assert_eq!(d.answers, ["A 10.0.0.3"], "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_the_listener_and_back_like_a_revert() {
    let (p, recursor) = setup("move").await;
    let first = p.port();
    let second = free_port();
    let doc = |port: u16| {
        kowabunga_model::Document::parse(
            signed_doc(port, recursor.addr).as_bytes(),
            kowabunga_model::Format::Toml,
        )
        .unwrap()
    };
    use kowabunga_model::Reconciler;
    for port in [second, first, second, first] {
        let desired = doc(port);
        let planned = p.reconciler.plan(&desired, None).await.unwrap();
        p.reconciler.apply(planned.payload).await.unwrap();
        p.reconciler.check(&desired).await.unwrap();
        let d = dig_async(port, "ntp.infra.acme.local", "A", &[]).await;
        assert_eq!(d.answers, ["A 10.0.0.3"], "{}", d.raw);
        let other = if port == first { second } else { first };
        let d = dig_async(other, "ntp.infra.acme.local", "A", &["+tcp"]).await;
        assert!(
            d.answers.is_empty(),
            "old port {other} still answers: {}",
            d.raw
        );
    }
}
