//! Embeds what `ferry demo` needs to run from any directory: the demo plan, its sample files
//! and input (`examples/demo`), the shipped flows and lookups. Writes `demo_bundle.rs` in
//! OUT_DIR: `[(path relative to the repository, bytes)]`, in path order. The paths are
//! generated here so that the engine's source names no shipped file.

use std::path::{Path, PathBuf};

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut files = Vec::new();
    for dir in ["examples/demo", "flows", "lookups"] {
        println!("cargo:rerun-if-changed={dir}");
        walk(&root, &root.join(dir), &mut files);
    }
    files.sort();
    let mut code = String::from("/// The demo's files: path relative to the repository, bytes.\n");
    code.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for rel in &files {
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        code.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            rel_text,
            root.join(rel).to_string_lossy()
        ));
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("demo_bundle.rs");
    std::fs::write(out, code).expect("writing demo_bundle.rs");
}
