//! Helpers shared by the agents' test suites. Test code: it panics on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod file_server;
pub mod minisign;

/// A private CA and a server certificate for 127.0.0.1 signed by it (PEM files).
pub struct Pki {
    /// The CA certificate: what a client pins.
    pub ca: PathBuf,
    /// The server's certificate.
    pub chain: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes a [`Pki`] in `dir` with the `openssl` CLI (Debian's ca-certificates depends on
/// it); `tag` prefixes the file names so that several fit in one directory.
pub fn make_pki(dir: &Path, tag: &str) -> Pki {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl not found (package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = format!("{tag}-ca.key");
    let ca = format!("{tag}-ca.pem");
    let key = format!("{tag}-leaf.key");
    let csr = format!("{tag}-leaf.csr");
    let leaf = format!("{tag}-leaf.pem");
    let ext = format!("{tag}-leaf.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = format!("/CN={tag} test CA");
    let mut ca_req = vec!["req", "-x509"];
    ca_req.extend(ec);
    ca_req.extend([
        "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &subject,
    ]);
    run(&ca_req);
    let mut leaf_req = vec!["req"];
    leaf_req.extend(ec);
    leaf_req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    run(&leaf_req);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &leaf,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    Pki {
        ca: dir.join(ca),
        chain: dir.join(leaf),
        key: dir.join(key),
    }
}
