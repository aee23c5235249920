//! The crate's README links the workspace guide, and every relative link in it leads to a
//! file or folder that exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The targets of the README's `[text](target)` links that are paths in the repository.
fn relative_links(readme: &str) -> Vec<&str> {
    readme
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://") && !target.starts_with('#'))
        .collect()
}

#[test]
fn the_readme_links_the_guide_and_every_relative_link_resolves() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let links = relative_links(&readme);
    let resolved: Vec<PathBuf> = links
        .iter()
        .map(|target| crate_dir.join(target.split('#').next().unwrap_or_default()))
        .collect();
    let broken: Vec<_> = resolved.iter().filter(|path| !path.exists()).collect();
    assert!(broken.is_empty(), "broken links: {broken:?}");

    let guide = crate_dir
        .join("../../docs/guide.md")
        .canonicalize()
        .unwrap();
    assert!(
        resolved
            .iter()
            .any(|path| path.canonicalize().ok().as_ref() == Some(&guide)),
        "the README does not link docs/guide.md: {links:?}"
    );
}
