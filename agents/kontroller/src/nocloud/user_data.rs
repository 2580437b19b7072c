//! `user-data`: the `#cloud-config` subset a Kowabunga service VM needs. Anything
//! else is reported, never run.

use std::fmt;
use std::path::{Component, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{SeedError, USER_DATA, key_err, parse_yaml};

/// What kind of user-data the seed holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UserDataKind {
    /// No file, or an empty one.
    #[default]
    Empty,
    /// `#cloud-config`: the subset below is read.
    CloudConfig,
    /// Anything else (a `#!` script, MIME multipart, `#include`, gzip...): reported,
    /// not run. Holds the first line (at most 60 characters) to name it in logs.
    Unsupported { first_line: String },
}

/// The cloud-config subset a Kowabunga service VM needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserData {
    pub kind: UserDataKind,
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub users: Vec<User>,
    /// Top-level `ssh_authorized_keys` (for the default user).
    pub ssh_authorized_keys: Vec<String>,
    pub write_files: Vec<WriteFile>,
    unsupported: Vec<String>,
    ignored: Vec<String>,
}

/// One entry of `users`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub ssh_authorized_keys: Vec<String>,
    /// sudoers rules (`ALL=(ALL) NOPASSWD:ALL`); empty = no sudo.
    pub sudo: Vec<String>,
    pub shell: Option<String>,
    pub groups: Vec<String>,
}

/// One entry of `write_files`, content decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute, without `.` or `..`.
    pub path: PathBuf,
    pub content: Vec<u8>,
    /// Mode bits; absent = cloud-init's default (0644).
    pub permissions: Option<u32>,
    /// `user:group`; absent = root:root.
    pub owner: Option<String>,
    pub append: bool,
}

impl UserData {
    /// Every top-level key this parser does not apply (`packages`, `runcmd`...), by
    /// name, in file order, for the caller to log.
    pub fn unsupported_keys(&self) -> &[String] {
        &self.unsupported
    }

    /// Keys inside supported entries that are not applied (`users[1].lock_passwd`),
    /// and `users` entries skipped (`users[0]: default`). Names only, never values.
    pub fn ignored_keys(&self) -> &[String] {
        &self.ignored
    }

    /// Parse user-data bytes. Only a malformed `#cloud-config` is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SeedError> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            let first_line = if bytes.starts_with(&[0x1f, 0x8b]) {
                "(gzip data)"
            } else {
                "(binary data)"
            };
            return Ok(UserData {
                kind: UserDataKind::Unsupported {
                    first_line: first_line.into(),
                },
                ..UserData::default()
            });
        };
        Self::parse(text)
    }

    /// Parse user-data text.
    pub fn parse(text: &str) -> Result<Self, SeedError> {
        if text.trim().is_empty() {
            return Ok(UserData::default());
        }
        let first = text.lines().next().unwrap_or("").trim_end();
        if first != "#cloud-config" {
            return Ok(UserData {
                kind: UserDataKind::Unsupported {
                    first_line: first.chars().take(60).collect(),
                },
                ..UserData::default()
            });
        }
        let raw = parse_yaml(text, USER_DATA, CloudConfigSeed)?;
        let mut ignored = Vec::new();
        let mut users = Vec::new();
        for (i, entry) in raw.users.into_iter().enumerate() {
            match entry {
                RawUser::Name(name) if name == "default" => {
                    ignored.push(format!("users[{i}]: default"));
                }
                RawUser::Name(name) => users.push(User {
                    name: check_user_name(&format!("users[{i}]"), &name)?,
                    ..User::default()
                }),
                RawUser::Full { user, unknown } => {
                    let name = user
                        .name
                        .as_deref()
                        .ok_or_else(|| key_err(USER_DATA, format!("users[{i}].name"), "missing"))?;
                    let name = check_user_name(&format!("users[{i}].name"), name)?;
                    ignored.extend(unknown.into_iter().map(|k| format!("users[{i}].{k}")));
                    users.push(User {
                        name,
                        ssh_authorized_keys: user.ssh_authorized_keys,
                        sudo: user.sudo.0,
                        shell: user.shell,
                        groups: user.groups.0,
                    });
                }
            }
        }
        let mut write_files = Vec::new();
        for (i, file) in raw.write_files.into_iter().enumerate() {
            let key = format!("write_files[{i}]");
            ignored.extend(file.unknown.iter().map(|k| format!("{key}.{k}")));
            write_files.push(file.check(&key)?);
        }
        Ok(UserData {
            kind: UserDataKind::CloudConfig,
            hostname: raw.hostname,
            fqdn: raw.fqdn,
            users,
            ssh_authorized_keys: raw.ssh_authorized_keys,
            write_files,
            unsupported: raw.unsupported,
            ignored,
        })
    }
}

