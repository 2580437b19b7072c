//! A WebSocket frame from Kahuna (or whoever holds the socket): one request in, at most
//! one reply out, never a panic; a reply always carries the request's id. The first
//! byte picks the service: a generic one (framing), or Kiwi's `Kiwi.*` methods with
//! their params (decoded, checked, turned into a pushed `dns` table).
#![no_main]

use kowabunga_dns::{DnsServer, KiwiService};
use kowabunga_model::Pusher;
use kowabunga_rpc::{Service, dispatch};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Accepts every table, as a pipeline whose plan passes would.
struct Accept;

impl Pusher for Accept {
    async fn push(&self, _section: &'static str, table: toml::Table) -> Result<(), String> {
        // The table must serialise as a generation would store it.
        toml::to_string(&table).map(drop).map_err(|e| e.to_string())
    }
}

struct Echo;

impl Service for Echo {
    fn version(&self) -> String {
        "0.1".into()
    }
    fn methods(&self) -> &'static [&'static str] {
        &["Reload"]
    }
    async fn call(&self, _method: &str, params: Value) -> Result<Value, String> {
        Ok(params)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, frame)) = data.split_first() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let reply = runtime.block_on(async {
        if which % 2 == 0 {
            dispatch(&Echo, "Kiwi", frame).await
        } else {
            let kiwi = KiwiService::new(DnsServer::new(), Accept);
            dispatch(&kiwi, "Kiwi", frame).await
        }
    });
    if let Some(reply) = reply {
        let reply: Value = serde_json::from_slice(&reply).expect("replies are JSON");
        assert!(reply.get("id").is_some_and(Value::is_u64));
    }
});
