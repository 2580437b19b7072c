//! The `[netboot]` section: which images this Kiwi keeps for netbooting, and which node
//! (by MAC) boots which image with which `kowabunga.*` keys. Pure: checked against the
//! document's `[dhcp]` (nodes boot from its answers), nothing else read.
//!
//! ```toml
//! [netboot.images.kaktus]
//! url = "https://kahuna.example.org/images/kaktus/0.3.0"
//! role = "kaktus"
//! version = "0.3.0"
//!
//! [[netboot.nodes]]
//! mac = "52:54:00:00:00:42"
//! image = "kaktus"
//! kernel_args = ["console=ttyS0"]
//! params = { kahuna = "https://kahuna.example.org", agent_id = "kaktus-7", api_key = "..." }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kernel_cmdline::boot_params::PREFIX;
use kernel_cmdline::{ApiKey, BootParams};
use kowabunga_agent::update::parse_version;
use kowabunga_model::Document;
use kowabunga_model::network::MacAddr;
use schemars::JsonSchema;
use serde::Deserialize;

/// The section's name in the document.
pub const SECTION: &str = "netboot";

/// Architectures an image can be for, as in the artifacts' names (`scripts/build-image.sh`: uname's).
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// `[netboot]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetbootSection {
    /// Images to keep on this Kiwi, by a name the nodes use.
    #[serde(default)]
    pub images: BTreeMap<String, ImageSource>,
    /// The nodes this Kiwi boots, one entry per MAC.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
}

/// Where one image's PXE artifacts are published: a directory holding
/// `ROLE-VERSION-ARCH.pxe.vmlinuz`, `.pxe.initrd` and `.pxe.cmdline` (as
/// `scripts/build-image.sh` names them) and a `SHA256SUMS` over them with its minisign
/// signature `SHA256SUMS.minisig`, made with a key that signs this Kiwi's documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// The directory's URL (https; http only on an insecure node).
    pub url: String,
    /// The image's role: `kaktus`, `kiwi`, `kontroller`.
    pub role: String,
    /// The image version (IMAGE_VERSION).
    pub version: String,
    /// `x86_64` (default) or `aarch64`.
    #[serde(default = "default_arch")]
    pub arch: String,
}

fn default_arch() -> String {
    ARCHES[0].to_owned()
}

impl ImageSource {
    /// Where the image is kept in the store: `ROLE-VERSION-ARCH`, its artifacts' prefix.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.role, self.version, self.arch)
    }
}

/// One node to boot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub mac: MacAddr,
    /// A name of `[netboot.images]`.
    pub image: String,
    /// The node's `kowabunga.*` kernel parameters, without the prefix: at least
    /// `kahuna`, `agent_id` and `api_key` (the node's own credentials).
    pub params: BTreeMap<String, String>,
    /// More kernel parameters (`console=ttyS0`), after the image's own.
    #[serde(default)]
    pub kernel_args: Vec<String>,
}

/// Something `[netboot]` says that no Kiwi can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootError(pub String);

impl fmt::Display for NetbootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{SECTION}] {}", self.0)
    }
}

impl std::error::Error for NetbootError {}

/// The checked section: what the server serves.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NetbootConfig {
    /// By id ([`ImageSource::id`]).
    pub images: BTreeMap<String, ImageSource>,
    pub nodes: BTreeMap<MacAddr, BootEntry>,
}

/// What one node is given.
#[derive(Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// Image id.
    pub image: String,
    /// The node's parameters (`kowabunga.*`, then `kernel_args`), checked: one token
    /// each, nothing iPXE would expand. Holds the node's API key: never logged.
    pub args: Vec<String>,
    /// For logs and `/status`: the node's `kowabunga.agent_id`.
    pub agent_id: String,
}

impl fmt::Debug for BootEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootEntry")
            .field("image", &self.image)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for NetbootConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetbootConfig")
            .field("images", &self.images)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// A character iPXE's script parser and the kernel's command line both take as part
