//! `scripts/check-docs.sh`, the runner that keeps the docs' walkthroughs from rotting
//! (scripts/test.sh runs it over README.md and docs/ after the test suite). Here: it
//! runs a walkthrough's blocks in order in one shell, fails on a failing step, checks
//! an expected exit code written `|| test $? = N`, and keeps the network namespaces and
//! /tmp files a walkthrough makes away from the host. And README.md's walkthrough is
//! one it will run. Needs root and util-linux (unshare).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check_docs(args: &[&Path]) -> Output {
    Command::new(repo().join("scripts/check-docs.sh"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const FIXTURE: &str = r#"# A page

```sh
false   # not in a walkthrough: never run
```

<!-- check-docs: begin passes -->

Steps share one shell: a variable set in one block is seen in the next.

```sh
ip netns add try
ip netns exec try ip link set lo up
step=2
echo made > /tmp/check-docs-fixture
```

Some prose.

```sh
test "$step" = 2
sh -c 'exit 3' || test $? = 3   # exit 3, as the text explains
ip netns exec try ip -br link show lo | grep -q UP
```

<!-- check-docs: end -->

<!-- check-docs: begin wrong-exit-code -->

```sh
sh -c 'exit 4' || test $? = 3
```

<!-- check-docs: end -->

<!-- check-docs: begin fails-midway -->

```sh
true
false
echo never > /tmp/check-docs-never
```

<!-- check-docs: end -->
"#;

#[test]
fn walkthroughs_run_in_order_and_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(&page, FIXTURE).unwrap();
    let out = check_docs(&[&page]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("ok      ") && said.contains("passes"),
        "{said}"
    );
    assert!(
        said.contains("FAILED  ") && said.contains("wrong-exit-code"),
        "{said}"
    );
    assert!(said.contains("fails-midway"), "{said}");
    assert!(
        !said.contains("never"),
        "stopped at the failing step: {said}"
    );
    // What the walkthroughs made stayed in their private namespaces.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some("try")),
        "{listed}"
    );
    assert!(!Path::new("/tmp/check-docs-fixture").exists());

    // A page whose walkthroughs all pass: exit 0.
    let passing = dir.path().join("passing.md");
    let only_first = FIXTURE
        .split("<!-- check-docs: begin wrong-exit-code -->")
        .next()
        .unwrap();
    std::fs::write(&passing, only_first).unwrap();
    let out = check_docs(&[&passing]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn malformed_markers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, page) in [
        (
            "no-end.md",
            "<!-- check-docs: begin a -->\n```sh\ntrue\n```\n",
        ),
        (
            "no-block.md",
            "<!-- check-docs: begin a -->\n<!-- check-docs: end -->\n",
        ),
        ("nothing.md", "# no walkthrough\n"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, page).unwrap();
        let out = check_docs(&[&file]);
        assert_ne!(out.status.code(), Some(0), "{name}: {}", text(&out));
    }
}

#[test]
fn readme_walkthrough_is_run_and_covers_every_exit_code_it_explains() {
    let out = Command::new(repo().join("scripts/check-docs.sh"))
        .args(["--print"])
        .arg(repo().join("README.md"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for step in [
        "cargo build -p kiwi",
        "ip link set lo up",
        "kiwi check bad.toml || test $? = 3",
        "kiwi apply kiwi.toml",
        "--confirm-window 5 || test $? = 4",
        "kiwi apply v2.toml $opts || test $? = 3",
        "--retry",
        "date -u",
    ] {
        assert!(
            script.contains(step),
            "README walkthrough lacks {step:?}:\n{script}"
        );
    }
    assert!(
        !script.contains("2027-") && !script.contains("expires_at = 20"),
        "the walkthrough must not carry a fixed expiry"
    );
}
