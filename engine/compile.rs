//! The one compiler: source files → a checked [`Project`] of [`FlowPlan`]s.
//!
//! `ferry validate` and `ferry run` both call [`load`]; a flow that validates cannot fail to
//! load. Checking collects every problem instead of stopping at the first: JSON Schema
//! conformance (schemas generated from [`crate::model`]), the step graph (duplicate ids,
//! unknown references, cycles — petgraph), templates that do not compile, unknown variables,
//! functions, lookups, lookup keys, connections, child flows and parameters, and route values
//! that no case handles.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};

use crate::connectors::{Capability, ConnectionSpec};
use crate::diag::{Diagnostic, did_you_mean};
use crate::lookups::{Lookup, Lookups};
use crate::model::{RawConnections, RawFlow, RawLookup, RawStep, Trigger};
use crate::steps::{Block, KIND_KEYS, StepKind, StepPlan};
use crate::template::{BUILTIN_FUNCTIONS, Templates, Tpl, find_calls};
use crate::typecheck::{self, Shape};
use crate::yaml::SourceDoc;

/// Root variables every template may read.
pub const ROOT_VARIABLES: &[&str] = &["input", "params", "steps", "run", "error"];

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Flow files or directories of them (searched recursively for `*.yaml`/`*.yml`).
    pub paths: Vec<PathBuf>,
    /// The lookups directory; default: `lookups/` beside the first flow directory.
    pub lookups: Option<PathBuf>,
    /// The connections file; default: `connections.yaml` in the first flow directory.
    pub connections: Option<PathBuf>,
}

/// Everything a run needs, checked.
#[derive(Debug)]
pub struct Project {
    /// Compiled flows by id.
    pub flows: BTreeMap<String, Arc<FlowPlan>>,
    /// Lookup tables.
    pub lookups: Arc<Lookups>,
    /// Connection definitions by name.
    pub connections: BTreeMap<String, ConnectionSpec>,
    /// The locations flows use on each file connection, where they depend on lookups only
    /// (what `ferry check` lists).
    pub locations: BTreeMap<String, BTreeSet<String>>,
    /// Files read.
    pub files: Vec<PathBuf>,
}

