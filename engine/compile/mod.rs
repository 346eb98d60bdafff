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
    /// How many flows compiled (those in `flows`, unless [`check`] dropped them).
    flow_count: usize,
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
    load_hiding(inputs, max_file_bytes, true)
}

/// What [`check`] found valid.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    /// Flows compiled.
    pub flows: usize,
    /// Lookup tables.
    pub lookups: usize,
    /// Connections defined.
    pub connections: usize,
}

/// What `ferry validate` does: [`load`], the same checks with the same diagnostics, keeping
/// no compiled flow (each is dropped once checked, so memory does not grow with the number
/// of flows beyond their sources).
pub fn check(inputs: &Inputs) -> (Option<Checked>, Vec<Diagnostic>) {
    let (project, diags) = load_hiding(inputs, DEFAULT_MAX_FILE_BYTES, false);
    let checked = project.map(|p| Checked {
        flows: p.flow_count,
        lookups: p.lookups.tables.len(),
        connections: p.connections.len(),
    });
    (checked, diags)
}

fn load_hiding(
    inputs: &Inputs,
    max_file_bytes: u64,
    keep: bool,
) -> (Option<Project>, Vec<Diagnostic>) {
    let (project, mut diags) = load_quoting(inputs, max_file_bytes, keep);
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
fn load_quoting(
    inputs: &Inputs,
    max_file_bytes: u64,
    keep: bool,
) -> (Option<Project>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
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
    // flows (and any connections / lookup files passed explicitly): read, parsed and, for a
    // flow, checked against the schema over the cores; a flow keeps its typed form and
    // its document without the parsed value (what compiling reads).
    let read: Vec<Read> = par_map(files.clone(), |f| read_file(&f, max_file_bytes));
    let mut flow_docs = Vec::new();
    for r in read {
        match r {
            Read::Failed(d) => diags.push(d),
            Read::Connections(doc) => {
                if conn_path.as_deref() != Some(doc.path.as_path()) {
                    check_connections(&doc, &mut diags);
                }
            }
            Read::Lookup(doc) => load_lookup(*doc, &mut lookups, &mut broken, &mut diags),
            Read::Flow(doc, raw, schema_diags) => flow_docs.push((doc, raw, schema_diags)),
        }
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
    for (doc, raw, schema_diags) in flow_docs {
        diags.extend(schema_diags);
        if let Some(raw) = raw {
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
            raws.push((*raw, Arc::new(doc)));
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
        for_runs: keep,
    };
    check_trigger_paths(&raws, &mut diags);
    // each flow compiled over the cores and its source dropped; what is kept is the plan
    // (`keep`), else only the count
    let compiled = par_map(raws, |(raw, doc)| {
        let mut diags = Vec::new();
        let mut locations = BTreeMap::new();
        let plan = compile_flow(&raw, &doc, &index, &mut diags, &mut locations);
        let plan = keep.then(|| Arc::new(plan));
        (raw.id, plan, diags, locations)
    });
    let mut flows = BTreeMap::new();
    let mut count = 0;
    let mut locations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, plan, flow_diags, flow_locations) in compiled {
        count += 1;
        diags.extend(flow_diags);
        for (conn, locs) in flow_locations {
            locations.entry(conn).or_default().extend(locs);
        }
        if let Some(plan) = plan {
            flows.insert(id, plan);
        }
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
        flow_count: count,
        flows,
        lookups,
        connections: connections.unwrap_or_default(),
        locations,
        files: all_files,
    });
    (project, diags)
}

/// What reading one file gave.
enum Read {
    /// It could not be read or parsed.
    Failed(Diagnostic),
    /// A connections file.
    Connections(SourceDoc),
    /// A lookup table.
    Lookup(Box<SourceDoc>),
    /// A flow: its document (without its parsed value), its typed form when it conforms to
    /// the schema, and the schema's diagnostics.
    Flow(SourceDoc, Option<Box<RawFlow>>, Vec<Diagnostic>),
}

fn read_file(f: &Path, max_file_bytes: u64) -> Read {
    let mut doc = match SourceDoc::load_limited(f, max_file_bytes) {
        Ok(d) => d,
        Err(d) => return Read::Failed(d),
    };
    if doc.value.get("connections").is_some() {
        return Read::Connections(doc);
    }
    if doc.value.get("rows").is_some() && doc.value.get("columns").is_some() {
        return Read::Lookup(Box::new(doc));
    }
    let mut diags = Vec::new();
    let raw = schema_checked::<RawFlow>(&doc, "flow", &mut diags).map(Box::new);
    // compiling reads the typed flow and the document's positions, not its value
    doc.value = Value::Null;
    Read::Flow(doc, raw, diags)
}

/// The stack of the threads [`par_map`] starts: what the main thread has (templates and
/// YAML are walked recursively, within their limits).
const WORKER_STACK: usize = 8 * 1024 * 1024;

/// `f` over `items` on up to as many threads as there are cores: the items in contiguous
/// runs, each run taken by the first thread free, the results in the items' order whatever
/// finished first.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    use std::sync::Mutex;
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .min(items.len() / 8)
        .max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads * 4);
    let mut runs: Vec<Mutex<Option<Vec<T>>>> = Vec::new();
    let mut items = items.into_iter();
    loop {
        let run: Vec<T> = items.by_ref().take(per).collect();
        if run.is_empty() {
            break;
        }
        runs.push(Mutex::new(Some(run)));
    }
    let results: Vec<Mutex<Option<Vec<R>>>> = runs.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        for (run, result) in runs.iter().zip(&results) {
            let taken = run.lock().ok().and_then(|mut r| r.take());
            if let Some(run) = taken {
                let out: Vec<R> = run.into_iter().map(&f).collect();
                if let Ok(mut r) = result.lock() {
                    *r = Some(out);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            // a thread that cannot start leaves its runs to the others
            let _ = std::thread::Builder::new()
                .stack_size(WORKER_STACK)
                .spawn_scoped(s, work);
        }
        work();
    });
    results
        .into_iter()
        .flat_map(|r| r.into_inner().ok().flatten().unwrap_or_default())
        .collect()
}
