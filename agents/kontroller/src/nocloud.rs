//! The NoCloud seed Kahuna attaches to a service VM: `meta-data`, `user-data` and
//! `network-config` (an ISO 9660 volume labelled `cidata`), or a seed URL given on the
//! kernel command line (`ds=nocloud;s=URL`).
//!
//! Only reading and checking happens here, no side effect: the caller decides what to
//! apply and logs what was not understood ([`MetaData::unknown_keys`],
//! [`UserData::unsupported_keys`], [`UserData::ignored_keys`]).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use kernel_cmdline::{HttpUrl, Secret, tokenize};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::netplan::{self, NetplanConfig, NetplanError};
use crate::refused::one_line;

/// The seed files, as the kernel's isofs shows them.
pub const META_DATA: &str = "meta-data";
pub const USER_DATA: &str = "user-data";
pub const NETWORK_CONFIG: &str = "network-config";

/// Largest seed file read (Kahuna's are a few KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a seed is refused.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no meta-data file (a NoCloud seed needs one)", dir.display())]
    NoMetaData { dir: PathBuf },
    #[error("{}: both {first} and {second} are the seed file {name}", dir.display())]
    Ambiguous {
        dir: PathBuf,
        name: &'static str,
        first: String,
        second: String,
    },
    #[error("{}: {size} bytes, more than the {MAX_FILE_BYTES} accepted", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{file}: not UTF-8 text")]
    NotUtf8 { file: &'static str },
    /// A file is not YAML, or not the expected shape (the parser's message).
    #[error("{file}: {message}")]
    Syntax { file: &'static str, message: String },
    /// A value is wrong: `meta-data: kowabunga_local_ip: `x` is not an IP address`.
    #[error("{file}: {key}: {problem}")]
    Key {
        file: &'static str,
        key: String,
        problem: String,
    },
    #[error("network-config: {0}")]
    NetworkConfig(#[from] NetplanError),
    #[error("kernel command line: ds={value:?}: {problem}")]
    KernelSeed { value: String, problem: String },
}

fn key_err(file: &'static str, key: impl Into<String>, problem: impl Into<String>) -> SeedError {
    SeedError::Key {
        file,
        key: key.into(),
        problem: problem.into(),
    }
}

/// A whole seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub meta_data: MetaData,
    /// Absent file = [`UserDataKind::Empty`].
    pub user_data: UserData,
    /// Absent file = `None` (the network is then not configured from the seed).
    pub network_config: Option<NetplanConfig>,
}

impl Seed {
    /// Read a mounted (or extracted) seed directory. File names are matched without
    /// case and without an ISO 9660 version suffix: `meta-data`, `META-DATA;1` and
    /// `meta-data.;1` are all the meta-data file.
    pub fn from_dir(dir: &Path) -> Result<Self, SeedError> {
        let read_err = |path: &Path, source| SeedError::Read {
            path: path.to_owned(),
            source,
        };
        let mut found: [Option<(String, PathBuf)>; 3] = [None, None, None];
        let names = [META_DATA, USER_DATA, NETWORK_CONFIG];
        for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let entry = entry.map_err(|e| read_err(dir, e))?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(slot) = names.iter().position(|n| *n == seed_name(&file_name)) else {
                continue;
            };
            if let Some((first, _)) = &found[slot] {
                return Err(SeedError::Ambiguous {
                    dir: dir.to_owned(),
                    name: names[slot],
                    first: first.clone(),
                    second: file_name,
                });
            }
            found[slot] = Some((file_name, entry.path()));
        }
        let [meta, user, network] = found.map(|f| f.map(|(_, path)| path));
        let meta = meta.ok_or_else(|| SeedError::NoMetaData {
            dir: dir.to_owned(),
        })?;
        let meta = read_text(&meta, META_DATA)?;
        let user = match user {
            Some(path) => UserData::from_bytes(&read_bytes(&path)?)?,
            None => UserData::default(),
        };
        let network = match network {
            Some(path) => Some(read_text(&path, NETWORK_CONFIG)?),
            None => None,
        };
        Ok(Seed {
            meta_data: MetaData::parse(&meta)?,
            user_data: user,
            network_config: network.as_deref().map(netplan::parse).transpose()?,
        })
    }
}

