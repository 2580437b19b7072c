//! What the agent asks of its libvirt helper (`kaktus-libvirt`), and what it answers.
//!
//! The agent does not link libvirt: its ~50 shared libraries would more than double the
//! agent's resident memory for as long as it runs. Every libvirt call is instead a named
//! [`Request`], sent as one JSON line on the helper's stdin, and answered by one JSON
//! line on its stdout ([`Reply`], in any order: each carries the request's `id`). The
//! helper is started on the first request and stopped after a quiet spell
//! ([`crate::libvirt`]). Requests are libvirt operations, not agent logic: what to
//! define, which disks an instance uses, what a state is called stays in the agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instances::Operation;

/// The helper's binary name, looked up next to the agent's own binary.
pub const HELPER: &str = "kaktus-libvirt";

/// One libvirt operation. `name`s are libvirt object names; errors come back as
/// messages naming the object (`instance vm1: no such instance on this node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The host name libvirt reports: `String`.
    Hostname,
    /// The capabilities XML and the node's memory: [`NodeFacts`].
    NodeFacts,
    /// Define (or redefine) a domain from XML the agent has checked: `()`.
    DefineDomain { name: String, xml: String },
    /// A domain's UUID: `String`.
    DomainUuid { name: String },
    /// A domain's XML, live or `migratable`: `String`.
    DomainXml { name: String, migratable: bool },
    /// Stop (if running) and undefine with NVRAM, snapshot and checkpoint metadata and
    /// managed save: `()`.
    DeleteDomain { name: String },
    /// State, reason and autostart; `None` for an unknown domain:
    /// `Option<DomainStatus>`.
    DomainStatus { name: String },
    /// One of upstream's eight power operations: `()`.
    Operate { name: String, operation: Operation },
    /// Every defined domain with its persistent XML, and its live XML when it runs:
    /// `Vec<DomainDefinition>`.
    Domains,
    /// Resize a running domain's disk (`disk`: its path or target) to `size` bytes: `()`.
    BlockResize {
        instance: String,
        disk: String,
        size: u64,
    },
    /// The named pools libvirt has (the others are left out): `BTreeMap<String, PoolState>`.
    Pools { names: Vec<String> },
    /// The XML of the named secrets libvirt has: `BTreeMap<String, String>`.
    Secrets { uuids: Vec<String> },
    /// Carry out pool and secret steps in order, stopping at the first failure: `()`.
    PoolSteps { steps: Vec<PoolStep> },
    /// Every named secret exists and every named pool runs: `()`.
    CheckPools {
        secrets: Vec<String>,
        pools: Vec<String>,
    },
    /// A pool's capacity, allocation and free bytes, after a refresh: [`PoolInfo`].
    PoolInfo { pool: String },
    /// A volume's capacity in bytes, after a refresh of its pool: `u64`.
    VolumeCapacity { pool: String, volume: String },
    /// Re-read a pool's directory: `()`.
    RefreshPool { pool: String },
}

impl Request {
    /// The request's name, for errors (`define_domain`).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hostname => "hostname",
            Request::NodeFacts => "node_facts",
            Request::DefineDomain { .. } => "define_domain",
            Request::DomainUuid { .. } => "domain_uuid",
            Request::DomainXml { .. } => "domain_xml",
            Request::DeleteDomain { .. } => "delete_domain",
            Request::DomainStatus { .. } => "domain_status",
            Request::Operate { .. } => "operate",
            Request::Domains => "domains",
            Request::BlockResize { .. } => "block_resize",
            Request::Pools { .. } => "pools",
            Request::Secrets { .. } => "secrets",
            Request::PoolSteps { .. } => "pool_steps",
            Request::CheckPools { .. } => "check_pools",
            Request::PoolInfo { .. } => "pool_info",
            Request::VolumeCapacity { .. } => "volume_capacity",
            Request::RefreshPool { .. } => "refresh_pool",
        }
    }
}

/// One step of [`Request::PoolSteps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum PoolStep {
    Define {
        name: String,
        xml: String,
    },
    Start {
        name: String,
    },
    Autostart {
        name: String,
    },
    /// Stop (if running) and undefine; the directory and its volumes stay.
    Undefine {
        name: String,
    },
    /// Define a private secret from `xml` and set its value from `key_file`, which must
    /// still have the `digest` plan read. The key is read by the helper: it never
    /// crosses the pipe.
    Secret {
        uuid: String,
        xml: String,
        key_file: std::path::PathBuf,
        digest: String,
    },
}

/// What [`Request::NodeFacts`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// `virConnectGetCapabilities`.
    pub capabilities: String,
    /// `virNodeGetInfo`'s memory, in bytes (0 when libvirt does not say).
    pub memory: u64,
}

/// What [`Request::DomainStatus`] answers: libvirt's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub state: u32,
    pub reason: i32,
    pub autostart: bool,
}

/// One domain of [`Request::Domains`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainDefinition {
    pub name: String,
    pub running: bool,
    /// The persistent XML, then the live one for a running domain. Empty for a domain
    /// deleted while it was listed.
    pub xmls: Vec<String>,
}

/// One pool of [`Request::Pools`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub xml: String,
    pub active: bool,
    pub autostart: bool,
}

/// What [`Request::PoolInfo`] answers, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
}

/// A request on the wire: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: u64,
    pub request: Request,
}

/// An answer on the wire: one JSON line, `{"id":1,"result":{"Ok":...}}` or
/// `{"id":1,"result":{"Err":"message"}}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub result: Result<serde_json::Value, String>,
}

/// `BTreeMap` answers, named for readers of the call sites.
pub type Pools = BTreeMap<String, PoolState>;
pub type Secrets = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_travel_as_tagged_json_lines() {
        let line = serde_json::to_string(&Envelope {
            id: 7,
            request: Request::Operate {
                name: "vm1".into(),
                operation: Operation::SoftShutdown,
            },
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"id":7,"request":{"op":"operate","name":"vm1","operation":"SoftShutdown"}}"#
        );
        let back: Envelope = serde_json::from_str(&line).unwrap();
        assert_eq!(back.request.name(), "operate");
        let reply: Reply = serde_json::from_str(r#"{"id":7,"result":{"Err":"no"}}"#).unwrap();
        assert_eq!(reply.result, Err("no".to_owned()));
    }
}
