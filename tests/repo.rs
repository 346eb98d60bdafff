//! Invariants of the repository itself: committed schemas are the generated ones, the engine
//! names no shipped flow, and every step kind has a validating example in the shipped flows.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_schemas_are_the_generated_ones() {
    for (file, schema) in [
        ("flow.schema.json", ferry::compile::flow_schema()),
        (
            "connections.schema.json",
            ferry::compile::connections_schema(),
        ),
        ("lookup.schema.json", ferry::compile::lookup_schema()),
        ("test.schema.json", ferry::testing::test_schema()),
    ] {
        let generated = format!("{}\n", serde_json::to_string_pretty(&schema).unwrap());
        let committed =
            std::fs::read_to_string(root().join("schemas").join(file)).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/{file} is stale: run `cargo run -- schema --write schemas`"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Everything the shipped flows name: flow ids, lookup names and keys, buckets, prefixes.
fn shipped_names() -> Vec<String> {
    let mut names = Vec::new();
    for dir in ["flows", "flows/common", "lookups"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let doc = ferry::yaml::SourceDoc::load(&p).unwrap();
            if let Some(id) = doc.value.get("id").and_then(|v| v.as_str()) {
                names.push(id.to_string());
            }
            if let Some(name) = doc.value.get("name").and_then(|v| v.as_str())
                && dir == "lookups"
            {
                names.push(name.to_string());
            }
            if let Some(rows) = doc.value.get("rows").and_then(|v| v.as_array()) {
                for row in rows {
                    let row = row.as_array().unwrap();
                    // keys and values such as buckets and prefixes, but not generic words
                    // (`from`, `to`, `true`, `os`) that any program contains
                    for v in row.iter().take(2).filter_map(|v| v.as_str()) {
                        if v.len() >= 6
                            && v.chars()
                                .any(|c| c == '_' || c == '.' || c.is_ascii_uppercase())
                        {
                            names.push(v.to_string());
                        }
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_engine_names_no_shipped_flow_lookup_key_bucket_or_prefix() {
    let names = shipped_names();
    assert!(names.len() > 30, "the scan found too few names: {names:?}");
    let mut files = Vec::new();
    rust_files(&root().join("engine"), &mut files);
    let mut hits = Vec::new();
    // HTTP status constants (`StatusCode::ACCEPTED`) are not the lookup value `ACCEPTED`
    let status_constant = regex::Regex::new(r"StatusCode::[A-Z_]+").unwrap();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let text = status_constant.replace_all(&text, "StatusCode::_");
        for n in &names {
            // `StatusCode::ACCEPTED` is a Rust path, not a lookup value
            let named = text
                .match_indices(n.as_str())
                .any(|(at, _)| !text[..at].ends_with("::"));
            if named {
                hits.push(format!("{} names '{n}'", f.display()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the engine must know no flow:\n{}",
        hits.join("\n")
    );
}

#[test]
fn every_step_kind_has_an_example_in_the_shipped_flows() {
    let mut text = String::new();
    for dir in ["flows", "flows/common"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                text.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    for kind in ferry::steps::KIND_KEYS {
        assert!(
            text.contains(&format!("{kind}:")),
            "no shipped flow uses the `{kind}` step kind"
        );
    }
}

#[test]
fn the_example_connection_files_validate_with_the_shipped_flows() {
    for file in ["oci-native.yaml", "ftp-s3.yaml"] {
        let (project, diags) = ferry::compile::load(&ferry::compile::Inputs {
            paths: vec![root().join("flows")],
            connections: Some(root().join("examples/connections").join(file)),
            ..Default::default()
        });
        assert!(diags.is_empty(), "{file}: {diags:#?}");
        let kinds: Vec<&str> = project
            .unwrap()
            .connections
            .values()
            .map(|c| c.kind())
            .collect();
        assert!(kinds.contains(&"smtp"), "{file}: {kinds:?}");
    }
}