/// The seed file a directory entry stands for: lower case, without `;1` and without
/// the `.` ISO 9660 puts after a name that has no extension.
fn seed_name(file_name: &str) -> String {
    let base = match file_name.rsplit_once(';') {
        Some((base, version)) if version.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => file_name,
    };
    base.strip_suffix('.').unwrap_or(base).to_ascii_lowercase()
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, SeedError> {
    let read_err = |source| SeedError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_FILE_BYTES {
        return Err(SeedError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    std::fs::read(path).map_err(read_err)
}

fn read_text(path: &Path, file: &'static str) -> Result<String, SeedError> {
    String::from_utf8(read_bytes(path)?).map_err(|_| SeedError::NotUtf8 { file })
}

// ---------------------------------------------------------------------------------------
// meta-data

/// `meta-data`: who the instance is and where its controller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaData {
    pub instance_id: String,
    /// `local-hostname`, else `hostname`.
    pub hostname: Option<String>,
    pub availability_zone: Option<String>,
    pub region: Option<String>,
    pub cloud_name: Option<String>,
    /// `kowabunga_metadata_uri`: where the instance metadata JSON is fetched.
    pub metadata_uri: Option<HttpUrl>,
    /// `kowabunga_local_ip`: sent back as `X-Kowabunga-Source-Ip`.
    pub local_ip: Option<IpAddr>,
    /// The `kowabunga_controller_*` keys (service VMs only).
    pub controller: Option<Controller>,
    /// Keys this parser does not know, in file order (reported, not refused).
    pub unknown_keys: Vec<String>,
}

/// How the kontroller reaches Kahuna. `Debug` hides the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// `kowabunga_controller_uri` (`wss://kahuna.example`) as the equivalent
    /// `https://` base URL, the form the agent core connects with.
    pub uri: HttpUrl,
    pub agent_id: String,
    pub agent_token: Secret,
}

const META_KEYS: &[&str] = &[
    "instance-id",
    "local-hostname",
    "hostname",
    "availability-zone",
    "region",
    "cloud-name",
    "kowabunga_metadata_uri",
    "kowabunga_local_ip",
    "kowabunga_controller_uri",
    "kowabunga_controller_agent_id",
    "kowabunga_controller_agent_token",
];

impl MetaData {
    /// Parse the text of `meta-data`.
    pub fn parse(text: &str) -> Result<Self, SeedError> {
        let (mut values, unknown) = parse_yaml(text, META_DATA, ScalarMap(META_KEYS))?;
        let mut take = |key: &str| {
            values
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| values.swap_remove(i).1)
                .filter(|v| !v.trim().is_empty())
        };
        let instance_id = take("instance-id")
            .ok_or_else(|| key_err(META_DATA, "instance-id", "missing (required)"))?;
        let hostname = take("local-hostname").or(take("hostname"));
        let availability_zone = take("availability-zone");
        let region = take("region");
        let cloud_name = take("cloud-name");
        let metadata_uri = take("kowabunga_metadata_uri")
            .map(|v| {
                HttpUrl::parse(&v).map_err(|e| {
                    key_err(META_DATA, "kowabunga_metadata_uri", format!("{v:?}: {e}"))
                })
            })
            .transpose()?;
        let local_ip = take("kowabunga_local_ip")
            .map(|v| {
                v.trim().parse::<IpAddr>().map_err(|_| {
                    key_err(
                        META_DATA,
                        "kowabunga_local_ip",
                        format!("{v:?} is not an IP address"),
                    )
                })
            })
            .transpose()?;
        let uri = take("kowabunga_controller_uri");
        let agent_id = take("kowabunga_controller_agent_id");
        let token = take("kowabunga_controller_agent_token").map(Secret::new);
        let controller = match (uri, agent_id, token) {
            (None, None, None) => None,
            (Some(uri), Some(agent_id), Some(agent_token)) => Some(Controller {
                uri: controller_url(&uri)?,
                agent_id,
                agent_token,
            }),
            (uri, id, token) => {
                let missing: Vec<&str> = [
                    ("kowabunga_controller_uri", uri.is_none()),
                    ("kowabunga_controller_agent_id", id.is_none()),
                    ("kowabunga_controller_agent_token", token.is_none()),
                ]
                .into_iter()
                .filter_map(|(k, absent)| absent.then_some(k))
                .collect();
                return Err(key_err(
                    META_DATA,
                    missing.join(", "),
                    "missing: the kowabunga_controller_* keys come together",
                ));
            }
        };
        Ok(MetaData {
            instance_id,
            hostname,
            availability_zone,
            region,
            cloud_name,
            metadata_uri,
            local_ip,
            controller,
            unknown_keys: unknown,
        })
    }
}

