//! What an agent kind implements to be driven by Kahuna.

use std::future::Future;

use serde_json::Value;

/// An agent's RPC surface, as Kahuna sees it.
///
/// Kahuna calls `<kind>.<Method>`; parameters and results use Go field names as keys
/// (`{"Domain": ..., "Entry": ...}`). Errors are plain strings, sent back as the
/// frame's `error`.
pub trait Service: Send + Sync + 'static {
    /// The agent kind, as in the `X-WS-Kowabunga-Agent` header and the method prefix:
    /// `Kiwi`, `Kaktus` or `Kontroller`.
    fn kind(&self) -> &'static str;

    /// `Version` reported by `<kind>.Capabilities` (`"0.1"`).
    fn version(&self) -> String;

    /// The methods this agent implements, without the `<kind>.` prefix and without
    /// `Capabilities` (answered by the transport). Kahuna only calls what is listed.
    fn methods(&self) -> &'static [&'static str];

    /// Serve one call of a listed method. `params` is never JSON `null` (the transport
    /// answers "missing request params" itself).
    fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> impl Future<Output = Result<Value, String>> + Send;
}
