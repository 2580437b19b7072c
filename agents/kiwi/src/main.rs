//! `kiwi`: the Kowabunga network node agent. All behaviour lives in the libraries; this
//! binary names the role and lists its reconcilers and services.

use std::process::ExitCode;

use kowabunga_agent::cli::{self, Role};
use kowabunga_model::DynReconciler;

struct Kiwi;

impl Role for Kiwi {
    const NAME: &'static str = "kiwi";
    const KIND: &'static str = "Kiwi";

    fn reconcilers(&self) -> Result<Vec<Box<dyn DynReconciler>>, String> {
        Ok(Vec::new())
    }
}

fn main() -> ExitCode {
    cli::main(Kiwi)
}
