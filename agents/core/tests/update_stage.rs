//! Staging an OS update (`kowabunga_agent::update`): a loopback HTTP server serves one
//! version's artifacts as `scripts/make-update.sh` lays them out, `SHA256SUMS` signed
//! by the real `minisign` CLI. Each refusal leaves the staging directory empty.
//!
//! The server (`support::artifacts`) can lie: announce a `Content-Length` and close the
//! connection halfway (a truncated download).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use kowabunga_agent::trust::TrustPolicy;
use kowabunga_agent::update::{Kind, UpdateConfig, UpdateError, stage};
use support::Key;
use support::artifacts::{
    ROOT_UUID, Server, names, publish_version, republish, staged as staged_name,
};

/// `publish_version` for 0.1.1, the version every test here asks for.
fn publish(server: &Server, key: &Key, role: &str, arch: &str) -> BTreeMap<String, Vec<u8>> {
    publish_version(server, key, role, "0.1.1", arch)
}

struct Setup {
    _tmp: tempfile::TempDir,
    server: Server,
    key: Key,
    trust: TrustPolicy,
    config: UpdateConfig,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let key = Key::generate(tmp.path(), "trusted");
    let keys = tmp.path().join("trusted-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(key.public_file(), keys.join("update.pub")).unwrap();
    let trust = TrustPolicy::load(&keys, &[], false).unwrap();
    let server = Server::start().await;
    let mut config = UpdateConfig::new(
        &server.base,
        "kiwi",
        "x86-64",
        "0.1.0",
        "0.1.1",
        &tmp.path().join("staging"),
    );
    config.insecure = true;
    Setup {
        _tmp: tmp,
        server,
        key,
        trust,
        config,
    }
}

fn staged_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_signed_version_is_staged_verified_and_complete() {
    let s = setup().await;
    let contents = publish(&s.server, &s.key, "kiwi", "x86-64");
    // Leftovers of an earlier attempt go.
    std::fs::create_dir_all(&s.config.staging).unwrap();
    std::fs::write(s.config.staging.join("stale.raw"), b"old").unwrap();
    let staged = stage(&s.config, &s.trust)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(staged.version, "0.1.1");
    let kinds: Vec<&Kind> = staged.artifacts.iter().map(|a| &a.kind).collect();
    assert!(kinds.contains(&&Kind::Uki));
    assert!(kinds.contains(&&Kind::Root {
        uuid: ROOT_UUID.into()
    }));
    let mut expected: Vec<String> = contents.keys().cloned().collect();
    expected.extend(["SHA256SUMS".into(), "SHA256SUMS.minisig".into()]);
    expected.sort();
    assert_eq!(staged_files(&s.config.staging), expected);
    for (name, body) in &contents {
        assert!(
            std::fs::read(s.config.staging.join(name)).unwrap() == *body,
            "{name} is not the unpacked artifact"
        );
    }
    let served: u64 = names("kiwi", "0.1.1", "x86-64")
        .iter()
        .map(|n| s.server.files.lock().unwrap()[n].body.len() as u64)
        .sum();
    assert_eq!(staged.bytes, served);
    assert_eq!(
        staged.unpacked_bytes,
        contents.values().map(|b| b.len() as u64).sum::<u64>()
    );
    // The root's zeros are holes: sysupdate reads them back as zeros.
    let [_, root, _] = names("kiwi", "0.1.1", "x86-64");
    let root_file = std::fs::metadata(s.config.staging.join(staged_name(&root))).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        root_file.blocks() * 512 < root_file.len() - 128 * 1024,
        "{} bytes allocated for {}",
        root_file.blocks() * 512,
        root_file.len()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.config.staging)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// Runs `stage` expecting a refusal; the staging directory must be left empty.
async fn refused(s: &Setup) -> UpdateError {
    let e = match stage(&s.config, &s.trust).await {
        Ok(staged) => panic!("staged {:?}", staged.artifacts),
        Err(e) => e,
    };
    assert_eq!(
        staged_files(&s.config.staging),
        Vec::<String>::new(),
        "after: {e}"
    );
    e
}

#[tokio::test]
async fn an_unsigned_sums_file_is_refused() {
    let s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    s.server.files.lock().unwrap().remove("SHA256SUMS.minisig");
    let e = refused(&s).await;
    assert!(matches!(e, UpdateError::Unsigned), "{e}");
}

#[tokio::test]
async fn a_sums_file_signed_by_another_key_is_refused() {
    let s = setup().await;
    let other = Key::generate(s._tmp.path(), "other");
    publish(&s.server, &other, "kiwi", "x86-64");
    let e = refused(&s).await;
    assert!(matches!(e, UpdateError::Signature(_)), "{e}");
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[tokio::test]
async fn a_file_whose_sha256_differs_is_refused() {
    let s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    let [_, root, _] = names("kiwi", "0.1.1", "x86-64");
    s.server.files.lock().unwrap().get_mut(&root).unwrap().body[1000] ^= 1;
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::HashMismatch { name, .. } if *name == root),
        "{e}"
    );
}

