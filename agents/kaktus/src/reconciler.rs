//! The `[kaktus]` reconciler: the node's libvirt connection and storage pools.
//!
//! Plan observes libvirt's pools and lists what to do: create a pool's directory,
//! define it as a `dir` pool, start it, mark it autostart; a pool that left the
//! document is undefined in libvirt (its directory and volumes are kept: data is
//! never deleted by a configuration change). Apply carries that out and publishes the
//! node's inventory (pools, `[network]` bridges, RPC knobs) to the RPC methods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use kowabunga_model::network::{self, LinkKind, Network};
use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};
use virt::storage_pool::StoragePool;

use crate::inventory::{DEFAULT_TEMPLATE_MAX_BYTES, NodeInventory, Pool, SharedInventory};
use crate::libvirt::{DEFAULT_URI, Libvirt, context};
use crate::section::{Kaktus, SECTION};

/// One libvirt pool as observed: its target directory and whether it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    path: Option<PathBuf>,
    active: bool,
    autostart: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    MakeDir(PathBuf),
    Define { name: String, path: PathBuf },
    Start(String),
    Autostart(String),
    Undefine(String),
}

/// What apply carries out, and the inventory it then publishes.
#[derive(Debug)]
pub struct Plan {
    uri: String,
    steps: Vec<Step>,
    inventory: NodeInventory,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct KaktusReconciler {
    libvirt: Libvirt,
    inventory: SharedInventory,
}

impl KaktusReconciler {
    pub fn new(libvirt: Libvirt, inventory: SharedInventory) -> Self {
        Self { libvirt, inventory }
    }
}

/// The `[kaktus]` section of `doc` (absent = nothing declared), validated.
fn section(doc: &Document) -> Result<Kaktus, ReconcileError> {
    let k = doc.section::<Kaktus>(SECTION)?.unwrap_or_default();
    k.validate().map_err(ReconcileError::invalid)?;
    Ok(k)
}

/// The inventory a document declares.
fn inventory_of(doc: &Document, k: &Kaktus) -> Result<NodeInventory, ReconcileError> {
    let net = doc
        .section::<Network>(network::SECTION)?
        .unwrap_or_default();
    let bridges: BTreeSet<String> = net
        .links
        .iter()
        .filter(|l| l.kind == LinkKind::Bridge)
        .map(|l| l.name.clone())
        .collect();
    Ok(NodeInventory {
        pools: k
            .pools
            .iter()
            .map(|(name, spec)| {
                (
                    name.clone(),
                    Pool {
                        name: name.clone(),
                        path: spec.path.clone(),
                    },
                )
            })
            .collect(),
        bridges,
        console_address: k.console_address.clone(),
        template_max_bytes: k.template_max_bytes.unwrap_or(DEFAULT_TEMPLATE_MAX_BYTES),
    })
}

fn pool_xml(name: &str, path: &std::path::Path) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('\'', "&apos;")
    };
    format!(
        "<pool type='dir'><name>{}</name><target><path>{}</path><permissions><mode>0711</mode></permissions></target></pool>",
        esc(name),
        esc(&path.display().to_string())
    )
}

impl Reconciler for KaktusReconciler {
    type Plan = Plan;

