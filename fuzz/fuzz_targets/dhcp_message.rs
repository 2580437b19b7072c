//! A DHCPv4 message from any client on a served link: decoded (or dropped), answered by
//! the lease engine, the reply encoded (with a boot file when the client boots from the
//! network, as the netboot server would give it); never a panic, and every reply
//! decodes again.
#![no_main]

use std::sync::OnceLock;

use dhcproto::Decodable;
use dhcproto::v4::Message;
use kowabunga_dhcp::engine::{Engine, Leases};
use kowabunga_dhcp::model::DhcpConfig;
use kowabunga_dhcp::wire::{self, BootClient, BootFile};
use kowabunga_model::{Document, Format};
use libfuzzer_sys::fuzz_target;

const DOCUMENT: &str = r#"
version = 1
node = "kiwi-fuzz"
issued_at = 2026-01-01T00:00:00Z
expires_at = 2099-01-01T00:00:00Z
[[network.links]]
name = "eth1"
addresses = ["10.0.0.1/24"]
[dhcp]
domain = "acme.local"
ntp = ["10.0.0.3"]
[dhcp.links.eth1]
mtu = 1400
pools = [{ first = "10.0.0.10", last = "10.0.0.12" }]
hosts = [{ mac = "52:54:00:00:00:99", address = "10.0.0.99" }]
routes = [{ to = "10.8.0.0/16", via = "10.0.0.254" }]
"#;

fn config() -> &'static DhcpConfig {
    static CONFIG: OnceLock<DhcpConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let doc = Document::parse(DOCUMENT.as_bytes(), Format::Toml).expect("the fixed document");
        kowabunga_dhcp::model::effective(&doc).expect("the fixed [dhcp]")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(incoming) = wire::decode(data) else {
        return;
    };
    let cfg = &config().links["eth1"];
    let boot = incoming.boot_client.map(|client| BootFile {
        file: match client {
            BootClient::Ipxe => "http://10.0.0.1:9724/netboot/52-54-00-00-00-99.ipxe".into(),
            BootClient::Pxe { .. } => "undionly.kpxe".into(),
        },
    });
    let mut engine = Engine::new(config().clone(), Leases::default());
    // Twice, two seconds apart: past the ping check, and on top of its own effect.
    for now in [1_800_000_000, 1_800_000_002] {
        let outcome = engine.handle("eth1", &incoming.request, now);
        if let Some((bytes, _)) = wire::encode(cfg, &incoming, &outcome.reply, boot.as_ref()) {
            assert!(Message::from_bytes(&bytes).is_ok(), "a reply that does not decode");
        }
    }
});