/// A compiled flow.
#[derive(Debug)]
pub struct FlowPlan {
    /// Identifier.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Triggers.
    pub trigger: Trigger,
    /// The parsed schedule of `trigger.schedule`.
    pub schedule: Option<Arc<crate::schedule::CronSchedule>>,
    /// Parameter names.
    pub params: BTreeMap<String, crate::model::Param>,
    /// The flow's template environment.
    pub templates: Templates,
    /// Top-level steps in execution order.
    pub steps: Block,
    /// Error handler: child flow and its parameters.
    pub on_error: Option<(String, ValueTpl)>,
    /// What its runs are found by (`track:`): name and template, in name order.
    pub track: Vec<(String, Tpl)>,
    /// The file it came from.
    pub path: PathBuf,
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
pub enum ValueTpl {
    /// A string template.
    Tpl(Tpl),
    /// A list.
    Array(Vec<ValueTpl>),
    /// A map, in order.
    Object(Vec<(String, ValueTpl)>),
    /// A number, boolean or null.
    Plain(Value),
}

/// The generated JSON Schema of flow files.
pub fn flow_schema() -> Value {
    schema_value(schemars::schema_for!(RawFlow))
}

/// The generated JSON Schema of connections files.
pub fn connections_schema() -> Value {
    schema_value(schemars::schema_for!(RawConnections))
}

/// The generated JSON Schema of lookup files.
pub fn lookup_schema() -> Value {
    schema_value(schemars::schema_for!(RawLookup))
}

fn schema_value(s: schemars::Schema) -> Value {
    s.to_value()
}

fn validator(which: &'static str) -> &'static jsonschema::Validator {
    static FLOW: OnceLock<jsonschema::Validator> = OnceLock::new();
    static CONN: OnceLock<jsonschema::Validator> = OnceLock::new();
    static LOOKUP: OnceLock<jsonschema::Validator> = OnceLock::new();
    let (cell, schema): (_, fn() -> Value) = match which {
        "flow" => (&FLOW, flow_schema),
        "connections" => (&CONN, connections_schema),
        _ => (&LOOKUP, lookup_schema),
    };
    cell.get_or_init(|| {
        #[allow(clippy::expect_used)]
        jsonschema::validator_for(&schema()).expect("generated schemas are valid JSON Schema")
    })
}

/// Default: the largest flow, lookup or connections file read, in bytes (4 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Loads and checks everything under `inputs`. Returns the project when there is no error,
/// and every diagnostic in any case.
pub fn load(inputs: &Inputs) -> (Option<Project>, Vec<Diagnostic>) {
    load_limited(inputs, DEFAULT_MAX_FILE_BYTES)
}

/// The connections file and lookups directory found beside `start` (or up to three
/// directories above it), as [`load`] looks for them when they are not given.
fn found_near(start: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
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

/// `inputs` with the lookups directory and the connections file that [`load`] would find
/// when they are not given (what a hot reload watches).
pub fn resolved(inputs: &Inputs) -> Inputs {
    let mut out = inputs.clone();
    for p in &inputs.paths {
        let start = if p.is_dir() {
            p.clone()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let (conn, lookups) = found_near(&start);
        if out.connections.is_none() {
            out.connections = conn;
        }
        if out.lookups.is_none() {
            out.lookups = lookups;
        }
    }
    out
}

/// [`load`], reading no file over `max_file_bytes`.
pub fn load_limited(inputs: &Inputs, max_file_bytes: u64) -> (Option<Project>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut flow_docs = Vec::new();
    let mut files = Vec::new();
    let mut conn_path = inputs.connections.clone();
    let mut lookup_dir = inputs.lookups.clone();
    // A flow file given alone is checked with the rest of its flow directory (its child
    // flows live there); only its own diagnostics are reported.
    let mut report_only: Option<Vec<PathBuf>> = None;
    let mut extra_dirs = Vec::new();
    for p in &inputs.paths {
        let start = if p.is_dir() {
            p.clone()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let (conn, lookups) = found_near(&start);
        if conn_path.is_none()
            && let Some(c) = conn
        {
            if p.is_file()
                && let Some(dir) = c.parent()
            {
                extra_dirs.push(dir.to_path_buf());
            }
            conn_path = Some(c);
        }
        if lookup_dir.is_none() {
            lookup_dir = lookups;
        }
        if p.is_dir() {
            collect_yaml(p, &mut files, &mut diags);
        } else if p.is_file() {
            files.push(p.clone());
            report_only.get_or_insert_with(Vec::new).push(p.clone());
        } else {
            diags.push(Diagnostic::error(
                "io",
                format!("no such file or directory: {}", p.display()),
            ));
        }
    }
    if diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error)
    {
        return (None, diags); // a path that does not exist: nothing else is meaningful
    }
    if inputs.paths.iter().any(|p| p.is_dir()) {
        report_only = None;
    }
    for d in extra_dirs {
        let mut more = Vec::new();
        collect_yaml(&d, &mut more, &mut diags);
        for f in more {
            if !files.iter().any(|x| same_file(x, &f)) {
                files.push(f);
            }
        }
    }
    // lookups
    let mut lookups = Lookups::default();
    // lookups that exist but are invalid: already reported, so flows using them are not
    // told again that the lookup is unknown (one root cause, one diagnostic)
    let mut broken = BTreeSet::new();
    if let Some(dir) = &lookup_dir {
        let mut lfiles = Vec::new();
        collect_yaml(dir, &mut lfiles, &mut diags);
        for f in lfiles {
            match SourceDoc::load_limited(&f, max_file_bytes) {
                Ok(doc) => load_lookup(doc, &mut lookups, &mut broken, &mut diags),
                Err(d) => diags.push(d),
            }
        }
    }
    // flows (and any connections / lookup files passed explicitly)
    for f in &files {
        let doc = match SourceDoc::load_limited(f, max_file_bytes) {
            Ok(d) => d,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        if doc.value.get("connections").is_some() {
            if conn_path.as_deref() != Some(f.as_path()) {
                check_connections(&doc, &mut diags);
            }
            continue;
        }
        if doc.value.get("rows").is_some() && doc.value.get("columns").is_some() {
            load_lookup(doc, &mut lookups, &mut broken, &mut diags);
            continue;
        }
        flow_docs.push(doc);
    }
    // `None` when the connections file itself is broken: its diagnostics say so, and
    // connection references are not checked against it.
    let connections: Option<BTreeMap<String, ConnectionSpec>> = match &conn_path {
        Some(p) => match SourceDoc::load_limited(p, max_file_bytes) {
            Ok(doc) => check_connections(&doc, &mut diags),
            Err(d) => {
                diags.push(d);
                None
            }
        },
        None => {
            diags.push(
                Diagnostic::error("no-connections", "no connections file")
                    .hint("put connections.yaml in the flow directory or pass --connections FILE"),
            );
            None
        }
    };
    let lookups = Arc::new(lookups);
    // parse flows
    let mut raws: Vec<(RawFlow, Arc<SourceDoc>)> = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for doc in flow_docs {
        if let Some(raw) = schema_checked::<RawFlow>(&doc, "flow", &mut diags) {
            if let Some(first) = seen.get(&raw.id) {
                diags.push(
                    Diagnostic::error(
                        "duplicate-flow",
                        format!(
                            "flow id '{}' is also defined in {}",
                            raw.id,
                            first.display()
                        ),
                    )
                    .at(&doc, "/id"),
                );
                continue;
            }
            seen.insert(raw.id.clone(), doc.path.clone());
            raws.push((raw, Arc::new(doc)));
        }
    }
    let index = Index {
        broken_lookups: broken,
        connections: connections.as_ref(),
        lookups: lookups.clone(),
        flows: raws
            .iter()
            .map(|(r, _)| (r.id.clone(), r.params.clone()))
            .collect(),
    };
    let mut flows = BTreeMap::new();
    let mut locations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    check_trigger_paths(&raws, &mut diags);
    for (raw, doc) in &raws {
        let plan = compile_flow(raw, doc, &index, &mut diags, &mut locations);
        flows.insert(raw.id.clone(), Arc::new(plan));
    }
    let mut all_files = files;
    all_files.extend(conn_path);
    if let Some(only) = &report_only {
        diags.retain(|d| {
            d.file
                .as_ref()
                .is_none_or(|f| only.iter().any(|o| same_file(o, f)))
        });
    }
    let ok = !diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error);
    let project = ok.then(|| Project {
        flows,
        lookups,
        connections: connections.unwrap_or_default(),
        locations,
        files: all_files,
    });
    (project, diags)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// The `*.yaml`/`*.yml` files under `dir`, in name order. Symbolic links to directories are
/// not followed (so a link loop cannot make the walk endless; a warning names each one), links
/// to files are; entries whose names start with `.` are skipped.
fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
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

fn load_lookup(
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

fn check_connections(
    doc: &SourceDoc,
    diags: &mut Vec<Diagnostic>,
) -> Option<BTreeMap<String, ConnectionSpec>> {
    schema_checked::<RawConnections>(doc, "connections", diags).map(|c| c.connections)
}

/// Validates `doc` against the schema `which`, then deserializes it.
fn schema_checked<T: serde::de::DeserializeOwned>(
    doc: &SourceDoc,
    which: &'static str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let before = diags.len();
    for err in validator(which).iter_errors(&doc.value) {
        diags.extend(schema_diagnostics(doc, which, &err));
    }
    if diags.len() > before {
        return None;
    }
    match serde_json::from_value::<T>(doc.value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(Diagnostic::error("schema", e.to_string()).at(doc, ""));
            None
        }
    }
}

/// The generated schema of `which` as a JSON value (for looking fields up in it).
fn schema_doc(which: &'static str) -> &'static Value {
    static FLOW: OnceLock<Value> = OnceLock::new();
    static CONN: OnceLock<Value> = OnceLock::new();
    static LOOKUP: OnceLock<Value> = OnceLock::new();
    match which {
        "flow" => FLOW.get_or_init(flow_schema),
        "connections" => CONN.get_or_init(connections_schema),
        _ => LOOKUP.get_or_init(lookup_schema),
    }
}

/// The property names a schema node allows, following `$ref`, `anyOf`, `oneOf`, `allOf`.
fn schema_properties(root: &Value, node: &Value, depth: usize) -> Vec<String> {
    if depth > 8 {
        return Vec::new();
    }
    let mut out: Vec<String> = node
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(r) = node.get("$ref").and_then(Value::as_str)
        && let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p))
    {
        out.extend(schema_properties(root, target, depth + 1));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(schema_properties(root, branch, depth + 1));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The schema of property `name` of a schema node, following `$ref` and branches.
fn schema_property<'v>(
    root: &'v Value,
    node: &'v Value,
    name: &str,
    depth: usize,
) -> Option<&'v Value> {
    if depth > 8 {
        return None;
    }
    if let Some(p) = node.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    if let Some(r) = node.get("$ref").and_then(Value::as_str)
        && let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p))
        && let Some(p) = schema_property(root, target, name, depth + 1)
    {
        return Some(p);
    }
    ["anyOf", "oneOf", "allOf"].iter().find_map(|key| {
        node.get(*key)?
            .as_array()?
            .iter()
            .find_map(|b| schema_property(root, b, name, depth + 1))
    })
}

/// Each stray field of an object, with where it belongs when a neighbouring map takes it
/// (a field indented one level too little) or the field it probably misspells.
fn unknown_fields(
    doc: &SourceDoc,
    which: &'static str,
    err: &jsonschema::ValidationError<'_>,
    unexpected: &[String],
) -> Vec<Diagnostic> {
    let ptr = err.instance_path().as_str().to_string();
    let root = schema_doc(which);
    let keyword = err.schema_path().as_str();
    let object_schema = keyword
        .strip_suffix("/additionalProperties")
        .and_then(|p| root.pointer(p));
    let known = object_schema
        .map(|o| schema_properties(root, o, 0))
        .unwrap_or_default();
    let here = doc.value.pointer(&ptr);
    unexpected
        .iter()
        .map(|name| {
            let mut d = Diagnostic::error("unknown-field", format!("unknown field '{name}'"))
                .at_key(doc, &format!("{ptr}/{}", crate::yaml::escape_segment(name)));
            // a neighbouring map that takes this field
            let belongs = object_schema.and_then(|o| {
                here?.as_object()?.iter().find_map(|(k, v)| {
                    v.is_object().then_some(())?;
                    let sub = schema_property(root, o, k, 0)?;
                    schema_properties(root, sub, 0)
                        .contains(name)
                        .then(|| k.clone())
                })
            });
            d.hint = if let Some(parent) = belongs {
                Some(format!(
                    "'{name}' belongs in `{parent}`: indent it under `{parent}:`"
                ))
            } else if let Some(h) = did_you_mean(name, known.iter().map(String::as_str)) {
                Some(h)
            } else if !known.is_empty() {
                Some(format!("expected one of: {}", known.join(", ")))
            } else {
                None
            };
            d
        })
        .collect()
}

fn schema_diagnostics(
    doc: &SourceDoc,
    which: &'static str,
    err: &jsonschema::ValidationError<'_>,
) -> Vec<Diagnostic> {
    use jsonschema::error::ValidationErrorKind as K;
    match err.kind() {
        K::AdditionalProperties { unexpected } => unknown_fields(doc, which, err, unexpected),
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            let best = context
                .iter()
                .filter(|errs| !errs.iter().any(|e| matches!(e.kind(), K::Constant { .. })))
                .min_by_key(|errs| errs.len());
            match best.and_then(|errs| errs.first()) {
                Some(inner) => schema_diagnostics(doc, which, inner),
                None => vec![schema_diagnostic(doc, err)],
            }
        }
        K::Type { .. } => {
            let ptr = err.instance_path().as_str();
            let mut d = schema_diagnostic(doc, err);
            if let Some(v @ (Value::Bool(_) | Value::Number(_))) = doc.value.pointer(ptr)
                && err.to_string().contains("\"string\"")
            {
                d = d.hint(format!("quote it to keep it text: \"{v}\""));
            }
            vec![d]
        }
        _ => vec![schema_diagnostic(doc, err)],
    }
}

fn schema_diagnostic(doc: &SourceDoc, err: &jsonschema::ValidationError<'_>) -> Diagnostic {
    use jsonschema::error::ValidationErrorKind as K;
    let ptr = err.instance_path().as_str().to_string();
    match err.kind() {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default().to_string();
            Diagnostic::error("missing-field", format!("missing field '{name}'")).at_key(doc, &ptr)
        }
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            // Tagged enums: report the branch that came closest (fewest errors, none about
            // the tag), else say what the tag may be.
            let best = context
                .iter()
                .filter(|errs| !errs.iter().any(|e| matches!(e.kind(), K::Constant { .. })))
                .min_by_key(|errs| errs.len());
            match best.and_then(|errs| errs.first()) {
                Some(inner) => schema_diagnostic(doc, inner),
                None => {
                    let tags: Vec<String> = context
                        .iter()
                        .flatten()
                        .filter_map(|e| match e.kind() {
                            K::Constant { expected_value } => {
                                expected_value.as_str().map(str::to_string)
                            }
                            _ => None,
                        })
                        .collect();
                    let got = doc
                        .value
                        .pointer(&format!("{ptr}/kind"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let mut d = Diagnostic::error("unknown-kind", format!("unknown kind {got}"))
                        .at(doc, &format!("{ptr}/kind"));
                    if !tags.is_empty() {
                        d = d.hint(format!("expected one of: {}", tags.join(", ")));
                    }
                    d
                }
            }
        }
        _ => Diagnostic::error("schema", err.to_string()).at(doc, &ptr),
    }
}

struct Index<'a> {
    broken_lookups: BTreeSet<String>,
    connections: Option<&'a BTreeMap<String, ConnectionSpec>>,
    lookups: Arc<Lookups>,
    flows: BTreeMap<String, BTreeMap<String, crate::model::Param>>,
}

