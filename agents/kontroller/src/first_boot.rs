//! First boot of a service VM from its NoCloud seed, as tiny-cloud does it: hostname,
//! name servers, users with their SSH keys, `write_files`. The root is read-only, so:
//!
//! - the **hostname** is set in the kernel (transient) at every boot, from the seed;
//! - **name servers and search domains** go to a systemd-resolved drop-in under `/run`;
//! - **users** are systemd JSON user records under `/run/userdb` (read by
//!   `nss-systemd`), with their keys in `sshAuthorizedKeys`: sshd asks
//!   `userdbctl ssh-authorized-keys`; homes live under `/var/home`;
//! - **`write_files`** may only target `/var` and `/run`; other paths are skipped and
//!   named in the log.
//!
//! What lives in `/run` is written at every boot (the seed is the source of truth). What
//! lives on `/var` (homes, files) is written **once per instance-id**: a marker in the
//! state directory holds the instance-id it was done for; a new one does it again.
//!
//! [`plan`] is pure (checks the seed and decides every write); [`apply`] writes under the
//! given [`Roots`], so tests run it in a temporary directory.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::nocloud::Seed;
use crate::nocloud::{User, WriteFile};

/// First uid (and gid) of the seed's users, in `users` order: the regular range.
const FIRST_UID: u32 = 1000;
/// The user that top-level `ssh_authorized_keys` belong to (cloud-init's "default
/// user"; Debian's cloud images call theirs `debian`).
pub const DEFAULT_USER: &str = "kowabunga";
/// Where `write_files` may write: the writable file systems of the image.
const WRITABLE: &[&str] = &["/var/", "/run/"];

/// Where first boot writes (the system's, or a test's directory).
#[derive(Debug, Clone)]
pub struct Roots {
    /// Prefix of every absolute path written (`/` on the system).
    pub root: PathBuf,
    /// Set the kernel's hostname (off in tests).
    pub set_hostname: bool,
}

impl Roots {
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/"),
            set_hostname: true,
        }
    }

    fn at(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
}

/// Everything first boot will do, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub instance_id: String,
    pub hostname: Option<String>,
    /// Content of the systemd-resolved drop-in, when the seed names name servers.
    pub resolved: Option<String>,
    pub users: Vec<UserRecord>,
    /// `write_files` entries on writable paths, in seed order.
    pub files: Vec<WriteFile>,
    /// What the seed asks for and is not done, by name (logged, never silently dropped).
    pub skipped: Vec<String>,
}

/// One user, as a systemd JSON user record and its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub uid: u32,
    pub home: String,
    /// The `.user` JSON (world-readable).
    pub record: String,
    /// The `.user-privileged` JSON (root only): the SSH keys, no password.
    pub privileged: String,
    /// Groups it is a member of (`<user>:<group>.membership` files).
    pub member_of: Vec<String>,
    /// The `.group` JSON.
    pub group: String,
}

/// What [`apply`] did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
}

