//! Templates and expressions over the run context (minijinja).
//!
//! Every string in a step may be a template. A string that is exactly one `{{ expression }}`
//! keeps the expression's type (a list stays a list, a number a number); any other template
//! renders to a string; a string without `{{`/`{%` is a literal. `when`, `by` and `items` are
//! expressions. Each flow gets its own [`Templates`] environment, in which its lookup aliases
//! are functions. Undefined variables are errors, so a typo fails loudly instead of sending an
//! empty string.
//!
//! Every template and expression is measured against [`limits`] before minijinja parses it:
//! a deeply nested one would overflow the stack of whatever walks its syntax tree. What a
//! template builds while it runs is bounded by [`depth`]: a value nested too deep is a
//! template error, not a stack overflow.

pub mod depth;
pub mod limits;

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value as JValue};
use serde_json::Value;

use crate::lookups::Lookup;

/// A compiled template string.
#[derive(Debug, Clone)]
pub enum Tpl {
    /// No template syntax: the string itself.
    Literal(String),
    /// Exactly one `{{ expr }}`: evaluated, keeping its type.
    Expr(String),
    /// A template rendered to a string; the name under which it is registered.
    Render(String),
}

/// The value of `source` when it is a plain path (`record.fields.Id`, `steps.body`) whose
/// every part is there in `ctx`: looked up as the template would, without starting one (a
/// record's templates are mostly such paths). `None` for anything else, and for a part that
/// is missing, so that the template runs and says what it says of it.
fn path_value(source: &str, ctx: &JValue) -> Option<JValue> {
    let mut parts = source.trim().split('.');
    let first = parts.next()?;
    // literals, not names
    if matches!(first, "true" | "false" | "none" | "True" | "False" | "None") {
        return None;
    }
    let mut v = ctx.get_attr(name(first)?).ok()?;
    for part in parts {
        if v.is_undefined() || v.is_none() {
            return None;
        }
        v = v.get_attr(name(part)?).ok()?;
    }
    (!v.is_undefined()).then_some(v)
}

/// `part` if it is an identifier (what a path's parts are in a template).
fn name(part: &str) -> Option<&str> {
    let mut chars = part.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(part)
}

/// A flow's template environment.
///
/// Its templates are compiled while the flow compiles, then dropped
/// ([`Templates::release`]): a compiled template holds some kilobytes whatever its size
/// (minijinja reserves room for 256 instructions), so 10,000 flows at rest held 1.9 GB. The
/// first evaluation after compiles them again, once.
#[derive(Debug)]
pub struct Templates {
    /// The flow's filters and functions, without templates.
    bare: Environment<'static>,
    /// `bare` with every template of `sources` compiled, when built.
    env: std::sync::OnceLock<Environment<'static>>,
    /// Every template's name and source, in the order they were added (expressions are in
    /// `exprs`).
    sources: Vec<(String, String)>,
    next: usize,
    /// Expression source → the name of the template that evaluates it once compiled
    /// ([`Templates::register_expression`]): a run evaluates, never compiles.
    exprs: HashMap<String, String>,
    /// Where each template (by name) and expression (by source) stands in the flow file,
    /// for run-time errors ([`Templates::locate`]).
    origins: HashMap<String, Vec<Noted>>,
    /// The templates whose `{% set %}` statements were rewritten ([`depth::bound_sets`]), by
    /// name: where minijinja's offsets stand in what the author wrote.
    rewritten: HashMap<String, depth::OffsetMap>,
    /// Expressions checked, with their root variables ([`Templates::check_expression`]);
    /// emptied by [`Templates::release`].
    checked: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Templates' root variables by template name ([`Templates::variables`]: minijinja
    /// parses a template again to find them); emptied by [`Templates::release`].
    template_vars: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Checking only (`ferry validate`): the flow will not run, so expressions are checked but
    /// not compiled for evaluation, and no place is noted for run-time errors.
    check_only: bool,
    /// The last noted file, step and value ([`Templates::note`] shares them).
    last_file: Option<Arc<std::path::Path>>,
    last_step: Option<Arc<str>>,
    last_source: Option<Arc<str>>,
}

/// A template's place, and where the text minijinja evaluates starts in its value. What a
/// flow keeps at rest of its file for run-time errors: the file's name and where the value
/// starts, not the document.
#[derive(Debug, Clone)]
struct Noted {
    step: Arc<str>,
    file: Arc<std::path::Path>,
    anchor: crate::yaml::Anchor,
    source: Arc<str>,
    at: usize,
    render: bool,
}

/// The instructions the compiler lets a template that reads no variable run when it evaluates
/// it ([`Templates::render_constant`]): a lookup-only location or expression takes some tens.
/// A loop in a flow file then cannot hang `validate` or a hot reload, nor build a value nested
/// so deep that dropping it overflows the stack (a `namespace` wrapped in a list at each of
/// 50,000 iterations aborted `ferry validate`).
pub const CONSTANT_FUEL: u64 = 10_000;

/// The variable an expression's template sets to the expression's value.
const EXPR_VALUE: &str = "__ferry_expression_value";

/// The prefix of the variables a batch's template sets, one per expression.
const BATCH_VALUE: &str = "__ferry_batch_value_";

/// Expressions compiled into one template ([`Templates::register_batch`]): the template's
/// name and, per template of the batch, the variable holding its value (empty for the
/// templates not evaluated in the batch).
#[derive(Debug, Clone)]
pub struct Batch {
    name: String,
    slots: Vec<String>,
}

/// What an expression's template says before the expression.
/// (`__ferry_bounded` is [`depth::BOUND`]: the value passes the depth check.)
const EXPR_PREFIX: &str = "{% set __ferry_expression_value = __ferry_bounded((";

/// A template that failed to render or evaluate: what went wrong, and where in the
/// template when it is known ([`Templates::locate`] turns that into a file position).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String, pub Option<Failed>);

impl TemplateError {
    /// An error without a place.
    pub fn new(message: impl Into<String>) -> TemplateError {
        TemplateError(message.into(), None)
    }

    /// `e`, failed in the template or expression known to [`Templates`] as `key`, whose
    /// text starts `shift` bytes into what minijinja compiled (an expression's wrapper).
    fn placed(e: &minijinja::Error, key: &str, shift: usize) -> TemplateError {
        TemplateError(
            describe(e),
            Some(Failed {
                key: key.to_string(),
                range: e
                    .range()
                    .map(|r| r.start.saturating_sub(shift)..r.end.saturating_sub(shift)),
            }),
        )
    }
}

/// Where a template failed: the template (a registered template's name, or an expression's
/// source) and the byte range of the failing part in its text.
#[derive(Debug, Clone)]
pub struct Failed {
    key: String,
    range: Option<std::ops::Range<usize>>,
}