fn compile_flow(
    raw: &RawFlow,
    doc: &Arc<SourceDoc>,
    index: &Index<'_>,
    diags: &mut Vec<Diagnostic>,
    locations: &mut BTreeMap<String, BTreeSet<String>>,
) -> FlowPlan {
    let mut aliases = Vec::new();
    let declared: BTreeSet<String> = raw.lookups.keys().cloned().collect();
    for (alias, table) in &raw.lookups {
        let ptr = format!("/lookups/{}", crate::yaml::escape_segment(alias));
        match index.lookups.get(table) {
            Some(t) => aliases.push((alias.clone(), t.clone())),
            None if index.broken_lookups.contains(table) => {}
            None => {
                let mut d =
                    Diagnostic::error("unknown-lookup", format!("unknown lookup '{table}'"))
                        .at(doc, &ptr);
                if let Some(h) =
                    did_you_mean(table, index.lookups.tables.keys().map(String::as_str))
                {
                    d = d.hint(h);
                }
                diags.push(d);
            }
        }
        if BUILTIN_FUNCTIONS.contains(&alias.as_str()) {
            diags.push(
                Diagnostic::error(
                    "bad-alias",
                    format!("'{alias}' is a built-in function name"),
                )
                .at_key(doc, &ptr),
            );
        }
    }
    let mut templates = Templates::new(&aliases, index.lookups.clone());
    let params_shape = Shape::Obj(typecheck::Obj {
        what: "params (the flow's `params`)".into(),
        fields: raw.params.keys().map(|k| (k.clone(), Shape::Any)).collect(),
        strict: true,
    });
    let input_shape = Shape::Obj(typecheck::Obj {
        what: "input (the trigger's parts)".into(),
        fields: raw
            .trigger
            .rest
            .iter()
            .flat_map(|r| r.parts.iter())
            .map(|(k, p)| {
                let shape = match p.kind {
                    crate::model::PartKind::File => typecheck::spooled_file("a trigger file part"),
                    _ => Shape::Any,
                };
                (k.clone(), shape)
            })
            .collect(),
        strict: true,
    });
    let mut shapes = Shapes::default();
    collect_shapes(
        &raw.steps,
        &templates,
        &params_shape,
        &input_shape,
        &mut Vec::new(),
        &mut shapes,
    );
    let mut cx = FlowCx {
        doc,
        templates: &mut templates,
        diags,
        index,
        aliases: aliases.into_iter().collect(),
        declared,
        vars: Vec::new(),
        var_shapes: Vec::new(),
        shapes,
        current: String::new(),
        params_shape,
        input_shape,
        ids: HashMap::new(),
        defined: Vec::new(),
        refs: Vec::new(),
        locations,
    };
    let track = compile_track(&mut cx, &raw.track);
    let steps = cx.block("/steps", &raw.steps);
    let on_error = raw.on_error.as_ref().map(|call| {
        cx.child_flow("/on_error/flow", &call.flow, &call.with, "/on_error/with");
        (
            call.flow.clone(),
            cx.value("/on_error/with", &Value::Object(call.with.clone())),
        )
    });
    cx.check_refs();
    let schedule = compile_trigger(raw, doc, diags);
    FlowPlan {
        id: raw.id.clone(),
        name: raw.name.clone(),
        version: raw.version.clone(),
        trigger: raw.trigger.clone(),
        schedule,
        params: raw.params.clone(),
        templates,
        steps,
        on_error,
        track,
        path: doc.path.clone(),
    }
}