/// of one word, literally (no `$` expansion, no quoting, no spaces).
pub(crate) fn plain_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '$' | '"' | '\'' | '\\' | '`')
}

fn plain_word(what: &str, text: &str) -> Result<(), NetbootError> {
    if text.is_empty() || !text.chars().all(plain_char) {
        return Err(NetbootError(format!(
            "{what}: empty, or a space, quote, '$', '\\' or non-ASCII character (one kernel parameter, taken literally)"
        )));
    }
    Ok(())
}

/// The configuration `doc` asks for. No section: nothing served.
pub fn effective(doc: &Document) -> Result<NetbootConfig, NetbootError> {
    let Some(section) = doc
        .section::<NetbootSection>(SECTION)
        .map_err(|e| NetbootError(e.to_string()))?
    else {
        return Ok(NetbootConfig::default());
    };
    let config = compile(&section)?;
    if !config.nodes.is_empty() && kowabunga_dhcp::model::served_links(doc).is_empty() {
        return Err(NetbootError(
            "nodes to boot, but [dhcp] serves no link: nodes find this Kiwi by its DHCP answer"
                .into(),
        ));
    }
    Ok(config)
}

/// Check `section` on its own.
pub fn compile(section: &NetbootSection) -> Result<NetbootConfig, NetbootError> {
    let mut images = BTreeMap::new();
    let mut ids_by_name = BTreeMap::new();
    for (name, image) in &section.images {
        let what = format!("image {name:?}");
        let url = kernel_cmdline::HttpUrl::parse(&image.url)
            .map_err(|e| NetbootError(format!("{what}: url: {e}")))?;
        plain_word(&format!("{what}: url"), url.as_str())?;
        if image.role.is_empty()
            || !image
                .role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NetbootError(format!(
                "{what}: role {:?} is not a role name (lower-case letters and digits)",
                image.role
            )));
        }
        parse_version(&image.version).map_err(|e| NetbootError(format!("{what}: {e}")))?;
        if !ARCHES.contains(&image.arch.as_str()) {
            return Err(NetbootError(format!(
                "{what}: arch {:?} is not one of {ARCHES:?}",
                image.arch
            )));
        }
        let id = image.id();
        if let Some(other) = images.insert(id.clone(), image.clone())
            && other.url != image.url
        {
            return Err(NetbootError(format!(
                "{what}: {id} is also given from {}: one image, one source",
                other.url
            )));
        }
        ids_by_name.insert(name.as_str(), id);
    }
    let mut nodes = BTreeMap::new();
    for node in &section.nodes {
        let what = format!("node {}", node.mac);
        let Some(id) = ids_by_name.get(node.image.as_str()) else {
            return Err(NetbootError(format!(
                "{what}: image {:?} is not in [netboot.images] (known: {:?})",
                node.image,
                ids_by_name.keys().collect::<Vec<_>>()
            )));
        };
        let (args, agent_id) = node_args(&what, node)?;
        let entry = BootEntry {
            image: id.clone(),
            args,
            agent_id,
        };
        if nodes.insert(node.mac, entry).is_some() {
            return Err(NetbootError(format!("{what}: given twice")));
        }
    }
    let used: BTreeSet<&String> = nodes.values().map(|n| &n.image).collect();
    images.retain(|id, _| used.contains(id));
    Ok(NetbootConfig { images, nodes })
}