/// `ws://` and `wss://` (what Kahuna writes) become `http://` and `https://`.
fn controller_url(text: &str) -> Result<HttpUrl, SeedError> {
    let key = "kowabunga_controller_uri";
    let lower = text.to_ascii_lowercase();
    let http = if lower.starts_with("wss://") {
        format!("https://{}", &text[6..])
    } else if lower.starts_with("ws://") {
        format!("http://{}", &text[5..])
    } else if lower.starts_with("https://") || lower.starts_with("http://") {
        text.to_owned()
    } else {
        return Err(key_err(
            META_DATA,
            key,
            format!("{text:?} is not a ws://, wss://, http:// or https:// URL"),
        ));
    };
    HttpUrl::parse(&http).map_err(|e| key_err(META_DATA, key, format!("{text:?}: {e}")))
}

/// Deserialize a YAML document with `seed`, mapping parser errors to `file`.
fn parse_yaml<T>(
    text: &str,
    file: &'static str,
    seed: impl for<'de> DeserializeSeed<'de, Value = T>,
) -> Result<T, SeedError> {
    serde_saphyr::with_deserializer_from_str(text, |de| seed.deserialize(de)).map_err(|e| {
        SeedError::Syntax {
            file,
            message: one_line(&e),
        }
    })
}

/// A top-level mapping whose known keys hold scalars: (key, text) pairs in file order
/// (null values left out) and the names of the other keys.
struct ScalarMap(&'static [&'static str]);

type ScalarPairs = (Vec<(String, String)>, Vec<String>);

impl<'de> DeserializeSeed<'de> for ScalarMap {
    type Value = ScalarPairs;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ScalarMap {
    type Value = ScalarPairs;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of keys to values")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), Vec::new()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), Vec::new()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        while let Some(key) = map.next_key::<String>()? {
            if self.0.contains(&key.as_str()) {
                let value = map
                    .next_value::<Option<String>>()
                    .map_err(|e| de::Error::custom(format_args!("{key}: {e}")))?;
                if let Some(value) = value {
                    known.push((key, value));
                }
            } else {
                map.next_value::<IgnoredAny>()?;
                unknown.push(key);
            }
        }
        Ok((known, unknown))
    }
}

mod user_data;

pub use user_data::{User, UserData, UserDataKind, WriteFile};

// ---------------------------------------------------------------------------------------
// kernel command line

/// Where the kernel command line says the NoCloud seed is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSeed {
    /// `ds=nocloud` without a seed URL: the local `cidata` volume.
    Local,
    /// `ds=nocloud;s=http://...` (or `seedfrom=`): a seed served over HTTP(S).
    Url(HttpUrl),
    /// `ds=nocloud;s=file:///path/` or `s=/path/`: a seed directory.
    Path(PathBuf),
}

