//! The `dns` reconciler: plan = merge and validate, apply = atomic swap, check = probe.

use std::collections::BTreeSet;

use kowabunga_model::dns::{self, DnsConfig};
use kowabunga_model::{Action, Artifact, Document, Planned, ReconcileError, Reconciler};

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
pub struct DnsPlan(State);

impl Reconciler for DnsReconciler {
    type Plan = DnsPlan;

    fn name(&self) -> &'static str {
        "dns"
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<DnsPlan>, ReconcileError> {
        let signed = dns::signed(desired).map_err(ReconcileError::invalid)?;
        let pushed = dns::pushed(desired).map_err(ReconcileError::invalid)?;
        let config = dns::merge(&signed, &pushed).map_err(ReconcileError::invalid)?;
        // The server's own state is the observed state: it is what answers queries.
        let current = self.server.current();
        let actions = diff(&current.config, &config);
        let artifacts = vec![Artifact {
            name: "zones.txt".into(),
            contents: config.to_string().into_bytes(),
        }];
        let state = State::new(config, signed, pushed).map_err(ReconcileError::invalid)?;
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
        let want = dns::effective(desired).map_err(ReconcileError::invalid)?;
        if self.server.current().config != want {
            return Err(ReconcileError::unhealthy(
                "the server does not run the desired record set",
            ));
        }
        self.server.check().await.map_err(ReconcileError::unhealthy)
    }
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