/// The most values a flow tracks its runs by.
pub const MAX_TRACKED: usize = 3;

/// Checks a flow's `track:` declarations: at most [`MAX_TRACKED`], names that are
/// identifiers, templates over the trigger input and parameters only (they are evaluated
/// as the run starts, before any step).
fn compile_track(cx: &mut FlowCx<'_>, track: &BTreeMap<String, String>) -> Vec<(String, Tpl)> {
    if track.len() > MAX_TRACKED {
        cx.error_at(
            "/track",
            "too-many-tracked",
            format!(
                "a flow tracks its runs by at most {MAX_TRACKED} values; this one declares {}",
                track.len()
            ),
            None,
        );
    }
    let mut out = Vec::with_capacity(track.len());
    for (name, src) in track {
        let ptr = format!("/track/{}", crate::yaml::escape_segment(name));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            cx.error_at_key(
                &ptr,
                "bad-name",
                format!("'{name}' is not a tracking name (letters, digits, `_` and `-`)"),
            );
        }
        let tpl = cx.template(&ptr, src);
        if cx.templates.variables(&tpl).iter().any(|v| v == "steps") {
            cx.error_at(
                &ptr,
                "track-uses-steps",
                "a tracked value is evaluated as the run starts, before any step: it can read `input`, `params` and `run`, not `steps`",
                None,
            );
        }
        out.push((name.clone(), tpl));
    }
    out
}

