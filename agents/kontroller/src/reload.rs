//! One Reload: fetch the instance metadata from Kahuna, turn it (with the seed's
//! network-config) into the desired state and push it through the generation pipeline.
//! Done at start and on every `Kontroller.Reload`. Whatever fails (Kahuna out of reach,
//! a malformed or refused document, a reverted generation) leaves the state in force.

use std::sync::Arc;
use std::time::Duration;

use kowabunga_agent::push::PipelinePusher;

use kowabunga_model::firewall;

use crate::desired;
use crate::metadata;
use crate::nocloud::Seed;

/// Largest metadata document read (Kahuna's are a few KiB).
const MAX_METADATA_BYTES: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches the metadata and pushes what it asks for. Cloning shares it.
#[derive(Clone)]
pub struct Reloader {
    /// The seed, or why it could not be read.
    seed: Result<Arc<Seed>, String>,
    client: Result<reqwest::Client, String>,
    pusher: PipelinePusher,
    /// One Reload at a time: a second waits for the first.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    pub fn new(seed: Result<Arc<Seed>, String>, pusher: PipelinePusher) -> Self {
        Self {
            seed,
            client: crate::http::client(TIMEOUT, "metadata"),
            pusher,
            running: Arc::default(),
        }
    }

    /// At start: the seed's network first (the metadata is reached through it), then a
    /// Reload. Once the metadata is in force, later starts find its network and
    /// firewall in the generation in force: the seed's network alone is not pushed
    /// again (it would drop the firewall until Kahuna answers).
    pub async fn start(&self) -> Result<(), String> {
        let seed = self.seed.as_ref().map_err(Clone::clone)?;
        if let Some(network_config) = &seed.network_config
            && !self.pusher.has_pushed(firewall::SECTION).await
        {
            let tables = desired::network_only(network_config)?;
            self.pusher.push_tables(tables).await?;
        }
        self.reload().await
    }

    /// Fetch, check, push. `Err` says why nothing changed (or why the change was reverted).
    pub async fn reload(&self) -> Result<(), String> {
        let _one = self.running.lock().await;
        let seed = self.seed.as_ref().map_err(Clone::clone)?;
        let text = self.fetch(seed).await?;
        let meta = metadata::parse(&text).map_err(|e| e.to_string())?;
        let tables = desired::tables(seed.network_config.as_ref(), &meta)?;
        self.pusher.push_tables(tables).await
    }

    async fn fetch(&self, seed: &Seed) -> Result<String, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let meta_data = &seed.meta_data;
        let url = meta_data
            .metadata_uri
            .as_ref()
            .ok_or("meta-data has no kowabunga_metadata_uri: nothing to fetch")?;
        let mut request = client
            .get(url.as_str())
            .header("X-Kowabunga-Instance-Id", &meta_data.instance_id);
        if let Some(ip) = meta_data.local_ip {
            request = request.header("X-Kowabunga-Source-Ip", ip.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("instance metadata {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "instance metadata {url}: HTTP {}",
                response.status()
            ));
        }
        let body = crate::http::body_within(
            response,
            MAX_METADATA_BYTES,
            &format!("instance metadata {url}"),
        )
        .await?;
        String::from_utf8(body).map_err(|_| format!("instance metadata {url}: not UTF-8"))
    }
}
