//! The fetcher follows redirects only within the origin (scheme, host, port) of the URL
//! it was configured with: the API key travels as a plain header, and a redirect to
//! another origin (object store, CDN, compromised mirror) must not receive it. Two
//! listeners on loopback: the config endpoint, and a "third party" on another port that
//! records every request it gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use kernel_cmdline::Secret;
use kowabunga_agent::credentials::Credentials;
use kowabunga_agent::fetch::{FetchConfig, FetchError, Fetcher, HEADER_API_KEY, Poll};
use kowabunga_agent::outcome::Outcome;
use tokio::net::TcpListener;

const NODE: &str = "kiwi-redirect-1";
const API_KEY: &str = "k3y-that-must-not-leak";

/// One canned answer: status, optional `Location`, body.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Vec<u8>,
}

fn ok(body: &[u8]) -> Answer {
    Answer {
        status: StatusCode::OK,
        location: None,
        body: body.to_vec(),
    }
}

fn redirect(status: StatusCode, to: String) -> Answer {
    Answer {
        status,
        location: Some(to),
        body: Vec::new(),
    }
}

/// A request as a listener saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    api_key: Option<String>,
}

/// A loopback HTTP listener answering by path and recording what it was sent.
struct Scripted {
    addr: SocketAddr,
    routes: Arc<Mutex<BTreeMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<BTreeMap<String, Answer>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (routes, seen) = (r.clone(), s.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let (routes, seen) = (routes.clone(), seen.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            seen.lock().unwrap().push(Seen {
                                method: req.method().to_string(),
                                path: path.clone(),
                                api_key: req
                                    .headers()
                                    .get(HEADER_API_KEY)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned),
                            });
                            let answer = routes.lock().unwrap().get(&path).cloned();
                            let answer = answer.unwrap_or(Answer {
                                status: StatusCode::NOT_FOUND,
                                location: None,
                                body: Vec::new(),
                            });
                            let mut response = Response::new(Full::new(Bytes::from(answer.body)));
                            *response.status_mut() = answer.status;
                            if let Some(to) = answer.location {
                                response
                                    .headers_mut()
                                    .insert("Location", to.parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, routes, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn route(&self, path: &str, answer: Answer) {
        self.routes.lock().unwrap().insert(path.to_owned(), answer);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const CONFIG: &str = "/api/v1/agents/kiwi-redirect-1/config";
const REPORT: &str = "/api/v1/agents/kiwi-redirect-1/report";

fn fetcher(endpoint: &Scripted) -> Fetcher {
    let creds = Credentials {
        kahuna: kernel_cmdline::HttpUrl::parse_base(&endpoint.origin()).unwrap(),
        agent_id: NODE.into(),
        api_key: Secret::new(API_KEY),
        config_url: None,
        ca_file: None,
    };
    let config = FetchConfig::new(&creds, "Kiwi", true).unwrap();
    assert_eq!(config.url, endpoint.url(CONFIG));
    Fetcher::new(config, &creds).unwrap()
}

/// The refusal names both origins; nothing reached the third party.
fn assert_refused(err: &FetchError, endpoint: &Scripted, third: &Scripted) {
    assert!(matches!(err, FetchError::Redirect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&endpoint.origin()), "{text}");
    assert!(text.contains(&third.origin()), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        third.seen().is_empty(),
        "the third party was contacted: {:?}",
        third.seen()
    );
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_the_key_stays_home() {
    let endpoint = Scripted::start().await;
    let third = Scripted::start().await;
    third.route(CONFIG, ok(b"version = 1\n"));
    endpoint.route(CONFIG, redirect(StatusCode::FOUND, third.url(CONFIG)));
    let mut fetcher = fetcher(&endpoint);

    let err = fetcher.poll().await.unwrap_err();
    assert_refused(&err, &endpoint, &third);
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].api_key.as_deref(), Some(API_KEY));

    // The management-path probe (HEAD) follows the same rule.
    fetcher.reachable().await.unwrap_err();
    assert!(third.seen().is_empty(), "{:?}", third.seen());
}

#[tokio::test]
async fn a_signature_redirected_to_another_origin_is_refused() {
    let endpoint = Scripted::start().await;
    let third = Scripted::start().await;
    let sig = format!("{CONFIG}.minisig");
    endpoint.route(CONFIG, ok(b"version = 1\n"));
    endpoint.route(&sig, redirect(StatusCode::FOUND, third.url(&sig)));
    third.route(&sig, ok(b"untrusted comment: x\n"));

    let err = fetcher(&endpoint).poll().await.unwrap_err();
    assert_refused(&err, &endpoint, &third);
}

#[tokio::test]
async fn a_report_redirected_to_another_origin_is_refused() {
    let endpoint = Scripted::start().await;
    let third = Scripted::start().await;
    // 307 keeps the method and the body: a followed POST would carry the key and the
    // outcome to the third party.
    endpoint.route(
        REPORT,
        redirect(StatusCode::TEMPORARY_REDIRECT, third.url(REPORT)),
    );
    third.route(
        REPORT,
        Answer {
            status: StatusCode::NO_CONTENT,
            location: None,
            body: Vec::new(),
        },
    );

    let err = fetcher(&endpoint)
        .report(&Outcome::applied(1, 1))
        .await
        .unwrap_err();
    assert_refused(&err, &endpoint, &third);
    assert_eq!(endpoint.seen()[0].method, "POST");
}

#[tokio::test]
async fn a_redirect_that_changes_only_the_scheme_is_refused() {
    let endpoint = Scripted::start().await;
    let https = format!("https://{}{CONFIG}", endpoint.addr);
    endpoint.route(CONFIG, redirect(StatusCode::MOVED_PERMANENTLY, https));

    let err = fetcher(&endpoint).poll().await.unwrap_err();
    assert!(matches!(err, FetchError::Redirect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("https://{}", endpoint.addr)),
        "{err}"
    );
}

#[tokio::test]
async fn same_origin_redirects_are_followed_with_the_key() {
    let endpoint = Scripted::start().await;
    let moved = "/v2/kiwi-redirect-1/config";
    let moved_sig = format!("{moved}.minisig");
    endpoint.route(CONFIG, redirect(StatusCode::FOUND, endpoint.url(moved)));
    endpoint.route(moved, ok(b"version = 1\n"));
    // A relative Location resolves against the same origin.
    endpoint.route(
        &format!("{CONFIG}.minisig"),
        redirect(StatusCode::FOUND, moved_sig.clone()),
    );
    endpoint.route(&moved_sig, ok(b"signature"));
    endpoint.route(
        REPORT,
        redirect(StatusCode::TEMPORARY_REDIRECT, "/v2/report".into()),
    );
    endpoint.route(
        "/v2/report",
        Answer {
            status: StatusCode::NO_CONTENT,
            location: None,
            body: Vec::new(),
        },
    );
    let mut fetcher = fetcher(&endpoint);

    match fetcher.poll().await.unwrap() {
        Poll::Document(fetched) => {
            assert_eq!(fetched.bytes, b"version = 1\n");
            assert_eq!(fetched.signature.as_deref(), Some(&b"signature"[..]));
        }
        other => panic!("expected the document, got {other:?}"),
    }
    fetcher.report(&Outcome::applied(1, 1)).await.unwrap();
    let seen = endpoint.seen();
    let paths: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("GET", CONFIG),
            ("GET", moved),
            ("GET", &*format!("{CONFIG}.minisig")),
            ("GET", &*moved_sig),
            ("POST", REPORT),
            ("POST", "/v2/report"),
        ]
    );
    assert!(
        seen.iter().all(|s| s.api_key.as_deref() == Some(API_KEY)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_same_origin_redirect_loop_ends_with_an_error() {
    let endpoint = Scripted::start().await;
    endpoint.route(CONFIG, redirect(StatusCode::FOUND, endpoint.url(CONFIG)));
    let err = fetcher(&endpoint).poll().await.unwrap_err();
    assert!(err.to_string().contains("redirects"), "{err}");
    assert_eq!(
        endpoint.seen().len(),
        4,
        "the first request and 3 redirects"
    );
}