/// Where a template or expression stands in its flow file, for run-time errors.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The step it belongs to (an expression's source may repeat in several steps).
    pub step: String,
    /// The flow file.
    pub doc: Arc<crate::yaml::SourceDoc>,
    /// The JSON pointer of its value.
    pub pointer: String,
    /// The value's text (a template, or an expression).
    pub source: String,
}

impl From<limits::LimitError> for TemplateError {
    fn from(e: limits::LimitError) -> Self {
        TemplateError::new(e.to_string())
    }
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        TemplateError::new(describe(&e))
    }
}

/// A one-line description of a minijinja error, without its debug dump.
pub fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// The value `error` has where no step failed: undefined, so `error is defined` is false,
/// `{% if error %}` is false and prints nothing (minijinja's *silent* undefined: the value
/// of an `if` expression without `else` whose test is false), while `error.message` is an
/// undefined-value error as any other.
pub fn no_error() -> JValue {
    static NO_ERROR: std::sync::OnceLock<JValue> = std::sync::OnceLock::new();
    NO_ERROR
        .get_or_init(|| {
            Environment::new()
                .compile_expression("none if false")
                .and_then(|e| e.eval(()))
                .unwrap_or(JValue::UNDEFINED)
        })
        .clone()
}

/// Names the built-in globals a template may call, besides the flow's lookup aliases.
pub const BUILTIN_FUNCTIONS: &[&str] = &["range", "dict", "namespace", "lookup", "now", "debug"];

/// The filters ferry adds to minijinja's.
pub const FERRY_FILTERS: &[&str] = &["stem", "extension", "regex_replace", "regex_capture"];

