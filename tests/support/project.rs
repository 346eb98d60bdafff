//! A copy of the shipped flows and lookups in a temporary directory, for tests that run the
//! real binary or the library against the repository's data.

#![allow(dead_code)] // each test crate uses part of it

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The shipped flows and lookups under `dir`, with the demo's connections: local directories
/// under `dir/data`, the outbox in `dir/outbox`, REST at `standin_url`.
pub fn shipped_project(dir: &Path, standin_url: &str) {
    copy_dir(&repo().join("flows"), &dir.join("flows"));
    copy_dir(&repo().join("lookups"), &dir.join("lookups"));
    let conns = std::fs::read_to_string(repo().join("examples/demo/connections.yaml"))
        .unwrap()
        .replace("${DEMO_DIR}", &dir.display().to_string())
        .replace("${STANDIN_URL}", standin_url);
    std::fs::write(dir.join("flows/connections.yaml"), conns).unwrap();
}
