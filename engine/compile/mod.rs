//! The one compiler: source files → a checked [`Project`] of [`FlowPlan`]s.
//!
//! `ferry validate` and `ferry run` both call [`load`]; a flow that validates cannot fail to
//! load. Checking collects every problem instead of stopping at the first: JSON Schema
//! conformance (schemas generated from [`crate::model`]), the step graph (duplicate ids,
//! unknown references, cycles — petgraph), templates that do not compile, unknown variables,
//! functions, lookups, lookup keys, connections, child flows and parameters, and route values
//! that no case handles.
//!
//! This file holds the entry points and what they return; the rest is in files named after
//! it: `load` (the directories), `schema` (JSON Schema checks), `flow` (compiling one flow),
//! `context` (a flow's compile context) and `types` (type environments).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::connectors::ConnectionSpec;
use crate::diag::Diagnostic;
use crate::lookups::Lookups;
use crate::model::{RawFlow, Trigger};
use crate::steps::Block;
use crate::template::{Templates, Tpl};
use crate::yaml::SourceDoc;

mod context;
mod flow;
mod load;
mod schema;
mod types;

pub use context::FlowCx;
pub use flow::MAX_TRACKED;
use flow::{Index, check_trigger_paths, compile_flow};
use load::{check_connections, collect_yaml, found_near, load_lookup, same_file};
use schema::schema_checked;
pub use schema::{connections_schema, flow_schema, lookup_schema};

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

impl ValueTpl {
    /// Its templates, depth first in order (what [`ValueTpl::rebuild`] consumes).
    pub fn leaves(&self) -> Vec<&Tpl> {
        fn walk<'v>(v: &'v ValueTpl, out: &mut Vec<&'v Tpl>) {
            match v {
                ValueTpl::Tpl(t) => out.push(t),
                ValueTpl::Array(items) => items.iter().for_each(|x| walk(x, out)),
                ValueTpl::Object(fields) => fields.iter().for_each(|(_, x)| walk(x, out)),
                ValueTpl::Plain(_) => {}
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// The value whose templates' values are `values`, in the order of
    /// [`ValueTpl::leaves`]; `None` when they run out.
    pub fn rebuild(&self, values: &mut impl Iterator<Item = Value>) -> Option<Value> {
        Some(match self {
            ValueTpl::Tpl(_) => values.next()?,
            ValueTpl::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| x.rebuild(values))
                    .collect::<Option<_>>()?,
            ),
            ValueTpl::Object(fields) => {
                let mut m = serde_json::Map::with_capacity(fields.len());
                for (k, x) in fields {
                    m.insert(k.clone(), x.rebuild(values)?);
                }
                Value::Object(m)
            }
            ValueTpl::Plain(p) => p.clone(),
        })
    }
}

/// Default: the largest flow, lookup or connections file read, in bytes (4 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Loads and checks everything under `inputs`. Returns the project when there is no error,
/// and every diagnostic in any case.
pub fn load(inputs: &Inputs) -> (Option<Project>, Vec<Diagnostic>) {
    load_limited(inputs, DEFAULT_MAX_FILE_BYTES)
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

/// [`load`], reading no file over `max_file_bytes`. A diagnostic about a file that resolves
/// outside the flow paths, the lookups directory and a named connections file (a
/// `.yaml` link to `/etc/passwd`) names the file and the place but quotes nothing of it
/// ([`crate::diag::hide_outside_content`]), whoever shows it: `validate`, `run`, `serve`.
pub fn load_limited(inputs: &Inputs, max_file_bytes: u64) -> (Option<Project>, Vec<Diagnostic>) {
    let (project, mut diags) = load_quoting(inputs, max_file_bytes);
    let sources = resolved(inputs);
    let roots = crate::diag::content_roots(
        &sources.paths,
        sources.lookups.as_deref(),
        inputs.connections.as_deref(),
    );
    crate::diag::hide_outside_content(&mut diags, &roots);
    (project, diags)
}

/// [`load_limited`] before the content of outside files is hidden.
fn load_quoting(inputs: &Inputs, max_file_bytes: u64) -> (Option<Project>, Vec<Diagnostic>) {
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
        handlers: raws
            .iter()
            .filter_map(|(r, _)| r.on_error.as_ref().map(|c| c.flow.clone()))
            .collect(),
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
