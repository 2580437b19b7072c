//! One RPC frame in, at most one frame out, as upstream's `wsrpc` server frames them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Service;

/// Upstream's error text for a request whose `params` is `null` or missing.
pub const MISSING_PARAMS: &str = "wsrpc: missing request params";

#[derive(Deserialize)]
struct Request {
    id: u64,
    method: String,
    #[serde(default)]
    params: Value,
}

#[derive(Serialize)]
struct Response<'a> {
    id: u64,
    result: Value,
    error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Capabilities {
    version: String,
    methods: Vec<&'static str>,
}

/// Serve one frame: the encoded reply, or `None` when the frame cannot be answered
/// (not JSON, or no usable `id`: there is nobody to reply to). Never panics.
/// `kind` is the agent kind the calls must be addressed to (`Kiwi` for `Kiwi.Reload`).
pub async fn dispatch<S: Service>(service: &S, kind: &str, frame: &[u8]) -> Option<Vec<u8>> {
    let request: Request = match serde_json::from_slice(frame) {
        Ok(request) => request,
        Err(err) => {
            // Answer if the id can still be read, so that Kahuna is not left waiting.
            let id = serde_json::from_slice::<Value>(frame)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_u64));
            tracing::warn!(bytes = frame.len(), ?id, "rpc: malformed request: {err}");
            return id.map(|id| encode(id, Err(format!("wsrpc: malformed request: {err}"))));
        }
    };
    let id = request.id;
    let outcome = serve(service, kind, request).await;
    if let Err(err) = &outcome {
        tracing::warn!(id, "rpc: call failed: {err}");
    }
    Some(encode(id, outcome))
}

async fn serve<S: Service>(
    service: &S,
    agent_kind: &str,
    request: Request,
) -> Result<Value, String> {
    let Request { method, params, .. } = request;
    let Some((kind, name)) = method.rsplit_once('.') else {
        return Err(format!(
            "wsrpc: service/method request ill-formed: {method}"
        ));
    };
    if kind != agent_kind {
        return Err(format!("wsrpc: can't find service {method}"));
    }
    let known = name == "Capabilities" || service.methods().contains(&name);
    if !known {
        return Err(format!("wsrpc: can't find method {method}"));
    }
    if params.is_null() {
        return Err(MISSING_PARAMS.to_owned());
    }
    tracing::debug!(%method, "rpc: call");
    if name == "Capabilities" {
        return Ok(capabilities(service));
    }
    service.call(name, params).await
}

/// `{Version, Methods}`: every method Kahuna may call, `Capabilities` included and
/// sorted, as upstream's server lists its registered methods.
fn capabilities<S: Service>(service: &S) -> Value {
    let mut methods: Vec<&'static str> = service.methods().to_vec();
    methods.push("Capabilities");
    methods.sort_unstable();
    methods.dedup();
    serde_json::to_value(Capabilities {
        version: service.version(),
        methods,
    })
    .unwrap_or(Value::Null)
}

fn encode(id: u64, outcome: Result<Value, String>) -> Vec<u8> {
    let response = match &outcome {
        Ok(result) => Response {
            id,
            result: result.clone(),
            error: None,
        },
        Err(err) => Response {
            id,
            result: Value::Null,
            error: Some(err),
        },
    };
    // Serialising a Value with string keys cannot fail; keep a valid frame regardless.
    serde_json::to_vec(&response).unwrap_or_else(|_| {
        format!(r#"{{"id":{id},"result":null,"error":"wsrpc: cannot encode reply"}}"#).into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Echo;

    impl Service for Echo {
        fn version(&self) -> String {
            "0.1".into()
        }
        fn methods(&self) -> &'static [&'static str] {
            &["Reload", "Fail"]
        }
        async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
            match method {
                "Fail" => Err("it failed".into()),
                _ => Ok(json!({ "Got": params })),
            }
        }
    }

    async fn call(frame: &str) -> Option<Value> {
        dispatch(&Echo, "Kiwi", frame.as_bytes())
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn capabilities_lists_methods_sorted() {
        let r = call(r#"{"id":1,"method":"Kiwi.Capabilities","params":{}}"#)
            .await
            .unwrap();
        assert_eq!(
            r,
            json!({"id":1,"result":{"Version":"0.1","Methods":["Capabilities","Fail","Reload"]},"error":null})
        );
    }

    #[tokio::test]
    async fn results_and_errors_are_framed_like_upstream() {
        let r = call(r#"{"id":7,"method":"Kiwi.Reload","params":{"Domains":[]}}"#)
            .await
            .unwrap();
        assert_eq!(
            r,
            json!({"id":7,"result":{"Got":{"Domains":[]}},"error":null})
        );
        let r = call(r#"{"id":8,"method":"Kiwi.Fail","params":{}}"#)
            .await
            .unwrap();
        assert_eq!(r, json!({"id":8,"result":null,"error":"it failed"}));
    }

    #[tokio::test]
    async fn bad_requests_get_error_replies() {
        let cases = [
            (
                r#"{"id":2,"method":"Kiwi.Reload","params":null}"#,
                MISSING_PARAMS,
            ),
            (r#"{"id":2,"method":"Kiwi.Reload"}"#, MISSING_PARAMS),
            (
                r#"{"id":2,"method":"Kiwi.Nope","params":{}}"#,
                "wsrpc: can't find method Kiwi.Nope",
            ),
            (
                r#"{"id":2,"method":"Kaktus.Reload","params":{}}"#,
                "wsrpc: can't find service Kaktus.Reload",
            ),
            (r#"{"id":2,"method":"Reload","params":{}}"#, "ill-formed"),
            (r#"{"id":2,"method":7,"params":{}}"#, "malformed request"),
        ];
        for (frame, want) in cases {
            let r = call(frame).await.unwrap();
            assert_eq!(r["id"], 2, "{frame}");
            assert_eq!(r["result"], Value::Null, "{frame}");
            let err = r["error"].as_str().unwrap();
            assert!(err.contains(want), "{frame}: {err}");
        }
    }

    #[tokio::test]
    async fn unanswerable_frames_are_dropped() {
        for frame in [
            "",
            "{",
            "not json",
            "[1,2]",
            r#"{"method":"Kiwi.Reload"}"#,
            r#"{"id":-1}"#,
        ] {
            assert_eq!(call(frame).await, None, "{frame}");
        }
        assert_eq!(dispatch(&Echo, "Kiwi", &[0xff, 0xfe, 0x00]).await, None);
    }
}