/// Find `ds=nocloud[;s=URL]` (also `nocloud-net`, `seedfrom=`) on a kernel command
/// line (the text of `/proc/cmdline`). `Ok(None)`: no NoCloud datasource named there.
/// A `\;` (the escape GRUB needs) counts as `;`. The last `ds=` wins, as for any
/// repeated kernel parameter.
pub fn parse_kernel_seed(cmdline: &str) -> Result<Option<KernelSeed>, SeedError> {
    let Some(value) = tokenize(cmdline)
        .filter(|p| p.key == "ds")
        .filter_map(|p| p.value)
        .last()
    else {
        return Ok(None);
    };
    let unescaped = value.replace("\\;", ";");
    let mut parts = unescaped.split(';');
    let source = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if source != "nocloud" && source != "nocloud-net" {
        return Ok(None);
    }
    let fail = |problem: String| SeedError::KernelSeed {
        value: value.to_owned(),
        problem,
    };
    let mut url = None;
    for part in parts.filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("s" | "seedfrom", v)) => url = Some(v.trim()),
            Some(("h" | "local-hostname" | "i" | "instance-id", _)) => {}
            _ => return Err(fail(format!("{part:?} is not a NoCloud option (s=URL)"))),
        }
    }
    let Some(url) = url else {
        return Ok(Some(KernelSeed::Local));
    };
    if url.is_empty() {
        return Err(fail("the seed URL is empty".into()));
    }
    if let Some(path) = url
        .strip_prefix("file://")
        .or(url.starts_with('/').then_some(url))
    {
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(fail(format!(
                "{url:?} is not an absolute path without `..`"
            )));
        }
        return Ok(Some(KernelSeed::Path(PathBuf::from(path))));
    }
    HttpUrl::parse(url)
        .map(|u| Some(KernelSeed::Url(u)))
        .map_err(|e| fail(format!("seed URL {url:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::user_data::tests::USER;
    use super::*;

    /// meta-data as Kahuna's template renders it for a Kawaii instance.
    const META: &str = "availability-zone: eu-west-1a
cloud-name: \"kowabunga\"
instance-id: 6543210987654321e1234567
region: eu-west-1
kowabunga_metadata_uri: https://kahuna.example.com/latest/meta-data
kowabunga_local_ip: 10.50.0.10

kowabunga_controller_uri: wss://kahuna.example.com
kowabunga_controller_agent_id: 65a1b2c3d4e5f60718293a4b
kowabunga_controller_agent_token: s3cr3t-t0ken
future_key: [1, 2]
";

    #[test]
    fn meta_data_from_kahuna() {
        let m = MetaData::parse(META).unwrap();
        // A YAML float to a YAML 1.2 parser; kept as the text it is.
        assert_eq!(m.instance_id, "6543210987654321e1234567");
        assert_eq!(m.availability_zone.as_deref(), Some("eu-west-1a"));
        assert_eq!(m.region.as_deref(), Some("eu-west-1"));
        assert_eq!(m.cloud_name.as_deref(), Some("kowabunga"));
        assert_eq!(
            m.metadata_uri.as_ref().map(HttpUrl::as_str),
            Some("https://kahuna.example.com/latest/meta-data")
        );
        assert_eq!(m.local_ip, Some("10.50.0.10".parse().unwrap()));
        let c = m.controller.as_ref().unwrap();
        assert_eq!(c.uri.as_str(), "https://kahuna.example.com/");
        assert_eq!(c.agent_id, "65a1b2c3d4e5f60718293a4b");
        assert_eq!(c.agent_token.expose(), "s3cr3t-t0ken");
        assert_eq!(m.unknown_keys, ["future_key"]);
        assert_eq!(m.hostname, None);
    }

    #[test]
    fn token_never_in_debug() {
        let m = MetaData::parse(META).unwrap();
        let shown = format!("{m:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("agent_token: ***"), "{shown}");
    }

    #[test]
    fn meta_data_hostname_and_plain_instances() {
        let m = MetaData::parse("instance-id: i-1\nhostname: h1\nlocal-hostname: lh1\n").unwrap();
        assert_eq!(m.hostname.as_deref(), Some("lh1"));
        let m = MetaData::parse("instance-id: 42\nhostname: h1\n").unwrap();
        assert_eq!(
            (m.instance_id.as_str(), m.hostname.as_deref()),
            ("42", Some("h1"))
        );
        assert!(m.controller.is_none() && m.unknown_keys.is_empty());
    }

    #[test]
    fn meta_data_refusals_name_the_key() {
        let cases = [
            ("region: x\n", "meta-data: instance-id: missing"),
            ("", "meta-data: instance-id: missing"),
            (
                "instance-id: a\nkowabunga_local_ip: 10.0.0.300\n",
                "meta-data: kowabunga_local_ip: \"10.0.0.300\" is not an IP address",
            ),
            (
                "instance-id: a\nkowabunga_metadata_uri: ftp://x/\n",
                "meta-data: kowabunga_metadata_uri: \"ftp://x/\"",
            ),
            (
                "instance-id: a\nkowabunga_controller_uri: wss://k.example\n",
                "kowabunga_controller_agent_id, kowabunga_controller_agent_token: missing",
            ),
            (
                "instance-id: a\nkowabunga_controller_uri: tcp://k\nkowabunga_controller_agent_id: x\nkowabunga_controller_agent_token: y\n",
                "is not a ws://, wss://, http:// or https:// URL",
            ),
            ("instance-id: [a]\n", "meta-data: "),
            ("- a\n- b\n", "meta-data: "),
        ];
        for (text, want) in cases {
            let e = MetaData::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    /// user-data as Kahuna's Linux template renders it for a Kawaii instance.
    #[test]
    fn seed_file_names() {
        for name in [
            "meta-data",
            "META-DATA;1",
            "meta-data;1",
            "META-DATA.;1",
            "Meta-Data",
        ] {
            assert_eq!(seed_name(name), "meta-data", "{name}");
        }
        assert_eq!(seed_name("user-data;x"), "user-data;x");
    }

    const NETWORK: &str = "version: 2
ethernets:
  ens3:
    match:
      macaddress: 52:54:00:aa:bb:01
    dhcp4: false
    addresses:
      - 192.0.2.10/24
    routes:
      - to: default
        via: 192.0.2.1
        metric: 100
";

    #[test]
    fn seed_from_an_iso_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("META-DATA;1"), META).unwrap();
        std::fs::write(dir.path().join("user-data;1"), USER).unwrap();
        std::fs::write(dir.path().join("NETWORK-CONFIG;1"), NETWORK).unwrap();
        std::fs::write(dir.path().join("vendor-data;1"), "").unwrap();
        let seed = Seed::from_dir(dir.path()).unwrap();
        assert_eq!(seed.meta_data.instance_id, "6543210987654321e1234567");
        assert_eq!(seed.user_data.users.len(), 2);
        let net = seed.network_config.unwrap();
        assert_eq!(net.network.links[0].name, "ens3");
    }

    #[test]
    fn seed_directory_refusals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("user-data"), USER).unwrap();
        let e = Seed::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no meta-data file"), "{e}");
        std::fs::write(dir.path().join("meta-data"), "instance-id: a\n").unwrap();
        std::fs::write(dir.path().join("META-DATA;1"), "instance-id: b\n").unwrap();
        let e = Seed::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("are the seed file meta-data"), "{e}");
        std::fs::remove_file(dir.path().join("META-DATA;1")).unwrap();
        std::fs::write(dir.path().join("network-config"), "version: 1\n").unwrap();
        let e = Seed::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("network-config: "), "{e}");
        std::fs::remove_file(dir.path().join("network-config")).unwrap();
        std::fs::write(dir.path().join("user-data"), "#!/bin/sh\n").unwrap();
        let seed = Seed::from_dir(dir.path()).unwrap();
        assert!(matches!(
            seed.user_data.kind,
            UserDataKind::Unsupported { .. }
        ));
        assert!(seed.network_config.is_none());
    }

    #[test]
    fn kernel_seed() {
        let url = |s: &str| match parse_kernel_seed(s).unwrap() {
            Some(KernelSeed::Url(u)) => u.as_str().to_owned(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            url("ro quiet ds=nocloud;s=http://10.0.0.1:8000/seed/ console=ttyS0\n"),
            "http://10.0.0.1:8000/seed/"
        );
        assert_eq!(
            url(r"ds=nocloud-net\;s=https://seed.example/vm1/"),
            "https://seed.example/vm1/"
        );
        assert_eq!(
            url("ds=NoCloud;h=host;seedfrom=http://s.example/"),
            "http://s.example/"
        );
        assert_eq!(
            url("\"ds=nocloud;s=http://a.example/x/\""),
            "http://a.example/x/"
        );
        assert_eq!(
            url("ds=other ds=nocloud;s=http://b.example/"),
            "http://b.example/"
        );
        assert_eq!(
            parse_kernel_seed("ds=nocloud").unwrap(),
            Some(KernelSeed::Local)
        );
        assert_eq!(
            parse_kernel_seed("ds=nocloud;s=file:///var/seed/").unwrap(),
            Some(KernelSeed::Path("/var/seed/".into()))
        );
        assert_eq!(parse_kernel_seed("ro quiet").unwrap(), None);
        assert_eq!(parse_kernel_seed("ds=ec2").unwrap(), None);
        assert_eq!(
            parse_kernel_seed("ds=nocloud -- ds=ec2").unwrap(),
            Some(KernelSeed::Local)
        );
        for (line, want) in [
            ("ds=nocloud;s=ftp://x/", "seed URL \"ftp://x/\""),
            ("ds=nocloud;s=", "the seed URL is empty"),
            ("ds=nocloud;x=1", "\"x=1\" is not a NoCloud option"),
            ("ds=nocloud;s=file://../etc/", "is not an absolute path"),
        ] {
            let e = parse_kernel_seed(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
