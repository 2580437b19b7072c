//! What the reconciler remembers between runs, to stay cheap without losing a guarantee:
//!
//! - which rulesets the kernel has accepted in a load by this process ([`Accepted`]):
//!   loading one of them again (a revert, drift put back, a restart of the same
//!   generation) needs no `nft -c` precheck, the kernel took that very script before
//!   (the script names only the agent's own tables, so nothing else can make it fail);
//! - the ruleset last loaded ([`Loaded`]): its digest, its [`Shape`] (rules per chain,
//!   a fingerprint computed from the script, no kernel round trip), and the listing
//!   the kernel gives of it, read at the first observation after the load (the
//!   confirm window's check) rather than right after it: `nft` prints a normalised
//!   form that cannot be predicted, and a second `nft` run after every load would cost
//!   as much as the listing itself. Until that first observation the shape stands in
//!   for the listing: a rule added or removed meanwhile is still noticed.

use std::collections::VecDeque;

use crate::nft::OwnTables;

/// How many accepted rulesets are remembered (a revert goes back one generation; a few
/// more cover flapping between documents).
const ACCEPTED_KEPT: usize = 16;

/// The number of rules in each chain of the agent's tables, in listing order: a cheap
/// fingerprint that the rendered script and the kernel's listing share (both print one
/// rule per line, two tabs deep, after the chain's `type` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(Vec<(String, usize)>);

impl Shape {
    pub fn of(tables: &OwnTables) -> Self {
        let mut chains = Vec::new();
        for table in [&tables.filter, &tables.nat].into_iter().flatten() {
            for line in table.lines() {
                if let Some(name) = line
                    .strip_prefix("\tchain ")
                    .and_then(|l| l.strip_suffix(" {"))
                {
                    chains.push((name.to_owned(), 0));
                } else if line.starts_with("\t\t")
                    && !line.starts_with("\t\ttype ")
                    && let Some((_, rules)) = chains.last_mut()
                {
                    *rules += 1;
                }
            }
        }
        Shape(chains)
    }

    /// The shape of a rendered script (its table blocks look like the listing's).
    pub fn of_script(script: &str) -> Self {
        Self::of(&OwnTables::extract(script))
    }
}

/// The ruleset this process loaded last.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub digest: String,
    pub shape: Shape,
    /// The kernel's listing of it, once observed.
    pub listing: Option<OwnTables>,
}

/// Digests of rulesets the kernel accepted in a load by this process, newest last.
#[derive(Debug, Default)]
pub struct Accepted(VecDeque<String>);

impl Accepted {
    pub fn contains(&self, digest: &str) -> bool {
        self.0.iter().any(|d| d == digest)
    }

    pub fn insert(&mut self, digest: &str) {
        self.0.retain(|d| d != digest);
        self.0.push_back(digest.to_owned());
        while self.0.len() > ACCEPTED_KEPT {
            self.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "table inet kowabunga {\n\tcomment \"kowabunga sha256:ab\"\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state established,related accept\n\t\tiifname \"lo\" accept\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n";

    #[test]
    fn shape_counts_rules_per_chain() {
        let shape = Shape::of(&OwnTables::extract(LISTING));
        assert_eq!(
            shape,
            Shape(vec![("input".into(), 2), ("forward".into(), 0)])
        );
        let fewer = LISTING.replace("\t\tiifname \"lo\" accept\n", "");
        assert_ne!(Shape::of(&OwnTables::extract(&fewer)), shape);
    }

    #[test]
    fn accepted_keeps_the_newest() {
        let mut a = Accepted::default();
        for i in 0..=ACCEPTED_KEPT {
            a.insert(&i.to_string());
        }
        assert!(!a.contains("0"));
        assert!(a.contains("1") && a.contains(&ACCEPTED_KEPT.to_string()));
        a.insert("1");
        a.insert("x");
        assert!(a.contains("1"), "re-inserting refreshes");
    }
}
