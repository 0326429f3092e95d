//! Checks the rules of the codebase that can be checked: the one-way crate graph, where
//! `unsafe` may live, and that every Rust file says what it is for in its first line.
#![allow(clippy::unwrap_used)] // a test that cannot read its own tree should fail loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// condo-* dependencies of each crate, from its Cargo.toml ([dependencies] only).
fn internal_edges() -> BTreeMap<String, Vec<String>> {
    let mut edges = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let mut in_deps = false;
        let mut deps = Vec::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_deps = line == "[dependencies]";
            } else if in_deps && line.starts_with("condo-") {
                deps.push(line.split([' ', '.', '=']).next().unwrap().to_owned());
            }
        }
        edges.insert(name, deps);
    }
    edges
}

#[test]
fn crate_graph_points_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("condo-types", &[][..]),
        ("condo-sandbox", &[][..]),
        ("condo-runtime-api", &[][..]),
        ("condo-store", &["condo-types"][..]),
        (
            "condo-engine",
            &[
                "condo-types",
                "condo-store",
                "condo-sandbox",
                "condo-runtime-api",
            ][..],
        ),
        (
            "condo-api",
            &["condo-types", "condo-store", "condo-engine"][..],
        ),
        (
            "condo",
            &[
                "condo-types",
                "condo-store",
                "condo-sandbox",
                "condo-engine",
                "condo-api",
            ][..],
        ),
    ]);
    let edges = internal_edges();
    assert!(edges.len() >= 7);
    for (krate, deps) in edges {
        let Some(ok) = allowed.get(krate.as_str()) else {
            panic!("new crate {krate}: add it to ARCHITECTURE.md and to this test's graph");
        };
        for dep in deps {
            assert!(
                ok.contains(&dep.as_str()),
                "{krate} must not depend on {dep}"
            );
        }
    }
}

#[test]
fn unsafe_lives_only_in_the_sandbox_sys_module() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "crates/condo/tests/tidy.rs" {
            continue; // this file names the patterns it looks for
        }
        let uses_unsafe = text.lines().any(|l| {
            let code = l.split("//").next().unwrap_or("");
            code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl")
        });
        if uses_unsafe {
            assert!(
                rel.starts_with("crates/condo-sandbox/src/sys/"),
                "unsafe code outside condo-sandbox/src/sys: {rel}"
            );
        }
    }
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.ends_with("condo-sandbox") {
            continue;
        }
        for top in ["src/lib.rs", "src/main.rs"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(top)) {
                assert!(
                    text.contains("#![forbid(unsafe_code)]"),
                    "{}/{top} must forbid unsafe code",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    assert!(files.len() > 10);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} must start with a `//!` line saying what it is for",
            file.display()
        );
    }
}