impl Templates {
    /// An environment with ferry's filters and functions, and one function per lookup alias.
    pub fn new(aliases: &[(String, Arc<Lookup>)], all: Arc<crate::lookups::Lookups>) -> Templates {
        // minijinja's filters and tests and ferry's are shared by every flow's environment
        // (an environment's filter and test tables are copied only when one is added): a
        // flow adds its lookup functions, and its own templates
        let mut env = base_environment().clone();
        for (alias, table) in aliases {
            let table = table.clone();
            env.add_function(alias.clone(), move |key: String, column: Option<String>| {
                table
                    .get(&key, column.as_deref())
                    .map(str::to_string)
                    .map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                    })
            });
        }
        env.add_function(
            "lookup",
            move |table: String, key: String, column: Option<String>| {
                let t = all.get(&table).ok_or_else(|| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("unknown lookup '{table}'"),
                    )
                })?;
                t.get(&key, column.as_deref())
                    .map(str::to_string)
                    .map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
                    })
            },
        );
        Templates {
            env: std::sync::OnceLock::from(env.clone()),
            bare: env,
            sources: Vec::new(),
            next: 0,
            exprs: HashMap::new(),
            origins: HashMap::new(),
            rewritten: HashMap::new(),
            checked: Default::default(),
            template_vars: Default::default(),
            check_only: false,
            last_file: None,
            last_step: None,
            last_source: None,
        }
    }

    /// The environment with every template compiled (compiled now if it was released).
    fn env(&self) -> &Environment<'static> {
        self.env.get_or_init(|| {
            let mut env = self.bare.clone();
            // each compiled before it was kept
            for (name, source) in &self.sources {
                let _ = env.add_template_owned(name.clone(), source.clone());
            }
            for (expr, name) in &self.exprs {
                let _ = env.add_template_owned(name.clone(), wrapped(expr));
            }
            env
        })
    }

    /// Compiles template `name` into the environment.
    fn compile(&mut self, name: &str, source: String) -> Result<(), minijinja::Error> {
        self.env();
        if let Some(env) = self.env.get_mut() {
            env.add_template_owned(name.to_string(), source)?;
        }
        Ok(())
    }

    /// Adds template `name` to the environment; kept in `sources` if it compiles.
    fn add(&mut self, name: &str, source: String) -> Result<(), minijinja::Error> {
        self.compile(name, source.clone())?;
        self.sources.push((name.to_string(), source));
        Ok(())
    }

    /// Drops the compiled templates (kept as source): what a compiled flow holds at rest.
    /// The next evaluation compiles them again.
    pub fn release(&mut self) {
        self.env = std::sync::OnceLock::new();
        (self.last_file, self.last_step, self.last_source) = (None, None, None);
        *self.checked_lock() = HashMap::new();
        *lock(&self.template_vars) = HashMap::new();
        self.sources.shrink_to_fit();
        self.exprs.shrink_to_fit();
        self.origins.shrink_to_fit();
        self.rewritten.shrink_to_fit();
    }

    /// Compiles a template string.
    pub fn template(&mut self, source: &str) -> Result<Tpl, TemplateError> {
        limits::check(source, false)?;
        if let Some(expr) = single_expression(source) {
            self.register_expression(expr)?;
            return Ok(Tpl::Expr(expr.to_string()));
        }
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Tpl::Literal(source.to_string()));
        }
        let name = format!("t{}", self.next);
        self.next += 1;
        // each `{% set %}` stores its value through the depth check
        match depth::bound_sets(source) {
            Some(bounded) => {
                self.add(&name, bounded.text)?;
                self.rewritten.insert(name.clone(), bounded.map);
            }
            None => self.add(&name, source.to_string())?,
        }
        Ok(Tpl::Render(name))
    }

    /// Checks expression `expr` and compiles it once for the evaluations to come: a template
    /// that sets a variable to its value, read back from the template's final state.
    /// (An expression whose wrapper would not parse, which no valid expression should, is
    /// compiled at each evaluation instead.)
    pub fn register_expression(&mut self, expr: &str) -> Result<(), TemplateError> {
        if self.exprs.contains_key(expr) {
            return Ok(()); // checked when it was registered
        }
        if !self.checked_lock().contains_key(expr) {
            self.check_expression(expr)?;
        }
        if self.check_only {
            return Ok(());
        }
        let name = format!("e{}", self.next);
        self.next += 1;
        // kept as the expression alone (`exprs`), wrapped again when recompiled
        if self.compile(&name, wrapped(expr)).is_ok() {
            self.exprs.insert(expr.to_string(), name);
        }
        Ok(())
    }

    /// The value of expression `source` in `ctx`: from its compiled template when it was
    /// registered, else measured and compiled now.
    fn value_of(&self, source: &str, ctx: &JValue) -> Result<JValue, TemplateError> {
        if let Some(v) = path_value(source, ctx) {
            depth::check(&v)?;
            return Ok(v);
        }
        if let Some(name) = self.exprs.get(source) {
            let captured = self
                .env()
                .get_template(name)?
                .render_captured(ctx)
                .map_err(|e| TemplateError::placed(&e, source, EXPR_PREFIX.len()))?;
            return Ok(captured
                .state()
                .lookup(EXPR_VALUE)
                .unwrap_or(JValue::UNDEFINED));
        }
        limits::check(source, true)?;
        let v = self
            .env()
            .compile_expression(source)?
            .eval(ctx)
            .map_err(|e| TemplateError::placed(&e, source, 0))?;
        depth::check(&v)?;
        Ok(v)
    }

    /// Compiles the expressions among `tpls` (a transform's fields, a request's JSON body)
    /// into one template that sets one variable per expression, so that a run evaluates them
    /// all in one pass ([`Templates::eval_batch`]) instead of one render per field. `None`
    /// when fewer than two of them are expressions (nothing to share) or when one would not
    /// compile alone (its own diagnostic says so; each is then evaluated apart).
    pub fn register_batch(&mut self, tpls: &[&Tpl]) -> Option<Batch> {
        let mut source = String::new();
        let mut exprs = 0;
        for (i, tpl) in tpls.iter().enumerate() {
            if let Tpl::Expr(src) = tpl {
                if limits::check(src, true).is_err() || self.env().compile_expression(src).is_err()
                {
                    return None;
                }
                source.push_str(&format!(
                    "{{% set {BATCH_VALUE}{i} = {}(({src})) %}}",
                    depth::BOUND
                ));
                exprs += 1;
            }
        }
        if exprs < 2 {
            return None;
        }
        let name = format!("b{}", self.next);
        self.next += 1;
        self.add(&name, source).ok()?;
        Some(Batch {
            name,
            slots: tpls
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Tpl::Expr(_) => format!("{BATCH_VALUE}{i}"),
                    _ => String::new(),
                })
                .collect(),
        })
    }

    /// Evaluates `tpls`, the templates `batch` was registered for, in `ctx`: their
    /// expressions in one pass, each keeping its type as [`Templates::eval`] does. When the
    /// pass fails, each template is evaluated alone, so the error is the one `eval` gives.
    pub fn eval_batch(
        &self,
        batch: &Batch,
        tpls: &[&Tpl],
        ctx: &JValue,
    ) -> Result<Vec<Value>, TemplateError> {
        let one_by_one = || tpls.iter().map(|t| self.eval(t, ctx)).collect();
        if batch.slots.len() != tpls.len() {
            return one_by_one();
        }
        let Ok(captured) = self
            .env()
            .get_template(&batch.name)
            .and_then(|t| t.render_captured(ctx))
        else {
            return one_by_one();
        };
        let state = captured.state();
        let mut out = Vec::with_capacity(tpls.len());
        for (tpl, slot) in tpls.iter().zip(&batch.slots) {
            out.push(match tpl {
                Tpl::Expr(src) => {
                    let v = state.lookup(slot).unwrap_or(JValue::UNDEFINED);
                    if v.is_undefined() {
                        return Err(undefined(src));
                    }
                    serde_json::to_value(&v).map_err(|e| {
                        TemplateError::new(format!("value cannot be represented: {e}"))
                    })?
                }
                other => self.eval(other, ctx)?,
            });
        }
        Ok(out)
    }

    /// As [`Templates::eval_batch`], the values kept as template values (not copied into
    /// JSON), for a batch whose values are all strings, numbers, booleans or none; `None`
    /// otherwise or when the pass fails: `eval_batch` then gives the value or the error.
    pub fn eval_batch_plain(
        &self,
        batch: &Batch,
        tpls: &[&Tpl],
        ctx: &JValue,
    ) -> Option<Vec<JValue>> {
        if batch.slots.len() != tpls.len() {
            return None;
        }
        let captured = self
            .env()
            .get_template(&batch.name)
            .ok()?
            .render_captured(ctx)
            .ok()?;
        let state = captured.state();
        let mut out = Vec::with_capacity(tpls.len());
        for (tpl, slot) in tpls.iter().zip(&batch.slots) {
            out.push(match tpl {
                Tpl::Expr(_) => {
                    let v = state.lookup(slot)?;
                    use minijinja::value::ValueKind;
                    let plain = match v.kind() {
                        ValueKind::String | ValueKind::Bool | ValueKind::None => true,
                        // JSON's numbers: 64-bit integers and finite floats
                        ValueKind::Number => {
                            v.as_i64().is_some()
                                || (!v.is_integer()
                                    && f64::try_from(v.clone()).is_ok_and(f64::is_finite))
                        }
                        _ => false,
                    };
                    if !plain {
                        return None;
                    }
                    v
                }
                Tpl::Literal(s) => JValue::from(s.as_str()),
                Tpl::Render(_) => JValue::from(self.render(tpl, ctx).ok()?),
            });
        }
        Some(out)
    }

    /// Makes these templates check only: expressions are not compiled for evaluation nor
    /// places noted (what `ferry validate` compiles; its diagnostics are a run's).
    pub fn check_only(&mut self) {
        self.check_only = true;
    }

    /// Makes `now()` answer `at` (a test's frozen clock).
    pub fn freeze_clock(&mut self, at: chrono::DateTime<chrono::Utc>) {
        let now = move |fmt: Option<String>| match fmt {
            Some(f) => at.format(&f).to_string(),
            None => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.bare.add_function("now", now);
        if let Some(env) = self.env.get_mut() {
            env.add_function("now", now);
        }
    }

    /// Notes where template `tpl` stands in its flow file.
    pub fn note_template(&mut self, tpl: &Tpl, origin: Origin) {
        match tpl {
            Tpl::Literal(_) => {}
            Tpl::Render(name) => self.note(name, origin, 0, true),
            Tpl::Expr(src) => {
                let at = origin.source.find(src.as_str()).unwrap_or(0);
                self.note(src, origin, at, false);
            }
        }
    }

    /// Notes where expression `src` stands in its flow file.
    pub fn note_expression(&mut self, src: &str, origin: Origin) {
        self.note(src, origin, 0, false);
    }

    fn note(&mut self, key: &str, origin: Origin, at: usize, render: bool) {
        if self.check_only {
            return;
        }
        let anchor = origin.doc.anchor(&origin.pointer);
        // one copy of the file's name, of each step's id and of each value's text
        let file = match &self.last_file {
            Some(f) if **f == *origin.doc.path => f.clone(),
            _ => Arc::from(origin.doc.path.as_path()),
        };
        self.last_file = Some(file.clone());
        let step = match &self.last_step {
            Some(s) if **s == *origin.step => s.clone(),
            _ => Arc::from(origin.step.as_str()),
        };
        self.last_step = Some(step.clone());
        let source = match &self.last_source {
            Some(s) if **s == *origin.source => s.clone(),
            _ => Arc::from(origin.source.as_str()),
        };
        self.last_source = Some(source.clone());
        let noted = self.origins.entry(key.to_string()).or_default();
        if !noted
            .iter()
            .any(|n| n.step == step && n.anchor.start() == anchor.start())
        {
            noted.push(Noted {
                step,
                file,
                anchor,
                source,
                at,
                render,
            });
            noted.shrink_to_fit();
        }
    }

    /// The message of `e` with the place it failed at, when known: `file:line:column:
    /// `EXPRESSION`: what went wrong`. `step` is the step evaluating it (an expression may
    /// stand in several steps).
    pub fn locate(&self, e: &TemplateError, step: &str) -> String {
        let Some(failed) = &e.1 else {
            return e.0.clone();
        };
        let Some(noted) = self
            .origins
            .get(&failed.key)
            .and_then(|n| n.iter().find(|n| &*n.step == step).or_else(|| n.first()))
        else {
            return e.0.clone();
        };
        // the text minijinja evaluated: a template's whole value, or an expression
        let evaluated = if noted.render {
            &*noted.source
        } else {
            failed.key.as_str()
        };
        // a rewritten template's offsets, in what the author wrote
        let range = failed
            .range
            .clone()
            .map(|r| match self.rewritten.get(&failed.key) {
                Some(map) => map.source_offset(r.start)..map.source_offset(r.end),
                None => r,
            });
        let (offset, part) = match range {
            Some(r) => (
                noted.at + r.start,
                evaluated.get(r).map(str::trim).unwrap_or_default(),
            ),
            None => (noted.at, ""),
        };
        let pos = noted.anchor.locate(&noted.source, offset);
        let file = noted.file.display();
        if part.is_empty() {
            format!("{file}:{}:{}: {}", pos.line, pos.column, e.0)
        } else {
            format!("{file}:{}:{}: `{part}`: {}", pos.line, pos.column, e.0)
        }
    }

    /// Whether the environment has a filter named `name` (asked of minijinja itself).
    pub fn has_filter(&self, name: &str) -> bool {
        self.probe("n is filter", name)
    }

    /// Whether the environment has a test named `name`.
    pub fn has_test(&self, name: &str) -> bool {
        self.probe("n is test", name)
    }

    /// A flow adds functions only, so its filters and tests are the base environment's: the
    /// known names are asked once per process, any other name each time (a typo, rare).
    fn probe(&self, expr: &str, name: &str) -> bool {
        static KNOWN: std::sync::OnceLock<(Vec<&'static str>, Vec<&'static str>)> =
            std::sync::OnceLock::new();
        let (filters, tests) = KNOWN.get_or_init(|| {
            let has = |expr: &str, n: &&str| probe(base_environment(), expr, n);
            (
                crate::typecheck::KNOWN_FILTERS
                    .iter()
                    .chain(FERRY_FILTERS)
                    .copied()
                    .filter(|n| has("n is filter", n))
                    .collect(),
                crate::typecheck::KNOWN_TESTS
                    .iter()
                    .copied()
                    .filter(|n| has("n is test", n))
                    .collect(),
            )
        });
        let (known, present) = if expr == "n is filter" {
            (
                crate::typecheck::KNOWN_FILTERS.contains(&name) || FERRY_FILTERS.contains(&name),
                filters,
            )
        } else {
            (crate::typecheck::KNOWN_TESTS.contains(&name), tests)
        };
        if known {
            present.contains(&name)
        } else {
            probe(&self.bare, expr, name)
        }
    }

    /// The filters a template may use, for suggestions.
    pub fn filter_names(&self) -> Vec<String> {
        crate::typecheck::KNOWN_FILTERS
            .iter()
            .chain(FERRY_FILTERS)
            .filter(|n| self.has_filter(n))
            .map(|n| n.to_string())
            .collect()
    }

    /// The tests an expression may use, for suggestions.
    pub fn test_names(&self) -> Vec<String> {
        crate::typecheck::KNOWN_TESTS
            .iter()
            .filter(|n| self.has_test(n))
            .map(|n| n.to_string())
            .collect()
    }

    /// Checks an expression's syntax and returns its root variable names.
    pub fn check_expression(&self, source: &str) -> Result<Vec<String>, TemplateError> {
        if let Some(vars) = self.checked_lock().get(source) {
            return Ok(vars.clone());
        }
        limits::check(source, true)?;
        let e = self.env().compile_expression(source)?;
        let vars: Vec<String> = e.undeclared_variables(false).into_iter().collect();
        self.checked_lock().insert(source.to_string(), vars.clone());
        Ok(vars)
    }

    /// The expressions checked while the flow compiles, with their variables (a flow
    /// names the same expression in several places; each is parsed once).
    fn checked_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        lock(&self.checked)
    }

    /// Root variable names a compiled template reads.
    pub fn variables(&self, tpl: &Tpl) -> Vec<String> {
        match tpl {
            Tpl::Literal(_) => Vec::new(),
            Tpl::Expr(src) => self.check_expression(src).unwrap_or_default(),
            Tpl::Render(name) => {
                if let Some(vars) = lock(&self.template_vars).get(name) {
                    return vars.clone();
                }
                let vars: Vec<String> = self
                    .env()
                    .get_template(name)
                    .map(|t| {
                        t.undeclared_variables(false)
                            .into_iter()
                            .filter(|v| v != depth::BOUND)
                            .collect()
                    })
                    .unwrap_or_default();
                lock(&self.template_vars).insert(name.clone(), vars.clone());
                vars
            }
        }
    }

    /// A copy of these templates that stops after [`CONSTANT_FUEL`] instructions.
    fn fuelled(&self) -> Templates {
        let mut env = self.env().clone();
        env.set_fuel(Some(CONSTANT_FUEL));
        Templates {
            env: std::sync::OnceLock::from(env),
            bare: self.bare.clone(),
            sources: Vec::new(),
            next: self.next,
            exprs: self.exprs.clone(),
            origins: HashMap::new(),
            rewritten: self.rewritten.clone(),
            checked: Default::default(),
            template_vars: Default::default(),
            check_only: false,
            last_file: None,
            last_step: None,
            last_source: None,
        }
    }

    /// Renders `tpl` without variables (its lookups only), as the compiler does, within
    /// [`CONSTANT_FUEL`].
    pub fn render_constant(&self, tpl: &Tpl) -> Result<String, TemplateError> {
        self.fuelled().render(tpl, &JValue::from(()))
    }

    /// Evaluates expression `source` without variables, within [`CONSTANT_FUEL`].
    pub fn eval_constant(&self, source: &str) -> Result<Value, TemplateError> {
        self.fuelled().eval_expression(source, &JValue::from(()))
    }

    /// Evaluates `tpl` in `ctx`, keeping the type of a single expression.
    pub fn eval(&self, tpl: &Tpl, ctx: &JValue) -> Result<Value, TemplateError> {
        match tpl {
            Tpl::Literal(s) => Ok(Value::String(s.clone())),
            Tpl::Expr(src) => self.eval_expression(src, ctx),
            Tpl::Render(name) => Ok(Value::String(
                self.env()
                    .get_template(name)?
                    .render(ctx)
                    .map_err(|e| TemplateError::placed(&e, name, 0))?,
            )),
        }
    }

    /// Evaluates `tpl` in `ctx` to a string.
    pub fn render(&self, tpl: &Tpl, ctx: &JValue) -> Result<String, TemplateError> {
        Ok(match self.eval(tpl, ctx)? {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }

    /// Evaluates an expression.
    pub fn eval_expression(&self, source: &str, ctx: &JValue) -> Result<Value, TemplateError> {
        let v = self.value_of(source, ctx)?;
        if v.is_undefined() {
            return Err(undefined(source));
        }
        serde_json::to_value(&v)
            .map_err(|e| TemplateError::new(format!("value cannot be represented: {e}")))
    }

    /// Evaluates an expression to a template value (not copied into JSON).
    pub fn eval_expression_value(
        &self,
        source: &str,
        ctx: &JValue,
    ) -> Result<JValue, TemplateError> {
        let v = self.value_of(source, ctx)?;
        if v.is_undefined() {
            return Err(undefined(source));
        }
        Ok(v)
    }

    /// Evaluates an expression as a condition.
    pub fn eval_bool(&self, source: &str, ctx: &JValue) -> Result<bool, TemplateError> {
        Ok(self.value_of(source, ctx)?.is_true())
    }
}

/// An expression whose value is undefined, placed at the whole expression.
fn undefined(source: &str) -> TemplateError {
    TemplateError(
        format!("`{}` is undefined", source.trim()),
        Some(Failed {
            key: source.to_string(),
            range: Some(0..source.len()),
        }),
    )
}

/// The environment every flow's starts from: minijinja's filters, tests and functions,
/// ferry's filters and `now`, strict undefined values, no auto-escaping. Built once.
/// `m` locked, whether or not a holder panicked (the maps it guards are caches).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `expr` (`n is filter`, `n is test`) holds for `name` in `env`.
fn probe(env: &Environment<'_>, expr: &str, name: &str) -> bool {
    env.compile_expression(expr)
        .and_then(|e| e.eval(minijinja::context! { n => name }))
        .is_ok_and(|v| v.is_true())
}

fn base_environment() -> &'static Environment<'static> {
    static BASE: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_recursion_limit(depth::MAX_RECURSION);
        env.add_function(depth::BOUND, depth::bounded);
        env.set_formatter(|out, state, value| {
            depth::check(value)?;
            minijinja::escape_formatter(out, state, value)
        });
        env.add_function("now", |fmt: Option<String>| {
            let now = chrono::Utc::now();
            match fmt {
                Some(f) => now.format(&f).to_string(),
                None => now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }
        });
        env.add_filter("stem", |name: String| match name.rfind('.') {
            Some(i) if i > 0 => name[..i].to_string(),
            _ => name,
        });
        env.add_filter("extension", |name: String| match name.rfind('.') {
            Some(i) if i > 0 => name[i..].to_string(),
            _ => String::new(),
        });
        env.add_filter(
            "regex_replace",
            |s: String, pattern: String, replacement: String| {
                let re = regex::Regex::new(&pattern).map_err(|e| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("bad regex: {e}"),
                    )
                })?;
                Ok::<_, minijinja::Error>(re.replace_all(&s, replacement.as_str()).into_owned())
            },
        );
        env.add_filter(
            "regex_capture",
            |s: String, pattern: String, group: Option<usize>| {
                let re = regex::Regex::new(&pattern).map_err(|e| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("bad regex: {e}"),
                    )
                })?;
                Ok::<_, minijinja::Error>(
                    re.captures(&s)
                        .and_then(|c| c.get(group.unwrap_or(1)))
                        .map(|m| JValue::from(m.as_str()))
                        .unwrap_or(JValue::UNDEFINED),
                )
            },
        );
        env
    })
}

