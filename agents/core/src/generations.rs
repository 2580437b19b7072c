//! The generation store: every document the agent accepted, with its signature, the
//! state Kahuna pushed over RPC and what the reconcilers rendered, under
//! `/var/lib/kowabunga/<agent>/`.
//!
//! ```text
//! generations/00000000000000000007/   one directory per generation (sequence number)
//!     document.toml | document.yaml   the exact bytes that were signed
//!     document.minisig                their detached signature, when there was one
//!     pushed.toml                     tables pushed over RPC (absent when none)
//!     plan.txt                        the actions the plan listed
//!     rendered/<reconciler>/<file>    artifacts rendered by the reconcilers
//!     meta.json                       sequence, version, source, outcome
//! current  -> generations/<seq>       the generation in force
//! previous -> generations/<seq>       the one before it
//! pending  -> generations/<seq>       exists only while a generation is being applied
//! highest_version                     highest document version ever staged (replay guard)
//! ```
//!
//! Each pointer is a symlink replaced by `rename(2)` of a freshly made link, followed by
//! an fsync of the directory, so it always names a complete generation. Commit moves
//! `previous` first, then `current`, then drops `pending`: a crash anywhere leaves either
//! `pending == current` (the commit finished: drop `pending`) or `pending != current`
//! (it did not: the agent re-applies `current`), never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use kowabunga_model::{Artifact, Document, Format};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How many generations besides `current`, `previous` and `pending` are kept.
const KEEP_OLD_GENERATIONS: usize = 8;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: held by another agent process ({detail}); stop it first (systemctl stop)")]
    Locked { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a generation's document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Pulled from the config endpoint.
    Pull,
    /// Given on the command line (`kiwi apply FILE`).
    Local,
    /// The signed document in force plus state pushed over Kahuna's RPC.
    Rpc,
}

/// What became of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    Pending,
    Committed,
    Reverted,
}

/// `meta.json` of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub seq: u64,
    /// Document version; 0 when the generation holds pushed state only.
    pub version: u64,
    pub node: String,
    pub source: Source,
    pub sha256: String,
    pub state: GenerationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds when it was staged.
    pub staged_at: i64,
}

/// The content of a generation before it is written.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    pub version: u64,
    pub node: String,
    pub source: Source,
    pub format: Format,
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub pushed: BTreeMap<String, toml::Table>,
    pub actions: Vec<String>,
    /// Rendered artifacts by reconciler name.
    pub artifacts: Vec<(&'static str, Vec<Artifact>)>,
}

/// A generation read back from disk.
#[derive(Debug, Clone)]
pub struct Generation {
    pub meta: Meta,
    pub format: Format,
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub document: Document,
}

/// What a crash left behind, found by [`GenerationStore::recover`].
#[derive(Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// Nothing was in flight.
    Nothing,
    /// A commit had finished; only the `pending` pointer was left, and is now gone.
    CommitFinished,
    /// Generation `seq` was being applied: the system may hold part of it, and must be
    /// set back to `current` (or to nothing, if there is no `current`).
    Apply { seq: u64 },
}

#[derive(Debug)]
pub struct GenerationStore {
    root: PathBuf,
    /// Exclusive lock on `<root>/lock` while a writer has the store open: `kiwi apply`
    /// and a running `kiwi run` never interleave.
    _lock: Option<nix::fcntl::Flock<File>>,
}

