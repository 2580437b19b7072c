//! The `kaktus` binary: the role's document checks and schema (the shared command line
//! of the agent core, with Kaktus' reconcilers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hypervisor.toml");

fn kaktus(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kaktus"))
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_documented_example_is_valid() {
    let (code, out) = kaktus(&["check", EXAMPLE]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[kaktus]: valid") && out.contains("[network]: valid"),
        "{out}"
    );
}

#[test]
fn bad_pools_are_rejected_offline() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    for (from, to, expected) in [
        (
            "backend = \"local\"",
            "backend = \"rbd\"",
            "`path` is for backend = \"local\"",
        ),
        (
            "secret_uuid = \"6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10\"",
            "secret_uuid = \"not-a-uuid\"",
            "is not a UUID",
        ),
        (
            "path = \"/var/lib/kaktus/pools/local\"",
            "path = \"pools/local\"",
            "must be an absolute directory path",
        ),
        (
            "libvirt_uri = \"qemu:///system\"",
            "libvirt_uri = \"\"",
            "is not a libvirt URI",
        ),
    ] {
        let file = dir.path().join("doc.toml");
        std::fs::write(&file, example.replace(from, to)).unwrap();
        let (code, out) = kaktus(&["check", file.to_str().unwrap()]);
        assert_eq!(code, 3, "{to}: {out}");
        assert!(out.contains(expected), "{to}: {out}");
    }
}

#[test]
fn schema_describes_the_kaktus_section() {
    let (code, out) = kaktus(&["schema"]);
    assert_eq!(code, 0, "{out}");
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = schema.to_string();
    assert!(schema["properties"]["kaktus"].is_object(), "{text}");
    assert!(
        text.contains("libvirt_uri")
            && text.contains("template_max_bytes")
            && text.contains("\"rbd\""),
        "{text}"
    );
}
