//! The `ipsec` reconciler: validate and plan check `[ipsec]` against `[network]` and
//! render swanctl.conf; the rest is the daemons reconciler's (write when changed, 0600,
//! reload charon through systemd and wait for `swanctl --load-all`; stop charon and
//! remove the file when no tunnel is left).

use kowabunga_daemons::{Daemon, Render, RenderedReconciler, STRONGSWAN};
use kowabunga_model::Document;

use crate::model::{self, IpsecSection};
use crate::swanctl;

/// Drives strongSwan from the documents' `[ipsec]`: `IpsecReconciler::new(dir)` writes
/// `dir/swanctl.conf` (the image's strongswan.service loads it there: overlays/kiwi).
pub type IpsecReconciler = RenderedReconciler<Swanctl>;

/// `[ipsec]` rendered as strongSwan's file, or no file when it has no tunnel.
pub struct Swanctl;

impl Render for Swanctl {
    const SECTION: &'static str = model::SECTION;
    const DAEMONS: &'static [Daemon] = &[STRONGSWAN];

    fn schema() -> schemars::Schema {
        schemars::schema_for!(IpsecSection)
    }

    fn render(doc: &Document) -> Result<Vec<(&'static str, String)>, String> {
        let conns = model::effective(doc).map_err(|e| e.to_string())?;
        Ok(conns
            .map(|conns| vec![(STRONGSWAN.name, swanctl::render(&conns))])
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_daemons::Bus;
    use kowabunga_model::{Format, Reconciler};

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