/// Checks the seed and decides every write. `Err` names what is wrong with the seed.
pub fn plan(seed: &Seed) -> Result<Plan, String> {
    let user_data = &seed.user_data;
    let meta = &seed.meta_data;
    let mut skipped: Vec<String> = user_data
        .unsupported_keys()
        .iter()
        .map(|k| format!("user-data key {k:?}: not supported"))
        .chain(
            user_data
                .ignored_keys()
                .iter()
                .map(|k| format!("user-data {k}: not applied")),
        )
        .collect();
    let hostname = user_data
        .fqdn
        .as_deref()
        .and_then(|fqdn| fqdn.split('.').next())
        .or(user_data.hostname.as_deref())
        .or(meta.hostname.as_deref())
        .map(|h| check_hostname(h).map(|()| h.to_owned()))
        .transpose()?;
    let resolved = seed.network_config.as_ref().and_then(|net| {
        if net.nameservers.is_empty() && net.search.is_empty() {
            return None;
        }
        let mut text = String::from("# From the NoCloud seed's network-config.\n[Resolve]\n");
        let dns: Vec<String> = net.nameservers.iter().map(ToString::to_string).collect();
        let _ = writeln!(text, "DNS={}", dns.join(" "));
        let _ = writeln!(text, "Domains={}", net.search.join(" "));
        Some(text)
    });

    let mut wanted: Vec<User> = user_data.users.clone();
    for user in &wanted {
        if !user.sudo.is_empty() {
            skipped.push(format!("users.{}.sudo: no sudo on this image", user.name));
        }
    }
    if !user_data.ssh_authorized_keys.is_empty() {
        match wanted.iter_mut().find(|u| u.name == DEFAULT_USER) {
            Some(user) => user
                .ssh_authorized_keys
                .extend(user_data.ssh_authorized_keys.iter().cloned()),
            None => wanted.push(User {
                name: DEFAULT_USER.to_owned(),
                ssh_authorized_keys: user_data.ssh_authorized_keys.clone(),
                ..User::default()
            }),
        }
    }
    let mut users: Vec<UserRecord> = Vec::new();
    for (i, user) in wanted.into_iter().enumerate() {
        let name = user.name;
        check_user_name(&name)?;
        if name == "root" || users.iter().any(|u| u.name == name) {
            return Err(format!(
                "user-data users: {name:?} is given twice or is root"
            ));
        }
        let uid = FIRST_UID + u32::try_from(i).map_err(|_| "user-data: too many users")?;
        let home = format!("/var/home/{name}");
        let record = json!({
            "userName": name,
            "uid": uid,
            "gid": uid,
            "disposition": "regular",
            "homeDirectory": home,
            "shell": user.shell.unwrap_or_else(|| "/bin/sh".to_owned()),
        });
        // No password: SSH keys only ("*" matches none; "!" would lock the account,
        // which refuses keys too).
        let privileged = json!({
            "privileged": {
                "hashedPassword": ["*"],
                "sshAuthorizedKeys": user.ssh_authorized_keys,
            }
        });
        let group = json!({ "groupName": name, "gid": uid });
        users.push(UserRecord {
            name,
            uid,
            home,
            record: format!("{record:#}\n"),
            privileged: format!("{privileged:#}\n"),
            member_of: user.groups,
            group: format!("{group:#}\n"),
        });
    }

    let mut files = Vec::new();
    for (i, file) in user_data.write_files.iter().enumerate() {
        let path = file.path.to_string_lossy();
        if WRITABLE.iter().any(|prefix| path.starts_with(prefix)) {
            files.push(file.clone());
        } else {
            skipped.push(format!(
                "write_files[{i}] {path}: the root is read-only (only /var and /run are written)"
            ));
        }
    }
    Ok(Plan {
        instance_id: meta.instance_id.clone(),
        hostname,
        resolved,
        users,
        files,
        skipped,
    })
}

