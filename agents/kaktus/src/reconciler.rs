//! The `[kaktus]` reconciler: the node's libvirt connection and storage pools.
//!
//! Plan observes libvirt's pools and lists what to do: create a `local` pool's
//! directory, define it as a `dir` pool, start it, mark it autostart; a pool that left
//! the document is undefined in libvirt (its directory and volumes are kept: data is
//! never deleted by a configuration change). An `rbd` pool needs the libvirt secret
//! its instances authenticate with, defined from the node's key file
//! ([`ceph_secret`](crate::ceph_secret)); the Ceph pool itself is the cluster's. Apply carries that out and publishes the
//! node's inventory (pools, `[network]` bridges, RPC knobs) to the RPC methods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use kowabunga_model::network::{self, LinkKind, Network};
use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};

use crate::ceph_secret::{self, CephKey, WantedSecret};
use crate::inventory::{
    DEFAULT_TEMPLATE_MAX_BYTES, NodeInventory, Pool, PoolBackend, RbdPool, SharedInventory,
};
use crate::libvirt::{DEFAULT_URI, Libvirt};
use crate::libvirt_protocol::{self as protocol, PoolStep, Request};
use crate::rbd::{Cluster, Rbd};
use crate::section::{Backend, Kaktus, PoolSpec, SECTION};

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
    Define {
        name: String,
        path: PathBuf,
    },
    Start(String),
    Autostart(String),
    Undefine(String),
    /// Define the secret and set its value from the key file whose digest plan read.
    Secret {
        wanted: WantedSecret,
        digest: String,
    },
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
    /// Where `rbd` pools' keys are read when a pool names no `key_file`.
    key_dir: PathBuf,
}

/// Where keys are read unless [`KaktusReconciler::with_key_dir`] says otherwise.
pub const DEFAULT_KEY_DIR: &str = "/var/lib/kowabunga/kaktus/ceph";

impl KaktusReconciler {
    pub fn new(libvirt: Libvirt, inventory: SharedInventory) -> Self {
        Self {
            libvirt,
            inventory,
            key_dir: PathBuf::from(DEFAULT_KEY_DIR),
        }
    }

    /// Read `rbd` pools' keys from `<dir>/<client>.key` when a pool names no `key_file`.
    pub fn with_key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.key_dir = dir.into();
        self
    }
}

/// The `[kaktus]` section of `doc` (absent = nothing declared), validated.
fn section(doc: &Document) -> Result<Kaktus, ReconcileError> {
    let k = doc.section::<Kaktus>(SECTION)?.unwrap_or_default();
    k.validate().map_err(ReconcileError::invalid)?;
    Ok(k)
}

/// The inventory a document declares.
fn inventory_of(
    doc: &Document,
    k: &Kaktus,
    key_dir: &std::path::Path,
) -> Result<NodeInventory, ReconcileError> {
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
            .map(|(name, spec)| (name.clone(), pool_of(name, spec, key_dir)))
            .collect(),
        bridges,
        console_address: k.console_address.clone(),
        template_max_bytes: k.template_max_bytes.unwrap_or(DEFAULT_TEMPLATE_MAX_BYTES),
    })
}

/// The inventory's view of a validated pool.
fn pool_of(name: &str, spec: &PoolSpec, key_dir: &std::path::Path) -> Pool {
    let backend = match spec.backend {
        Backend::Local => PoolBackend::Local {
            path: spec.path.clone().unwrap_or_default(),
        },
        Backend::Rbd => PoolBackend::Rbd(RbdPool {
            ceph_pool: spec.ceph_pool.clone().unwrap_or_else(|| name.to_owned()),
            cluster: Cluster {
                monitors: spec.monitors.clone(),
                client: spec.client().to_owned(),
                key_file: key_file(spec, key_dir),
            },
            secret_uuid: spec.secret_uuid.clone().unwrap_or_default(),
        }),
    };
    Pool {
        name: name.to_owned(),
        backend,
    }
}

fn key_file(spec: &PoolSpec, key_dir: &std::path::Path) -> PathBuf {
    spec.key_file
        .clone()
        .unwrap_or_else(|| key_dir.join(format!("{}.key", spec.client())))
}

/// The `local` pools of a section, with their directories.
fn local_pools(k: &Kaktus) -> BTreeMap<&String, &std::path::Path> {
    k.pools
        .iter()
        .filter_map(|(name, spec)| match (spec.backend, &spec.path) {
            (Backend::Local, Some(path)) => Some((name, path.as_path())),
            _ => None,
        })
        .collect()
}

