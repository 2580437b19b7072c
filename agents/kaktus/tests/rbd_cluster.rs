//! The `rbd` wrapper against a real Ceph cluster: `scripts/ceph-single-node.sh start
//! DIR`, then `KOWABUNGA_CEPH_ENV=DIR/env cargo test -p kaktus --test rbd_cluster`.
//! Without that variable the test says so and passes (the fast tier has no cluster).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use kaktus::rbd::{Cluster, Rbd, RbdError};

/// `KEY=value` lines of the script's env file.
fn env_file() -> Option<BTreeMap<String, String>> {
    let path = std::env::var_os("KOWABUNGA_CEPH_ENV")?;
    let text = std::fs::read_to_string(&path).unwrap();
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

#[tokio::test]
async fn templates_clones_and_refusals_on_a_real_cluster() {
    let Some(env) = env_file() else {
        eprintln!(
            "KOWABUNGA_CEPH_ENV not set: no cluster to test against (see docs/ceph-single-node.md)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("client.key");
    std::fs::write(&key_file, &env["CEPH_CLIENT_KEY"]).unwrap();
    let rbd = Rbd::new(Cluster {
        monitors: vec![format!("{}:{}", env["CEPH_MON_ADDR"], env["CEPH_MON_PORT"])],
        client: env["CEPH_ID"].clone(),
        key_file,
    });
    let pool = env["CEPH_POOL"].as_str();
    let tag = format!("t{:08x}", fastrand::u32(..));
    let (template, os, work) = (
        format!("{tag}-tpl"),
        format!("{tag}-os"),
        format!(".kaktus-work-{tag}"),
    );

    assert_eq!(rbd.info(pool, &template).await.unwrap(), None);
    // A template: imported under a work name, snapshotted, renamed.
    let raw = dir.path().join("template.raw");
    std::fs::write(&raw, vec![7u8; 4 << 20]).unwrap();
    rbd.import(pool, &work, &raw, Duration::from_secs(120))
        .await
        .unwrap();
    rbd.snapshot_protected(pool, &work, "kaktus-template")
        .await
        .unwrap();
    rbd.rename(pool, &work, &template).await.unwrap();
    let info = rbd.info(pool, &template).await.unwrap().unwrap();
    assert_eq!((info.size, info.snapshot_count), (4 << 20, 1));

    // An OS volume: a clone, grown.
    rbd.clone_from(pool, &template, "kaktus-template", &os)
        .await
        .unwrap();
    rbd.resize(pool, &os, 8 << 20).await.unwrap();
    let info = rbd.info(pool, &os).await.unwrap().unwrap();
    assert_eq!(info.size, 8 << 20);
    assert_eq!(info.parent.unwrap().image, template);
    let children = rbd
        .children(pool, &template, "kaktus-template")
        .await
        .unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].image, os);
    assert!(rbd.list(pool).await.unwrap().contains(&os));

    // Refusals, told apart.
    let err = rbd.rename(pool, &os, &template).await.unwrap_err();
    assert!(matches!(err, RbdError::Exists { .. }), "{err}");
    let err = rbd.remove(pool, &template).await.unwrap_err();
    assert!(matches!(err, RbdError::Busy { .. }), "{err}");
    let err = rbd
        .remove_snapshot(pool, &template, "kaktus-template")
        .await
        .unwrap_err();
    assert!(!matches!(err, RbdError::NotFound { .. }), "{err}");
    let err = rbd.resize(pool, &os, 1 << 20).await.unwrap_err();
    assert!(err.to_string().contains("shrink"), "{err}");
    let usage = rbd.usage(pool).await.unwrap();
    assert!(usage.max_avail > 0);

    // Clean up: the clone, then the template's snapshot, then the template.
    rbd.remove(pool, &os).await.unwrap();
    rbd.remove_snapshot(pool, &template, "kaktus-template")
        .await
        .unwrap();
    rbd.remove(pool, &template).await.unwrap();
    assert_eq!(rbd.info(pool, &template).await.unwrap(), None);
    let err = rbd.remove(pool, &template).await.unwrap_err();
    assert!(matches!(err, RbdError::NotFound { .. }), "{err}");
}