/// Checks the triggers: the schedule parses in its time zone, a REST trigger's method and
/// path are servable. Returns the parsed schedule.
fn compile_trigger(
    raw: &RawFlow,
    doc: &SourceDoc,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<crate::schedule::CronSchedule>> {
    use crate::schedule::{CronSchedule, ScheduleError};
    if let Some(rest) = &raw.trigger.rest {
        if !["POST", "PUT"].contains(&rest.method.as_str()) {
            diags.push(
                Diagnostic::error(
                    "bad-method",
                    format!("a REST trigger takes POST or PUT, not '{}'", rest.method),
                )
                .at(doc, "/trigger/rest/method"),
            );
        }
        let p = &rest.path;
        if !p.starts_with('/') || p.contains("//") || p.split('/').any(|s| s == ".." || s == ".") {
            diags.push(
                Diagnostic::error(
                    "bad-path",
                    format!("a REST trigger path is absolute and plain, like /a/b/c: '{p}'"),
                )
                .at(doc, "/trigger/rest/path"),
            );
        } else if p.chars().any(|c| c.is_whitespace() || "{}?#%*".contains(c)) {
            diags.push(
                Diagnostic::error(
                    "bad-path",
                    format!("a REST trigger path has no patterns, queries or escapes: '{p}'"),
                )
                .at(doc, "/trigger/rest/path"),
            );
        }
    }
    let sched = raw.trigger.schedule.as_ref()?;
    match CronSchedule::parse(&sched.cron, sched.timezone.as_deref()) {
        Ok(s) => Some(Arc::new(s)),
        Err(e @ ScheduleError::Cron { .. }) => {
            diags.push(
                Diagnostic::error("bad-cron", e.to_string()).at(doc, "/trigger/schedule/cron"),
            );
            None
        }
        Err(e @ ScheduleError::TimeZone(_)) => {
            let mut d = Diagnostic::error("bad-timezone", e.to_string())
                .at(doc, "/trigger/schedule/timezone");
            if let Some(tz) = &sched.timezone
                && let Some(h) = did_you_mean(tz, crate::schedule::timezone_names())
            {
                d = d.hint(h);
            }
            diags.push(d);
            None
        }
    }
}

/// Two flows may not answer the same REST trigger.
fn check_trigger_paths(raws: &[(RawFlow, Arc<SourceDoc>)], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(String, String), &str> = HashMap::new();
    for (raw, doc) in raws {
        if let Some(rest) = &raw.trigger.rest {
            let key = (rest.method.clone(), rest.path.clone());
            if let Some(other) = seen.get(&key) {
                diags.push(
                    Diagnostic::error(
                        "duplicate-trigger",
                        format!(
                            "flow '{other}' already answers {} {}",
                            rest.method, rest.path
                        ),
                    )
                    .at(doc, "/trigger/rest/path"),
                );
            } else {
                seen.insert(key, &raw.id);
            }
        }
    }
}

/// A reference to `steps.<id>` found in a template.
#[derive(Debug, Clone)]
struct StepRef {
    id: String,
    pointer: String,
    pos: crate::yaml::Pos,
}

/// The state of compiling one flow; step kinds call its methods to check their fields.
pub struct FlowCx<'a> {
    doc: &'a SourceDoc,
    templates: &'a mut Templates,
    diags: &'a mut Vec<Diagnostic>,
    index: &'a Index<'a>,
    aliases: BTreeMap<String, Arc<Lookup>>,
    declared: BTreeSet<String>,
    vars: Vec<String>,
    var_shapes: Vec<Shape>,
    shapes: Shapes,
    current: String,
    params_shape: Shape,
    input_shape: Shape,
    ids: HashMap<String, String>,
    defined: Vec<String>,
    refs: Vec<StepRef>,
    locations: &'a mut BTreeMap<String, BTreeSet<String>>,
}

impl<'a> FlowCx<'a> {
    /// Reports a warning at the value of `ptr` about connection `name`, when `check` finds
    /// one in its spec (a message and a hint); a step's hook onto the connections file.
    pub fn warn_on_connection(
        &mut self,
        ptr: &str,
        code: &str,
        name: &str,
        check: impl FnOnce(&crate::connectors::ConnectionSpec) -> Option<(String, String)>,
    ) {
        let Some((message, hint)) = self
            .index
            .connections
            .and_then(|c| c.get(name))
            .and_then(check)
        else {
            return;
        };
        let mut d = Diagnostic::error(code, message).at(self.doc, ptr);
        (d.severity, d.hint) = (crate::diag::Severity::Warning, Some(hint));
        self.diags.push(d);
    }

    /// Reports an error at the value of `ptr`.
    pub fn error_at(
        &mut self,
        ptr: &str,
        code: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = Diagnostic::error(code, message).at(self.doc, ptr);
        d.hint = hint;
        self.diags.push(d);
    }

