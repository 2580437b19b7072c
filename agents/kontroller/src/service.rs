//! `Kontroller.*`, Kahuna's calls to a service VM: `Reload` (fetch the metadata again and
//! bring it into force). `Capabilities` is answered by the transport.

use serde_json::{Value, json};

use crate::reload::Reloader;

pub const METHODS: &[&str] = &["Reload"];

/// The Kontroller RPC service.
#[derive(Clone)]
pub struct KontrollerService {
    reloader: Reloader,
}

impl KontrollerService {
    pub fn new(reloader: Reloader) -> Self {
        Self { reloader }
    }
}

impl kowabunga_rpc::Service for KontrollerService {
    fn methods(&self) -> &'static [&'static str] {
        METHODS
    }

    async fn call(&self, method: &str, _params: Value) -> Result<Value, String> {
        match method {
            "Reload" => self
                .reloader
                .reload()
                .await
                .map(|()| json!({}))
                .map_err(|e| format!("Kontroller.Reload: {e}")),
            other => Err(format!("Kontroller.{other}: no such method")),
        }
    }
}
