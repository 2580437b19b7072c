//! Benchmark body for `scripts/bench-network.sh` (run it there, as root, inside a
//! fresh network namespace).
//!
//! `bench-network [N]` reconciles the current namespace from empty to N bridges, N veth
//! pairs (one end a port of each bridge), 2N addresses and N routes, and prints the
//! time of plan (observe + diff), apply, and a second plan (which must be empty).
//! `bench-network --ip-batch [N]` prints the same operations as an `ip -batch` script.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: panics are fine

use std::time::Instant;

use kowabunga_model::{Document, Format, Reconciler};
use kowabunga_network::NetworkReconciler;

fn document(n: usize) -> String {
    let mut s = String::from(
        "version = 1\nnode = \"bench\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[network]\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "[[network.links]]\nname = \"br{i}\"\nkind = \"bridge\"\nports = [\"va{i}\"]\naddresses = [\"10.100.{i}.1/24\"]\n\
             [[network.links]]\nname = \"va{i}\"\nkind = \"veth\"\npeer = \"vb{i}\"\n\
             [[network.links]]\nname = \"vb{i}\"\nkind = \"veth\"\npeer = \"va{i}\"\naddresses = [\"10.101.{i}.1/24\"]\n\
             [[network.routes]]\nto = \"172.16.{i}.0/24\"\nvia = \"10.100.{i}.2\"\ndev = \"br{i}\"\n"
        ));
    }
    s
}

fn ip_batch(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "link add br{i} type bridge\nlink add va{i} type veth peer name vb{i}\nlink set va{i} master br{i}\n\
             addr add 10.100.{i}.1/24 dev br{i}\naddr add 10.101.{i}.1/24 dev vb{i}\n\
             link set br{i} up\nlink set va{i} up\nlink set vb{i} up\n"
        ));
    }
    for i in 0..n {
        s.push_str(&format!(
            "route add 172.16.{i}.0/24 via 10.100.{i}.2 dev br{i} proto static\n"
        ));
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batch = args.iter().any(|a| a == "--ip-batch");
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    assert!(n <= 250, "N must be at most 250 (one /24 per item)");
    if batch {
        print!("{}", ip_batch(n));
        return;
    }
    let doc = Document::parse(document(n).as_bytes(), Format::Toml).unwrap();
    let net = NetworkReconciler::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t0 = Instant::now();
        let plan = net.plan(&doc, None).await.unwrap();
        let t1 = Instant::now();
        let actions = plan.actions.len();
        net.apply(plan.payload).await.unwrap();
        let t2 = Instant::now();
        let again = net.plan(&doc, Some(&doc)).await.unwrap();
        let t3 = Instant::now();
        assert!(again.actions.is_empty(), "second plan not empty: {:?}", &again.actions[..3.min(again.actions.len())]);
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        println!(
            "ours: plan {:.1} ms, apply {:.1} ms, total {:.1} ms ({actions} actions, {} netlink requests); re-plan {:.1} ms, 0 actions",
            ms(t0, t1),
            ms(t1, t2),
            ms(t0, t2),
            net.netlink_requests(),
            ms(t2, t3)
        );
        println!("ours_total_ms={:.1}", ms(t0, t2));
    });
}
