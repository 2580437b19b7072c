//! Test support shared by the section modules' tests.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What another component does with a section value it builds in code: turn it into a
/// `toml::Table` and hand it to the pipeline, which reads it back as a pushed table
/// (`Document::pushed`) or, once written out, as a document's section
/// (`Document::section`). Both must give back the value.
pub(crate) fn assert_round_trips<T>(section: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let table = toml::Table::try_from(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    let mut doc = crate::Document::empty("node-1");
    doc.set_pushed(section, table.clone());
    let back: T = doc.pushed(section).unwrap().unwrap();
    assert_eq!(&back, value, "{table}");

    let text = toml::to_string(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(
        toml::from_str::<toml::Table>(&text).unwrap(),
        table,
        "{text}"
    );
    let mut outer = toml::Table::new();
    outer.insert("version".into(), 1.into());
    outer.insert("node".into(), "node-1".into());
    outer.insert("issued_at".into(), "2026-01-01T00:00:00Z".into());
    outer.insert("expires_at".into(), "2027-01-01T00:00:00Z".into());
    outer.insert(section.into(), toml::Value::Table(table));
    let text = toml::to_string(&outer).unwrap();
    let doc = crate::Document::parse(text.as_bytes(), crate::Format::Toml)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    let back: T = doc.section(section).unwrap().unwrap();
    assert_eq!(&back, value, "{text}");
}
