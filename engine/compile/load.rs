//! Loading the directories: finding the connections file and lookups directory, walking a
//! directory for YAML files, loading lookups and connections.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::connectors::ConnectionSpec;
use crate::diag::Diagnostic;
use crate::lookups::{Lookup, Lookups};
use crate::model::{RawConnections, RawLookup};
use crate::yaml::SourceDoc;

use super::schema::schema_checked;

/// The connections file and lookups directory found beside `start` (or up to three
/// directories above it), as [`load`] looks for them when they are not given.
pub(super) fn found_near(start: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut conn, mut lookups) = (None, None);
    for a in start.ancestors().take(4) {
        if conn.is_none() && a.join("connections.yaml").is_file() {
            conn = Some(a.join("connections.yaml"));
        }
        if lookups.is_none() && a.join("lookups").is_dir() {
            lookups = Some(a.join("lookups"));
        }
    }
    (conn, lookups)
}

pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// The `*.yaml`/`*.yml` files under `dir`, in name order. Symbolic links to directories are
/// not followed (so a link loop cannot make the walk endless; a warning names each one), links
/// to files are; entries whose names start with `.` are skipped.
pub(super) fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    collect_yaml_at(dir, out, diags, 0);
}

fn walk_warning(code: &str, message: String, path: &Path) -> Diagnostic {
    Diagnostic {
        severity: crate::diag::Severity::Warning,
        ..Diagnostic::error(code, message).in_file(path)
    }
}

/// Directory levels below a flow or lookups directory that are walked.
const MAX_DIR_DEPTH: usize = 16;

fn collect_yaml_at(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>, depth: usize) {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect::<Vec<_>>(),
        Err(e) => {
            diags.push(Diagnostic::error(
                "io",
                format!("cannot read directory {}: {e}", dir.display()),
            ));
            return;
        }
    };
    entries.sort();
    for p in entries {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if p.is_dir() {
                diags.push(walk_warning(
                    "symlink-dir",
                    format!(
                        "{} is a symbolic link to a directory; ferry does not follow those",
                        p.display()
                    ),
                    &p,
                ));
                continue;
            }
        } else if meta.is_dir() {
            if depth >= MAX_DIR_DEPTH {
                diags.push(walk_warning(
                    "deep-dir",
                    format!(
                        "{} is more than {MAX_DIR_DEPTH} directories deep; not read",
                        p.display()
                    ),
                    &p,
                ));
                continue;
            }
            collect_yaml_at(&p, out, diags, depth + 1);
            continue;
        }
        if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            && !crate::testing::is_test_file(&p)
        {
            out.push(p);
        }
    }
}

pub(super) fn load_lookup(
    doc: SourceDoc,
    lookups: &mut Lookups,
    broken: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(raw) = schema_checked::<RawLookup>(&doc, "lookup", diags) else {
        if let Some(name) = doc.value.get("name").and_then(Value::as_str) {
            broken.insert(name.to_string());
        }
        return;
    };
    let doc = Arc::new(doc);
    let mut key_pos = HashMap::new();
    for (i, row) in raw.rows.iter().enumerate() {
        let ptr = format!("/rows/{i}");
        if row.len() != raw.columns.len() {
            diags.push(
                Diagnostic::error(
                    "lookup-row",
                    format!(
                        "row has {} values, the table has {} columns ({})",
                        row.len(),
                        raw.columns.len(),
                        raw.columns.join(", ")
                    ),
                )
                .at(&doc, &ptr),
            );
        }
        if let Some(k) = row.first() {
            if key_pos.contains_key(k) {
                diags.push(
                    Diagnostic::error("duplicate-key", format!("key '{k}' appears twice"))
                        .at(&doc, &format!("{ptr}/0")),
                );
            }
            key_pos.insert(k.clone(), doc.locate(&format!("{ptr}/0")));
        }
    }
    if lookups.tables.contains_key(&raw.name) {
        diags.push(
            Diagnostic::error(
                "duplicate-lookup",
                format!("lookup '{}' is defined twice", raw.name),
            )
            .at(&doc, "/name"),
        );
        return;
    }
    let mut table = Lookup::new(raw.name.clone(), raw.columns, raw.rows);
    table.key_pos = key_pos;
    table.source = Some(doc);
    lookups.tables.insert(raw.name, Arc::new(table));
}

pub(super) fn check_connections(
    doc: &SourceDoc,
    diags: &mut Vec<Diagnostic>,
) -> Option<BTreeMap<String, ConnectionSpec>> {
    schema_checked::<RawConnections>(doc, "connections", diags).map(|c| c.connections)
}
