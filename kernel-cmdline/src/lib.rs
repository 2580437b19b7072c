//! The Linux kernel command line, and the Kowabunga boot parameters it carries.
//!
//! - [`mod@tokenize`]: splits a command line exactly as the kernel does (`next_arg()` in
//!   `lib/cmdline.c`): quotes, `--`, `-`/`_` equivalence in keys.
//! - [`boot_params`]: typed, validated `kowabunga.*` parameters ([`BootParams`]), with
//!   warnings for unknown or repeated keys; no I/O beyond reading `/proc/cmdline`.
//!
//! The key table and the tokenizing rules are documented in this crate's `README.md`.

pub mod boot_params;
pub mod tokenize;

mod http_url;
mod minisign;
mod secret;

pub use boot_params::{ApiKey, BootParams, CmdlineError, Warning, known_keys, resolve_config_url};
pub use http_url::{HttpUrl, InvalidUrl};
pub use minisign::MinisignPublicKey;
pub use secret::Secret;
pub use tokenize::{Param, Params, tokenize};
