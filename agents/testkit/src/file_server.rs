//! A loopback HTTP server of files by name (under any directory: `/v/VERSION/NAME`). A
//! few lines over a TCP socket rather than hyper, so that it can lie: announce a
//! `Content-Length` and close the connection halfway (a truncated download).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers for one path.
#[derive(Clone)]
pub struct File {
    pub body: Vec<u8>,
    /// Bytes actually sent (less than `body` for a truncated answer).
    pub send: usize,
}

pub type Files = Arc<Mutex<BTreeMap<String, File>>>;

pub struct Server {
    pub base: String,
    pub files: Files,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v/0.1.1", listener.local_addr().unwrap());
        let files: Files = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (files.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (f, r) = (f.clone(), r.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    r.lock().unwrap().push(head);
                    let file = f
                        .lock()
                        .unwrap()
                        .get(path.rsplit('/').next().unwrap_or(""))
                        .cloned();
                    let reply = match file {
                        Some(file) => {
                            let mut out = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                file.body.len()
                            )
                            .into_bytes();
                            out.extend_from_slice(&file.body[..file.send]);
                            out
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = socket.write_all(&reply).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            base,
            files,
            requests,
        }
    }

    pub fn put(&self, name: &str, body: Vec<u8>) {
        let send = body.len();
        self.files
            .lock()
            .unwrap()
            .insert(name.to_owned(), File { body, send });
    }

    pub fn truncate(&self, name: &str, send: usize) {
        self.files.lock().unwrap().get_mut(name).unwrap().send = send;
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The directory URL of `version` on this server.
    pub fn url_for(&self, version: &str) -> String {
        format!("{}/{version}", self.base.trim_end_matches("/0.1.1"))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic contents, distinct per file and incompressible (an xorshift), so
/// that a served file is about as long as its contents.
pub fn content(i: usize, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