    fn name(&self) -> &'static str {
        "kaktus"
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        section(desired).map(drop)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(SECTION, schemars::schema_for!(Kaktus))]
    }

    fn apply_deadline(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn plan(
        &self,
        desired: &Document,
        in_force: Option<&Document>,
    ) -> Result<Planned<Plan>, ReconcileError> {
        let k = section(desired)?;
        let inventory = inventory_of(desired, &k)?;
        let uri = k
            .libvirt_uri
            .clone()
            .unwrap_or_else(|| DEFAULT_URI.to_owned());
        let before: BTreeSet<String> = match in_force.map(section) {
            Some(Ok(old)) => old.pools.keys().cloned().collect(),
            _ => BTreeSet::new(),
        };
        // Observe on the URI the document asks for.
        let probe = if uri == self.libvirt.uri() {
            self.libvirt.clone()
        } else {
            Libvirt::new(&uri)
        };
        let names: Vec<String> = k.pools.keys().chain(before.iter()).cloned().collect();
        // No pool declared now or before: nothing to observe, no libvirt needed.
        let observed: BTreeMap<String, Observed> = if names.is_empty() {
            BTreeMap::new()
        } else {
            probe
                .call(move |c| {
                    let mut seen = BTreeMap::new();
                    for name in names {
                        let Ok(p) = StoragePool::lookup_by_name(c, &name) else {
                            continue;
                        };
                        let xml = p.get_xml_desc(0).map_err(context(format!("pool {name}")))?;
                        let path = roxmltree::Document::parse(&xml).ok().and_then(|d| {
                            d.descendants()
                                .find(|n| n.has_tag_name("path"))
                                .and_then(|n| n.text())
                                .map(PathBuf::from)
                        });
                        seen.insert(
                            name,
                            Observed {
                                path,
                                active: p.is_active().unwrap_or(false),
                                autostart: p.get_autostart().unwrap_or(false),
                            },
                        );
                    }
                    Ok(seen)
                })
                .await
                .map_err(ReconcileError::observe)?
        };

        let mut steps = Vec::new();
        let mut actions = Vec::new();
        for (name, spec) in &k.pools {
            if !spec.path.is_dir() {
                actions.push(Action(format!("create directory {}", spec.path.display())));
                steps.push(Step::MakeDir(spec.path.clone()));
            }
            match observed.get(name) {
                None => {
                    actions.push(Action(format!(
                        "define pool {name} (local, {})",
                        spec.path.display()
                    )));
                    steps.push(Step::Define {
                        name: name.clone(),
                        path: spec.path.clone(),
                    });
                }
                Some(o) if o.path.as_deref() != Some(spec.path.as_path()) => {
                    return Err(ReconcileError::invalid(format!(
                        "pool {name}: libvirt already has it on {}, not {}: moving a pool is not supported (remove it first)",
                        o.path
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        spec.path.display()
                    )));
                }
                Some(_) => {}
            }
            let o = observed.get(name);
            if !o.is_some_and(|o| o.active) {
                actions.push(Action(format!("start pool {name}")));
                steps.push(Step::Start(name.clone()));
            }
            if !o.is_some_and(|o| o.autostart) {
                actions.push(Action(format!("autostart pool {name}")));
                steps.push(Step::Autostart(name.clone()));
            }
        }
        for name in before.iter().filter(|n| !k.pools.contains_key(*n)) {
            if observed.contains_key(name) {
                actions.push(Action(format!(
                    "undefine pool {name} (its directory and volumes are kept)"
                )));
                steps.push(Step::Undefine(name.clone()));
            }
        }
        if uri != self.libvirt.uri() {
            actions.push(Action(format!("use libvirt at {uri}")));
        }
        Ok(Planned {
            actions,
            artifacts: Vec::new(),
            payload: Plan {
                uri,
                steps,
                inventory,
            },
        })
    }

    async fn apply(&self, plan: Plan) -> Result<(), ReconcileError> {
        self.libvirt.set_uri(&plan.uri);
        for step in &plan.steps {
            if let Step::MakeDir(path) = step {
                make_dir(path).map_err(ReconcileError::apply)?;
            }
        }
        if plan
            .steps
            .iter()
            .all(|step| matches!(step, Step::MakeDir(_)))
        {
            // Nothing for libvirt to do: do not open it.
            return Ok(());
        }
        let steps = plan.steps.clone();
        self.libvirt
            .call(move |c| {
                for step in steps {
                    match step {
                        Step::MakeDir(_) => {}
                        Step::Define { name, path } => {
                            StoragePool::define_xml(c, &pool_xml(&name, &path), 0)
                                .map_err(context(format!("pool {name}: define")))?;
                        }
                        Step::Start(name) => {
                            let p = StoragePool::lookup_by_name(c, &name)
                                .map_err(context(format!("pool {name}")))?;
                            if !p.is_active().unwrap_or(false) {
                                p.create(0)
                                    .map_err(context(format!("pool {name}: start")))?;
                            }
                        }
                        Step::Autostart(name) => {
                            StoragePool::lookup_by_name(c, &name)
                                .and_then(|p| p.set_autostart(true))
                                .map_err(context(format!("pool {name}: autostart")))?;
                        }
                        Step::Undefine(name) => {
                            let p = StoragePool::lookup_by_name(c, &name)
                                .map_err(context(format!("pool {name}")))?;
                            if p.is_active().unwrap_or(false) {
                                p.destroy().map_err(context(format!("pool {name}: stop")))?;
                            }
                            p.undefine()
                                .map_err(context(format!("pool {name}: undefine")))?;
                        }
                    }
                }
                Ok(())
            })
            .await
            .map_err(ReconcileError::apply)?;
        self.inventory.set(plan.inventory);
        Ok(())
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        let k = section(desired)?;
        let names: Vec<String> = k.pools.keys().cloned().collect();
        for (name, spec) in &k.pools {
            if !spec.path.is_dir() {
                return Err(ReconcileError::unhealthy(format!(
                    "pool {name}: directory {} is missing",
                    spec.path.display()
                )));
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        self.libvirt
            .call(move |c| {
                for name in names {
                    let p = StoragePool::lookup_by_name(c, &name)
                        .map_err(context(format!("pool {name}")))?;
                    if !p.is_active().unwrap_or(false) {
                        return Err(format!("pool {name}: not running in libvirt"));
                    }
                }
                Ok(())
            })
            .await
            .map_err(ReconcileError::unhealthy)
    }
}

/// The pool directory, 0711 whatever the agent's umask (QEMU's user must traverse it).
fn make_dir(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| format!("pool directory {}: {e}", path.display());
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711)).map_err(err)
}
