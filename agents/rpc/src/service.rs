//! What an agent kind implements to be driven by Kahuna.

use std::future::Future;

use serde_json::Value;

/// An agent's RPC surface, as Kahuna sees it. The agent kind (the method prefix) is
/// not the service's: it travels with the [`Credentials`](crate::Credentials).
///
/// Kahuna calls `<kind>.<Method>`; parameters and results use Go field names as keys
/// (`{"Domain": ..., "Entry": ...}`). Errors are plain strings, sent back as the
/// frame's `error`.
pub trait Service: Send + Sync + 'static {
    /// `Version` reported by `<kind>.Capabilities`: `major.minor` of the agents' version
    /// (`"0.1"`; the workspace gives every crate the same one), as upstream's agents
    /// report theirs.
    fn version(&self) -> String {
        let v = env!("CARGO_PKG_VERSION");
        v.rsplit_once('.')
            .map_or(v, |(major_minor, _)| major_minor)
            .to_owned()
    }

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