/// The template that evaluates expression `expr` ([`Templates::register_expression`]).
fn wrapped(expr: &str) -> String {
    format!("{EXPR_PREFIX}{expr})) %}}")
}

/// The inner expression when `source` is exactly one `{{ … }}` block.
pub fn single_expression(source: &str) -> Option<&str> {
    let t = source.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// A call of a named function with a literal first argument, found in a template's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Function name.
    pub name: String,
    /// Byte offset of the name in the source.
    pub offset: usize,
    /// The string literal arguments that directly follow, with their offsets (inside quotes).
    pub literal_args: Vec<(String, usize)>,
}

/// Finds function calls (`name(` not preceded by `.` or `|`) in the code regions of a
/// template (or in the whole of an expression when `expression` is true).
pub fn find_calls(source: &str, expression: bool) -> Vec<Call> {
    let mut calls = Vec::new();
    for (start, end) in code_regions(source, expression) {
        scan_region(source, start, end, &mut calls);
    }
    calls
}

fn code_regions(source: &str, expression: bool) -> Vec<(usize, usize)> {
    if expression {
        return vec![(0, source.len())];
    }
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(rel) = source[i..].find(['{']) {
        let at = i + rel;
        let open = &source[at..];
        let close = if open.starts_with("{{") {
            "}}"
        } else if open.starts_with("{%") {
            "%}"
        } else {
            i = at + 1;
            continue;
        };
        let body = at + 2;
        let end = source[body..]
            .find(close)
            .map(|e| body + e)
            .unwrap_or(source.len());
        out.push((body, end));
        i = (end + 2).min(source.len());
        if i >= source.len() {
            break;
        }
    }
    out
}