/// The node's kernel parameters, checked the way the node will read them: parsed by
/// the same `kowabunga.*` parser its agent runs. Error messages name keys, never values
/// (an API key is among them).
fn node_args(what: &str, node: &NodeEntry) -> Result<(Vec<String>, String), NetbootError> {
    let mut args = Vec::new();
    for (key, value) in &node.params {
        let word = format!("{PREFIX}{key}={value}");
        plain_word(&format!("{what}: params.{key}"), &word)?;
        args.push(word);
    }
    let (params, warnings) = BootParams::from_cmdline(&args.join(" "))
        .map_err(|e| NetbootError(format!("{what}: params: {}", e)))?;
    if let Some(w) = warnings.first() {
        return Err(NetbootError(format!("{what}: params: {w}")));
    }
    let missing: Vec<&str> = [
        ("kahuna", params.kahuna.is_none()),
        ("agent_id", params.agent_id.is_none()),
        (
            "api_key",
            !matches!(params.api_key, Some(ApiKey::Inline(_))),
        ),
    ]
    .into_iter()
    .filter_map(|(key, missing)| missing.then_some(key))
    .collect();
    if !missing.is_empty() {
        return Err(NetbootError(format!(
            "{what}: params lack {missing:?} (a netbooted node has no other credentials; api_key inline)"
        )));
    }
    for arg in &node.kernel_args {
        plain_word(&format!("{what}: kernel_args"), arg)?;
        if arg.starts_with(PREFIX) {
            return Err(NetbootError(format!(
                "{what}: kernel_args: {PREFIX}* keys go in params"
            )));
        }
        args.push(arg.clone());
    }
    Ok((args, params.agent_id.unwrap_or_default()))
}