#[tokio::test]
async fn a_truncated_download_is_refused() {
    let s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    let [uki, _, _] = names("kiwi", "0.1.1", "x86-64");
    let served = s.server.files.lock().unwrap()[&uki].body.len() as u64;
    s.server.truncate(&uki, 20_000);
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::Truncated { name, expected, received: 20_000 } if *name == uki && *expected == served),
        "{e}"
    );
}

#[tokio::test]
async fn a_signed_artifact_that_does_not_unpack_or_unpacks_too_large_is_refused() {
    let mut s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    let [uki, root, _] = names("kiwi", "0.1.1", "x86-64");
    // Signed, and its sha256 matches: not a zstd stream all the same.
    republish(
        &s.server,
        &s.key,
        &uki,
        b"MZ a PE file left uncompressed".to_vec(),
    );
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::Unpack { name, .. } if *name == uki),
        "{e}"
    );
    assert!(e.to_string().contains("not a complete zstd stream"), "{e}");
    // A few hundred bytes that unpack to 64 MiB, over the cap.
    publish(&s.server, &s.key, "kiwi", "x86-64");
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    republish(&s.server, &s.key, &root, bomb);
    s.config.max_file = 1 << 20;
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::Unpack { name, .. } if *name == root),
        "{e}"
    );
    assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
}

#[tokio::test]
async fn a_file_over_the_size_cap_is_refused() {
    let mut s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    s.config.max_file = 50_500;
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::TooLarge { limit: 50_500, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn artifacts_of_another_role_or_architecture_are_refused() {
    let s = setup().await;
    publish(&s.server, &s.key, "kaktus", "x86-64");
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::ForeignRole { found, .. } if found == "kaktus"),
        "{e}"
    );
    // Only SHA256SUMS and its signature were fetched: no artifact of the wrong role.
    assert_eq!(s.server.request_count(), 2);

    let s = setup().await;
    publish(&s.server, &s.key, "kiwi", "arm64");
    let e = refused(&s).await;
    assert!(
        matches!(&e, UpdateError::ForeignArch { found, .. } if found == "arm64"),
        "{e}"
    );
}

#[tokio::test]
async fn a_downgrade_or_an_unparsable_version_is_refused_before_any_request() {
    let mut s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    s.config.running_version = "0.2.0".into();
    let e = refused(&s).await;
    assert!(matches!(e, UpdateError::Downgrade { .. }), "{e}");
    s.config.version = "0.1.1+evil".into();
    let e = refused(&s).await;
    assert!(matches!(e, UpdateError::InvalidVersion(_)), "{e}");
    assert_eq!(s.server.request_count(), 0);
    // Allowed explicitly, the older version stages.
    s.config.version = "0.1.1".into();
    s.config.allow_downgrade = true;
    stage(&s.config, &s.trust)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn plain_http_is_refused_outside_insecure_mode() {
    let mut s = setup().await;
    publish(&s.server, &s.key, "kiwi", "x86-64");
    s.config.insecure = false;
    let e = refused(&s).await;
    assert!(e.to_string().contains("plain http"), "{e}");
    assert_eq!(s.server.request_count(), 0);
}
