//! The `dns` reconciler: validate = merge and compile (pure), plan = that plus the diff
//! against the server, apply = atomic swap, check = probe.

use std::collections::BTreeSet;

use kowabunga_model::{Action, Artifact, Document, Planned, ReconcileError, Reconciler};

use crate::model::{self, DnsConfig};
use crate::{DnsServer, State};

/// Drives a [`DnsServer`] from documents.
#[derive(Clone)]
pub struct DnsReconciler {
    server: DnsServer,
}

impl DnsReconciler {
    pub fn new(server: DnsServer) -> Self {
        Self { server }
    }

    pub fn server(&self) -> &DnsServer {
        &self.server
    }
}

/// What `plan` hands to `apply`: the compiled state.
#[derive(Debug)]
pub struct DnsPlan(State);

impl Reconciler for DnsReconciler {
    type Plan = DnsPlan;

    fn name(&self) -> &'static str {
        model::SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        compile(desired).map(drop)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(model::SECTION, schemars::schema_for!(model::DnsSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DnsPlan>, ReconcileError> {
        let state = compile(desired)?;
        // The server's own state is the observed state: it is what answers queries.
        let current = self.server.current();
        let actions = diff(&current.config, &state.config);
        let artifacts = vec![Artifact {
            name: "zones.txt".into(),
            contents: state.config.to_string().into_bytes(),
        }];
        Ok(Planned {
            actions,
            artifacts,
            payload: DnsPlan(state),
        })
    }

    async fn apply(&self, plan: DnsPlan) -> Result<(), ReconcileError> {
        self.server
            .apply(plan.0)
            .await
            .map_err(ReconcileError::apply)
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        let want = model::effective(desired).map_err(ReconcileError::invalid)?;
        if self.server.current().config != want {
            return Err(ReconcileError::unhealthy(
                "the server does not run the desired record set",
            ));
        }
        self.server.check().await.map_err(ReconcileError::unhealthy)
    }
}

/// The document part of planning, without I/O: both sources parsed, validated, merged
/// and compiled into what the server would run. `validate` is exactly this, so it
/// refuses what `plan` refuses, with the same message.
fn compile(desired: &Document) -> Result<State, ReconcileError> {
    let signed = model::signed(desired).map_err(ReconcileError::invalid)?;
    let pushed = model::pushed(desired).map_err(ReconcileError::invalid)?;
    let config = model::merge(&signed, &pushed).map_err(ReconcileError::invalid)?;
    State::new(config, signed, pushed).map_err(ReconcileError::invalid)
}

/// The changes from `old` to `new`, in words.
fn diff(old: &DnsConfig, new: &DnsConfig) -> Vec<Action> {
    let mut actions = Vec::new();
    let old_listen: BTreeSet<_> = old.listen.iter().collect();
    let new_listen: BTreeSet<_> = new.listen.iter().collect();
    for a in new_listen.difference(&old_listen) {
        actions.push(Action(format!("listen on {a} (UDP, TCP)")));
    }
    for a in old_listen.difference(&new_listen) {
        actions.push(Action(format!("stop listening on {a}")));
    }
    if old.recursors != new.recursors || old.forward_timeout_ms != new.forward_timeout_ms {
        let list: Vec<String> = new.recursors.iter().map(ToString::to_string).collect();
        actions.push(Action(format!(
            "forward to {} (timeout {} ms)",
            list.join(", "),
            new.forward_timeout_ms
        )));
    }
    if old.ttl != new.ttl {
        actions.push(Action(format!("ttl {} -> {}", old.ttl, new.ttl)));
    }
    if old.nameserver != new.nameserver || old.nameserver_addresses != new.nameserver_addresses {
        actions.push(Action(format!(
            "nameserver {} ({})",
            new.nameserver.as_deref().unwrap_or("ns.<zone>"),
            list(&new.nameserver_addresses)
        )));
    }
    if old.reverse_zones != new.reverse_zones {
        actions.push(Action(if new.reverse_zones {
            "serve reverse zones of the managed addresses".to_owned()
        } else {
            "stop serving reverse zones".to_owned()
        }));
    }
    if old.recursion_clients != new.recursion_clients {
        let nets: Vec<String> = new
            .recursion_clients
            .iter()
            .map(ToString::to_string)
            .collect();
        actions.push(Action(format!(
            "recursion for the node's subnets and [{}]",
            nets.join(", ")
        )));
    }
    let zones: BTreeSet<&String> = old.zones.keys().chain(new.zones.keys()).collect();
    for zone in zones {
        match (old.zones.get(zone), new.zones.get(zone)) {
            (None, Some(records)) => {
                actions.push(Action(format!("add zone {zone} ({} names)", records.len())))
            }
            (Some(_), None) => actions.push(Action(format!("remove zone {zone}"))),
            (Some(before), Some(after)) => {
                for (name, addresses) in after {
                    let fqdn = DnsConfig::fqdn(zone, name);
                    match before.get(name) {
                        None => actions.push(Action(format!("add {fqdn} {}", list(addresses)))),
                        Some(old) if old != addresses => actions.push(Action(format!(
                            "change {fqdn} {} -> {}",
                            list(old),
                            list(addresses)
                        ))),
                        Some(_) => {}
                    }
                }
                for name in before.keys().filter(|n| !after.contains_key(*n)) {
                    actions.push(Action(format!("remove {}", DnsConfig::fqdn(zone, name))));
                }
            }
            (None, None) => {}
        }
    }
    actions
}

fn list(addresses: &[std::net::IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    const HEAD: &str = "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"\n";

    fn doc(body: &str) -> Document {
        Document::parse(format!("{HEAD}{body}").as_bytes(), Format::Toml).unwrap()
    }

    /// Documents the model's tests refuse, plus refusals only the merge sees.
    const BAD: &[&str] = &[
        "[dns]\nlisten = []\n",
        "[dns]\nrecursors = [\"nine\"]\n",
        "[dns]\nlisetn = []\n",
        "[dns]\nforward_timeout_ms = 0\n",
        "[dns.zones.\"a..b\".records]\nx = [\"10.0.0.1\"]\n",
        "[dns.zones.\"a.b\".records]\nx = []\n",
        "[dns.zones.\"a.b\".records]\n\"x y\" = [\"10.0.0.1\"]\n",
        "[dns.zones.\"a.b\".records]\nx = [\"0.0.0.0\"]\n",
        "[dns.zones.\"a.b\".records]\nx = [\"10.0.0.300\"]\n",
        "[dns]\nnameserver = \"bad name\"\n",
        "[dns]\nnameserver_addresses = [\"224.0.0.1\"]\n",
        "[dns]\nrecursion_clients = [\"10.0.0.0/33\"]\n",
        "[dns.zones.\"acme.local\".records]\n\"www.eu\" = [\"10.0.0.1\"]\n[dns.zones.\"eu.acme.local\"]\n",
    ];

    #[tokio::test]
    async fn validate_refuses_what_plan_refuses_with_the_same_message() {
        let reconciler = DnsReconciler::new(DnsServer::new());
        for body in BAD {
            let desired = doc(body);
            let offline = reconciler.validate(&desired).unwrap_err();
            let planned = reconciler.plan(&desired, None).await.unwrap_err();
            assert_eq!(offline, planned, "{body}");
            assert_eq!(offline.kind, kowabunga_model::ErrorKind::Invalid, "{body}");
        }
        // A pushed table that does not validate: same too.
        let mut desired = doc("");
        desired.set_pushed(
            model::SECTION,
            toml::from_str("[zones.\"a.b\".records]\nx = [\"nope\"]\n").unwrap(),
        );
        let offline = reconciler.validate(&desired).unwrap_err();
        assert_eq!(offline, reconciler.plan(&desired, None).await.unwrap_err());
        // And a good document passes both.
        let schemas = reconciler.section_schemas();
        assert_eq!(schemas.len(), 1);
        assert_eq!(schemas[0].0, "dns");
        let good = doc("[dns.zones.\"a.b\".records]\nx = [\"10.0.0.1\"]\n");
        reconciler.validate(&good).unwrap();
        reconciler.plan(&good, None).await.unwrap();
    }
}
