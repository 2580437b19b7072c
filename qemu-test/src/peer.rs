//! The peer VM: the image's own kernel with a busybox initramfs, joined to the node
//! under test by a QEMU socket network. It runs a shell script and prints what it sees
//! of the node (ping, TCP connects) on its console, so tests check the node's network
//! and firewall from outside. Boots in seconds under TCG.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::artifacts::{ArtifactError, Artifacts};

/// Modules the peer loads, in order (from the node's own kernel, so versions match).
const MODULES: &[&str] = &[
    "llc",
    "stp",
    "garp",
    "mrp",
    "8021q",
    "failover",
    "net_failover",
    "virtio_net",
];

fn tool(what: &str) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Builds the peer's initramfs in `dir`: busybox (static), the modules, and `script`
/// run as `/init` after the modules are loaded. Returns its path.
pub fn build_initrd(
    artifacts: &Artifacts,
    dir: &Path,
    script: &str,
) -> Result<PathBuf, ArtifactError> {
    build_initrd_named(artifacts, dir, "peer", script)
}

/// [`build_initrd`] for one of several peers of a test: its files are named after
/// `name` (`NAME.initrd`).
pub fn build_initrd_named(
    artifacts: &Artifacts,
    dir: &Path,
    name: &str,
    script: &str,
) -> Result<PathBuf, ArtifactError> {
    let src = dir.join(format!("{name}-src"));
    let root = dir.join(format!("{name}-root"));
    let _ = fs::remove_dir_all(&src);
    let _ = fs::remove_dir_all(&root);
    for d in [
        &src,
        &root.join("bin"),
        &root.join("mod"),
        &root.join("proc"),
        &root.join("sys"),
        &root.join("dev"),
    ] {
        fs::create_dir_all(d).map_err(tool("creating the peer tree"))?;
    }
    // The modules, out of the node's PXE root (a zstd cpio).
    let patterns: Vec<String> = MODULES.iter().map(|m| format!("*/{m}.ko*")).collect();
    let zstd = Command::new("zstd")
        .arg("-dc")
        .arg(&artifacts.pxe_initrd)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(tool("running zstd"))?;
    let status = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .args(&patterns)
        .current_dir(&src)
        .stdin(
            zstd.stdout
                .ok_or_else(|| ArtifactError::Tool("zstd gave no output".into()))?,
        )
        .status()
        .map_err(tool("running cpio"))?;
    if !status.success() {
        return Err(ArtifactError::Tool(
            "extracting modules from the PXE initrd failed".into(),
        ));
    }
    for m in MODULES {
        let found = find_file(&src, &format!("{m}.ko")).ok_or_else(|| {
            ArtifactError::Tool(format!(
                "module {m} not found in {}",
                artifacts.pxe_initrd.display()
            ))
        })?;
        let dest = root.join("mod").join(format!("{m}.ko"));
        let name = found.to_string_lossy().into_owned();
        let bytes = if name.ends_with(".xz") {
            Command::new("xz")
                .arg("-dc")
                .arg(&found)
                .output()
                .map_err(tool("running xz"))?
                .stdout
        } else if name.ends_with(".zst") {
            Command::new("zstd")
                .arg("-dc")
                .arg(&found)
                .output()
                .map_err(tool("running zstd"))?
                .stdout
        } else {
            fs::read(&found).map_err(tool("reading a module"))?
        };
        fs::write(&dest, bytes).map_err(tool("writing a module"))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .map_err(tool("copying /bin/busybox (busybox-static)"))?;
    let mut init = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n",
    );
    for m in MODULES {
        init.push_str(&format!("insmod /mod/{m}.ko\n"));
    }
    init.push_str(script);
    let init_path = root.join("init");
    fs::write(&init_path, init).map_err(tool("writing the peer's init"))?;
    let status = Command::new("chmod")
        .arg("0755")
        .arg(&init_path)
        .status()
        .map_err(tool("chmod"))?;
    if !status.success() {
        return Err(ArtifactError::Tool(
            "chmod of the peer's init failed".into(),
        ));
    }
    let out = dir.join(format!("{name}.initrd"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            out.display()
        ))
        .current_dir(&root)
        .status()
        .map_err(tool("packing the peer initramfs"))?;
    if !status.success() {
        return Err(ArtifactError::Tool(
            "packing the peer initramfs failed".into(),
        ));
    }
    Ok(out)
}

fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, stem) {
                return Some(found);
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{stem}.")))
        {
            return Some(path);
        }
    }
    None
}
