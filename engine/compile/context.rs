//! A flow's compile context ([`FlowCx`]): the state of compiling one flow, whose methods
//! step kinds call to check their fields, templates and references.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::{Arc, OnceLock};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};

use crate::connectors::Capability;
use crate::diag::{Diagnostic, did_you_mean};
use crate::lookups::Lookup;
use crate::model::RawStep;
use crate::steps::{Block, KIND_KEYS, StepKind, StepPlan};
use crate::template::{BUILTIN_FUNCTIONS, Templates, Tpl, find_calls};
use crate::typecheck::{self, Shape};
use crate::yaml::SourceDoc;

use super::flow::Index;
use super::types::{Shapes, TypeEnv};
use super::{ROOT_VARIABLES, ValueTpl};

/// A reference to `steps.<id>` found in a template.
#[derive(Debug, Clone)]
pub(super) struct StepRef {
    pub(super) id: String,
    pub(super) pointer: String,
    pub(super) pos: crate::yaml::Pos,
}

/// The state of compiling one flow; step kinds call its methods to check their fields.
pub struct FlowCx<'a> {
    pub(super) doc: &'a SourceDoc,
    /// The flow file, kept by the templates for run-time errors.
    pub(super) source: Arc<SourceDoc>,
    /// How many of the steps being compiled (this one and those around it) run after a
    /// failure (`run_on: failure` or `always`), plus one in an `on_error` handler flow and
    /// in `on_error.with`: where it is 0, `error` is undefined.
    pub(super) after_failure: usize,
    pub(super) templates: &'a mut Templates,
    pub(super) diags: &'a mut Vec<Diagnostic>,
    pub(super) index: &'a Index<'a>,
    pub(super) aliases: BTreeMap<String, Arc<Lookup>>,
    pub(super) declared: BTreeSet<String>,
    pub(super) vars: Vec<String>,
    pub(super) var_shapes: Vec<Shape>,
    pub(super) shapes: Shapes,
    pub(super) current: String,
    pub(super) params_shape: Shape,
    pub(super) input_shape: Shape,
    pub(super) ids: HashMap<String, String>,
    pub(super) defined: Vec<String>,
    pub(super) refs: Vec<StepRef>,
    pub(super) locations: &'a mut BTreeMap<String, BTreeSet<String>>,
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
            aliases: Some(&self.aliases),
            lookups: Some(&self.index.lookups),
            no_error: (self.after_failure == 0).then(|| {
                if self.current.is_empty() {
                    "it is evaluated before any step runs".to_string()
                } else {
                    format!(
                        "step '{}' runs only while no step has failed (run_on: success)",
                        self.current
                    )
                }
            }),
            templates: self.templates,
            steps: &self.shapes.steps,
            vars: self
                .vars
                .iter()
                .map(String::as_str)
                .zip(&self.var_shapes)
                .collect(),
            params: &self.params_shape,
            input: &self.input_shape,
        }
    }

    /// Where a template or expression of the step being compiled stands, for run-time
    /// errors.
    fn origin(&self, ptr: &str, src: &str) -> crate::template::Origin {
        crate::template::Origin {
            step: self.current.clone(),
            doc: self.source.clone(),
            pointer: ptr.to_string(),
            source: src.to_string(),
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
        let origin = self.origin(ptr, src);
        self.templates.note_template(&tpl, origin);
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
                let origin = self.origin(ptr, src);
                self.templates.note_expression(src, origin);
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

    /// Compiles the expressions of `v` (a compiled value) to be evaluated in one pass
    /// ([`crate::template::Templates::register_batch`]).
    pub fn batch(&mut self, v: &ValueTpl) -> Option<crate::template::Batch> {
        self.templates.register_batch(&v.leaves())
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
            let outer = std::mem::replace(&mut self.current, raw.id.clone());
            let after_failure = raw.run_on != crate::model::RunOn::Success;
            self.after_failure += usize::from(after_failure);
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
            self.after_failure -= usize::from(after_failure);
            self.current = outer;
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

    pub(super) fn check_refs(&mut self) {
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
