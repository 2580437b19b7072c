//! The kontroller's HTTP client, shared by the metadata fetch (`reload.rs`) and the
//! seed URL fetch (`seed_source.rs`): HTTPS with the system's roots, no redirects (a
//! redirect would carry the instance's headers, or fetch the agent token, from
//! somewhere it was not asked), a bound per request and per body.

use std::sync::Arc;
use std::time::Duration;

/// A client whose requests end after `timeout`; `what` names it in errors.
pub(crate) fn client(timeout: Duration, what: &str) -> Result<reqwest::Client, String> {
    let tls = kowabunga_rpc::client_tls_config(None)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(tls))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("{what} client: {e}"))
}

/// The body of `response`, refused once it grows past `limit` bytes; errors start
/// with `what` (the document and its URL).
pub(crate) async fn body_within(
    mut response: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{what}: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(format!("{what}: larger than {limit} bytes"));
        }
    }
    Ok(body)
}
