//! The offline commands: `<agent> check FILE` (is this document acceptable to this
//! agent?) and `<agent> schema` (the JSON Schema of its document). Both run where an
//! operator writes and publishes documents: no root, no kernel, no state directory.
//!
//! `check` runs the pipeline's own admission functions in the pipeline's order
//! ([`verify_and_parse`], [`check_header`], [`validate_sections`]), so it refuses what
//! `verify` and the agent refuse, with the same messages. What it cannot know offline:
//! whether the version is newer than the node's (anti-replay), and what the kernel will
//! say (`verify` on the node plans against the live system).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kernel_cmdline::BootParams;
use kowabunga_model::{Document, DynReconciler, Progress, Timestamp};

use crate::cli::{Keys, exit_code, local_candidate};
use crate::pipeline::{check_header, validate_sections, verify_and_parse};
use crate::role::{Role, RoleContext};
use crate::schema;
use crate::trust::TrustPolicy;

/// `check`: 0 valid, 3 rejected (the outcome printed as `verify` prints it), `Err` (exit
/// 1) when the file, the keys or the role's reconcilers cannot be had.
pub(crate) fn check<R: Role>(
    role: &R,
    file: &Path,
    signature: Option<&Path>,
    keys: &Keys,
    node: Option<&str>,
) -> Result<ExitCode, String> {
    let mut candidate = local_candidate(file, signature)?;
    let trust = trust_policy(keys)?;
    let signed = trust.key_count() > 0;
    if !signed {
        // Without a key there is nothing to check a signature against.
        candidate.signature = None;
    }
    let admitted = verify_and_parse(&trust, &candidate)
        .and_then(|document| check_header(&document, node, Timestamp::now()).map(|()| document));
    let document = match admitted {
        Ok(document) => document,
        Err(outcome) => {
            println!("{outcome}");
            return Ok(exit_code(&outcome));
        }
    };
    let reconcilers = offline_reconcilers(role)?;
    if let Err(outcome) = validate_sections(&reconcilers, &document) {
        println!("{outcome}");
        return Ok(exit_code(&outcome));
    }
    print_verdict::<R>(&document, &reconcilers, signed, node);
    Ok(ExitCode::SUCCESS)
}

/// `schema`: the role's document schema on stdout.
pub(crate) fn print_schema<R: Role>(role: &R) -> Result<ExitCode, String> {
    let reconcilers = offline_reconcilers(role)?;
    let schema = schema::document_schema(R::NAME, &reconcilers)?;
    print!("{}", schema::to_text(&schema));
    Ok(ExitCode::SUCCESS)
}

/// Keys from `--trusted-keys DIR` and `kowabunga.pubkey` in `--cmdline FILE`. A
/// directory named but holding no key is an error: a typo must not turn the signature
/// check off silently.
fn trust_policy(keys: &Keys) -> Result<TrustPolicy, String> {
    let mut pubkeys = Vec::new();
    if let Some(cmdline) = &keys.cmdline {
        let (boot, warnings) =
            BootParams::from_file(cmdline).map_err(|e| format!("{}: {e}", cmdline.display()))?;
        for warning in warnings {
            eprintln!("{}: {warning}", cmdline.display());
        }
        pubkeys.extend(boot.pubkeys.iter().map(|k| k.as_base64().to_owned()));
    }
    // A directory that does not exist holds no key (`TrustPolicy::load`).
    let dir = keys.dir.clone().unwrap_or_default();
    let strict = TrustPolicy::load(&dir, &pubkeys, false).map_err(|e| e.to_string())?;
    if strict.key_count() > 0 {
        return Ok(strict);
    }
    if let Some(dir) = &keys.dir {
        return Err(format!(
            "{}: no trusted key in it (minisign public keys, `*.pub`)",
            dir.display()
        ));
    }
    TrustPolicy::load(&dir, &[], true).map_err(|e| e.to_string())
}

/// What `check` says about a valid document.
fn print_verdict<R: Role>(
    document: &Document,
    reconcilers: &[Box<dyn DynReconciler>],
    signed: bool,
    node: Option<&str>,
) {
    let header = &document.header;
    println!(
        "version {} valid for {} (node {:?}, valid until {})",
        header.version,
        R::NAME,
        header.node,
        header.expires_at
    );
    if signed {
        println!("  signature: verified with a trusted key");
    } else {
        println!(
            "  signature: NOT CHECKED (no trusted key given: pass --trusted-keys DIR to check it)"
        );
    }
    if node.is_none() {
        println!("  node: not checked (pass --node to check it)");
    }
    let owned: Vec<&str> = reconcilers
        .iter()
        .flat_map(|r| r.section_schemas())
        .map(|(name, _)| name)
        .collect();
    for section in document.section_names() {
        if owned.contains(&section) {
            println!("  [{section}]: valid");
        } else if !owned.is_empty() {
            println!(
                "  [{section}]: not read by {} (another role's section, or a misspelling)",
                R::NAME
            );
        }
    }
}

/// The role's reconcilers, built with a throwaway state directory (removed afterwards)
/// so that nothing of the agent's own state is opened or created.
fn offline_reconcilers<R: Role>(role: &R) -> Result<Vec<Box<dyn DynReconciler>>, String> {
    let scratch = Scratch::new(R::NAME);
    let context = RoleContext {
        state_dir: scratch.0.clone(),
        progress: Progress::new(),
        boot: kernel_cmdline::BootParams::default(),
        os_update_dir: scratch.0.join("os-update"),
        signed: crate::signed_files::SignedSource::default(),
    };
    crate::role::pipeline_reconcilers(
        role,
        &context,
        crate::os_image::OsSource::new(crate::os_image::OsImage::read_system),
        tokio::sync::watch::channel(None).0,
    )
    .map_err(|e| format!("{}: setting up its reconcilers (offline): {e}", R::NAME))
}

/// A state directory path no agent uses, removed on drop if a reconciler created it.
struct Scratch(PathBuf);

impl Scratch {
    fn new(agent: &str) -> Self {
        Self(std::env::temp_dir().join(format!("kowabunga-{agent}-offline-{}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
