//! The `netboot` reconciler: validate = check `[netboot]` (pure), plan = that plus the
//! diff against the server, apply = swap the server's configuration (images are fetched
//! in the background, like an OS update: a download of hundreds of MiB is no part of a
//! generation's apply deadline, and a node is offered its boot file only once its image
//! is verified), check = the server runs the desired configuration.

use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};

use crate::NetbootServer;
use crate::model::{self, NetbootConfig};

/// Drives a [`NetbootServer`] from documents.
pub struct NetbootReconciler {
    server: NetbootServer,
}

impl NetbootReconciler {
    pub fn new(server: NetbootServer) -> Self {
        Self { server }
    }
}

fn compile(desired: &Document) -> Result<NetbootConfig, ReconcileError> {
    model::effective(desired).map_err(ReconcileError::invalid)
}

/// What changes from `old` to `new`, without the nodes' parameters (they hold keys).
fn diff(old: &NetbootConfig, new: &NetbootConfig) -> Vec<Action> {
    let mut actions = Vec::new();
    for (id, source) in &new.images {
        if old.images.get(id) != Some(source) {
            actions.push(Action(format!("keep image {id} (from {})", source.url)));
        }
    }
    for id in old.images.keys().filter(|id| !new.images.contains_key(*id)) {
        actions.push(Action(format!("drop image {id}")));
    }
    for (mac, node) in &new.nodes {
        match old.nodes.get(mac) {
            Some(before) if before == node => {}
            Some(_) => actions.push(Action(format!(
                "node {mac} ({}) now boots {}",
                node.agent_id, node.image
            ))),
            None => actions.push(Action(format!(
                "boot node {mac} ({}) with {}",
                node.agent_id, node.image
            ))),
        }
    }
    for (mac, node) in old
        .nodes
        .iter()
        .filter(|(mac, _)| !new.nodes.contains_key(*mac))
    {
        actions.push(Action(format!(
            "stop booting node {mac} ({})",
            node.agent_id
        )));
    }
    actions
}

impl Reconciler for NetbootReconciler {
    type Plan = NetbootConfig;

    fn name(&self) -> &'static str {
        model::SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        compile(desired).map(drop)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(model::SECTION, schemars::schema_for!(model::NetbootSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<NetbootConfig>, ReconcileError> {
        let config = compile(desired)?;
        let actions = diff(&self.server.current(), &config);
        Ok(Planned {
            actions,
            artifacts: Vec::new(),
            payload: config,
        })
    }

    async fn apply(&self, plan: NetbootConfig) -> Result<(), ReconcileError> {
        self.server.apply(plan);
        Ok(())
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        if self.server.current() != compile(desired)? {
            return Err(ReconcileError::unhealthy(
                "the netboot server does not run the desired configuration",
            ));
        }
        Ok(())
    }
}