/// Writes what `plan` decided under `roots`. The once-per-instance part runs when the
/// marker does not hold this instance-id, and the marker is written last.
pub fn apply(plan: &Plan, roots: &Roots) -> Result<Report, String> {
    let mut report = Report::default();
    for line in &plan.skipped {
        report.lines.push(format!("skipped: {line}"));
    }
    if let Some(hostname) = &plan.hostname {
        if roots.set_hostname {
            nix::unistd::sethostname(hostname)
                .map_err(|e| format!("setting the hostname {hostname:?}: {e}"))?;
        }
        report.lines.push(format!("hostname {hostname}"));
    }
    if let Some(resolved) = &plan.resolved {
        write(
            &roots.at("/run/systemd/resolved.conf.d/60-kowabunga-seed.conf"),
            resolved.as_bytes(),
            0o644,
        )?;
        report
            .lines
            .push("name servers from network-config".to_owned());
    }
    let userdb = roots.at("/run/userdb");
    for user in &plan.users {
        let at = |suffix: &str| userdb.join(format!("{}.{suffix}", user.name));
        write(&at("user"), user.record.as_bytes(), 0o644)?;
        write(&at("user-privileged"), user.privileged.as_bytes(), 0o600)?;
        write(&at("group"), user.group.as_bytes(), 0o644)?;
        // Lookups by number follow these links (systemd's userdb drop-in convention).
        for suffix in ["user", "user-privileged", "group"] {
            link(
                &userdb.join(format!("{}.{suffix}", user.uid)),
                &format!("{}.{suffix}", user.name),
            )?;
        }
        for group in &user.member_of {
            // Membership is a file name, not a field of the record.
            write(
                &userdb.join(format!("{}:{group}.membership", user.name)),
                b"",
                0o644,
            )?;
        }
        report
            .lines
            .push(format!("user {} (uid {})", user.name, user.uid));
    }

    let marker = roots.at("/var/lib/kowabunga/kontroller/first-boot.instance-id");
    let done_for = fs::read_to_string(&marker).unwrap_or_default();
    if done_for.trim() == plan.instance_id {
        report.lines.push(format!(
            "instance {} already set up: files and homes kept",
            plan.instance_id
        ));
        return Ok(report);
    }
    for user in &plan.users {
        let home = roots.at(&user.home);
        fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", home.display()))?;
        if roots.set_hostname {
            let id = Some(nix::unistd::Uid::from_raw(user.uid));
            let gid = Some(nix::unistd::Gid::from_raw(user.uid));
            nix::unistd::chown(&home, id, gid).map_err(|e| format!("{}: {e}", home.display()))?;
        }
    }
    for file in &plan.files {
        let path = roots.at(&file.path.to_string_lossy());
        let mode = file.permissions.unwrap_or(0o644);
        if file.append {
            append(&path, &file.content, mode)?;
        } else {
            write(&path, &file.content, mode)?;
        }
        if file
            .owner
            .as_deref()
            .is_some_and(|o| o != "root:root" && o != "root")
        {
            report.lines.push(format!(
                "write_files {}: owner {:?} not applied (root owns it)",
                file.path.display(),
                file.owner.as_deref().unwrap_or_default()
            ));
        }
        report.lines.push(format!("wrote {}", file.path.display()));
    }
    write(&marker, format!("{}\n", plan.instance_id).as_bytes(), 0o644)?;
    report
        .lines
        .push(format!("instance {} set up", plan.instance_id));
    Ok(report)
}

fn check_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hostname {name:?}: letters, digits, '-' and '.' only, at most 64"
        ))
    }
}

fn check_user_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user-data users: {name:?} is not a user name (lower-case letters, digits, '_', '-')"
        ))
    }
}

