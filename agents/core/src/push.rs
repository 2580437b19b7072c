//! State pushed over Kahuna's RPC, brought into force through the pipeline and
//! recorded like a pulled document (journal, status board, report to Kahuna).

use std::collections::BTreeMap;
use std::sync::Arc;

use kowabunga_model::Pusher;
use tokio::sync::Mutex;

use crate::pipeline::Pipeline;
use crate::record::Recorder;

/// The core's [`Pusher`]: takes the pipeline's lock for a whole generation.
#[derive(Clone)]
pub struct PipelinePusher {
    pipeline: Arc<Mutex<Pipeline>>,
    recorder: Recorder,
}

impl PipelinePusher {
    pub fn new(pipeline: Arc<Mutex<Pipeline>>, recorder: Recorder) -> Self {
        Self { pipeline, recorder }
    }
}

impl PipelinePusher {
    /// Whether the generation in force holds a pushed table `name`.
    pub async fn has_pushed(&self, name: &str) -> bool {
        self.pipeline
            .lock()
            .await
            .pushed_table(name)
            .await
            .is_some()
    }

    /// Replaces several pushed tables in one generation (all in force, or none), then
    /// records the outcome; `Err` says why they were rejected or reverted.
    pub async fn push_tables(&self, tables: BTreeMap<String, toml::Table>) -> Result<(), String> {
        let outcome = self.pipeline.lock().await.push_tables(tables).await;
        self.recorder.record(&outcome).await;
        if outcome.is_failure() {
            Err(outcome.to_string())
        } else {
            Ok(())
        }
    }
}

impl Pusher for PipelinePusher {
    async fn push(&self, section: &'static str, table: toml::Table) -> Result<(), String> {
        self.push_tables(std::iter::once((section.to_owned(), table)).collect())
            .await
    }
}
