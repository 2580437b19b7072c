//! The `vrrp` reconciler: validate and plan check `[vrrp]` against `[network]` and
//! render keepalived's file; the rest is the daemons reconciler's (check mode, write
//! when changed, reload through systemd; stop and remove when no instance is left).

use kowabunga_daemons::{CONNTRACKD, Daemon, KEEPALIVED, Render, RenderedReconciler};
use kowabunga_model::Document;

use crate::model::{self, VrrpSection};
use crate::{conntrackd, keepalived};

/// Drives keepalived from the documents' `[vrrp]`: `VrrpReconciler::new(dir)` writes
/// `dir/keepalived.conf` (the image's keepalived.service reads it there: overlays/kiwi).
pub type VrrpReconciler = RenderedReconciler<Keepalived>;

/// `[vrrp]` rendered as keepalived's file (no file when it has no instance), and
/// conntrackd's with `[vrrp.conntrack_sync]` (written and started before keepalived,
/// whose transitions call it).
pub struct Keepalived;

impl Render for Keepalived {
    const SECTION: &'static str = model::SECTION;
    const DAEMONS: &'static [Daemon] = &[CONNTRACKD, KEEPALIVED];

    fn schema() -> schemars::Schema {
        schemars::schema_for!(VrrpSection)
    }

    fn render(doc: &Document) -> Result<Vec<(&'static str, String)>, String> {
        let mut files = Vec::new();
        if let Some(config) = model::effective(doc).map_err(|e| e.to_string())? {
            if let Some(sync) = &config.conntrack_sync {
                files.push((CONNTRACKD.name, conntrackd::render(sync)));
            }
            files.push((KEEPALIVED.name, keepalived::render(&config)));
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_daemons::Bus;
    use kowabunga_model::{Format, Reconciler};

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

    /// With `[vrrp.conntrack_sync]`, conntrackd's file is planned too, before
    /// keepalived's (whose transitions call conntrackd).
    #[tokio::test]
    async fn plans_conntrackd_before_keepalived_with_conntrack_sync() {
        let dir = tempfile::tempdir().unwrap();
        let r = VrrpReconciler::on_bus(dir.path(), Bus::Address("unix:path=/nonexistent".into()));
        let synced = format!("{ONE}[vrrp.conntrack_sync]\nlink = \"eth1\"\npeer = \"10.0.0.3\"\n");
        let planned = r.plan(&doc(&synced), None).await.unwrap();
        let actions: Vec<&str> = planned.actions.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            actions[0].starts_with("write conntrackd.conf"),
            "{actions:?}"
        );
        assert!(
            actions[1].starts_with("write keepalived.conf"),
            "{actions:?}"
        );
        let keepalived = String::from_utf8(planned.artifacts[1].contents.clone()).unwrap();
        assert!(keepalived.contains("notify_master"), "{keepalived}");
    }

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
