//! A desired-state document as pulled (YAML, local files), then every section's strict parse and
//! validation, as `check` and plan run them (no I/O).
#![no_main]

use libfuzzer_sys::fuzz_target;
use kowabunga_model::{Document, Format, Timestamp};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = Document::parse(data, Format::Yaml) {
        let _ = doc.header.check_validity(Timestamp::now());
        let _ = kowabunga_network::desired(&doc);
        let _ = kowabunga_firewall::desired(&doc);
        if let Ok(config) = kowabunga_dns::model::effective(&doc) {
            let _ = kowabunga_dns::Zones::compile(&config);
        }
    }
});