    /// Reports an error at the key of `ptr`.
    pub fn error_at_key(&mut self, ptr: &str, code: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(code, message).at_key(self.doc, ptr));
    }

    fn error_in_value(
        &mut self,
        ptr: &str,
        src: &str,
        offset: usize,
        code: &str,
        message: String,
        hint: Option<String>,
    ) {
        let pos = self.doc.locate_in_value(ptr, src, offset);
        let mut d = Diagnostic::error(code, message).placed(self.doc, ptr, pos);
        d.hint = hint;
        self.diags.push(d);
    }

    /// Compiles nested code with an extra variable in scope (a loop variable).
    /// Its shape is the one the step being compiled declares for it (`collect_shapes`).
    pub fn with_var<T>(&mut self, var: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let shape = self
            .shapes
            .vars
            .get(&(self.current.clone(), var.to_string()))
            .cloned()
            .unwrap_or(Shape::Any);
        self.vars.push(var.to_string());
        self.var_shapes.push(shape);
        let out = f(self);
        self.vars.pop();
        self.var_shapes.pop();
        out
    }

    fn type_env(&self) -> TypeEnv<'_> {
        TypeEnv {
            templates: self.templates,
            steps: &self.shapes.steps,
            vars: self
                .vars
                .iter()
                .cloned()
                .zip(self.var_shapes.iter().cloned())
                .collect(),
            params: &self.params_shape,
            input: &self.input_shape,
        }
    }

    /// Reports what the static typing finds in a template or expression that compiled.
    fn typecheck(&mut self, ptr: &str, src: &str, expression: bool) {
        let problems = if expression {
            typecheck::check_expression(src, &self.type_env()).0
        } else if src.contains('{') {
            typecheck::check_template(src, &self.type_env())
        } else {
            return;
        };
        for p in problems {
            self.error_in_value(ptr, src, p.offset, p.code, p.message, p.hint);
        }
    }

    /// Compiles the location template of a file step on `connection`, and remembers the
    /// location when it depends on lookups only (for `ferry check`).
    pub fn location(&mut self, ptr: &str, connection: &str, src: &str) -> Tpl {
        let tpl = self.template(ptr, src);
        let vars = self.templates.variables(&tpl);
        if vars
            .iter()
            .all(|v| self.aliases.contains_key(v) || BUILTIN_FUNCTIONS.contains(&v.as_str()))
            && let Ok(loc) = self.templates.render_constant(&tpl)
        {
            self.locations
                .entry(connection.to_string())
                .or_default()
                .insert(loc);
        }
        tpl
    }

    /// Reports a template or expression over the [`limits`](crate::template::limits) at the
    /// place it goes over, before anything that recurses over its syntax tree sees it.
    fn over_limits(&mut self, ptr: &str, src: &str, expression: bool) -> bool {
        let Err(e) = crate::template::limits::check(src, expression) else {
            return false;
        };
        let hint = match e {
            crate::template::limits::LimitError::TooLong { .. } => {
                "split it into smaller templates (a `transform` step can build the parts)"
            }
            crate::template::limits::LimitError::TooDeep { .. } => {
                "split it: name inner parts with `{% set %}`, or compute them in a `transform` step"
            }
        };
        self.error_in_value(
            ptr,
            src,
            e.offset(),
            "template-limit",
            e.to_string(),
            Some(hint.to_string()),
        );
        true
    }

    /// Compiles and checks a template string.
    pub fn template(&mut self, ptr: &str, src: &str) -> Tpl {
        if self.over_limits(ptr, src, false) {
            return Tpl::Literal(src.to_string());
        }
        let tpl = match self.templates.template(src) {
            Ok(t) => t,
            Err(e) => {
                self.error_at(
                    ptr,
                    "template-syntax",
                    format!("template does not compile: {e}"),
                    None,
                );
                return Tpl::Literal(src.to_string());
            }
        };
        self.check_source(ptr, src, false);
        let vars = self.templates.variables(&tpl);
        self.check_vars(ptr, src, vars, false);
        self.typecheck(ptr, src, false);
        tpl
    }

    /// Compiles an optional template.
    pub fn opt_template(&mut self, ptr: &str, src: Option<&str>) -> Option<Tpl> {
        src.map(|s| self.template(ptr, s))
    }

    /// Checks an expression; returns its source for evaluation.
    pub fn expression(&mut self, ptr: &str, src: &str) -> String {
        if self.over_limits(ptr, src, true) {
            return src.to_string();
        }
        match self.templates.check_expression(src) {
            Ok(vars) => {
                // compiled once here, evaluated by every run
                let _ = self.templates.register_expression(src);
                self.check_source(ptr, src, true);
                self.check_vars(ptr, src, vars, true);
                self.typecheck(ptr, src, true);
            }
            Err(e) => self.error_at(
                ptr,
                "template-syntax",
                format!("expression does not compile: {e}"),
                None,
            ),
        }
        src.to_string()
    }

    /// The value of an expression that reads no variables (only lookups), if it has one.
    pub fn constant(&self, expr: &str) -> Option<Value> {
        let vars = self.templates.check_expression(expr).ok()?;
        if vars
            .iter()
            .any(|v| !self.aliases.contains_key(v) && !BUILTIN_FUNCTIONS.contains(&v.as_str()))
        {
            return None;
        }
        self.templates.eval_constant(expr).ok()
    }

    /// Where the lookup value an expression reads stands (`lookups/x.yaml:12:5`), when the
    /// expression reads exactly one lookup key.
    pub fn lookup_origin(&self, expr: &str) -> Option<String> {
        let calls = find_calls(expr, true);
        let [call] = calls.as_slice() else {
            return None;
        };
        let table = self.aliases.get(&call.name)?;
        let (key, _) = call.literal_args.first()?;
        let pos = table.key_pos.get(key)?;
        let file = table.source.as_ref()?.path.display().to_string();
        Some(format!("{file}:{}:{}", pos.line, pos.column))
    }

    /// Compiles a JSON value whose strings are templates.
    pub fn value(&mut self, ptr: &str, v: &Value) -> ValueTpl {
        match v {
            Value::String(s) => ValueTpl::Tpl(self.template(ptr, s)),
            Value::Array(items) => ValueTpl::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.value(&format!("{ptr}/{i}"), x))
                    .collect(),
            ),
            Value::Object(m) => ValueTpl::Object(
                m.iter()
                    .map(|(k, x)| {
                        (
                            k.clone(),
                            self.value(&format!("{ptr}/{}", crate::yaml::escape_segment(k)), x),
                        )
                    })
                    .collect(),
            ),
            other => ValueTpl::Plain(other.clone()),
        }
    }

    /// Checks that `name` is a connection offering `cap`; returns the name.
    pub fn connection(&mut self, ptr: &str, name: &str, cap: Capability) -> String {
        let Some(connections) = self.index.connections else {
            return name.to_string();
        };
        match connections.get(name) {
            Some(spec) if spec.capability() != cap => self.error_at(
                ptr,
                "wrong-connection-kind",
                format!(
                    "connection '{name}' is of kind {}, this step needs a {cap} connection",
                    spec.kind()
                ),
                None,
            ),
            Some(_) => {}
            None => {
                let hint = did_you_mean(name, connections.keys().map(String::as_str));
                self.error_at(
                    ptr,
                    "unknown-connection",
                    format!("unknown connection '{name}'"),
                    hint,
                );
            }
        }
        name.to_string()
    }

    /// Checks a child flow call: the flow exists and the parameters match.
    pub fn child_flow(&mut self, ptr: &str, flow: &str, with: &Map<String, Value>, with_ptr: &str) {
        let Some(params) = self.index.flows.get(flow) else {
            let hint = did_you_mean(flow, self.index.flows.keys().map(String::as_str));
            self.error_at(ptr, "unknown-flow", format!("unknown flow '{flow}'"), hint);
            return;
        };
        for k in with.keys() {
            if !params.contains_key(k) {
                let hint = did_you_mean(k, params.keys().map(String::as_str)).or_else(|| {
                    Some(format!(
                        "flow '{flow}' takes: {}",
                        params.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                });
                self.diags.push({
                    let mut d = Diagnostic::error(
                        "unknown-param",
                        format!("flow '{flow}' has no parameter '{k}'"),
                    )
                    .at_key(
                        self.doc,
                        &format!("{with_ptr}/{}", crate::yaml::escape_segment(k)),
                    );
                    d.hint = hint;
                    d
                });
            }
        }
        for (k, p) in params {
            if p.required && !with.contains_key(k) {
                self.error_at(
                    ptr,
                    "missing-param",
                    format!("flow '{flow}' needs parameter '{k}'"),
                    None,
                );
            }
        }
    }

    fn check_source(&mut self, ptr: &str, src: &str, expression: bool) {
        for call in find_calls(src, expression) {
            if let Some(table) = self.aliases.get(&call.name).cloned() {
                if let Some((key, off)) = call.literal_args.first()
                    && !table.has_key(key)
                {
                    let hint = did_you_mean(key, table.keys());
                    self.error_in_value(
                        ptr,
                        src,
                        *off,
                        "unknown-lookup-key",
                        format!("unknown lookup key '{key}' in {}", table.name),
                        hint,
                    );
                }
            } else if call.name == "lookup" {
                if let Some((tname, off)) = call.literal_args.first() {
                    match self.index.lookups.get(tname).cloned() {
                        None => {
                            let hint = did_you_mean(
                                tname,
                                self.index.lookups.tables.keys().map(String::as_str),
                            );
                            self.error_in_value(
                                ptr,
                                src,
                                *off,
                                "unknown-lookup",
                                format!("unknown lookup '{tname}'"),
                                hint,
                            );
                        }
                        Some(t) => {
                            if let Some((key, off)) = call.literal_args.get(1)
                                && !t.has_key(key)
                            {
                                let hint = did_you_mean(key, t.keys());
                                self.error_in_value(
                                    ptr,
                                    src,
                                    *off,
                                    "unknown-lookup-key",
                                    format!("unknown lookup key '{key}' in {tname}"),
                                    hint,
                                );
                            }
                        }
                    }
                }
            } else if !BUILTIN_FUNCTIONS.contains(&call.name.as_str())
                && !self.declared.contains(&call.name)
            {
                let candidates: Vec<&str> = self
                    .aliases
                    .keys()
                    .map(String::as_str)
                    .chain(BUILTIN_FUNCTIONS.iter().copied())
                    .collect();
                let hint = did_you_mean(&call.name, candidates.iter().copied()).or_else(|| {
                    Some(format!(
                        "functions here: {} (lookup functions come from the flow's `lookups`)",
                        candidates.join(", ")
                    ))
                });
                self.error_in_value(
                    ptr,
                    src,
                    call.offset,
                    "unknown-function",
                    format!("unknown function '{}'", call.name),
                    hint,
                );
            }
        }
        // step references
        static STEP_REF: OnceLock<regex::Regex> = OnceLock::new();
        #[allow(clippy::expect_used)]
        let re = STEP_REF.get_or_init(|| {
            regex::Regex::new(r"\bsteps\.([A-Za-z_][A-Za-z0-9_]*)").expect("valid regex")
        });
        for c in re.captures_iter(src) {
            if let Some(m) = c.get(1) {
                let pos = self.doc.locate_in_value(ptr, src, m.start());
                self.refs.push(StepRef {
                    id: m.as_str().to_string(),
                    pointer: ptr.to_string(),
                    pos,
                });
            }
        }
    }

    fn check_vars(&mut self, ptr: &str, src: &str, vars: Vec<String>, expression: bool) {
        let called: BTreeSet<String> = find_calls(src, expression)
            .into_iter()
            .map(|c| c.name)
            .collect();
        let mut vars = vars;
        vars.sort();
        for v in vars {
            if called.contains(&v) {
                continue; // reported as a function
            }
            if ROOT_VARIABLES.contains(&v.as_str())
                || self.vars.contains(&v)
                || self.aliases.contains_key(&v)
            {
                continue;
            }
            let offset = find_word(src, &v).unwrap_or(0);
            let candidates: Vec<&str> = ROOT_VARIABLES
                .iter()
                .copied()
                .chain(self.vars.iter().map(String::as_str))
                .collect();
            let hint = did_you_mean(&v, candidates.iter().copied())
                .or_else(|| Some(format!("variables here: {}", candidates.join(", "))));
            self.error_in_value(
                ptr,
                src,
                offset,
                "unknown-variable",
                format!("unknown variable '{v}'"),
                hint,
            );
        }
    }

    /// Compiles a block of steps: ids, kinds, and their order from the dependency graph.
    pub fn block(&mut self, ptr: &str, steps: &[RawStep]) -> Block {
        struct Node {
            plan: Option<StepPlan>,
            inner_ids: Vec<String>,
            refs: Vec<StepRef>,
        }
        let mut nodes: Vec<Node> = Vec::new();
        for (i, raw) in steps.iter().enumerate() {
            let sptr = format!("{ptr}/{i}");
            if let Some(first) = self.ids.get(&raw.id).cloned() {
                let line = self.doc.locate(&first).line;
                self.error_at(
                    &format!("{sptr}/id"),
                    "duplicate-step",
                    format!("step id '{}' is already used (line {line})", raw.id),
                    None,
                );
            } else {
                self.ids.insert(raw.id.clone(), format!("{sptr}/id"));
            }
            let kinds: Vec<&str> = KIND_KEYS
                .iter()
                .copied()
                .filter(|k| step_has(raw, k))
                .collect();
            let defined_before = self.defined.len();
            let refs_before = self.refs.len();
            self.defined.push(raw.id.clone());
            self.current = raw.id.clone();
            let when = raw
                .when
                .as_ref()
                .map(|w| self.expression(&format!("{sptr}/when"), w));
            let kind = match kinds.len() {
                1 => StepKind::compile(raw, self, &sptr),
                0 => {
                    self.error_at(
                        &format!("{sptr}/id"),
                        "step-kind",
                        format!("step '{}' does nothing", raw.id),
                        Some(format!("add one of: {}", KIND_KEYS.join(", "))),
                    );
                    None
                }
                _ => {
                    self.error_at_key(
                        &format!("{sptr}/{}", kinds[1]),
                        "step-kind",
                        format!(
                            "step '{}' has several kinds ({}); a step does one thing",
                            raw.id,
                            kinds.join(", ")
                        ),
                    );
                    None
                }
            };
            let inner_ids = self.defined[defined_before..].to_vec();
            let refs = self.refs[refs_before..].to_vec();
            let mut node_refs = refs;
            for (j, need) in raw.needs.iter().enumerate() {
                let r = StepRef {
                    id: need.clone(),
                    pointer: format!("{sptr}/needs/{j}"),
                    pos: self.doc.locate(&format!("{sptr}/needs/{j}")),
                };
                self.refs.push(r.clone());
                node_refs.push(r);
            }
            nodes.push(Node {
                plan: kind.map(|kind| StepPlan {
                    id: raw.id.clone(),
                    pointer: sptr.clone(),
                    when,
                    run_on: raw.run_on,
                    kind,
                }),
                inner_ids,
                refs: node_refs,
            });
        }
        // the dependency graph of this block
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| graph.add_node(i)).collect();
        let owner: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.inner_ids.iter().map(move |id| (id.as_str(), i)))
            .collect();
        let mut edges = BTreeSet::new();
        for (i, n) in nodes.iter().enumerate() {
            for r in &n.refs {
                if let Some(&j) = owner.get(r.id.as_str())
                    && j != i
                {
                    edges.insert((j, i));
                }
            }
        }
        for (j, i) in &edges {
            graph.add_edge(idx[*j], idx[*i], ());
        }
        let mut cyclic = false;
        for scc in petgraph::algo::tarjan_scc(&graph) {
            if scc.len() > 1 {
                cyclic = true;
                let mut members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
                members.sort();
                let names: Vec<&str> = members.iter().map(|m| steps[*m].id.as_str()).collect();
                self.error_at(
                    &format!("{ptr}/{}/id", members[0]),
                    "step-cycle",
                    format!(
                        "steps {} depend on each other in a cycle",
                        names.join(" → ")
                    ),
                    Some("a step can only use the outputs of steps that run before it".into()),
                );
            }
        }
        let order: Vec<usize> = if cyclic {
            (0..nodes.len()).collect()
        } else {
            stable_topo(&graph, &idx)
        };
        let mut plans: Vec<Option<StepPlan>> = nodes.into_iter().map(|n| n.plan).collect();
        Block {
            steps: order.into_iter().filter_map(|i| plans[i].take()).collect(),
        }
    }

    fn check_refs(&mut self) {
        let refs = std::mem::take(&mut self.refs);
        for r in refs {
            if !self.ids.contains_key(&r.id) {
                let hint = did_you_mean(&r.id, self.ids.keys().map(String::as_str));
                let mut d = Diagnostic::error("unknown-step", format!("unknown step '{}'", r.id))
                    .placed(self.doc, &r.pointer, r.pos);
                d.hint = hint;
                self.diags.push(d);
            }
        }
    }
}

