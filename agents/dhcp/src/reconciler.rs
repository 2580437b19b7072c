//! The `dhcp` reconciler: validate = compile the `[dhcp]` section against `[network]`
//! (pure), plan = that plus the diff against the server, apply = swap the server's
//! configuration (leases that still fit are kept), check = every served link has its
//! serving thread and the leases are being written.

use kowabunga_model::{Action, Artifact, Document, Planned, ReconcileError, Reconciler};

use crate::DhcpServer;
use crate::model::{self, DhcpConfig, LinkConfig};

/// Drives a [`DhcpServer`] from documents.
#[derive(Clone)]
pub struct DhcpReconciler {
    server: DhcpServer,
}

impl DhcpReconciler {
    pub fn new(server: DhcpServer) -> Self {
        Self { server }
    }

    pub fn server(&self) -> &DhcpServer {
        &self.server
    }
}

/// What `plan` hands to `apply`: the compiled configuration.
#[derive(Debug)]
pub struct DhcpPlan(DhcpConfig);

fn compile(desired: &Document) -> Result<DhcpConfig, ReconcileError> {
    model::effective(desired).map_err(ReconcileError::invalid)
}

impl Reconciler for DhcpReconciler {
    type Plan = DhcpPlan;

    fn name(&self) -> &'static str {
        model::SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        compile(desired).map(drop)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(model::SECTION, schemars::schema_for!(model::DhcpSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DhcpPlan>, ReconcileError> {
        let config = compile(desired)?;
        // The server's own configuration is the observed state: it is what answers.
        let actions = diff(&self.server.current(), &config);
        let artifacts = vec![Artifact {
            name: "dhcp.txt".into(),
            contents: config.to_string().into_bytes(),
        }];
        Ok(Planned {
            actions,
            artifacts,
            payload: DhcpPlan(config),
        })
    }

    async fn apply(&self, plan: DhcpPlan) -> Result<(), ReconcileError> {
        self.server
            .apply(plan.0)
            .await
            .map_err(ReconcileError::apply)
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        let want = compile(desired)?;
        if self.server.current() != want {
            return Err(ReconcileError::unhealthy(
                "the server does not run the desired configuration",
            ));
        }
        self.server.check().await.map_err(ReconcileError::unhealthy)
    }
}

fn summary(link: &LinkConfig) -> String {
    let pools: Vec<String> = link.pools.iter().map(ToString::to_string).collect();
    format!(
        "{} from {}, pools [{}], {} static, lease {} s",
        link.subnet,
        link.server,
        pools.join(", "),
        link.hosts.len(),
        link.lease_time
    )
}

/// The changes from `old` to `new`, in words.
fn diff(old: &DhcpConfig, new: &DhcpConfig) -> Vec<Action> {
    let mut actions = Vec::new();
    for (name, link) in &new.links {
        match old.links.get(name) {
            None => actions.push(Action(format!("serve {name}: {}", summary(link)))),
            Some(before) if before != link => {
                actions.push(Action(format!("reconfigure {name}: {}", summary(link))))
            }
            Some(_) => {}
        }
    }
    for name in old.links.keys().filter(|n| !new.links.contains_key(*n)) {
        actions.push(Action(format!("stop serving {name}")));
    }
    actions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::{ErrorKind, Format};

    const HEAD: &str = "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"\n[[network.links]]\nname = \"eth1\"\naddresses = [\"10.0.0.1/24\"]\n";

    fn doc(body: &str) -> Document {
        Document::parse(format!("{HEAD}{body}").as_bytes(), Format::Toml).unwrap()
    }

    const BAD: &[&str] = &[
        "[dhcp]\nnope = 1\n",
        "[dhcp.links.eth1]\npools = [{ first = \"10.0.0.10\", last = \"10.0.1.10\" }]\n",
        "[dhcp.links.eth1]\npools = [{ first = \"10.0.0.10\", last = \"10.0.0.20\" }, { first = \"10.0.0.20\", last = \"10.0.0.30\" }]\n",
        "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.9.0.5\" }]\n",
        "[dhcp.links.eth2]\npools = [{ first = \"10.0.0.10\", last = \"10.0.0.20\" }]\n",
    ];

    #[tokio::test]
    async fn validate_refuses_what_plan_refuses_with_the_same_message() {
        let reconciler = DhcpReconciler::new(DhcpServer::new());
        for body in BAD {
            let desired = doc(body);
            let offline = reconciler.validate(&desired).unwrap_err();
            let planned = reconciler.plan(&desired, None).await.unwrap_err();
            assert_eq!(offline, planned, "{body}");
            assert_eq!(offline.kind, ErrorKind::Invalid, "{body}");
            assert!(
                offline.message.starts_with("[dhcp] "),
                "{}",
                offline.message
            );
        }
        let schemas = reconciler.section_schemas();
        assert_eq!(schemas.len(), 1);
        assert_eq!(schemas[0].0, "dhcp");
    }

    #[tokio::test]
    async fn plan_lists_the_changes_against_the_server() {
        let reconciler = DhcpReconciler::new(DhcpServer::new());
        // Nothing served, nothing asked: nothing to do, and apply is a no-op.
        let planned = reconciler.plan(&doc(""), None).await.unwrap();
        assert!(planned.actions.is_empty());
        reconciler.apply(planned.payload).await.unwrap();
        reconciler.check(&doc("")).await.unwrap();
        let good =
            doc("[dhcp.links.eth1]\npools = [{ first = \"10.0.0.10\", last = \"10.0.0.20\" }]\n");
        let planned = reconciler.plan(&good, None).await.unwrap();
        let actions: Vec<String> = planned.actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            actions,
            [
                "serve eth1: 10.0.0.0/24 from 10.0.0.1, pools [10.0.0.10-10.0.0.20], 0 static, lease 3600 s"
            ]
        );
        let text = String::from_utf8(planned.artifacts[0].contents.clone()).unwrap();
        assert!(text.contains("link eth1"), "{text}");
        // Not applied: the check says so.
        let err = reconciler.check(&good).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unhealthy);
        assert_eq!(
            diff(&model::effective(&good).unwrap(), &DhcpConfig::default())[0].0,
            "stop serving eth1"
        );
    }
}
