//! The iPXE script one node is given: its image's kernel and initrd from this Kiwi, with
//! the image's own kernel parameters and the node's (`kowabunga.*` credentials,
//! `kernel_args`). Every word was checked to be taken literally by iPXE
//! ([`crate::model`], [`crate::store`]).

use std::net::IpAddr;

use kowabunga_model::network::MacAddr;

use crate::model::BootEntry;
use crate::store::{INITRD, KERNEL, StoredImage};

/// The path under which this Kiwi serves an image's files: `/netboot/images/<id>/`.
pub fn image_path(id: &str) -> String {
    format!("/netboot/images/{id}")
}

/// The path of `mac`'s script: `/netboot/52-54-00-00-00-42.ipxe`.
pub fn script_path(mac: &MacAddr) -> String {
    format!("/netboot/{}.ipxe", mac.to_string().replace(':', "-"))
}

/// The MAC of a script path, if it is one.
pub fn script_mac(path: &str) -> Option<MacAddr> {
    let name = path.strip_prefix("/netboot/")?.strip_suffix(".ipxe")?;
    if name.contains(':') {
        return None;
    }
    name.replace('-', ":").parse().ok()
}

/// `http://<server>:<port>` as iPXE writes a URL (IPv6 in brackets).
pub fn origin(server: IpAddr, port: u16) -> String {
    match server {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

/// The script for `mac`, whose entry is `node`, booting `image` (id `id`) from `origin`.
pub fn render(
    origin: &str,
    mac: &MacAddr,
    node: &BootEntry,
    id: &str,
    image: &StoredImage,
) -> String {
    let base = format!("{origin}{}", image_path(id));
    let mut kernel = vec![format!("{base}/{KERNEL}"), format!("initrd={INITRD}")];
    kernel.extend(image.cmdline.iter().cloned());
    kernel.extend(node.args.iter().cloned());
    format!(
        "#!ipxe\n# Kowabunga netboot: node {} ({mac}), image {id}\nkernel {}\ninitrd {base}/{INITRD}\nboot\n",
        node.agent_id,
        kernel.join(" ")
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_script_boots_the_image_with_the_nodes_parameters() {
        let mac: MacAddr = "52:54:00:00:00:42".parse().unwrap();
        let node = BootEntry {
            image: "kaktus-0.3.0-x86_64".into(),
            args: vec!["kowabunga.agent_id=kaktus-7".into(), "console=ttyS0".into()],
            agent_id: "kaktus-7".into(),
        };
        let image = StoredImage {
            dir: "/var/x".into(),
            cmdline: vec!["quiet".into(), "systemd.mask=var.mount".into()],
        };
        let origin = origin("10.0.0.1".parse().unwrap(), 9724);
        let script = render(&origin, &mac, &node, "kaktus-0.3.0-x86_64", &image);
        assert_eq!(
            script,
            "#!ipxe\n# Kowabunga netboot: node kaktus-7 (52:54:00:00:00:42), image kaktus-0.3.0-x86_64\n\
             kernel http://10.0.0.1:9724/netboot/images/kaktus-0.3.0-x86_64/vmlinuz initrd=initrd quiet systemd.mask=var.mount kowabunga.agent_id=kaktus-7 console=ttyS0\n\
             initrd http://10.0.0.1:9724/netboot/images/kaktus-0.3.0-x86_64/initrd\nboot\n"
        );
        assert_eq!(script_path(&mac), "/netboot/52-54-00-00-00-42.ipxe");
        assert_eq!(script_mac(&script_path(&mac)), Some(mac));
        for bad in [
            "/netboot/52:54:00:00:00:42.ipxe",
            "/netboot/x.ipxe",
            "/netboot/images/a/vmlinuz",
            "/other/52-54-00-00-00-42.ipxe",
        ] {
            assert_eq!(script_mac(bad), None, "{bad}");
        }
        assert_eq!(
            super::origin("fe80::1".parse().unwrap(), 80),
            "http://[fe80::1]:80"
        );
    }
}
