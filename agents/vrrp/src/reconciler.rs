//! The `vrrp` reconciler: validate and plan check `[vrrp]` against `[network]` and
//! render keepalived's file; the rest is the daemons reconciler's (check mode, write
//! when changed, reload through systemd; stop and remove when no instance is left).

use std::path::PathBuf;

use kowabunga_daemons::{Bus, DaemonsPlan, DaemonsReconciler, KEEPALIVED, SECTION as DAEMONS};
use kowabunga_model::{Document, Planned, ReconcileError, Reconciler};

use crate::keepalived;
use crate::model::{self, VrrpSection};

/// Drives keepalived from the documents' `[vrrp]`.
pub struct VrrpReconciler {
    daemons: DaemonsReconciler,
}

impl VrrpReconciler {
    /// keepalived's file goes to `dir/keepalived.conf` (the image's keepalived.service
    /// reads it there: overlays/kiwi); keepalived is reloaded on the system bus.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            daemons: DaemonsReconciler::new(dir, vec![KEEPALIVED]),
        }
    }

    /// The same on another bus (tests).
    pub fn on_bus(dir: impl Into<PathBuf>, bus: Bus) -> Self {
        Self {
            daemons: DaemonsReconciler::on_bus(dir, vec![KEEPALIVED], bus),
        }
    }
}

/// `desired` with keepalived's file in the daemons table: the rendered `[vrrp]`, or no
/// file when it has no instance.
fn with_keepalived(desired: &Document) -> Result<Document, ReconcileError> {
    let config = model::effective(desired).map_err(ReconcileError::invalid)?;
    let mut table = toml::Table::new();
    if let Some(config) = config {
        table.insert(
            KEEPALIVED.name.to_owned(),
            toml::Value::String(keepalived::render(&config)),
        );
    }
    let mut doc = desired.clone();
    doc.set_pushed(DAEMONS, table);
    Ok(doc)
}

impl Reconciler for VrrpReconciler {
    type Plan = DaemonsPlan;

    fn name(&self) -> &'static str {
        model::SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        model::effective(desired)
            .map(drop)
            .map_err(ReconcileError::invalid)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(model::SECTION, schemars::schema_for!(VrrpSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DaemonsPlan>, ReconcileError> {
        self.daemons.plan(&with_keepalived(desired)?, None).await
    }

    async fn apply(&self, plan: DaemonsPlan) -> Result<(), ReconcileError> {
        self.daemons.apply(plan).await
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        self.daemons.check(&with_keepalived(desired)?).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    fn doc(vrrp: &str) -> Document {
        Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n\
                 [[network.links]]\nname = \"eth1\"\naddresses = [\"10.0.0.2/24\"]\n{vrrp}"
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    const ONE: &str = "[vrrp]\npriority = 100\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 7\nvips = [\"10.0.0.1/24\"]\n";

    #[tokio::test]
    async fn plans_keepalived_from_the_section_and_refuses_a_bad_one_at_plan() {
        let dir = tempfile::tempdir().unwrap();
        let r = VrrpReconciler::on_bus(dir.path(), Bus::Address("unix:path=/nonexistent".into()));
        assert_eq!(r.name(), "vrrp");
        let planned = r.plan(&doc(ONE), None).await.unwrap();
        assert_eq!(planned.actions.len(), 1, "{:?}", planned.actions);
        assert!(
            planned.actions[0].0.starts_with("write keepalived.conf"),
            "{:?}",
            planned.actions
        );
        let text = String::from_utf8(planned.artifacts[0].contents.clone()).unwrap();
        assert!(text.contains("vrrp_instance eth1_7"), "{text}");
        // No section: nothing to write, nothing to stop (no file yet).
        assert!(r.plan(&doc(""), None).await.unwrap().actions.is_empty());
        // Refused at validate and plan alike, nothing written.
        let bad = doc(
            "[vrrp]\npriority = 100\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 7\nvips = [\"10.9.0.1/24\"]\n",
        );
        let err = r.validate(&bad).unwrap_err().to_string();
        assert!(err.contains("outside every subnet of link eth1"), "{err}");
        assert!(r.plan(&bad, None).await.is_err());
        assert!(!dir.path().join("keepalived.conf").exists());
        let schemas = r.section_schemas();
        assert_eq!(schemas[0].0, "vrrp");
    }
}