fn step_has(raw: &RawStep, key: &str) -> bool {
    match key {
        "list" => raw.list.is_some(),
        "fetch" => raw.fetch.is_some(),
        "transform" => raw.transform.is_some(),
        "invoke" => raw.invoke.is_some(),
        "rename" => raw.rename.is_some(),
        "notify" => raw.notify.is_some(),
        "for_each" => raw.for_each.is_some(),
        "route" => raw.route.is_some(),
        "end" => raw.end.is_some(),
        _ => false,
    }
}

/// Topological order that keeps document order wherever the dependencies allow.
fn stable_topo(graph: &DiGraph<usize, ()>, idx: &[NodeIndex]) -> Vec<usize> {
    let mut indegree: Vec<usize> = idx
        .iter()
        .map(|n| {
            graph
                .neighbors_directed(*n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..idx.len())
        .filter(|i| indegree[*i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut out = Vec::with_capacity(idx.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        out.push(i);
        for next in graph.neighbors_directed(idx[i], petgraph::Direction::Outgoing) {
            let j = graph[next];
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    out
}

fn find_word(src: &str, word: &str) -> Option<usize> {
    let bytes = src.as_bytes();
    let mut from = 0;
    while let Some(rel) = src[from..].find(word) {
        let at = from + rel;
        let before_ok = at == 0
            || !(bytes[at - 1].is_ascii_alphanumeric()
                || bytes[at - 1] == b'_'
                || bytes[at - 1] == b'.');
        let end = at + word.len();
        let after_ok =
            end >= bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if before_ok && after_ok {
            return Some(at);
        }
        from = end;
    }
    None
}

/// The shapes of a flow's step outputs and of the variables its steps bring into scope
/// (keyed by step id and variable name), found before its templates are checked.
#[derive(Debug, Default)]
struct Shapes {
    steps: BTreeMap<String, Shape>,
    vars: HashMap<(String, String), Shape>,
}

/// Walks a block in document order, recording each step's output shape and the shapes of
/// the loop variables (a `for_each` over `items` types its variable from the expression).
fn collect_shapes(
    steps: &[RawStep],
    templates: &Templates,
    params: &Shape,
    input: &Shape,
    vars: &mut Vec<(String, Shape)>,
    out: &mut Shapes,
) {
    for raw in steps {
        let mut items = None;
        if let Some(fe) = &raw.for_each {
            let elem = match (&fe.items, &fe.csv) {
                (Some(expr), _) => {
                    let env = TypeEnv {
                        templates,
                        steps: &out.steps,
                        vars: vars.clone(),
                        params,
                        input,
                    };
                    typecheck::expression_shape(expr, &env).element()
                }
                (None, Some(csv)) => typecheck::csv_record(csv.columns.as_deref()),
                (None, None) => Shape::Any,
            };
            items = Some(elem.clone());
            out.vars
                .insert((raw.id.clone(), fe.var.clone()), elem.clone());
            vars.push((fe.var.clone(), elem));
            collect_shapes(&fe.steps, templates, params, input, vars, out);
            vars.pop();
        }
        if let Some(route) = &raw.route {
            for case in route.cases.values() {
                collect_shapes(case, templates, params, input, vars, out);
            }
        }
        if raw.invoke.as_ref().is_some_and(|i| i.request.is_some()) {
            out.vars
                .insert((raw.id.clone(), "response".into()), typecheck::response());
        }
        out.steps
            .insert(raw.id.clone(), typecheck::step_shape(raw, items));
    }
}

/// The root variables of a template, typed, for [`typecheck`].
struct TypeEnv<'a> {
    templates: &'a Templates,
    steps: &'a BTreeMap<String, Shape>,
    vars: Vec<(String, Shape)>,
    params: &'a Shape,
    input: &'a Shape,
}

impl typecheck::Env for TypeEnv<'_> {
    fn root(&self, name: &str) -> Option<Shape> {
        if let Some((_, s)) = self.vars.iter().rev().find(|(v, _)| v == name) {
            return Some(s.clone());
        }
        match name {
            "steps" => Some(Shape::Obj(typecheck::Obj {
                what: "steps".into(),
                fields: self.steps.clone(),
                strict: false,
            })),
            "run" => Some(typecheck::run()),
            "error" => Some(typecheck::error()),
            "params" => Some(self.params.clone()),
            "input" => Some(self.input.clone()),
            _ => None,
        }
    }
    fn has_filter(&self, name: &str) -> bool {
        self.templates.has_filter(name)
    }
    fn has_test(&self, name: &str) -> bool {
        self.templates.has_test(name)
    }
    fn filter_names(&self) -> Vec<String> {
        self.templates.filter_names()
    }
    fn test_names(&self) -> Vec<String> {
        self.templates.test_names()
    }
}