fn check_user_name(key: &str, name: &str) -> Result<String, SeedError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(key_err(
            USER_DATA,
            key,
            format!("{name:?} is not a user name (letters, digits, _ - ., at most 32)"),
        ))
    }
}

#[derive(Default)]
struct RawCloudConfig {
    hostname: Option<String>,
    fqdn: Option<String>,
    users: Vec<RawUser>,
    ssh_authorized_keys: Vec<String>,
    write_files: Vec<RawWriteFile>,
    unsupported: Vec<String>,
}

struct CloudConfigSeed;

impl<'de> DeserializeSeed<'de> for CloudConfigSeed {
    type Value = RawCloudConfig;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CloudConfigSeed {
    type Value = RawCloudConfig;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a cloud-config mapping")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawCloudConfig::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(RawCloudConfig::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawCloudConfig::default();
        while let Some(key) = map.next_key::<String>()? {
            let keyed = |e: A::Error| de::Error::custom(format_args!("{key}: {e}"));
            match key.as_str() {
                "hostname" => raw.hostname = map.next_value().map_err(keyed)?,
                "fqdn" => raw.fqdn = map.next_value().map_err(keyed)?,
                "users" => raw.users = map.next_value::<RawUsers>().map_err(keyed)?.0,
                "ssh_authorized_keys" => {
                    raw.ssh_authorized_keys = map
                        .next_value::<Option<Vec<String>>>()
                        .map_err(keyed)?
                        .unwrap_or_default()
                }
                "write_files" => {
                    raw.write_files = map
                        .next_value::<Option<Vec<RawWriteFile>>>()
                        .map_err(keyed)?
                        .unwrap_or_default()
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    raw.unsupported.push(key);
                }
            }
        }
        Ok(raw)
    }
}

/// `users`: a list of names and mappings, or one comma-separated string.
struct RawUsers(Vec<RawUser>);

impl<'de> Deserialize<'de> for RawUsers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUsers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of users")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawUsers, E> {
                Ok(RawUsers(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUsers, E> {
                Ok(RawUsers(
                    split_list(v).into_iter().map(RawUser::Name).collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawUsers, A::Error> {
                let mut out = Vec::new();
                while let Some(u) = seq.next_element()? {
                    out.push(u);
                }
                Ok(RawUsers(out))
            }
        }
        d.deserialize_any(V)
    }
}

enum RawUser {
    Name(String),
    Full {
        user: RawUserFields,
        unknown: Vec<String>,
    },
}

#[derive(Default)]
struct RawUserFields {
    name: Option<String>,
    ssh_authorized_keys: Vec<String>,
    sudo: StringList,
    shell: Option<String>,
    groups: StringList,
}

impl<'de> Deserialize<'de> for RawUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUser;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a user name or a user mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUser, E> {
                Ok(RawUser::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawUser, A::Error> {
                let mut user = RawUserFields::default();
                let mut unknown = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => user.name = map.next_value()?,
                        "ssh_authorized_keys" => {
                            user.ssh_authorized_keys =
                                map.next_value::<Option<Vec<String>>>()?.unwrap_or_default()
                        }
                        "sudo" => user.sudo = map.next_value()?,
                        "shell" => user.shell = map.next_value()?,
                        "groups" => user.groups = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            unknown.push(key);
                        }
                    }
                }
                Ok(RawUser::Full { user, unknown })
            }
        }
        d.deserialize_any(V)
    }
}

