//! `ds=nocloud;s=URL`: the seed fetched from a web server into a directory the agent
//! then reads like a mounted `cidata` volume (`kontroller::seed_source`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kernel_cmdline::HttpUrl;
use kontroller::nocloud::Seed;
use kontroller::seed_source;

/// A canned answer: status, headers, body.
type Answer = (StatusCode, Vec<(String, String)>, Bytes);

/// A web server answering `files` by path, 404 otherwise; records the paths asked.
#[derive(Clone, Default)]
struct Server {
    files: Arc<Mutex<HashMap<String, Answer>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn put(&self, path: &str, status: StatusCode, body: &str) {
        self.put_with(path, status, &[], body);
    }

    fn put_with(&self, path: &str, status: StatusCode, headers: &[(&str, &str)], body: &str) {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.files.lock().unwrap().insert(
            path.to_owned(),
            (status, headers, Bytes::from(body.to_owned())),
        );
    }

    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| this.clone().answer(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    async fn answer(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        self.hits.lock().unwrap().push(path.clone());
        let found = self.files.lock().unwrap().get(&path).cloned();
        let (status, headers, body) =
            found.unwrap_or((StatusCode::NOT_FOUND, Vec::new(), Bytes::new()));
        let mut response = Response::builder().status(status);
        for (k, v) in headers {
            response = response.header(k, v);
        }
        Ok(response.body(Full::new(body)).unwrap())
    }
}

const META: &str = "instance-id: i-url-1\nlocal-hostname: kawaii-url\n\
    kowabunga_controller_uri: ws://10.0.2.100:8080\n\
    kowabunga_controller_agent_id: kawaii-url\n\
    kowabunga_controller_agent_token: kw-url-token\n";

#[tokio::test]
async fn a_seed_url_is_fetched_and_read_like_a_volume() {
    let server = Server::default();
    server.put("/seed/meta-data", StatusCode::OK, META);
    server.put(
        "/seed/user-data",
        StatusCode::OK,
        "#cloud-config\nhostname: from-url\n",
    );
    let base = server.start().await;
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed-url");
    // No final slash: added, as the file names go under the seed's path.
    let url = HttpUrl::parse(&format!("{base}/seed")).unwrap();
    let files = seed_source::fetch(&url, &seed_dir, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(files, ["meta-data", "user-data"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&seed_dir), 0o700);
    assert_eq!(
        mode(&seed_dir.join("meta-data")),
        0o600,
        "meta-data holds the token"
    );
    let seed = Seed::from_dir(&seed_dir).unwrap();
    assert_eq!(seed.meta_data.instance_id, "i-url-1");
    assert!(seed.network_config.is_none());
    assert_eq!(
        *server.hits.lock().unwrap(),
        ["/seed/meta-data", "/seed/user-data", "/seed/network-config"]
    );
}

#[tokio::test]
async fn a_seed_url_without_meta_data_fails_naming_it_and_writes_nothing() {
    let server = Server::default();
    server.put("/seed/user-data", StatusCode::OK, "#cloud-config\n");
    let base = server.start().await;
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed-url");
    let url = HttpUrl::parse(&format!("{base}/seed/")).unwrap();
    let err = seed_source::fetch(&url, &seed_dir, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(err.contains("/seed/meta-data: HTTP 404"), "{err}");
    assert!(!seed_dir.exists());
    // Retried with back-off while the deadline allowed (the network may be coming up).
    let tries = server
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|p| *p == "/seed/meta-data")
        .count();
    assert!(tries >= 2, "{tries} tries");
}

#[tokio::test]
async fn a_seed_url_that_redirects_is_not_followed() {
    let server = Server::default();
    server.put_with(
        "/seed/meta-data",
        StatusCode::FOUND,
        &[("location", "/elsewhere/meta-data")],
        "",
    );
    server.put("/elsewhere/meta-data", StatusCode::OK, META);
    let base = server.start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = HttpUrl::parse(&format!("{base}/seed/")).unwrap();
    let err = seed_source::fetch(&url, &dir.path().join("s"), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.contains("HTTP 302"), "{err}");
    assert!(
        !server
            .hits
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.starts_with("/elsewhere"))
    );
}