/// The secrets the `rbd` pools of a section need (one per UUID).
fn wanted_secrets(k: &Kaktus, key_dir: &std::path::Path) -> BTreeMap<String, WantedSecret> {
    k.pools
        .values()
        .filter(|spec| spec.backend == Backend::Rbd)
        .filter_map(|spec| {
            let uuid = spec.secret_uuid.clone()?;
            Some((
                uuid.clone(),
                WantedSecret {
                    uuid,
                    client: spec.client().to_owned(),
                    key_file: key_file(spec, key_dir),
                },
            ))
        })
        .collect()
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
        let inventory = inventory_of(desired, &k, &self.key_dir)?;
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
        let local = local_pools(&k);
        let names: Vec<String> = local
            .keys()
            .copied()
            .chain(before.iter())
            .cloned()
            .collect();
        // The keys the rbd pools' secrets must hold (a missing file: retried later).
        let mut secrets = Vec::new();
        for wanted in wanted_secrets(&k, &self.key_dir).into_values() {
            let key = CephKey::read(&wanted.key_file).map_err(ReconcileError::observe)?;
            secrets.push((wanted, key.digest));
        }
        // No pool declared now or before: nothing to observe, no libvirt needed.
        let (observed, secrets): (BTreeMap<String, Observed>, Vec<_>) =
            if names.is_empty() && secrets.is_empty() {
                (BTreeMap::new(), Vec::new())
            } else {
                observe(&probe, names, secrets)
                    .await
                    .map_err(ReconcileError::observe)?
            };

        let mut steps = Vec::new();
        let mut actions = Vec::new();
        for (wanted, digest) in secrets {
            actions.push(Action(format!(
                "define secret {} (cephx key of client.{}, from {})",
                wanted.uuid,
                wanted.client,
                wanted.key_file.display()
            )));
            steps.push(Step::Secret { wanted, digest });
        }
        for (&name, &path) in &local {
            if !path.is_dir() {
                actions.push(Action(format!("create directory {}", path.display())));
                steps.push(Step::MakeDir(path.to_owned()));
            }
            match observed.get(name) {
                None => {
                    actions.push(Action(format!(
                        "define pool {name} (local, {})",
                        path.display()
                    )));
                    steps.push(Step::Define {
                        name: name.clone(),
                        path: path.to_owned(),
                    });
                }
                Some(o) if o.path.as_deref() != Some(path) => {
                    return Err(ReconcileError::invalid(format!(
                        "pool {name}: libvirt already has it on {}, not {}: moving a pool is not supported (remove it first)",
                        o.path
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        path.display()
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
        // A pool that left the document, or is not a local pool any more.
        for name in before.iter().filter(|n| !local.contains_key(*n)) {
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
        let steps = plan.steps.iter().filter_map(Step::for_libvirt).collect();
        self.libvirt
            .request::<()>(Request::PoolSteps { steps })
            .await
            .map_err(ReconcileError::apply)?;
        self.inventory.set(plan.inventory);
        Ok(())
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        let k = section(desired)?;
        let local = local_pools(&k);
        for (name, path) in &local {
            if !path.is_dir() {
                return Err(ReconcileError::unhealthy(format!(
                    "pool {name}: directory {} is missing",
                    path.display()
                )));
            }
        }
        // Every rbd pool's cluster answers, as its client.
        for (name, spec) in &k.pools {
            if let PoolBackend::Rbd(rbd) = pool_of(name, spec, &self.key_dir).backend {
                Rbd::new(rbd.cluster.clone())
                    .list(&rbd.ceph_pool)
                    .await
                    .map_err(|e| {
                        ReconcileError::unhealthy(format!("pool {name}: Ceph pool {e}"))
                    })?;
            }
        }
        let names: Vec<String> = local.keys().map(|n| (*n).clone()).collect();
        let secrets: Vec<String> = wanted_secrets(&k, &self.key_dir).into_keys().collect();
        if names.is_empty() && secrets.is_empty() {
            return Ok(());
        }
        self.libvirt
            .request(Request::CheckPools {
                secrets,
                pools: names,
            })
            .await
            .map_err(ReconcileError::unhealthy)
    }
}

/// libvirt's view of the named pools and of the secrets `rbd` pools want; returns the
/// pools libvirt has and the secrets that do not hold their file's key.
async fn observe(
    libvirt: &Libvirt,
    names: Vec<String>,
    secrets: Vec<(WantedSecret, String)>,
) -> Result<(BTreeMap<String, Observed>, Vec<(WantedSecret, String)>), String> {
    let pools: protocol::Pools = libvirt.request(Request::Pools { names }).await?;
    let observed = pools
        .into_iter()
        .map(|(name, pool)| {
            let path = roxmltree::Document::parse(&pool.xml).ok().and_then(|d| {
                d.descendants()
                    .find(|n| n.has_tag_name("path"))
                    .and_then(|n| n.text())
                    .map(PathBuf::from)
            });
            let observed = Observed {
                path,
                active: pool.active,
                autostart: pool.autostart,
            };
            (name, observed)
        })
        .collect();
    if secrets.is_empty() {
        return Ok((observed, Vec::new()));
    }
    let uuids = secrets.iter().map(|(w, _)| w.uuid.clone()).collect();
    let in_libvirt: protocol::Secrets = libvirt.request(Request::Secrets { uuids }).await?;
    let missing = secrets
        .into_iter()
        .filter(|(wanted, digest)| {
            !ceph_secret::in_place(in_libvirt.get(&wanted.uuid).map(String::as_str), digest)
        })
        .collect();
    Ok((observed, missing))
}

impl Step {
    /// What the libvirt helper does for this step (`None`: the agent's own).
    fn for_libvirt(&self) -> Option<PoolStep> {
        let name = |n: &String| n.clone();
        Some(match self {
            Step::MakeDir(_) => return None,
            Step::Define { name, path } => PoolStep::Define {
                name: name.clone(),
                xml: pool_xml(name, path),
            },
            Step::Start(n) => PoolStep::Start { name: name(n) },
            Step::Autostart(n) => PoolStep::Autostart { name: name(n) },
            Step::Undefine(n) => PoolStep::Undefine { name: name(n) },
            Step::Secret { wanted, digest } => ceph_secret::put(wanted, digest),
        })
    }
}

/// The pool directory, 0711 whatever the agent's umask (QEMU's user must traverse it).
fn make_dir(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| format!("pool directory {}: {e}", path.display());
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711)).map_err(err)
}
