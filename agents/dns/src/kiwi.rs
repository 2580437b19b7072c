//! Kahuna's `Kiwi.*` RPC methods, with upstream's parameters (Go field names).
//!
//! Each method reads the DNS state in force, computes the new pushed `dns` table and
//! hands it to the [`Pusher`] as the pushed table [`SECTION`]: the agent core, which
//! makes a generation of it and runs it through the apply pipeline (plan, stage, apply,
//! confirm, commit or revert). The reply is sent once that is done: success means the
//! records are served and persisted. Calls are serialised so that no update is lost.

use kowabunga_model::Pusher;
use kowabunga_rpc::Service;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::DnsServer;
use crate::model::{self as dns, DnsConfig, DnsError, PushedDns, SECTION};

/// The Kiwi agent's RPC surface.
pub struct KiwiService<P> {
    server: DnsServer,
    pusher: P,
    serial: Mutex<()>,
}

const METHODS: &[&str] = &[
    "CreateDnsRecord",
    "CreateDnsZone",
    "DeleteDnsRecord",
    "DeleteDnsZone",
    "Reload",
    "UpdateDnsRecord",
];

impl<P: Pusher> KiwiService<P> {
    /// The methods read the state `server` runs and push through `pusher`.
    pub fn new(server: DnsServer, pusher: P) -> Self {
        Self {
            server,
            pusher,
            serial: Mutex::new(()),
        }
    }

    async fn run(&self, method: &str, params: Value) -> Result<Value, String> {
        let _serial = self.serial.lock().await;
        let state = self.server.current();
        let signed = &state.signed;
        let mut pushed = state.pushed.clone();
        let invalid = |e: DnsError| format!("Kiwi.{method}: {e}");
        match method {
            "Reload" => {
                let args: ReloadArgs = decode(method, params)?;
                pushed = reload(args).map_err(invalid)?;
            }
            "CreateDnsZone" => {
                let args: ZoneArgs = decode(method, params)?;
                pushed.create_zone(&args.domain).map_err(invalid)?;
            }
            "DeleteDnsZone" => {
                let args: ZoneArgs = decode(method, params)?;
                pushed.delete_zone(&args.domain, signed).map_err(invalid)?;
            }
            "CreateDnsRecord" | "UpdateDnsRecord" => {
                let args: RecordArgs = decode(method, params)?;
                let fqdn = format!("{}.{}", args.entry, args.domain);
                let addresses = dns::parse_addresses(&fqdn, &args.addresses).map_err(invalid)?;
                if method == "CreateDnsRecord" {
                    pushed.set_record(&args.domain, &args.entry, addresses)
                } else {
                    pushed.update_record(&args.domain, &args.entry, addresses, signed)
                }
                .map_err(invalid)?;
            }
            "DeleteDnsRecord" => {
                let args: RecordArgs = decode(method, params)?;
                pushed
                    .delete_record(&args.domain, &args.entry, signed)
                    .map_err(invalid)?;
            }
            other => return Err(format!("wsrpc: can't find method Kiwi.{other}")),
        }
        // Refuse here what the pipeline would refuse, with the method's name on it.
        dns::merge(signed, &pushed).map_err(invalid)?;
        if pushed == state.pushed {
            tracing::debug!(method, "kiwi: no change to push");
            return Ok(json!({}));
        }
        let names: usize = pushed.zones.values().map(|z| z.records.len()).sum();
        tracing::info!(
            method,
            zones = pushed.zones.len(),
            names,
            "kiwi: pushing DNS records"
        );
        self.pusher
            .push(SECTION, pushed.to_table())
            .await
            .map_err(|e| format!("Kiwi.{method}: {e}"))?;
        Ok(json!({}))
    }
}

impl<P: Pusher> Service for KiwiService<P> {
    fn methods(&self) -> &'static [&'static str] {
        METHODS
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.run(method, params).await
    }
}

/// `Kiwi.Reload`: upstream sends `Type` per record; A and AAAA are served, other
/// types are skipped as upstream does. The address family must match the type.
fn reload(args: ReloadArgs) -> Result<PushedDns, DnsError> {
    let mut domains = Vec::with_capacity(args.domains.len());
    for domain in args.domains {
        let mut records = Vec::with_capacity(domain.records.len());
        for record in domain.records {
            let fqdn = DnsConfig::fqdn(&domain.name, &record.name);
            let want_v6 = match record.kind.to_ascii_uppercase().as_str() {
                "A" | "" => false,
                "AAAA" => true,
                other => {
                    tracing::debug!(%fqdn, kind = other, "kiwi: skipping a record of a type not served");
                    continue;
                }
            };
            let addresses = dns::parse_addresses(&fqdn, &record.addresses)?;
            if let Some(bad) = addresses.iter().find(|a| a.is_ipv6() != want_v6) {
                return Err(DnsError::BadAddress {
                    name: format!("{fqdn} ({})", if want_v6 { "AAAA" } else { "A" }),
                    address: bad.to_string(),
                });
            }
            records.push((record.name, addresses));
        }
        domains.push((domain.name, records));
    }
    PushedDns::reload(domains)
}

fn decode<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, String> {
    serde_json::from_value(params).map_err(|e| format!("Kiwi.{method}: invalid params: {e}"))
}

/// Go's encoding/json: a missing or `null` field is the zero value; unknown fields are
/// ignored.
fn go_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `proto.KiwiReloadArgs`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReloadArgs {
    #[serde(default, deserialize_with = "go_default")]
    domains: Vec<ReloadDomain>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReloadDomain {
    #[serde(default, deserialize_with = "go_default")]
    name: String,
    #[serde(default, deserialize_with = "go_default")]
    records: Vec<ReloadRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReloadRecord {
    #[serde(default, deserialize_with = "go_default")]
    name: String,
    #[serde(rename = "Type", default, deserialize_with = "go_default")]
    kind: String,
    #[serde(default, deserialize_with = "go_default")]
    addresses: Vec<String>,
}

/// `proto.KiwiCreateDnsZoneArgs` / `KiwiDeleteDnsZoneArgs`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ZoneArgs {
    #[serde(default, deserialize_with = "go_default")]
    domain: String,
}

/// `proto.KiwiCreateDnsRecordArgs` / `Update...` / `Delete...` (no `Addresses`)
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordArgs {
    #[serde(default, deserialize_with = "go_default")]
    domain: String,
    #[serde(default, deserialize_with = "go_default")]
    entry: String,
    #[serde(default, deserialize_with = "go_default")]
    addresses: Vec<String>,
}
