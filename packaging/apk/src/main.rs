//! `kowabunga-apk`: writes one signed Alpine APK v2 package.
//!
//! ```text
//! kowabunga-apk --out kiwi-0.1.0-r0.apk --key packager.rsa \
//!   --pkgname kiwi --pkgver 0.1.0-r0 --arch x86_64 --description "..." \
//!   --file target/x86_64-unknown-linux-musl/release/kiwi=usr/bin/kiwi:755 \
//!   --script post-install=packaging/apk/kiwi.post-install --depend nftables
//! ```
//! scripts/build-packages.sh runs it for every agent; docs/packages.md describes the
//! packages.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kowabunga_apk::{File, Package, PackageInfo, Script, Signer};

#[derive(Parser)]
#[command(
    version,
    about = "Write a signed Alpine APK v2 package",
    args_override_self = true
)]
struct Args {
    /// The package to write.
    #[arg(long)]
    out: PathBuf,
    /// The packager's RSA private key (PEM), as abuild-keygen makes it.
    #[arg(long)]
    key: PathBuf,
    /// Its public key's file name in /etc/apk/keys/ (default: the key's file name + .pub).
    #[arg(long)]
    key_name: Option<String>,
    /// The package's name (.PKGINFO pkgname).
    #[arg(long)]
    pkgname: String,
    /// Alpine version with release (.PKGINFO pkgver): 0.1.0-r0.
    #[arg(long)]
    pkgver: String,
    /// Alpine architecture: x86_64, aarch64.
    #[arg(long)]
    arch: String,
    #[arg(long)]
    description: String,
    #[arg(long, default_value = "https://www.kowabunga.cloud/")]
    url: String,
    #[arg(long, default_value = "Apache-2.0")]
    license: String,
    #[arg(long)]
    maintainer: String,
    /// Default: the maintainer.
    #[arg(long)]
    packager: Option<String>,
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// A runtime dependency (repeatable).
    #[arg(long = "depend")]
    depends: Vec<String>,
    /// SOURCE=PATH[:MODE] (octal mode, default 644; PATH relative to /). Repeatable.
    #[arg(long = "file", required = true)]
    files: Vec<String>,
    /// KIND=SOURCE, KIND one of pre-install, post-install, pre-upgrade, post-upgrade,
    /// pre-deinstall, post-deinstall. Repeatable.
    #[arg(long = "script")]
    scripts: Vec<String>,
    /// Every mtime and the build date (default: $SOURCE_DATE_EPOCH).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    mtime: u64,
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("kowabunga-apk: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let signer = Signer::from_pem_file(&args.key, args.key_name.as_deref())?;
    let files = args
        .files
        .iter()
        .map(|spec| file(spec))
        .collect::<Result<Vec<_>>>()?;
    let scripts = args
        .scripts
        .iter()
        .map(|spec| script(spec))
        .collect::<Result<Vec<_>>>()?;
    let package = Package {
        info: PackageInfo {
            name: args.pkgname,
            version: args.pkgver,
            description: args.description,
            url: args.url,
            arch: args.arch,
            license: args.license,
            packager: args.packager.unwrap_or_else(|| args.maintainer.clone()),
            maintainer: args.maintainer,
            commit: args.commit,
            depends: args.depends,
        },
        files,
        scripts,
        mtime: args.mtime,
    };
    let apk = package.write(&signer)?;
    // Written next to its destination and renamed: no half-written package.
    let tmp = args.out.with_extension("apk.tmp");
    std::fs::write(&tmp, &apk).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

fn file(spec: &str) -> Result<File> {
    let (source, dest) = spec
        .split_once('=')
        .with_context(|| format!("--file '{spec}': expected SOURCE=PATH[:MODE]"))?;
    let (path, mode) = match dest.rsplit_once(':') {
        Some((path, mode)) => (
            path,
            u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .with_context(|| {
                    format!("--file '{spec}': mode '{mode}' is not octal permission bits")
                })?,
        ),
        None => (dest, 0o644),
    };
    let content = read(Path::new(source), "--file")?;
    Ok(File {
        path: path.to_string(),
        mode,
        content,
    })
}

fn script(spec: &str) -> Result<Script> {
    let (kind, source) = spec
        .split_once('=')
        .with_context(|| format!("--script '{spec}': expected KIND=SOURCE"))?;
    let content = read(Path::new(source), "--script")?;
    if !content.starts_with(b"#!") {
        bail!("--script '{spec}': {source} has no #! line (apk runs it as an executable)");
    }
    Ok(Script {
        kind: kind.to_string(),
        content,
    })
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