fn scan_region(src: &str, start: usize, end: usize, calls: &mut Vec<Call>) {
    let bytes = src.as_bytes();
    let mut i = start;
    let mut prev_sig: u8 = b' ';
    while i < end {
        let c = bytes[i];
        if c == b'\'' || c == b'"' {
            i = skip_string(bytes, i, end);
            prev_sig = b'"';
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < end && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let name = &src[s..i];
            let mut j = i;
            while j < end && bytes[j] == b' ' {
                j += 1;
            }
            if j < end
                && bytes[j] == b'('
                && prev_sig != b'.'
                && prev_sig != b'|'
                && !is_keyword(name)
            {
                let literal_args = literal_args(src, j + 1, end);
                calls.push(Call {
                    name: name.to_string(),
                    offset: s,
                    literal_args,
                });
            }
            prev_sig = if name == "is" { b'|' } else { b'a' };
            continue;
        }
        if !c.is_ascii_whitespace() {
            prev_sig = c;
        }
        i += 1;
    }
}

fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "and" | "or" | "not" | "in" | "if" | "else" | "for" | "is"
    )
}

fn skip_string(bytes: &[u8], start: usize, end: usize) -> usize {
    let q = bytes[start];
    let mut i = start + 1;
    while i < end && bytes[i] != q {
        if bytes[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    (i + 1).min(end)
}

fn literal_args(src: &str, mut i: usize, end: usize) -> Vec<(String, usize)> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    loop {
        while i < end && bytes[i] == b' ' {
            i += 1;
        }
        if i >= end || (bytes[i] != b'\'' && bytes[i] != b'"') {
            return out;
        }
        let close = skip_string(bytes, i, end);
        if close < 2 || close - 1 <= i {
            return out;
        }
        out.push((src[i + 1..close - 1].to_string(), i + 1));
        i = close;
        while i < end && bytes[i] == b' ' {
            i += 1;
        }
        if i < end && bytes[i] == b',' {
            i += 1;
        } else {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookups::Lookups;

    fn templates() -> Templates {
        let t = Arc::new(Lookup::new(
            "cfg".into(),
            vec!["k".into(), "v".into()],
            vec![
                vec!["a.b".into(), "x".into()],
                vec!["flag".into(), "true".into()],
            ],
        ));
        Templates::new(&[("config".into(), t)], Arc::new(Lookups::default()))
    }

    #[test]
    fn a_plain_path_is_looked_up_as_the_template_would() {
        let t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({
            "record": {"fields": {"Id": "SR-1", "n": 3, "empty": null}},
            "steps": {"body": {"a": [1, {"b": true}]}},
            "true": "shadowed?",
        }));
        // looked up without a template: the same value as the template gives
        for src in [
            "record",
            "record.fields",
            " record.fields.Id ",
            "record.fields.n",
            "steps.body",
            "steps.body.a",
        ] {
            let fast = path_value(src, &ctx).unwrap_or_else(|| panic!("{src} is a path"));
            let slow = t.env().compile_expression(src).unwrap().eval(&ctx).unwrap();
            assert_eq!(fast, slow, "{src}");
            assert_eq!(
                t.eval(&Tpl::Expr(src.into()), &ctx).unwrap(),
                serde_json::to_value(&slow).unwrap(),
                "{src}"
            );
        }
        // not a path, or a part missing: the template decides (and says what is wrong)
        for src in [
            "true",
            "none",
            "record.fields.missing",
            "record.fields.empty.x",
            "nothing",
            "nothing.x",
            "record.fields['Id']",
            "record.fields.0",
            "record .fields",
            "config",
            "",
        ] {
            assert!(path_value(src, &ctx).is_none(), "{src}");
        }
        assert_eq!(
            t.eval(&Tpl::Expr("true".into()), &ctx).unwrap(),
            serde_json::json!(true)
        );
        let missing = t
            .eval(&Tpl::Expr("record.fields.missing".into()), &ctx)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("record.fields.missing"), "{missing}");
        // a path to a value nested too deep is refused as a template's value is
        let mut deep = serde_json::json!(1);
        for _ in 0..depth::MAX_VALUE_DEPTH + 1 {
            deep = serde_json::json!([deep]);
        }
        let deep_ctx = JValue::from_serialize(serde_json::json!({ "v": deep }));
        assert!(path_value("v", &deep_ctx).is_some());
        let refused = t
            .eval(&Tpl::Expr("v".into()), &deep_ctx)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("nested more than"), "{refused}");
    }

    #[test]
    fn single_expression_keeps_type() {
        let mut t = templates();
        let tpl = t.template("{{ items }}").unwrap();
        let ctx = JValue::from_serialize(serde_json::json!({"items": [1, 2]}));
        assert_eq!(t.eval(&tpl, &ctx).unwrap(), serde_json::json!([1, 2]));
        let tpl = t.template("n={{ items | length }}").unwrap();
        assert_eq!(t.eval(&tpl, &ctx).unwrap(), serde_json::json!("n=2"));
    }

    #[test]
    fn lookup_alias_and_filters() {
        let mut t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({"name": "f.20230210_ErrInRcd_6.csv"}));
        let tpl = t
            .template("{{ config('a.b') }}-{{ name | stem }}{{ name | extension }}")
            .unwrap();
        assert_eq!(t.render(&tpl, &ctx).unwrap(), "x-f.20230210_ErrInRcd_6.csv");
        let tpl = t
            .template("{{ name | regex_capture('_ErrInRcd_(\\d+)\\.') | int }}")
            .unwrap();
        assert_eq!(t.eval(&tpl, &ctx).unwrap(), serde_json::json!(6));
        assert!(t.eval_bool("config('flag') == 'true'", &ctx).unwrap());
        let missing = t.template("{{ config('nope') }}").unwrap();
        assert!(
            t.render(&missing, &ctx)
                .unwrap_err()
                .0
                .contains("no key 'nope'")
        );
    }

    #[test]
    fn a_registered_expression_evaluates_as_a_compiled_one() {
        let mut t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({
            "steps": {"list": {"count": 0, "files": [{"name": "a"}, {"name": "b"}]}},
            "s": "x %} y"
        }));
        for src in [
            "steps.list.count == 0 and config('flag') == 'true'",
            "steps.list.files",
            "steps.list.files | map(attribute='name') | join(',')",
            "steps.list.files[1]",
            "s ~ '}}'",
            "steps.nothing is defined",
            "none",
        ] {
            let compiled = t.eval_expression(src, &ctx).map_err(|e| e.0);
            t.register_expression(src).unwrap();
            assert!(t.exprs.contains_key(src), "{src} is not registered");
            assert_eq!(
                t.eval_expression(src, &ctx).map_err(|e| e.0),
                compiled,
                "{src}"
            );
        }
        // undefined stays an error, named as before
        let src = "steps.list.cont";
        let compiled = t.eval_expression(src, &ctx).unwrap_err().0;
        t.register_expression(src).unwrap();
        assert_eq!(t.eval_expression(src, &ctx).unwrap_err().0, compiled);
        assert_eq!(compiled, "`steps.list.cont` is undefined");
        // a string literal holding the wrapper's own syntax does not break it
        let src = "'%}' ~ s";
        t.register_expression(src).unwrap();
        assert_eq!(
            t.eval_expression(src, &ctx).unwrap(),
            serde_json::json!("%}x %} y")
        );
    }

    /// A batch gives each template the value `eval` gives it, and the same first error.
    #[test]
    fn a_batch_evaluates_as_its_templates_one_by_one() {
        let mut t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({
            "r": {"a": "1", "n": 7, "l": [1, 2], "o": {"k": null}}
        }));
        let sources = [
            "{{ r.a }}",
            "OUAI",
            "{{ config('a.b') }}",
            "{{ r.n + 1 }}",
            "n={{ r.n }}",
            "{{ r.l }}",
            "{{ r.o }}",
        ];
        let tpls: Vec<Tpl> = sources.iter().map(|s| t.template(s).unwrap()).collect();
        let refs: Vec<&Tpl> = tpls.iter().collect();
        let batch = t.register_batch(&refs).expect("a batch");
        let one_by_one: Vec<Value> = refs.iter().map(|x| t.eval(x, &ctx).unwrap()).collect();
        assert_eq!(t.eval_batch(&batch, &refs, &ctx).unwrap(), one_by_one);
        assert_eq!(
            one_by_one,
            serde_json::json!(["1", "OUAI", "x", 8, "n=7", [1, 2], {"k": null}])
                .as_array()
                .unwrap()
                .clone()
        );
        // the first failing template's error, whether the pass fails or leaves a value undefined
        for (bad, want) in [
            ("{{ r.a + 1 }}", None),
            ("{{ config('nope') }}", None),
            ("{{ r.missing }}", Some("`r.missing` is undefined")),
        ] {
            let mut tpls = tpls.clone();
            tpls.insert(2, t.template(bad).unwrap());
            let refs: Vec<&Tpl> = tpls.iter().collect();
            let batch = t.register_batch(&refs).expect("a batch");
            let alone = t.eval(refs[2], &ctx).unwrap_err().0;
            if let Some(want) = want {
                assert_eq!(alone, want);
            }
            assert_eq!(
                t.eval_batch(&batch, &refs, &ctx).unwrap_err().0,
                alone,
                "{bad}"
            );
        }
        // fewer than two expressions: nothing to batch
        let lit = t.template("x").unwrap();
        let one = t.template("{{ r.a }}").unwrap();
        assert!(t.register_batch(&[&lit, &one]).is_none());
    }

    #[test]
    fn undefined_variables_are_errors() {
        let mut t = templates();
        let tpl = t.template("{{ file.nme }}").unwrap();
        let ctx = JValue::from_serialize(serde_json::json!({"file": {"name": "a"}}));
        assert!(t.render(&tpl, &ctx).is_err());
    }

    /// Each shape 5,000 deep, which overflowed the stack of the thread compiling it (the
    /// process aborted), is an error before minijinja parses it: as a template, as a
    /// registered expression, and as an expression evaluated without being registered.
    #[test]
    fn deep_templates_and_expressions_are_errors_not_stack_overflows() {
        fn err<T>(r: Result<T, TemplateError>) -> Result<(), String> {
            r.map(|_| ()).map_err(|e| e.0)
        }
        let n = 5000;
        let r = |s: &str, k: usize| s.repeat(k);
        let shapes = [
            (format!("1{}", r("+1", n)), n + 1),
            (format!("run{}", r(".a", n)), n + 1),
            (format!("x{}", r(" | upper", n)), n + 1),
            (format!("{}1{}", r("(", n), r(")", n)), n + 1),
            (format!("{}1{}", r("[", n), r("]", n)), n + 1),
            (format!("{}1{}", r("{'a': ", n), r("}", n)), n + 1),
            (format!("{}true", r("not ", n)), n + 1),
            (format!("{}1{}", r("-(", n), r(")", n)), 2 * n + 1),
            (format!("range{}", r("()", n)), n + 2),
            (format!("1{}", r(" is number", n)), n + 1),
        ];
        let mut t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({"x": "a", "run": {}}));
        for (expr, depth) in shapes {
            let want = format!("template expression nested {depth} levels deep; the limit is 64");
            let shape = &expr[..12];
            assert_eq!(
                err(t.template(&format!("{{{{ {expr} }}}}"))),
                Err(want.clone()),
                "{shape}"
            );
            assert_eq!(
                err(t.template(&format!("a {{{{ {expr} }}}} b"))),
                Err(want.clone()),
                "{shape}"
            );
            assert_eq!(
                err(t.register_expression(&expr)),
                Err(want.clone()),
                "{shape}"
            );
            assert_eq!(err(t.check_expression(&expr)), Err(want.clone()), "{shape}");
            assert_eq!(
                err(t.eval_expression(&expr, &ctx)),
                Err(want.clone()),
                "{shape}"
            );
            assert_eq!(err(t.eval_bool(&expr, &ctx)), Err(want), "{shape}");
        }
        let blocks = format!("{}x{}", r("{% if 1 %}", 3000), r("{% endif %}", 3000));
        assert_eq!(
            t.template(&blocks).map(|_| ()).map_err(|e| e.0),
            Err("template expression nested 3001 levels deep; the limit is 64".to_string())
        );
        // nothing over a limit was added to the environment
        assert!(t.exprs.is_empty());
        assert_eq!(t.next, 0);
    }

    /// What the compiler evaluates (a location or expression that reads lookups only) stops
    /// within its fuel: a loop nesting a value 50,000 deep aborted `ferry validate` when the
    /// value was dropped, and nested loops of 100,000 each never ended.
    #[test]
    fn compile_time_evaluation_is_bounded_by_fuel() {
        let mut t = templates();
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let tpl = t.template(src).unwrap();
        assert_eq!(
            t.render_constant(&tpl).map_err(|e| e.0),
            Err("engine ran out of fuel".to_string()),
        );
        // the nesting loop stops on the value's depth, before the fuel runs out
        let src = "{% set ns = namespace(v=1) %}{% for i in range(50000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | length }}";
        let tpl = t.template(src).unwrap();
        assert_eq!(
            t.render_constant(&tpl).map_err(|e| e.0),
            Err(format!("invalid operation: {DEEP_VALUE}")),
        );
        // what a flow's locations and constants are is evaluated as before
        let loc = t.template("{{ config('a.b') }}/in").unwrap();
        assert_eq!(t.render_constant(&loc).unwrap(), "x/in");
        assert_eq!(
            t.eval_constant("config('flag') == 'true'").unwrap(),
            serde_json::json!(true)
        );
        // and the run's own evaluation has no fuel limit
        let big = t
            .template("{% for i in range(20000) %}{% endfor %}done")
            .unwrap();
        assert_eq!(t.render(&big, &JValue::from(())).unwrap(), "done");
    }

    #[test]
    fn finds_calls_with_literal_arguments() {
        let calls = find_calls(
            "x {{ config('a.b') ~ f.upper() | lower('z') }} {% if confg(\"k\", 'c') %}",
            false,
        );
        let names: Vec<_> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["config", "confg"]);
        assert_eq!(calls[0].literal_args, vec![("a.b".to_string(), 13)]);
        assert_eq!(calls[1].literal_args.len(), 2);
        let calls = find_calls("config('x') == 'true' and not lookup('T', 'k')", true);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].literal_args[0].0, "T");
    }

    /// Where no step failed, `error` is undefined to `{% if %}` and `is defined` alike (both
    /// false), prints nothing, and reading its attributes is an error.
    #[test]
    fn no_error_is_undefined_to_if_and_is_defined_alike() {
        let mut t = templates();
        let mut root = std::collections::BTreeMap::new();
        root.insert("error".to_string(), no_error());
        let ctx = JValue::from(root);
        let tpl = t
            .template("[{% if error %}if{% endif %}{% if error is defined %}defined{% endif %}{{ error }}]")
            .unwrap();
        assert_eq!(t.render(&tpl, &ctx).unwrap(), "[]");
        assert!(!t.eval_bool("error", &ctx).unwrap());
        assert!(!t.eval_bool("error is defined", &ctx).unwrap());
        let tpl = t.template("x {{ error.message }}").unwrap();
        assert!(t.render(&tpl, &ctx).is_err());
    }

    /// A template or expression failing at run time names its file:line:column and the
    /// failing part, in the step that evaluated it.
    #[test]
    fn run_time_errors_name_their_place() {
        let text = "steps:\n  - id: a\n    notify:\n      body: \"x {{ error.message }}\"\n      \
                    subject: \"{{ steps.b.nope }}\"\n  - id: b\n    when: \"steps.b.nope\"\n";
        let doc = Arc::new(
            crate::yaml::SourceDoc::parse(std::path::Path::new("flows/f.yaml"), text).unwrap(),
        );
        let origin = |step: &str, pointer: &str, source: &str| Origin {
            step: step.into(),
            doc: doc.clone(),
            pointer: pointer.into(),
            source: source.into(),
        };
        let mut t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({"error": null, "steps": {"b": {}}}));
        let body = t.template("x {{ error.message }}").unwrap();
        t.note_template(
            &body,
            origin("a", "/steps/0/notify/body", "x {{ error.message }}"),
        );
        let e = t.render(&body, &ctx).unwrap_err();
        assert_eq!(
            t.locate(&e, "a"),
            "flows/f.yaml:4:19: `error.message`: undefined value"
        );
        // one expression in two places: the step evaluating it says which
        let subject = t.template("{{ steps.b.nope }}").unwrap();
        t.note_template(
            &subject,
            origin("a", "/steps/0/notify/subject", "{{ steps.b.nope }}"),
        );
        t.register_expression("steps.b.nope").unwrap();
        t.note_expression("steps.b.nope", origin("b", "/steps/1/when", "steps.b.nope"));
        let e = t.render(&subject, &ctx).unwrap_err();
        assert_eq!(
            t.locate(&e, "a"),
            "flows/f.yaml:5:20: `steps.b.nope`: `steps.b.nope` is undefined"
        );
        let e = t.eval_expression("steps.b.nope", &ctx).unwrap_err();
        assert_eq!(
            t.locate(&e, "b"),
            "flows/f.yaml:7:12: `steps.b.nope`: `steps.b.nope` is undefined"
        );
    }

    const DEEP_VALUE: &str = "template value nested more than 256 levels deep; the limit is 256";

    /// What a template builds while it runs is bounded: each of these built a value 100,000
    /// levels deep (or some thousands, through recursion) whose rendering, serialising,
    /// comparison or drop overflowed the stack and aborted the process. Each is now a
    /// template error, as a rendered template and as an expression.
    #[test]
    fn deep_values_built_at_run_time_are_errors_not_stack_overflows() {
        let mut t = templates();
        let ctx = JValue::from_serialize(serde_json::json!({"n": 100000, "x": [1]}));
        let loop_ = |body: &str, out: &str| {
            format!(
                "{{% set ns = namespace(v=[]) %}}{{% for i in range(n) %}}{body}{{% endfor %}}{out}"
            )
        };
        let deep = format!("invalid operation: {DEEP_VALUE}");
        for src in [
            loop_("{% set ns.v = [ns.v] %}", "{{ ns.v }}"),
            loop_("{% set ns.v = [ns.v] %}", "{{ ns.v | length }}"),
            loop_("{% set ns.v = {'a': ns.v} %}", "{{ ns.v | tojson }}"),
            loop_("{% set ns.v = [ns.v] | batch(1) | list %}", "x"),
            loop_("{% set ns.v = namespace(v=ns.v) %}", "{{ ns.v == ns.v }}"),
            loop_("{%- set a, b = [ns.v], 1 -%}{% set ns.v = a %}", "x"),
            format!(
                "{}{{{{ a }}}}",
                "{% set a = [[[[[[[[a]]]]]]]] %}".repeat(40)
            )
            .replacen("[a]", "[1]", 1),
        ] {
            let tpl = t.template(&src).unwrap();
            assert_eq!(
                t.render(&tpl, &ctx).map_err(|e| e.0),
                Err(deep.clone()),
                "{src}"
            );
        }
        // recursion stops long before what it builds is too deep for the stack
        let l = "[".repeat(30);
        let r = "]".repeat(30);
        for src in [
            format!("{{% for x in [[1]] recursive %}}{{{{ loop({l}x{r}) }}}}{{% endfor %}}"),
            format!("{{% macro f(x) %}}{{{{ f({l}x{r}) }}}}{{% endmacro %}}{{{{ f(1) }}}}"),
        ] {
            let tpl = t.template(&src).unwrap();
            let e = t.render(&tpl, &ctx).unwrap_err().0;
            assert!(
                e.starts_with("invalid operation: recursion limit exceeded"),
                "{e}"
            );
        }
        // an expression's value is checked before it is copied into the run
        let mut v = serde_json::json!(1);
        for _ in 0..250 {
            v = serde_json::json!([v]);
        }
        let ctx = JValue::from_serialize(serde_json::json!({"v": v}));
        assert!(t.eval_expression("[[[[v]]]]", &ctx).unwrap().is_array());
        let expr = "[[[[[[[[v]]]]]]]]";
        assert_eq!(
            t.eval_expression(expr, &ctx).map_err(|e| e.0),
            Err(deep.clone())
        );
        t.register_expression(expr).unwrap();
        assert_eq!(t.eval_expression(expr, &ctx).map_err(|e| e.0), Err(deep));
        // what stays within the limits works as before
        let ok = t
            .template("{% set ns = namespace(v=[], n=0) %}{% for i in range(1000) %}{% set ns.v = ns.v + [i] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.v | length }} {{ ns.n }} {{ x }}")
            .unwrap();
        let ctx = JValue::from_serialize(serde_json::json!({"x": [1]}));
        assert_eq!(t.render(&ok, &ctx).unwrap(), "1000 499500 [1]");
        let vars = t.variables(&ok);
        assert!(vars.contains(&"x".to_string()), "{vars:?}");
        assert!(!vars.iter().any(|v| v == depth::BOUND), "{vars:?}");
    }
}
