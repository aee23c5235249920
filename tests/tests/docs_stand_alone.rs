//! Docs that stand alone: no citation in `crates/` of a document a user of the crates
//! cannot read, and `docs/guide.md` linked from the README and every crate's front page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "md" || e == "toml")
        {
            out.push(path);
        }
    }
}

const CRATES: [&str; 4] = [
    "process-registry",
    "async-delegation",
    "delegate-tool",
    "gateway",
];

/// "No `SPEC`, `seed` or `reference implementation` citations in crates/". Still there:
/// `crates/process-registry/tests/format.rs` ("// Seed expectations
/// (test_async_delegation.py)"), the test file `crates/gateway/tests/seed_gateway.rs`,
/// and `seed_event` in `crates/gateway/benches/gateway.rs`.
#[test]
fn crates_cite_no_seed_spec_or_reference_implementation() {
    let mut files = Vec::new();
    for name in CRATES {
        files_under(&root().join("crates").join(name), &mut files);
    }
    let mut citations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().display().to_string();
        if relative.contains("seed") {
            citations.push(format!("{relative}: file name"));
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let words = lower.split(|c: char| !c.is_alphanumeric());
            let cites = words.clone().any(|w| w == "seed")
                || line
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == "SPEC")
                || lower.contains("reference implementation")
                || lower.contains("seed_");
            if cites {
                citations.push(format!("{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(citations.is_empty(), "{}", citations.join("\n"));
}

/// "docs/guide.md exists, linked from README and every crate's front page". Each crate's
/// front page — its `README.md` (the `readme` of its Cargo.toml, what a registry shows)
/// and its `lib.rs` docs (what rustdoc shows) — names the guide only as inline code
/// (`` `docs/guide.md` ``), which renders as no link at all, and the READMEs not at all.
#[test]
fn every_crate_front_page_links_the_guide() {
    let mut missing = Vec::new();
    for name in CRATES {
        let crate_dir = root().join("crates").join(name);
        let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
        if !readme.contains("guide.md)") {
            missing.push(format!("crates/{name}/README.md has no link to the guide"));
        }
        let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
        let front: String = lib
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if !front.contains("guide.md)")
            && !front.contains("guide.md>")
            && !front.contains("(crate::guide)")
        {
            missing.push(format!(
                "crates/{name}/src/lib.rs front page has no link to the guide"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Coverage: the root README links the guide, and every relative link in the guide
/// points at a file that exists.
#[test]
fn the_readme_links_the_guide_and_the_guide_links_resolve() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("](docs/guide.md)"));
    let guide = std::fs::read_to_string(root().join("docs/guide.md")).unwrap();
    for piece in guide.split("](").skip(1) {
        let target = piece.split(')').next().unwrap();
        if !target.starts_with("http") {
            assert!(
                root().join("docs").join(target).exists(),
                "guide links {target}"
            );
        }
    }
}
