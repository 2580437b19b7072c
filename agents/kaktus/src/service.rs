//! `Kaktus.*`: Kahuna's hypervisor methods, with upstream's parameter and reply shapes
//! (Go field names as keys, missing fields as Go zero values).
//!
//! Every method here reads or acts on libvirt and the pools directly: none changes the
//! signed desired state, so none goes through the apply pipeline (an instance start
//! never waits behind a confirm window). The CephFS and NFS methods of upstream are not
//! advertised: Kahuna picks, among a region's agents, one that lists the method, so it
//! sends them to nodes that serve them.

use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::capabilities;
use crate::instances::{Instances, Operation};
use crate::libvirt_protocol::{NodeFacts, Request};
use crate::storage::Storage;
use crate::template::Templates;

/// Advertised methods (`Capabilities` is added by the transport).
pub const METHODS: &[&str] = &[
    "CreateInstance",
    "CreateIsoVolume",
    "CreateOsVolume",
    "CreateRawVolume",
    "CreateTemplateVolume",
    "DeleteInstance",
    "DeleteVolume",
    "GetInstance",
    "GetInstanceRemoteConnectionUrl",
    "GetInstanceState",
    "GetStoragePoolStats",
    "GetVolumeInfos",
    "InstanceIsRunning",
    "InstanceOperation",
    "NodeCapabilities",
    "ResizeVolume",
    "UpdateInstance",
    "UpdateIsoVolume",
];

/// Upstream methods this node does not serve (CephFS subvolumes, NFS exports).
pub const NOT_SUPPORTED: &[&str] = &[
    "ListFileSystems",
    "ListFsSubVolumes",
    "CreateFsSubVolume",
    "DeleteFsSubVolume",
    "CreateNfsBackends",
    "UpdateNfsBackends",
    "DeleteNfsBackends",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct NameArgs {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct InstanceXmlArgs {
    name: String,
    #[serde(rename = "XML")]
    xml: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct GetInstanceArgs {
    name: String,
    migratable: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct OperationArgs {
    name: String,
    action: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PoolArgs {
    pool: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct VolumeArgs {
    pool: String,
    volume: String,
    size: u64,
    template: String,
    #[serde(rename = "SourceURL")]
    source_url: String,
    /// Go `[]byte`: a base64 string, or null.
    content: Option<String>,
    with_snapshots: bool,
}

/// The Kaktus RPC service.
#[derive(Debug, Clone)]
pub struct KaktusService {
    instances: Instances,
    storage: Storage,
    templates: Templates,
}

fn args<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, String> {
    serde_json::from_value(params).map_err(|e| format!("Kaktus.{method}: bad params: {e}"))
}

impl KaktusService {
    pub fn new(instances: Instances, storage: Storage, templates: Templates) -> Self {
        Self {
            instances,
            storage,
            templates,
        }
    }

    async fn node_capabilities(&self) -> Result<Value, String> {
        let facts: NodeFacts = self.instances.libvirt().request(Request::NodeFacts).await?;
        let caps = capabilities::parse(&facts.capabilities, facts.memory)?;
        serde_json::to_value(caps).map_err(|e| e.to_string())
    }

    async fn run(&self, method: &str, params: Value) -> Result<Value, String> {
        match method {
            "NodeCapabilities" => self.node_capabilities().await,
            "CreateInstance" => {
                let a: InstanceXmlArgs = args(method, params)?;
                self.instances.create(&a.name, &a.xml).await?;
                Ok(json!({}))
            }
            "UpdateInstance" => {
                let a: InstanceXmlArgs = args(method, params)?;
                self.instances.update(&a.name, &a.xml).await?;
                Ok(json!({}))
            }
            "GetInstance" => {
                let a: GetInstanceArgs = args(method, params)?;
                let xml = self.instances.xml(&a.name, a.migratable).await?;
                Ok(json!({ "XML": xml }))
            }
            "DeleteInstance" => {
                let a: NameArgs = args(method, params)?;
                self.instances.delete(&a.name).await?;
                Ok(json!({}))
            }
            "GetInstanceState" => {
                let a: NameArgs = args(method, params)?;
                let (state, reason) = self.instances.state(&a.name).await?;
                Ok(json!({ "State": state, "Reason": reason }))
            }
            "InstanceIsRunning" => {
                let a: NameArgs = args(method, params)?;
                let running = self.instances.is_running(&a.name).await?;
                Ok(json!({ "Running": running }))
            }
            "GetInstanceRemoteConnectionUrl" => {
                let a: NameArgs = args(method, params)?;
                let url = self.instances.console_url(&a.name).await?;
                Ok(json!({ "URL": url }))
            }
            "InstanceOperation" => {
                let a: OperationArgs = args(method, params)?;
                let op = Operation::from_action(a.action)?;
                self.instances.operate(&a.name, op).await?;
                Ok(json!({}))
            }
            "GetStoragePoolStats" => {
                let a: PoolArgs = args(method, params)?;
                let stats = self.storage.pool_stats(&a.pool).await?;
                serde_json::to_value(stats).map_err(|e| e.to_string())
            }
            "GetVolumeInfos" => {
                let a: VolumeArgs = args(method, params)?;
                let size = self.storage.volume_size(&a.pool, &a.volume).await?;
                Ok(json!({ "Size": size }))
            }
            "CreateRawVolume" => {
                let a: VolumeArgs = args(method, params)?;
                self.storage.create_raw(&a.pool, &a.volume, a.size).await?;
                Ok(json!({}))
            }
            "CreateTemplateVolume" => {
                let a: VolumeArgs = args(method, params)?;
                let size = self
                    .templates
                    .create(&a.pool, &a.volume, &a.source_url)
                    .await?;
                Ok(json!({ "Size": size }))
            }
            "CreateOsVolume" => {
                let a: VolumeArgs = args(method, params)?;
                self.storage
                    .create_os(&a.pool, &a.volume, a.size, &a.template)
                    .await?;
                Ok(json!({}))
            }
            "CreateIsoVolume" | "UpdateIsoVolume" => {
                let a: VolumeArgs = args(method, params)?;
                let content = base64::engine::general_purpose::STANDARD
                    .decode(a.content.unwrap_or_default())
                    .map_err(|e| format!("Kaktus.{method}: Content is not base64: {e}"))?;
                let replace = method == "UpdateIsoVolume";
                self.storage
                    .write_iso(&a.pool, &a.volume, a.size, content, replace)
                    .await?;
                Ok(json!({}))
            }
            "ResizeVolume" => {
                let a: VolumeArgs = args(method, params)?;
                self.storage.resize(&a.pool, &a.volume, a.size).await?;
                Ok(json!({}))
            }
            "DeleteVolume" => {
                let a: VolumeArgs = args(method, params)?;
                let _ = a.with_snapshots;
                self.storage.delete(&a.pool, &a.volume).await?;
                Ok(json!({}))
            }
            m if NOT_SUPPORTED.contains(&m) => Err(format!(
                "Kaktus.{m}: CephFS and NFS are not supported by this node"
            )),
            m => Err(format!("wsrpc: can't find method Kaktus.{m}")),
        }
    }
}

impl kowabunga_rpc::Service for KaktusService {
    fn methods(&self) -> &'static [&'static str] {
        METHODS
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.run(method, params).await
    }
}