impl GenerationStore {
    /// Open (creating if needed) the store at `root`, with mode 0700, and lock it for
    /// writing. Fails at once if another agent process holds it.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let generations = root.join("generations");
        fs::create_dir_all(&generations).map_err(io_err(&generations))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err(&root))?;
        let lock_path = root.join("lock");
        let file = File::create(&lock_path).map_err(io_err(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| StoreError::Locked {
                path: lock_path.clone(),
                detail: errno.desc().to_owned(),
            })?;
        Ok(Self {
            root,
            _lock: Some(lock),
        })
    }

    /// Open an existing store to read it, without locking (`status`).
    pub fn open_read_only(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            _lock: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn generation_dir(&self, seq: u64) -> PathBuf {
        self.root.join("generations").join(format!("{seq:020}"))
    }

    /// The sequence number a pointer (`current`, `previous`, `pending`) names.
    pub fn pointer(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let path = self.root.join(name);
        let target = match fs::read_link(&path) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let seq = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt {
                path: path.clone(),
                detail: format!("points to {} which is not a generation", target.display()),
            })?;
        Ok(Some(seq))
    }

    /// The generation in force, if any.
    pub fn current(&self) -> Result<Option<Generation>, StoreError> {
        self.pointer("current")?
            .map(|seq| self.load(seq))
            .transpose()
    }

    /// The generation before the one in force, if any.
    pub fn previous(&self) -> Result<Option<Generation>, StoreError> {
        self.pointer("previous")?
            .map(|seq| self.load(seq))
            .transpose()
    }

    /// Highest document version ever staged; later documents must be above it.
    pub fn highest_version(&self) -> Result<u64, StoreError> {
        let path = self.root.join("highest_version");
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| StoreError::Corrupt {
                path,
                detail: format!("{:?} is not a version", text.trim()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Read generation `seq`.
    pub fn load(&self, seq: u64) -> Result<Generation, StoreError> {
        let dir = self.generation_dir(seq);
        let meta_path = dir.join("meta.json");
        let meta: Meta = serde_json::from_slice(&fs::read(&meta_path).map_err(io_err(&meta_path))?)
            .map_err(|e| StoreError::Corrupt {
                path: meta_path.clone(),
                detail: e.to_string(),
            })?;
        let (format, doc_path) = if dir.join("document.yaml").exists() {
            (Format::Yaml, dir.join("document.yaml"))
        } else {
            (Format::Toml, dir.join("document.toml"))
        };
        let bytes = fs::read(&doc_path).map_err(io_err(&doc_path))?;
        let signature = read_optional(&dir.join("document.minisig"))?;
        let pushed_path = dir.join("pushed.toml");
        let pushed: BTreeMap<String, toml::Table> = match read_optional(&pushed_path)? {
            Some(raw) => {
                let text = String::from_utf8(raw).map_err(|_| StoreError::Corrupt {
                    path: pushed_path.clone(),
                    detail: "not UTF-8".into(),
                })?;
                toml::from_str(&text).map_err(|e| StoreError::Corrupt {
                    path: pushed_path.clone(),
                    detail: e.to_string(),
                })?
            }
            None => BTreeMap::new(),
        };
        let document = if meta.version == 0 {
            // Pushed state only: no document had arrived yet.
            Document::empty(&meta.node)
        } else {
            Document::parse(&bytes, format).map_err(|e| StoreError::Corrupt {
                path: doc_path.clone(),
                detail: e.to_string(),
            })?
        };
        Ok(Generation {
            meta,
            format,
            bytes,
            signature,
            document: document.with_pushed(pushed),
        })
    }

    /// Write a new generation and point `pending` at it. Returns its sequence number.
    pub fn stage(&self, new: NewGeneration) -> Result<u64, StoreError> {
        let seq = self.next_seq()?;
        let generations = self.root.join("generations");
        let tmp = generations.join(format!(".staging-{seq:020}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let doc_name = match new.format {
            Format::Toml => "document.toml",
            Format::Yaml => "document.yaml",
        };
        write_synced(&tmp.join(doc_name), &new.bytes)?;
        if let Some(signature) = &new.signature {
            write_synced(&tmp.join("document.minisig"), signature)?;
        }
        if !new.pushed.is_empty() {
            let text = toml::to_string(&new.pushed).map_err(|e| StoreError::Corrupt {
                path: tmp.join("pushed.toml"),
                detail: e.to_string(),
            })?;
            write_synced(&tmp.join("pushed.toml"), text.as_bytes())?;
        }
        let mut plan = new.actions.join("\n");
        plan.push('\n');
        write_synced(&tmp.join("plan.txt"), plan.as_bytes())?;
        for (reconciler, artifacts) in &new.artifacts {
            if artifacts.is_empty() {
                continue;
            }
            let dir = tmp.join("rendered").join(reconciler);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            for artifact in artifacts {
                write_synced(
                    &dir.join(safe_file_name(&artifact.name)),
                    &artifact.contents,
                )?;
            }
            sync_dir(&dir)?;
        }
        let meta = Meta {
            seq,
            version: new.version,
            node: new.node.clone(),
            source: new.source,
            sha256: sha256_hex(&new.bytes),
            state: GenerationState::Pending,
            error: None,
            staged_at: kowabunga_model::Timestamp::now().as_unix_seconds(),
        };
        self.write_meta_in(&tmp, &meta)?;
        sync_dir(&tmp)?;
        let dir = self.generation_dir(seq);
        fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        sync_dir(&generations)?;
        if new.version > self.highest_version()? {
            let path = self.root.join("highest_version");
            replace_file(&path, format!("{}\n", new.version).as_bytes())?;
        }
        self.set_pointer("pending", seq)?;
        Ok(seq)
    }

    /// Make the pending generation `seq` current: `previous` <- `current`, `current` <-
    /// `seq`, then drop `pending`. `between` runs after the first rename (failpoint hook).
    pub fn commit(&self, seq: u64, between: impl FnOnce()) -> Result<(), StoreError> {
        self.set_state(seq, GenerationState::Committed, None)?;
        if let Some(current) = self.pointer("current")?
            && current != seq
        {
            self.set_pointer("previous", current)?;
        }
        between();
        self.set_pointer("current", seq)?;
        self.remove_pointer("pending")?;
        self.prune()
    }

    /// Record that pending generation `seq` was undone, and drop `pending`. Its
    /// version stays used: a later document must be newer.
    pub fn abandon(&self, seq: u64, error: &str) -> Result<(), StoreError> {
        self.set_state(seq, GenerationState::Reverted, Some(error.to_owned()))?;
        self.remove_pointer("pending")
    }

    /// Record that pending generation `seq` was undone through no fault of its document
    /// (the agent was stopping), drop `pending`, and give its version back: the highest
    /// version seen returns to `highest_before`, so the same document can be applied
    /// again.
    pub fn release(&self, seq: u64, error: &str, highest_before: u64) -> Result<(), StoreError> {
        self.set_state(seq, GenerationState::Reverted, Some(error.to_owned()))?;
        self.give_back_version(highest_before)?;
        self.remove_pointer("pending")
    }

    /// Set the highest version seen back to `highest_before` (a staging that failed, or
    /// a generation released by [`Self::release`]).
    pub fn give_back_version(&self, highest_before: u64) -> Result<(), StoreError> {
        let path = self.root.join("highest_version");
        replace_file(&path, format!("{highest_before}\n").as_bytes())
    }

    /// Look at what a crash may have left. A finished commit is tidied up here; an
    /// interrupted apply is returned for the caller to undo (then [`Self::abandon`]).
    pub fn recover(&self) -> Result<Interrupted, StoreError> {
        let generations = self.root.join("generations");
        for entry in fs::read_dir(&generations).map_err(io_err(&generations))? {
            let path = entry.map_err(io_err(&generations))?.path();
            let staging = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".staging-"));
            if staging {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        match (self.pointer("pending")?, self.pointer("current")?) {
            (None, _) => Ok(Interrupted::Nothing),
            (Some(pending), Some(current)) if pending == current => {
                self.remove_pointer("pending")?;
                Ok(Interrupted::CommitFinished)
            }
            (Some(seq), _) => Ok(Interrupted::Apply { seq }),
        }
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        let generations = self.root.join("generations");
        let mut highest = 0;
        for entry in fs::read_dir(&generations).map_err(io_err(&generations))? {
            let entry = entry.map_err(io_err(&generations))?;
            if let Some(seq) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            {
                highest = highest.max(seq);
            }
        }
        Ok(highest + 1)
    }

    fn set_state(
        &self,
        seq: u64,
        state: GenerationState,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let dir = self.generation_dir(seq);
        let mut meta = self.load(seq)?.meta;
        meta.state = state;
        meta.error = error;
        self.write_meta_in(&dir, &meta)
    }

    fn write_meta_in(&self, dir: &Path, meta: &Meta) -> Result<(), StoreError> {
        let path = dir.join("meta.json");
        let mut json = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        json.push(b'\n');
        replace_file(&path, &json)
    }

    fn set_pointer(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        let link = self.root.join(name);
        let tmp = self.root.join(format!(".{name}.new"));
        let _ = fs::remove_file(&tmp);
        symlink(format!("generations/{seq:020}"), &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &link).map_err(io_err(&link))?;
        sync_dir(&self.root)
    }

    fn remove_pointer(&self, name: &str) -> Result<(), StoreError> {
        let link = self.root.join(name);
        match fs::remove_file(&link) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&link)(e)),
        }
    }

    /// Delete old generations, keeping the pointed-to ones and the newest few others.
    fn prune(&self) -> Result<(), StoreError> {
        let keep: Vec<u64> = ["current", "previous", "pending"]
            .iter()
            .filter_map(|p| self.pointer(p).ok().flatten())
            .collect();
        let generations = self.root.join("generations");
        let mut seqs: Vec<u64> = fs::read_dir(&generations)
            .map_err(io_err(&generations))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|seq| !keep.contains(seq))
            .collect();
        seqs.sort_unstable();
        let excess = seqs.len().saturating_sub(KEEP_OLD_GENERATIONS);
        for seq in &seqs[..excess] {
            let dir = self.generation_dir(*seq);
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Artifact names come from reconcilers; keep them inside their directory.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => cleaned,
    }
}

