//! A DNS message from any client: decoded with hickory-proto and answered from a
//! managed zone set (authoritative data, errors, or "forward"), never a panic; every
//! reply encodes.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::Message;
use kowabunga_dns::{Answer, Zones};
use kowabunga_model::{Document, Format};
use libfuzzer_sys::fuzz_target;

const DOCUMENT: &str = r#"
version = 1
node = "kiwi-fuzz"
issued_at = 2026-01-01T00:00:00Z
expires_at = 2099-01-01T00:00:00Z
[dns.zones."acme.com".records]
"@" = ["10.0.0.1"]
www = ["10.0.0.2", "2001:db8::2"]
mail = ["10.0.0.3"]
"db.eu" = ["10.0.0.4"]
[dns.zones."lab.internal".records]
ns = ["192.168.1.1"]
"#;

fn zones() -> &'static Zones {
    static ZONES: OnceLock<Zones> = OnceLock::new();
    ZONES.get_or_init(|| {
        let doc = Document::parse(DOCUMENT.as_bytes(), Format::Toml).expect("the fixed document");
        let config = kowabunga_dns::model::effective(&doc).expect("the fixed [dns]");
        Zones::compile(&config).expect("the fixed zones")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Message::from_vec(data) else {
        return;
    };
    if let Answer::Reply(reply) = zones().answer(&request) {
        assert!(reply.to_vec().is_ok(), "a reply that does not encode");
    }
});
