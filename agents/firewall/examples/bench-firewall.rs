//! Benchmark body for `scripts/bench-network.sh` (run it there, as root, inside a
//! fresh network namespace).
//!
//! `bench-firewall [N] [--script FILE]` reconciles N filter rules from nothing, as the
//! pipeline does when the firewall is the generation's first change: render + list
//! (plan) + `nft -f` (apply; the load is the kernel's check), and prints the times.
//! Then, with the tables deleted by hand, a ruleset this process loaded before (drift
//! put back, a revert) is reconciled again. Last, another new ruleset with the
//! precheck the pipeline runs when an earlier reconciler changes the node first:
//! plan, `nft -c`, `nft -f`. With `--script FILE` it also writes the first rendered
//! script there, for timing a bare `nft -f FILE` on the same ruleset.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: panics are fine

use std::time::Instant;

use kowabunga_firewall::{FirewallReconciler, desired, render};
use kowabunga_model::{Document, Format, Reconciler};

fn document(n: usize, tag: &str) -> String {
    let mut s = String::from(
        "version = 1\nnode = \"bench\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n\
         [network]\n[[network.links]]\nname = \"eth0\"\n[[network.links]]\nname = \"eth1\"\n\
         [firewall]\ninput = \"drop\"\nforward = \"drop\"\n",
    );
    for i in 0..n {
        let (chain, iface) = if i % 2 == 0 {
            ("input", "iif = \"eth0\"")
        } else {
            ("forward", "iif = \"eth1\"\noif = \"eth0\"")
        };
        s.push_str(&format!(
            "[[firewall.rules]]\nchain = \"{chain}\"\n{iface}\nsaddr = \"10.{}.{}.0/24\"\nproto = \"tcp\"\ndport = {}\naction = \"accept\"\ncomment = \"{tag} {i}\"\n",
            i / 256,
            i % 256,
            1000 + i
        ));
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(500);
    let script_out = args
        .iter()
        .position(|a| a == "--script")
        .and_then(|i| args.get(i + 1));
    let doc = Document::parse(document(n, "rule").as_bytes(), Format::Toml).unwrap();
    let other = Document::parse(document(n, "other").as_bytes(), Format::Toml).unwrap();
    let fw = FirewallReconciler::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t0 = Instant::now();
        let rendered = render(desired(&doc).unwrap().as_ref());
        let t1 = Instant::now();
        if let Some(path) = script_out {
            std::fs::write(path, &rendered.script).unwrap();
        }
        let t2 = Instant::now();
        let plan = fw.plan(&doc, None).await.unwrap();
        let t3 = Instant::now();
        fw.apply(plan.payload).await.unwrap();
        let t4 = Instant::now();
        // The confirm window's check: the first observation after the load.
        fw.check(&doc).await.unwrap();
        let t_check = Instant::now();
        let again = fw.plan(&doc, Some(&doc)).await.unwrap();
        let t5 = Instant::now();
        assert!(again.actions.is_empty());
        // Drift: the tables are gone; put them back (known ruleset: no nft -c).
        let out = std::process::Command::new(fw.nft_bin())
            .args(["delete", "table", "inet", "kowabunga"])
            .status()
            .unwrap();
        assert!(out.success());
        let t6 = Instant::now();
        let plan = fw.plan(&doc, Some(&doc)).await.unwrap();
        assert!(!plan.actions.is_empty());
        fw.apply(plan.payload).await.unwrap();
        let t7 = Instant::now();
        // Another new ruleset after an earlier reconciler's change: prechecked.
        let plan = fw.plan(&other, Some(&doc)).await.unwrap();
        fw.precheck(&plan.payload).await.unwrap();
        fw.apply(plan.payload).await.unwrap();
        let t8 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        println!(
            "ours: render {:.1} ms; plan (parse + validate + render + list) {:.1} ms; apply (nft -f) {:.1} ms; total {:.1} ms ({} rules); first check (list) {:.1} ms; re-plan {:.1} ms, 0 actions; put back a known ruleset (plan + apply) {:.1} ms; another ruleset with the precheck (plan + nft -c + apply) {:.1} ms; {} checks, {} loads",
            ms(t0, t1),
            ms(t2, t3),
            ms(t3, t4),
            ms(t2, t4),
            rendered.rules,
            ms(t4, t_check),
            ms(t_check, t5),
            ms(t6, t7),
            ms(t7, t8),
            fw.checks(),
            fw.loads()
        );
        println!("ours_total_ms={:.1}", ms(t2, t4));
        println!("ours_known_ms={:.1}", ms(t6, t7));
        println!("ours_apply_ms={:.1}", ms(t3, t4));
        println!("ours_prechecked_ms={:.1}", ms(t7, t8));
    });
}
