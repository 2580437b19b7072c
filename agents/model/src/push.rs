//! How state that Kahuna pushes over RPC (`Kiwi.CreateDnsRecord`...) enters the apply
//! pipeline. A role's RPC methods that change desired state hand a whole new pushed
//! section to a [`Pusher`]; the agent core implements it by making a generation of it
//! (plan, stage, apply, confirm, commit or revert), recording and reporting the outcome
//! like a pulled document. Read-only and imperative RPC methods (instance state, start,
//! stop) never go through a `Pusher` and never wait for the pipeline.

use std::future::Future;

/// Hands a new pushed section to the pipeline.
pub trait Pusher: Send + Sync + 'static {
    /// Replace the pushed table `section` and bring it into force. `Err` carries why it
    /// was rejected or reverted (the previous state is then still in force).
    fn push(
        &self,
        section: &'static str,
        table: toml::Table,
    ) -> impl Future<Output = Result<(), String>> + Send;
}
