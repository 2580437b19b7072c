//! The `ipsec` reconciler: validate and plan check `[ipsec]` against `[network]` and
//! render swanctl.conf; the rest is the daemons reconciler's (write when changed, 0600,
//! reload charon through systemd and wait for `swanctl --load-all`; stop charon and
//! remove the file when no tunnel is left).

use std::path::PathBuf;

use kowabunga_daemons::{Bus, DaemonsPlan, DaemonsReconciler, SECTION as DAEMONS, STRONGSWAN};
use kowabunga_model::{Document, Planned, ReconcileError, Reconciler};

use crate::model::{self, IpsecSection};
use crate::swanctl;

/// Drives strongSwan from the documents' `[ipsec]`.
pub struct IpsecReconciler {
    daemons: DaemonsReconciler,
}

impl IpsecReconciler {
    /// swanctl.conf goes to `dir/swanctl.conf` (the image's strongswan.service loads it
    /// there: overlays/kiwi); charon is reloaded on the system bus.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::on_bus(dir, Bus::System)
    }

    /// The same on another bus (tests).
    pub fn on_bus(dir: impl Into<PathBuf>, bus: Bus) -> Self {
        Self {
            daemons: DaemonsReconciler::on_bus(dir, vec![STRONGSWAN], bus),
        }
    }
}

/// `desired` with strongSwan's file in the daemons table: the rendered `[ipsec]`, or
/// no file when it has no tunnel.
fn with_daemons(desired: &Document) -> Result<Document, ReconcileError> {
    let conns = model::effective(desired).map_err(ReconcileError::invalid)?;
    let mut table = toml::Table::new();
    if let Some(conns) = conns {
        table.insert(
            STRONGSWAN.name.to_owned(),
            toml::Value::String(swanctl::render(&conns)),
        );
    }
    let mut doc = desired.clone();
    doc.set_pushed(DAEMONS, table);
    Ok(doc)
}

impl Reconciler for IpsecReconciler {
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
        vec![(model::SECTION, schemars::schema_for!(IpsecSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DaemonsPlan>, ReconcileError> {
        self.daemons.plan(&with_daemons(desired)?, None).await
    }

    async fn apply(&self, plan: DaemonsPlan) -> Result<(), ReconcileError> {
        self.daemons.apply(plan).await
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        self.daemons.check(&with_daemons(desired)?).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    fn doc(ipsec: &str) -> Document {
        Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n\
                 [[network.links]]\nname = \"wan\"\naddresses = [\"203.0.113.1/24\"]\n\
                 [[network.links]]\nname = \"ipsec0\"\nkind = \"xfrm\"\nparent = \"wan\"\nif_id = 1\n{ipsec}"
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    const ONE: &str = "[ipsec.right]\nlink = \"ipsec0\"\nlocal_address = \"203.0.113.1\"\nremote_address = \"203.0.113.2\"\nlocal_subnets = [\"10.71.0.0/24\"]\nremote_subnets = [\"10.72.0.0/24\"]\npre_shared_key = \"a key of sixteen+\"\n";

    /// The plan writes swanctl.conf (its artifact carries the key: the daemons
    /// reconciler writes it 0600; the action line does not); a bad section is refused
    /// at plan with nothing planned; no section plans nothing.
    #[tokio::test]
    async fn plans_swanctl_from_the_section_and_refuses_a_bad_one_at_plan() {
        let dir = tempfile::tempdir().unwrap();
        let r = IpsecReconciler::on_bus(dir.path(), Bus::Address("unix:path=/nonexistent".into()));
        assert_eq!(r.name(), "ipsec");
        let planned = r.plan(&doc(ONE), None).await.unwrap();
        assert_eq!(planned.actions.len(), 1, "{:?}", planned.actions);
        assert!(
            planned.actions[0].0.starts_with("write swanctl.conf"),
            "{:?}",
            planned.actions
        );
        assert!(!planned.actions[0].0.contains("sixteen"));
        let text = String::from_utf8(planned.artifacts[0].contents.clone()).unwrap();
        assert!(text.contains("if_id_out = 1"), "{text}");
        assert!(text.contains("remote_ts = 10.72.0.0/24"), "{text}");

        let bad = ONE.replace("a key of sixteen+", "short");
        let e = r.plan(&doc(&bad), None).await.unwrap_err();
        assert!(e.to_string().contains("ipsec.right.pre_shared_key"), "{e}");
        assert!(r.validate(&doc(&bad)).is_err());

        let none = r.plan(&doc(""), None).await.unwrap();
        assert!(none.actions.is_empty(), "{:?}", none.actions);
    }
}