/// Writes `content` atomically (temporary file, rename), creating parent directories.
fn write(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    let parent = path
        .parent()
        .ok_or_else(|| format!("{}: no parent", path.display()))?;
    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = path.with_extension("kowabunga-tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(content)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn append(path: &Path, content: &[u8], mode: u32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(content))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `path` -> `target` (relative), replacing what was there.
fn link(path: &Path, target: &str) -> Result<(), String> {
    let _ = fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(dir: &Path, instance: &str, user_data: &str) -> Seed {
        fs::create_dir_all(dir).unwrap();
        fs::write(
            dir.join("meta-data"),
            format!("instance-id: {instance}\nlocal-hostname: from-meta\n"),
        )
        .unwrap();
        fs::write(dir.join("user-data"), user_data).unwrap();
        fs::write(
            dir.join("network-config"),
            "version: 2\nethernets:\n  ens4:\n    match:\n      macaddress: 52:54:00:00:00:04\n    \
             dhcp4: false\n    addresses: [10.0.0.2/24]\n    nameservers:\n      addresses: [10.0.0.1]\n      \
             search: [acme.internal]\n",
        )
        .unwrap();
        Seed::from_dir(dir).unwrap()
    }

    const USER_DATA: &str = "#cloud-config
hostname: kawaii-1
packages: [nftables]
runcmd: [reboot]
ssh_authorized_keys: [ssh-ed25519 AAAAdefault]
users:
  - name: ops
    ssh_authorized_keys: [ssh-ed25519 AAAAops]
    sudo: ALL=(ALL) NOPASSWD:ALL
    groups: [adm]
write_files:
  - path: /var/lib/app/config
    content: hello
    permissions: '0600'
  - path: /usr/bin/kw-meta
    content: x
";

    fn roots(dir: &Path) -> Roots {
        Roots {
            root: dir.join("root"),
            set_hostname: false,
        }
    }

    #[test]
    fn the_seed_becomes_users_keys_dns_and_files_and_the_rest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(&seed(&dir.path().join("seed"), "i-1", USER_DATA)).unwrap();
        assert_eq!(plan.hostname.as_deref(), Some("kawaii-1"));
        assert_eq!(
            plan.users
                .iter()
                .map(|u| (u.name.as_str(), u.uid))
                .collect::<Vec<_>>(),
            [("ops", 1000), (DEFAULT_USER, 1001)]
        );
        let ops: serde_json::Value = serde_json::from_str(&plan.users[0].privileged).unwrap();
        assert_eq!(
            ops["privileged"]["sshAuthorizedKeys"][0],
            "ssh-ed25519 AAAAops"
        );
        assert!(
            !plan.users[0].record.contains("AAAAops"),
            "keys in the public record"
        );
        assert_eq!(plan.users[0].member_of, ["adm"]);
        for name in [
            "\"packages\"",
            "\"runcmd\"",
            "users.ops.sudo",
            "write_files[1] /usr/bin/kw-meta",
        ] {
            assert!(
                plan.skipped.iter().any(|s| s.contains(name)),
                "{name} not named in {:?}",
                plan.skipped
            );
        }
        let roots = roots(dir.path());
        let report = apply(&plan, &roots).unwrap();
        assert!(
            report.lines.iter().any(|l| l == "instance i-1 set up"),
            "{report:?}"
        );
        let config = roots.at("/var/lib/app/config");
        assert_eq!(fs::read_to_string(&config).unwrap(), "hello");
        assert_eq!(
            fs::metadata(&config).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let resolved =
            fs::read_to_string(roots.at("/run/systemd/resolved.conf.d/60-kowabunga-seed.conf"))
                .unwrap();
        assert!(resolved.contains("DNS=10.0.0.1") && resolved.contains("Domains=acme.internal"));
        let by_uid = fs::read_link(roots.at("/run/userdb/1000.user")).unwrap();
        assert_eq!(by_uid, Path::new("ops.user"));
        let private = roots.at("/run/userdb/ops.user-privileged");
        assert_eq!(
            fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(roots.at("/run/userdb/ops:adm.membership").exists());
        assert!(roots.at("/var/home/ops").is_dir());
        assert!(!roots.at("/usr/bin/kw-meta").exists());
    }

    #[test]
    fn files_are_written_once_per_instance_id() {
        let dir = tempfile::tempdir().unwrap();
        let roots = roots(dir.path());
        let first = plan(&seed(&dir.path().join("s1"), "i-1", USER_DATA)).unwrap();
        apply(&first, &roots).unwrap();
        let config = roots.at("/var/lib/app/config");
        fs::write(&config, "changed by the service").unwrap();
        // The same instance boots again: files kept, users in /run written again.
        fs::remove_dir_all(roots.at("/run")).unwrap();
        let again = apply(&first, &roots).unwrap();
        assert!(
            again.lines.iter().any(|l| l.contains("already set up")),
            "{again:?}"
        );
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "changed by the service"
        );
        assert!(roots.at("/run/userdb/ops.user").exists());
        // A new instance-id (the template cloned for another VM) sets up again.
        let second = plan(&seed(&dir.path().join("s2"), "i-2", USER_DATA)).unwrap();
        apply(&second, &roots).unwrap();
        assert_eq!(fs::read_to_string(&config).unwrap(), "hello");
    }

    #[test]
    fn a_bad_seed_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for (user_data, why) in [
            ("#cloud-config\nhostname: bad_host!\n", "hostname"),
            ("#cloud-config\nusers:\n  - name: Ops\n", "not a user name"),
            ("#cloud-config\nusers:\n  - name: root\n", "root"),
        ] {
            let seed = seed(&dir.path().join("seed"), "i-1", user_data);
            let err = plan(&seed).unwrap_err();
            assert!(err.contains(why), "{user_data}: {err}");
        }
        assert!(!dir.path().join("root").exists());
    }
}
