//! `kiwi schema`: the JSON Schema of kiwi's document, as kept in
//! `docs/schema/kiwi.schema.json`, checked by an independent validator (the
//! `jsonschema` crate, which shares no code with schemars that generates it): valid
//! against its meta-schema, accepts every example document in docs/ and README.md,
//! refuses the known-bad documents of the model's tests. Every document it is shown,
//! `kiwi check` judges the same way. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kiwi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiwi"))
        .args(args)
        .output()
        .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The JSON view of a TOML document, as taplo and Even Better TOML validate it
/// (datetimes are strings).
fn json_of_toml(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(json_of_toml).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, json_of_toml(v)))
                .collect(),
        ),
    }
}

fn parse(text: &str) -> Value {
    json_of_toml(toml::Value::Table(toml::from_str(text).unwrap()))
}

fn schema() -> Value {
    let path = repo().join("docs/schema/kiwi.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap()
}

/// Every example document: `docs/examples/*.toml`, and the ```toml blocks of README.md
/// and docs/*.md that are whole documents (they start with `version =`).
fn examples() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo().join("docs/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            found.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let mut pages = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(path);
        }
    }
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut block: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim_start().starts_with("```toml") => block = Some(String::new()),
                None => {}
                Some(body) if line.trim_start().starts_with("```") => {
                    let first = body
                        .lines()
                        .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
                    if first.is_some_and(|l| l.starts_with("version =")) {
                        found.push((format!("{}:{}", page.display(), n + 1), body.clone()));
                    }
                    block = None;
                }
                Some(body) => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(found.len() >= 2, "examples found: {found:?}");
    found
}

/// A valid header valid now (the examples' fixed dates would expire some day).
fn head(version: u64) -> String {
    format!(
        "version = {version}\nnode = \"kiwi-01\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2999-01-01T00:00:00Z\n"
    )
}

/// `text` with its header dates replaced by [`head`]'s.
fn valid_now(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("issued_at") {
                "issued_at = 2026-01-01T00:00:00Z".to_owned()
            } else if l.starts_with("expires_at") {
                "expires_at = 2999-01-01T00:00:00Z".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `kiwi check` on `text` (no key: the signature is not the point here).
fn check(dir: &Path, name: &str, text: &str) -> Output {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    kiwi(&["check", &file.display().to_string()])
}

#[test]
fn docs_schema_is_what_kiwi_schema_prints() {
    let out = kiwi(&["schema"]);
    assert!(out.status.success(), "{}", said(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let kept = std::fs::read_to_string(repo().join("docs/schema/kiwi.schema.json")).unwrap();
    assert!(
        printed == kept,
        "docs/schema/kiwi.schema.json is stale: regenerate it with\n  \
         cargo run -q -p kiwi -- schema > docs/schema/kiwi.schema.json"
    );
}

#[test]
fn schema_is_valid_json_schema_and_names_every_section_kiwi_reads() {
    let schema = schema();
    jsonschema::meta::validate(&schema).unwrap();
    let properties = schema["properties"].as_object().unwrap();
    for key in [
        "version",
        "node",
        "issued_at",
        "expires_at",
        "network",
        "firewall",
        "dns",
        "dhcp",
        "netboot",
    ] {
        assert!(properties.contains_key(key), "no {key} in the schema");
    }
}

#[test]
fn schema_and_check_accept_every_example() {
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    for (i, (source, text)) in examples().into_iter().enumerate() {
        let errors: Vec<String> = validator
            .iter_errors(&parse(&text))
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{source}: {errors:?}");
        let out = check(dir.path(), &format!("example{i}.toml"), &valid_now(&text));
        assert_eq!(out.status.code(), Some(0), "{source}: {}", said(&out));
    }
}

#[test]
fn schema_and_check_refuse_known_bad_documents() {
    let cases: &[(&str, String)] = &[
        // The header errors of agents/model/src/document.rs.
        (
            "missing version",
            "node = \"a\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2999-01-01T00:00:00Z\"\n".into(),
        ),
        (
            "version 0",
            "version = 0\nnode = \"a\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2999-01-01T00:00:00Z\"\n".into(),
        ),
        (
            "empty node",
            "version = 1\nnode = \"\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2999-01-01T00:00:00Z\"\n".into(),
        ),
        (
            "time without offset",
            "version = 1\nnode = \"a\"\nissued_at = \"2026-01-01T00:00:00\"\nexpires_at = \"2999-01-01T00:00:00Z\"\n".into(),
        ),
        (
            "misspelt header key",
            format!("{}verison = 2\n", head(1)),
        ),
        // Sections (agents/model/src/network.rs, firewall.rs, agents/dns).
        (
            "unknown network key",
            format!("{}[network]\nip_fowrard = true\n", head(1)),
        ),
        (
            "link name too long",
            format!("{}[network]\n[[network.links]]\nname = \"a-very-long-name0\"\n", head(1)),
        ),
        (
            "VLAN id out of range",
            format!(
                "{}[network]\n[[network.links]]\nname = \"eth0\"\n[[network.links]]\nname = \"v\"\nkind = \"vlan\"\nparent = \"eth0\"\nid = 5000\n",
                head(1)
            ),
        ),
        (
            "bad prefix",
            format!(
                "{}[network]\n[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/33\"]\n",
                head(1)
            ),
        ),
        (
            "port out of range",
            format!(
                "{}[firewall]\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = 70000\naction = \"accept\"\n",
                head(1)
            ),
        ),
        (
            "unknown firewall action",
            format!(
                "{}[firewall]\n[[firewall.rules]]\nchain = \"input\"\naction = \"allow\"\n",
                head(1)
            ),
        ),
        (
            "unknown dns key",
            format!("{}[dns]\nlisten_adress = \"127.0.0.1\"\n", head(1)),
        ),
        (
            "unknown dhcp key",
            format!("{}[dhcp]\nlease_tme = 600\n", head(1)),
        ),
        (
            "dhcp lease time below a minute",
            format!("{}[dhcp]\nlease_time = 5\n", head(1)),
        ),
        (
            "unknown netboot node key",
            format!(
                "{}[netboot]\n[[netboot.nodes]]\nmac = \"52:54:00:00:00:01\"\nimage = \"k\"\nparams = {{}}\nkernel_arg = []\n",
                head(1)
            ),
        ),
    ];
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for (i, (what, text)) in cases.iter().enumerate() {
        let schema_accepts = validator.is_valid(&parse(text));
        let out = check(dir.path(), &format!("bad{i}.toml"), text);
        if schema_accepts || out.status.code() != Some(3) {
            wrong.push(format!(
                "{what}: schema accepts: {schema_accepts}; check (exit {:?}): {}",
                out.status.code(),
                said(&out).trim()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
