//! OS update artifacts as `scripts/make-update.sh` lays them out (`SHA256SUMS` signed by
//! the real `minisign`), served by the testkit's lying file server, for the update
//! tests.

use std::collections::BTreeMap;

pub use kowabunga_testkit::file_server::{Server, content, sha256_hex};

use super::Key;

pub const ROOT_UUID: &str = "238d195d-61dc-8f7b-3836-d7ab7a183030";
pub const VERITY_UUID: &str = "142af3d8-ffa5-6bd1-51ea-261d15c07d07";

/// The artifacts' names as served (`SHA256SUMS`): UKI, root, verity.
pub fn names(role: &str, version: &str, arch: &str) -> [String; 3] {
    let base = format!("kowabunga-{role}_{version}_{arch}");
    [
        format!("{base}.efi.zst"),
        format!("{base}.root.{ROOT_UUID}.raw.zst"),
        format!("{base}.verity.{VERITY_UUID}.raw.zst"),
    ]
}

/// The name an artifact is unpacked to in the staging directory.
pub fn staged(name: &str) -> &str {
    name.strip_suffix(".zst").unwrap_or(name)
}

/// Serves artifacts named for `role`/`version`/`arch`, zstd-compressed as
/// `scripts/make-update.sh` makes them, and their `SHA256SUMS` signed by `key`;
/// returns the unpacked contents by staged name. The root has a run of zeros, as a
/// slot has (its holes once unpacked).
pub fn publish_version(
    server: &Server,
    key: &Key,
    role: &str,
    version: &str,
    arch: &str,
) -> BTreeMap<String, Vec<u8>> {
    let mut sums = String::new();
    let mut contents = BTreeMap::new();
    for (i, name) in names(role, version, arch).iter().enumerate() {
        let mut raw = content(i, 50_000 + i * 1000);
        if i == 1 {
            raw.resize(raw.len() + 256 * 1024, 0);
            raw.extend(content(7, 3000));
        }
        let body = zstd::bulk::compress(&raw, 3).unwrap();
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&body)));
        server.put(name, body);
        contents.insert(staged(name).to_owned(), raw);
    }
    server.put("SHA256SUMS.minisig", key.sign(sums.as_bytes()));
    server.put("SHA256SUMS", sums.into_bytes());
    contents
}

/// Serves `body` as `name`, as it is, with a `SHA256SUMS` that matches it, signed by
/// `key`: an artifact that is signed but wrong in its content.
pub fn republish(server: &Server, key: &Key, name: &str, body: Vec<u8>) {
    let mut sums =
        String::from_utf8(server.files.lock().unwrap()["SHA256SUMS"].body.clone()).unwrap();
    let old = sha256_hex(&server.files.lock().unwrap()[name].body);
    sums = sums.replace(&old, &sha256_hex(&body));
    server.put(name, body);
    server.put("SHA256SUMS.minisig", key.sign(sums.as_bytes()));
    server.put("SHA256SUMS", sums.into_bytes());
}