/// Write `bytes` to a new file and fsync it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = File::create(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Replace `path` atomically: write a sibling, fsync, rename, fsync the directory.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version = 4\nnode = \"n1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2099-01-01T00:00:00Z\"\n[x]\na = 1\n";

    fn stage(store: &GenerationStore, version: u64) -> u64 {
        let bytes = DOC.replace("version = 4", &format!("version = {version}"));
        store
            .stage(NewGeneration {
                version,
                node: "n1".into(),
                source: Source::Local,
                format: Format::Toml,
                bytes: bytes.as_bytes().to_vec(),
                signature: Some(b"sig".to_vec()),
                pushed: BTreeMap::new(),
                actions: vec!["create x".into()],
                artifacts: vec![(
                    "fw",
                    vec![Artifact {
                        name: "rules.nft".into(),
                        contents: b"table".to_vec(),
                    }],
                )],
            })
            .unwrap()
    }

    #[test]
    fn stage_commit_and_pointers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = GenerationStore::open(tmp.path()).unwrap();
        let one = stage(&store, 4);
        assert_eq!(store.pointer("pending").unwrap(), Some(one));
        assert_eq!(store.current().unwrap().map(|g| g.meta.seq), None);
        store.commit(one, || {}).unwrap();
        let two = stage(&store, 5);
        store.commit(two, || {}).unwrap();
        let current = store.current().unwrap().unwrap();
        assert_eq!((current.meta.seq, current.meta.version), (two, 5));
        assert_eq!(current.meta.state, GenerationState::Committed);
        assert_eq!(current.signature.as_deref(), Some(&b"sig"[..]));
        assert_eq!(store.previous().unwrap().unwrap().meta.seq, one);
        assert_eq!(store.pointer("pending").unwrap(), None);
        assert_eq!(store.highest_version().unwrap(), 5);
        let rendered = tmp
            .path()
            .join(format!("generations/{two:020}/rendered/fw/rules.nft"));
        assert_eq!(fs::read(rendered).unwrap(), b"table");
    }

    #[test]
    fn recover_distinguishes_finished_and_interrupted_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let store = GenerationStore::open(tmp.path()).unwrap();
        assert_eq!(store.recover().unwrap(), Interrupted::Nothing);
        let one = stage(&store, 1);
        assert_eq!(store.recover().unwrap(), Interrupted::Apply { seq: one });
        store.abandon(one, "boom").unwrap();
        assert_eq!(
            store.load(one).unwrap().meta.state,
            GenerationState::Reverted
        );
        let two = stage(&store, 2);
        store.commit(two, || {}).unwrap();
        // A crash after `current` moved but before `pending` went away.
        store.set_pointer("pending", two).unwrap();
        assert_eq!(store.recover().unwrap(), Interrupted::CommitFinished);
        assert_eq!(store.pointer("pending").unwrap(), None);
    }

    #[test]
    fn prune_keeps_pointed_generations() {
        let tmp = tempfile::tempdir().unwrap();
        let store = GenerationStore::open(tmp.path()).unwrap();
        let first = stage(&store, 1);
        store.commit(first, || {}).unwrap();
        for v in 2..20 {
            let seq = stage(&store, v);
            store.commit(seq, || {}).unwrap();
        }
        let count = fs::read_dir(tmp.path().join("generations"))
            .unwrap()
            .count();
        assert_eq!(count, KEEP_OLD_GENERATIONS + 2);
        assert!(store.load(first).is_err());
        assert_eq!(store.current().unwrap().unwrap().meta.version, 19);
    }

    #[test]
    fn corrupt_pointer_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let store = GenerationStore::open(tmp.path()).unwrap();
        symlink("nowhere/abc", tmp.path().join("current")).unwrap();
        let err = store.current().unwrap_err().to_string();
        assert!(
            err.contains("current") && err.contains("not a generation"),
            "{err}"
        );
    }

    #[test]
    fn a_second_writer_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = GenerationStore::open(tmp.path()).unwrap();
        let err = GenerationStore::open(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("held by another agent process"), "{err}");
        assert!(
            GenerationStore::open_read_only(tmp.path())
                .current()
                .is_ok()
        );
    }

    #[test]
    fn artifact_names_cannot_escape() {
        assert_eq!(safe_file_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(safe_file_name(".."), "_");
    }
}