/// A list written as a YAML list, a comma-separated string, `false` or null.
#[derive(Default)]
struct StringList(Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a list of strings or false")
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringList, E> {
                Ok(StringList::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<StringList, E> {
                Ok(StringList::default())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<StringList, E> {
                if v {
                    Err(E::custom(
                        "`true` is not a value here (a string, a list or false)",
                    ))
                } else {
                    Ok(StringList::default())
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(split_list(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Default)]
struct RawWriteFile {
    path: Option<String>,
    content: Option<String>,
    permissions: Option<String>,
    owner: Option<String>,
    encoding: Option<String>,
    append: Option<bool>,
    unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for RawWriteFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawWriteFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a write_files mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawWriteFile, A::Error> {
                let mut f = RawWriteFile::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "path" => f.path = map.next_value()?,
                        "content" => f.content = map.next_value()?,
                        // As text, so that `0644` stays the octal it is meant to be.
                        "permissions" => f.permissions = map.next_value()?,
                        "owner" => f.owner = map.next_value()?,
                        "encoding" => f.encoding = map.next_value()?,
                        "append" => f.append = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            f.unknown.push(key);
                        }
                    }
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
    }
}

impl RawWriteFile {
    fn check(self, key: &str) -> Result<WriteFile, SeedError> {
        let text = self
            .path
            .ok_or_else(|| key_err(USER_DATA, format!("{key}.path"), "missing"))?;
        let path = PathBuf::from(&text);
        let clean = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && path.components().count() > 1;
        if !clean {
            return Err(key_err(
                USER_DATA,
                format!("{key}.path"),
                format!("{text:?} is not an absolute file path without `.` or `..`"),
            ));
        }
        let content = self.content.unwrap_or_default();
        let content = match self
            .encoding
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("text/plain") => content.into_bytes(),
            Some("b64" | "base64") => {
                let compact: String = content.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|e| {
                        key_err(
                            USER_DATA,
                            format!("{key}.content"),
                            format!("not base64: {e}"),
                        )
                    })?
            }
            Some(other) => {
                return Err(key_err(
                    USER_DATA,
                    format!("{key}.encoding"),
                    format!("{other:?} is not supported (plain text or b64)"),
                ));
            }
        };
        let permissions = self
            .permissions
            .map(|p| {
                parse_mode(&p).ok_or_else(|| {
                    key_err(
                        USER_DATA,
                        format!("{key}.permissions"),
                        format!("{p:?} is not an octal mode (e.g. '0644')"),
                    )
                })
            })
            .transpose()?;
        if let Some(owner) = &self.owner {
            let ok = !owner.is_empty()
                && owner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
            if !ok {
                return Err(key_err(
                    USER_DATA,
                    format!("{key}.owner"),
                    format!("{owner:?} is not user or user:group"),
                ));
            }
        }
        Ok(WriteFile {
            path,
            content,
            permissions,
            owner: self.owner,
            append: self.append.unwrap_or(false),
        })
    }
}

/// `0644`, `644`, `0o644`, `'0755'`: an octal mode up to 07777.
fn parse_mode(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    pub(crate) const USER: &str = "#cloud-config
# vim: syntax=yaml
ssh_pwauth: false
disable_root: false
hostname: kawaii-eu-west-1a
fqdn: kawaii-eu-west-1a.acme.internal
package_update: true
packages:
  - qemu-guest-agent
  - keepalived
users:
  - name: root
    lock_passwd: false
    hashed_passwd: $6$salt$hash
  - name: kowabunga
    sudo: ALL=(ALL) NOPASSWD:ALL
    groups: users, admin
    homedir: /home/kowabunga
    shell: /bin/bash
    lock_passwd: false
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB ops@example
  - default
ssh_authorized_keys:
  - ssh-ed25519 AAAAtop top@example
final_message: \"The system is finally up, after $UPTIME seconds\"
runcmd:
  - systemctl enable qemu-guest-agent
write_files:
- encoding: b64
  content: IyEvYmluL2Jhc2gKZWNobyBoaQo=
  path: /usr/bin/kw-meta
  permissions: '0755'
- path: /etc/motd
  content: |
    hello
  permissions: 0644
  owner: root:root
  defer: true
";

    #[test]
    fn user_data_from_kahuna() {
        let u = UserData::parse(USER).unwrap();
        assert_eq!(u.kind, UserDataKind::CloudConfig);
        assert_eq!(u.hostname.as_deref(), Some("kawaii-eu-west-1a"));
        assert_eq!(u.fqdn.as_deref(), Some("kawaii-eu-west-1a.acme.internal"));
        assert_eq!(
            u.unsupported_keys(),
            [
                "ssh_pwauth",
                "disable_root",
                "package_update",
                "packages",
                "final_message",
                "runcmd"
            ]
        );
        assert_eq!(
            u.ignored_keys(),
            [
                "users[0].lock_passwd",
                "users[0].hashed_passwd",
                "users[1].homedir",
                "users[1].lock_passwd",
                "users[2]: default",
                "write_files[1].defer"
            ]
        );
        assert_eq!(u.users.len(), 2);
        assert_eq!(u.users[0].name, "root");
        let k = &u.users[1];
        assert_eq!(k.name, "kowabunga");
        assert_eq!(k.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
        assert_eq!(k.groups, ["users", "admin"]);
        assert_eq!(k.shell.as_deref(), Some("/bin/bash"));
        assert_eq!(k.ssh_authorized_keys.len(), 1);
        assert_eq!(u.ssh_authorized_keys, ["ssh-ed25519 AAAAtop top@example"]);
        let f = &u.write_files[0];
        assert_eq!(f.path, Path::new("/usr/bin/kw-meta"));
        assert_eq!(f.content, b"#!/bin/bash\necho hi\n");
        assert_eq!(f.permissions, Some(0o755));
        let motd = &u.write_files[1];
        assert_eq!(motd.content, b"hello\n");
        assert_eq!(motd.permissions, Some(0o644));
        assert_eq!(motd.owner.as_deref(), Some("root:root"));
        // No value of an ignored key (a password hash) is kept.
        assert!(!format!("{u:?}").contains("$6$"));
    }

    #[test]
    fn user_data_kinds() {
        assert_eq!(UserData::parse("").unwrap().kind, UserDataKind::Empty);
        assert_eq!(
            UserData::parse("#cloud-config\n").unwrap().kind,
            UserDataKind::CloudConfig
        );
        let script = UserData::parse("#!/bin/sh\necho pwned\n").unwrap();
        assert_eq!(
            script.kind,
            UserDataKind::Unsupported {
                first_line: "#!/bin/sh".into()
            }
        );
        assert!(script.users.is_empty() && script.unsupported_keys().is_empty());
        let archive = UserData::parse("#cloud-config-archive\n- type: x\n").unwrap();
        assert!(matches!(archive.kind, UserDataKind::Unsupported { .. }));
        let gz = UserData::from_bytes(&[0x1f, 0x8b, 0x08, 0xff, 0xfe]).unwrap();
        assert_eq!(
            gz.kind,
            UserDataKind::Unsupported {
                first_line: "(gzip data)".into()
            }
        );
        let u = UserData::parse("#cloud-config\nusers: alice, bob\n").unwrap();
        assert_eq!(
            u.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        let u = UserData::parse(
            "#cloud-config\nusers:\n  - name: a\n    sudo: false\n    groups: [x, y]\n",
        )
        .unwrap();
        assert!(u.users[0].sudo.is_empty());
        assert_eq!(u.users[0].groups, ["x", "y"]);
    }

    #[test]
    fn user_data_refusals_name_the_key() {
        let cases = [
            (
                "#cloud-config\nwrite_files:\n  - path: etc/x\n",
                "user-data: write_files[0].path: \"etc/x\" is not an absolute file path",
            ),
            (
                "#cloud-config\nwrite_files:\n  - path: /etc/../x\n",
                "is not an absolute file path",
            ),
            (
                "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: gz+b64\n    content: abc\n",
                "user-data: write_files[0].encoding: \"gz+b64\" is not supported",
            ),
            (
                "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: b64\n    content: '!!'\n",
                "user-data: write_files[0].content: not base64",
            ),
            (
                "#cloud-config\nwrite_files:\n  - path: /x\n    permissions: '0999'\n",
                "write_files[0].permissions: \"0999\" is not an octal mode",
            ),
            (
                "#cloud-config\nwrite_files:\n  - content: x\n",
                "write_files[0].path: missing",
            ),
            (
                "#cloud-config\nusers:\n  - shell: /bin/sh\n",
                "users[0].name: missing",
            ),
            (
                "#cloud-config\nusers:\n  - name: \"a b\"\n",
                "users[0].name: \"a b\" is not a user name",
            ),
            (
                "#cloud-config\nusers:\n  - name: a\n    sudo: true\n",
                "user-data: ",
            ),
            ("#cloud-config\nhostname: [a\n", "user-data: "),
        ];
        for (text, want) in cases {
            let e = UserData::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
