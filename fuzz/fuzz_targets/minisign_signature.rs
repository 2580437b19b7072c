//! A `.minisig` file as served next to a document: decoded and checked against a
//! trusted key. The first byte splits the input into signature and document.
#![no_main]

use std::sync::OnceLock;

use kowabunga_agent::trust::TrustPolicy;
use libfuzzer_sys::fuzz_target;

/// A fixed public key (minisign's format); the fuzzer cannot sign, it can only try.
const KEY: &str = "RWQbQOy0l1sIoyafsuyPp5eQS+iCyf/cAVMifxtZ/v91453LTTJcs/Gg";

fn policy() -> &'static TrustPolicy {
    static POLICY: OnceLock<TrustPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        TrustPolicy::load(std::path::Path::new("/nonexistent"), &[KEY.to_owned()], false)
            .expect("the fixed key parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let (signature, document) = rest.split_at(at);
    // Nothing the fuzzer makes can carry a valid signature of this key.
    assert!(policy().verify(document, Some(signature)).is_err());
});