/// The links Kiwi's baseline firewall opens the netboot HTTP port on: the links
/// `[dhcp]` serves, when `[netboot]` has nodes to boot (none when it does not validate:
/// the netboot reconciler refuses that document with its own error).
pub fn netboot_links(doc: &Document) -> Vec<String> {
    match effective(doc) {
        Ok(config) if !config.nodes.is_empty() => kowabunga_dhcp::model::served_links(doc),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    const KEY: &str = "s3cr3t-api-key";

    fn doc(body: &str) -> Document {
        Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n\
                 [[network.links]]\nname = \"eth1\"\naddresses = [\"10.0.0.1/24\"]\n\
                 [dhcp.links.eth1]\npools = [{{ first = \"10.0.0.10\", last = \"10.0.0.20\" }}]\n{body}"
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    fn section(images: &str, nodes: &str) -> String {
        format!("[netboot]\n{images}{nodes}")
    }

    const IMAGE: &str = "[netboot.images.kaktus]\nurl = \"https://k.example/img/kaktus/0.3.0/\"\nrole = \"kaktus\"\nversion = \"0.3.0\"\n";

    fn node(mac: &str, image: &str, params: &str) -> String {
        format!(
            "[[netboot.nodes]]\nmac = \"{mac}\"\nimage = \"{image}\"\nkernel_args = [\"console=ttyS0\"]\nparams = {{ {params} }}\n"
        )
    }

    fn creds() -> String {
        format!("kahuna = \"https://kahuna.example\", agent_id = \"kaktus-7\", api_key = \"{KEY}\"")
    }

    #[test]
    fn a_node_gets_its_image_and_its_parameters() {
        let d = doc(&section(
            IMAGE,
            &node("52:54:00:00:00:42", "kaktus", &creds()),
        ));
        let config = effective(&d).unwrap();
        let image = &config.images["kaktus-0.3.0-x86_64"];
        assert_eq!(image.url, "https://k.example/img/kaktus/0.3.0/");
        let node = &config.nodes[&"52:54:00:00:00:42".parse().unwrap()];
        assert_eq!(node.image, "kaktus-0.3.0-x86_64");
        assert_eq!(node.agent_id, "kaktus-7");
        assert_eq!(
            node.args,
            [
                "kowabunga.agent_id=kaktus-7",
                &format!("kowabunga.api_key={KEY}"),
                "kowabunga.kahuna=https://kahuna.example",
                "console=ttyS0"
            ]
        );
        // Debug output (logs) never shows the parameters.
        assert!(!format!("{config:?}").contains(KEY));
        assert_eq!(netboot_links(&d), ["eth1"]);
        // Images no node uses are not kept.
        let unused = doc(&section(IMAGE, ""));
        assert!(effective(&unused).unwrap().images.is_empty());
        assert!(netboot_links(&unused).is_empty());
    }

    #[test]
    fn what_no_kiwi_can_serve_is_refused_naming_the_problem_and_never_the_key() {
        let cases = [
            (
                section(IMAGE, &node("52:54:00:00:00:42", "kiwi", &creds())),
                "image \"kiwi\" is not in [netboot.images]",
            ),
            (
                section(
                    IMAGE,
                    &format!(
                        "{}{}",
                        node("52:54:00:00:00:42", "kaktus", &creds()),
                        node("52:54:00:00:00:42", "kaktus", &creds())
                    ),
                ),
                "given twice",
            ),
            (
                section(
                    IMAGE,
                    &node(
                        "52:54:00:00:00:42",
                        "kaktus",
                        "kahuna = \"https://kahuna.example\", agent_id = \"kaktus-7\"",
                    ),
                ),
                "lack [\"api_key\"]",
            ),
            (
                section(
                    IMAGE,
                    &node(
                        "52:54:00:00:00:42",
                        "kaktus",
                        &format!("{}, colour = \"blue\"", creds()),
                    ),
                ),
                "unknown kernel parameter",
            ),
            (
                section(
                    IMAGE,
                    &node(
                        "52:54:00:00:00:42",
                        "kaktus",
                        &format!(
                            "kahuna = \"https://kahuna.example\", agent_id = \"kaktus-7\", api_key = \"{KEY}${{x}}\""
                        ),
                    ),
                ),
                "params.api_key: empty, or a space",
            ),
            (
                section(
                    IMAGE,
                    &node(
                        "52:54:00:00:00:42",
                        "kaktus",
                        &format!(
                            "kahuna = \"ftp://kahuna.example\", agent_id = \"kaktus-7\", api_key = \"{KEY}\""
                        ),
                    ),
                ),
                "kowabunga.kahuna",
            ),
            (
                section(&IMAGE.replace("0.3.0\"\n", "v0.3\"\n"), ""),
                "does not parse",
            ),
            (
                section(
                    &IMAGE.replace("role = \"kaktus\"", "role = \"Kak tus\""),
                    "",
                ),
                "not a role name",
            ),
            (
                section(&format!("{IMAGE}arch = \"riscv64\"\n"), ""),
                "arch \"riscv64\"",
            ),
            (
                section(&IMAGE.replace("https://k.example", "file:///etc"), ""),
                "url",
            ),
        ];
        for (body, expected) in cases {
            let e = effective(&doc(&body)).unwrap_err().to_string();
            assert!(e.contains(expected), "{body}\n-> {e}\nwanted {expected:?}");
            assert!(e.starts_with("[netboot]"), "{e}");
            assert!(!e.contains(KEY), "the key leaked: {e}");
        }
        // kernel_args: not kowabunga.*, one word each.
        let bad = section(IMAGE, &node("52:54:00:00:00:42", "kaktus", &creds()))
            .replace("\"console=ttyS0\"", "\"kowabunga.insecure\"");
        assert!(
            effective(&doc(&bad))
                .unwrap_err()
                .to_string()
                .contains("go in params")
        );
        let bad = section(IMAGE, &node("52:54:00:00:00:42", "kaktus", &creds()))
            .replace("\"console=ttyS0\"", "\"a b\"");
        assert!(
            effective(&doc(&bad))
                .unwrap_err()
                .to_string()
                .contains("kernel_args")
        );
    }

    #[test]
    fn nodes_need_a_dhcp_server() {
        let d = Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{}",
                section(IMAGE, &node("52:54:00:00:00:42", "kaktus", &creds()))
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap();
        let e = effective(&d).unwrap_err().to_string();
        assert!(e.contains("[dhcp] serves no link"), "{e}");
    }
}
