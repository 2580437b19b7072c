//! `<agent> health-gate`: whether this boot of the image is good enough to keep. The
//! image's `ROLE-health-gate.service` runs it before `boot-complete.target` on boots
//! that systemd-boot counts (a new version's first tries); systemd-bless-boot marks the
//! version good only if it passes. When it fails (or never gets to run), the tries run
//! out and systemd-boot starts the previous version (docs/images.md, "A/B updates").
//!
//! It asks the running agent's `/status` (loopback) until, within the deadline:
//! - a generation is in force (the agent restored what it ran before the reboot);
//! - the last attempt did not end reverted or deferred (the reconcilers' checks pass
//!   under this image; a document refused for its own faults says nothing of the image);
//! - the config endpoint answered during this boot, or the RPC link to Kahuna is up.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Why `/status` does not (yet) show a healthy boot; `Ok` when it does.
pub fn judge(status: &Value) -> Result<(), String> {
    if status.get("generation").is_none_or(Value::is_null) {
        return Err("no generation in force yet (the agent has not restored its state)".into());
    }
    if let Some(attempt) = status.get("last_attempt").filter(|a| !a.is_null()) {
        let state = attempt.get("state").and_then(Value::as_str).unwrap_or("");
        if matches!(state, "reverted" | "deferred") {
            let detail = attempt
                .get("detail")
                .or_else(|| attempt.get("reason"))
                .map(Value::to_string)
                .unwrap_or_default();
            return Err(format!("the last attempt was {state}: {detail}"));
        }
    }
    let fetched = status.get("last_fetch_ok").is_some_and(|v| !v.is_null());
    let linked = status.get("kahuna_link").and_then(Value::as_str) == Some("connected");
    if !fetched && !linked {
        let why = status
            .get("last_fetch_error")
            .and_then(Value::as_str)
            .unwrap_or("no answer yet");
        return Err(format!(
            "neither the config endpoint nor Kahuna's RPC was reached during this boot ({why})"
        ));
    }
    Ok(())
}

/// Poll `http://addr/status` every `every` until [`judge`] passes (`Ok`) or `deadline`
/// has passed (`Err`, with the last reason).
pub async fn wait(addr: SocketAddr, deadline: Duration, every: Duration) -> Result<(), String> {
    let url = format!("http://{addr}/status");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let verdict = match client.get(&url).send().await {
            Ok(response) => match response.json::<Value>().await {
                Ok(status) => judge(&status),
                Err(e) => Err(format!("{url}: {e}")),
            },
            Err(e) => Err(format!("the agent does not answer ({url}: {e})")),
        };
        match verdict {
            Ok(()) => return Ok(()),
            Err(why) if tokio::time::Instant::now() + every > end => {
                return Err(format!("not healthy after {}s: {why}", deadline.as_secs()));
            }
            Err(why) => {
                tracing::info!("health gate: not yet: {why}");
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn a_boot_is_good_with_a_generation_a_clean_last_attempt_and_kahuna_reached() {
        let good = json!({"generation": 3, "last_attempt": {"state": "applied"}, "last_fetch_ok": 1700000000});
        judge(&good).unwrap();
        judge(&json!({"generation": 3, "last_attempt": null, "kahuna_link": "connected"})).unwrap();
        // A refused document is the document's fault, not the image's.
        judge(&json!({"generation": 3, "last_attempt": {"state": "rejected", "reason": "signature"}, "last_fetch_ok": 1})).unwrap();
    }

    #[test]
    fn each_missing_condition_is_named() {
        for (status, expect) in [
            (
                json!({"generation": null, "last_fetch_ok": 1}),
                "no generation",
            ),
            (json!({"last_fetch_ok": 1}), "no generation"),
            (
                json!({"generation": 2, "last_attempt": {"state": "reverted", "reason": "unhealthy"}, "last_fetch_ok": 1}),
                "reverted",
            ),
            (
                json!({"generation": 2, "last_attempt": {"state": "deferred"}, "last_fetch_ok": 1}),
                "deferred",
            ),
            (
                json!({"generation": 2, "last_fetch_ok": null, "kahuna_link": "down: refused", "last_fetch_error": "connection refused"}),
                "connection refused",
            ),
        ] {
            let err = judge(&status).unwrap_err();
            assert!(err.contains(expect), "{status}: {err}");
        }
    }
}
