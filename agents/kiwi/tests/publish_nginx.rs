//! Serving documents without Kahuna: `scripts/publish.sh` signs documents with the stock
//! minisign and lays them out; Debian's nginx serves that layout with the documented
//! configuration (`docs/examples/nginx/kowabunga.conf`, used as is but for addresses
//! and paths) over HTTPS to a real `kiwi run` in a network namespace: the first fetch is
//! applied, the next poll is a 304 in nginx's own access log (the fetcher's
//! ETag/If-None-Match against a real server), a new version is picked up, and reports
//! land in the documented report log. Needs root, iproute2, nginx (nginx-light),
//! minisign, openssl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "kiwi-static-test";
const STATUS: &str = "127.0.0.1:19723";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A directory with a signing key, readable by nginx's workers (`nobody`).
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let ok = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("keys/kahuna.pub"))
            .arg("-s")
            .arg(dir.path().join("kahuna.key"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn www(&self) -> PathBuf {
        self.path("www")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let file = self.path(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    /// `scripts/publish.sh --key ... --root www [extra...] FILE`, checked by kiwi.
    fn publish(&self, file: &Path, extra: &[&str]) -> Output {
        Command::new(repo().join("scripts/publish.sh"))
            .arg("--key")
            .arg(self.path("kahuna.key"))
            .arg("--root")
            .arg(self.www())
            .arg("--check")
            .arg(env!("CARGO_BIN_EXE_kiwi"))
            .arg("--trusted-keys")
            .arg(self.path("keys"))
            .args(extra)
            .arg(file)
            .output()
            .unwrap()
    }

    fn config(&self) -> PathBuf {
        self.www().join(format!("api/v1/agents/{NODE}/config"))
    }
}

fn document(version: u64, address: &str) -> String {
    format!(
        "version = {version}\nnode = \"{NODE}\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2099-01-01T00:00:00Z\n\
         [network]\n[[network.links]]\nname = \"pub0\"\nkind = \"bridge\"\naddresses = [\"{address}\"]\n"
    )
}

#[test]
fn publish_lays_out_signs_and_refuses_what_agents_would_refuse() {
    let site = Site::new();
    let v1 = site.write("v1.toml", &document(1, "10.9.0.1/24"));
    let out = site.publish(&v1, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let config = site.config();
    let signature = PathBuf::from(format!("{}.minisig", config.display()));
    assert_eq!(std::fs::read(&config).unwrap(), std::fs::read(&v1).unwrap());
    let ok = Command::new("minisign")
        .args(["-V", "-q", "-p"])
        .arg(site.path("keys/kahuna.pub"))
        .arg("-m")
        .arg(&config)
        .arg("-x")
        .arg(&signature)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "the stock minisign verifies the published pair"
    );
    for file in [&config, &signature] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{}", file.display());
    }
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let first = mtime(&config);

    // Same size, same second: the mtime still moves on, so mtime-size ETags differ.
    let v2 = site.write("v2.toml", &document(2, "10.9.0.2/24"));
    let out = site.publish(&v2, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(mtime(&config) > first, "mtime did not move forward");

    // Not above what is published: refused, the published pair untouched.
    let out = site.publish(&v1, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not above version 2"), "{}", text(&out));
    assert_eq!(std::fs::read(&config).unwrap(), std::fs::read(&v2).unwrap());

    // Rejected by `kiwi check`: not published, nothing left behind.
    let bad = site.write(
        "v3.toml",
        &document(3, "10.9.0.3/24").replace("kind = \"bridge\"", "kind = \"vlan\"\nid = 5000"),
    );
    let out = site.publish(&bad, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("5000"), "{}", text(&out));
    assert_eq!(std::fs::read(&config).unwrap(), std::fs::read(&v2).unwrap());
    let left: Vec<_> = std::fs::read_dir(config.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

/// Processes started in the namespace, and the namespace, gone at the end.
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new() -> Self {
        let name = format!("kiwi-nginx-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add (the test needs root)");
        let netns = Self {
            name,
            children: Vec::new(),
        };
        assert!(
            netns
                .run("ip", &["link", "set", "lo", "up"])
                .status
                .success()
        );
        netns
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap()
    }

    fn spawn(&mut self, program: &str, args: &[String], log: &Path) {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `docs/examples/nginx/kowabunga.conf` with this test's address, certificate, web root
/// and log, inside a minimal nginx.conf.
fn nginx_conf(site: &Site, pki: &kowabunga_testkit::Pki) -> PathBuf {
    let documented =
        std::fs::read_to_string(repo().join("docs/examples/nginx/kowabunga.conf")).unwrap();
    let mut conf = documented.clone();
    for (from, to) in [
        ("listen 443 ssl;", "listen 127.0.0.1:8443 ssl;".to_owned()),
        (
            "/etc/ssl/kowabunga/fullchain.pem",
            pki.chain.display().to_string(),
        ),
        (
            "/etc/ssl/kowabunga/privkey.pem",
            pki.key.display().to_string(),
        ),
        ("/srv/kowabunga", site.www().display().to_string()),
        (
            "/var/log/nginx/kowabunga-reports.log",
            site.path("reports.log").display().to_string(),
        ),
    ] {
        assert!(
            conf.contains(from),
            "the documented nginx config lost {from:?}"
        );
        conf = conf.replace(from, &to);
    }
    std::fs::write(site.path("kowabunga.conf"), conf).unwrap();
    let dir = site.path("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {};\n}}\n",
        site.path("kowabunga.conf").display()
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, main).unwrap();
    file
}

/// The agent's `/status`, when it answers.
fn status(netns: &Netns) -> Option<serde_json::Value> {
    let out = netns.run(
        env!("CARGO_BIN_EXE_kiwi"),
        &[
            "status",
            "--status-addr",
            STATUS,
            "--state-root",
            "/nonexistent",
        ],
    );
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_for(
    what: &str,
    seconds: u64,
    mut ready: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {seconds} s\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Statuses nginx logged for GET of the document, in order.
fn config_statuses(site: &Site) -> Vec<u16> {
    let log = std::fs::read_to_string(site.path("nginx/access.log")).unwrap_or_default();
    let get = format!("\"GET /api/v1/agents/{NODE}/config HTTP/1.1\" ");
    log.lines()
        .filter_map(|l| l.split_once(&get))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn nginx_serves_the_published_layout_to_a_real_agent() {
    let site = Site::new();
    let pki = kowabunga_testkit::make_pki(site.dir.path(), "nginx");
    let v1 = site.write("v1.toml", &document(1, "10.9.0.1/24"));
    let out = site.publish(&v1, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let mut netns = Netns::new();
    let conf = nginx_conf(&site, &pki);
    let test = netns.run("nginx", &["-t", "-c", &conf.display().to_string()]);
    assert!(test.status.success(), "nginx -t: {}", text(&test));
    netns.spawn(
        "nginx",
        &["-c".into(), conf.display().to_string()],
        &site.path("nginx-stderr.log"),
    );

    let cmdline = site.write(
        "cmdline",
        &format!(
            "kowabunga.kahuna=https://127.0.0.1:8443 kowabunga.agent_id={NODE} kowabunga.api_key=k \
             kowabunga.ca_file={} kowabunga.interval=5 kowabunga.confirm_window=5\n",
            pki.ca.display()
        ),
    );
    netns.spawn(
        env!("CARGO_BIN_EXE_kiwi"),
        &[
            "run".into(),
            "--status-addr".into(),
            STATUS.into(),
            "--state-root".into(),
            site.path("state").display().to_string(),
            "--trusted-keys".into(),
            site.path("keys").display().to_string(),
            "--cmdline".into(),
            cmdline.display().to_string(),
        ],
        &site.path("agent.log"),
    );
    let context = || {
        format!(
            "status: {:?}\naccess log:\n{}\nagent log:\n{}\nnginx error log:\n{}",
            status(&netns),
            std::fs::read_to_string(site.path("nginx/access.log")).unwrap_or_default(),
            std::fs::read_to_string(site.path("agent.log")).unwrap_or_default(),
            std::fs::read_to_string(site.path("nginx/error.log")).unwrap_or_default(),
        )
    };

    // First fetch: applied.
    wait_for(
        "version 1 in force",
        60,
        || status(&netns).is_some_and(|s| s["version"] == 1),
        context,
    );
    let addr = netns.run("ip", &["-o", "addr", "show", "pub0"]);
    assert!(text(&addr).contains("10.9.0.1/24"), "{}", text(&addr));

    // Next poll: nginx answers 304 to the agent's If-None-Match.
    wait_for(
        "a 304 for the document",
        30,
        || config_statuses(&site).contains(&304),
        context,
    );

    // A new version is published: picked up at a following poll.
    let v2 = site.write("v2.toml", &document(2, "10.9.0.2/24"));
    let out = site.publish(&v2, &[]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        "version 2 in force",
        60,
        || status(&netns).is_some_and(|s| s["version"] == 2),
        context,
    );
    let addr = netns.run("ip", &["-o", "addr", "show", "pub0"]);
    assert!(text(&addr).contains("10.9.0.2/24"), "{}", text(&addr));
    let statuses = config_statuses(&site);
    let first_304 = statuses.iter().position(|s| *s == 304).unwrap();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses[first_304..].contains(&200),
        "200 after the 304s: {statuses:?}"
    );

    // Reports, one JSON line each, in the documented report log.
    wait_for(
        "two reports",
        30,
        || {
            std::fs::read_to_string(site.path("reports.log"))
                .unwrap_or_default()
                .lines()
                .count()
                >= 2
        },
        context,
    );
    let log = std::fs::read_to_string(site.path("reports.log")).unwrap();
    let reports: Vec<(serde_json::Value, serde_json::Value)> = log
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let report = serde_json::from_str(entry["report"].as_str().unwrap()).unwrap();
            (entry, report)
        })
        .collect();
    for (version, (entry, report)) in [1, 2].into_iter().zip(&reports) {
        assert_eq!(entry["agent"], NODE, "{log}");
        assert_eq!(report["version"], version, "{log}");
        assert_eq!(report["state"], "applied", "{log}");
    }
}
