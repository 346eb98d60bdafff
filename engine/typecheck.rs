//! Static typing of templates and expressions: what a template may read, checked before any
//! run.
//!
//! Every root variable has a [`Shape`]: `run` and `error` are fixed, `params` are the flow's
//! declared parameters, `input` its trigger parts, `steps.<id>` the output a step kind declares
//! ([`step_shape`]), loop variables the elements of what they walk (a CSV record is
//! `{number, fields}`, and `fields` is closed when the loop declares its `columns`). The
//! checker walks minijinja's own syntax tree (the `unstable_machinery` feature, pinned to one
//! minijinja version in `Cargo.toml`), so every attribute, filter and test is found with its
//! exact byte offset in the string; an attribute a closed shape does not have, and a filter or
//! test the environment does not know, is a [`Problem`] with a did-you-mean. Unknown root
//! variables and functions are reported by the compiler's other checks and typed `Any` here,
//! so one typo gives one diagnostic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::machinery::ast::{self, CallArg, Expr, Stmt};
use serde_json::Value;

use crate::diag::did_you_mean;

/// What a value looks like, as far as the compiler knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Anything: not checked.
    Any,
    /// A string.
    Str,
    /// A number.
    Num,
    /// A boolean.
    Bool,
    /// A list whose elements have a shape.
    List(Box<Shape>),
    /// A map with any keys, whose values have a shape.
    Map(Box<Shape>),
    /// A map with exactly these keys.
    Obj(Obj),
    /// A variable that is undefined where it is read (`error` in a step that runs only while
    /// nothing failed): reading an attribute of it is a problem; why it is undefined.
    Undefined(String),
}

/// A closed map: its keys are all known.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj {
    /// What it is, for messages (`a file of a listing`, `the output of list step 'list'`).
    pub what: String,
    /// Its fields (shared: a shape is cloned at each read of a variable, `steps` too).
    pub fields: Arc<BTreeMap<String, Shape>>,
    /// Whether an unknown key is reported (false for `steps`, whose unknown ids are reported
    /// as unknown steps).
    pub strict: bool,
}

impl Shape {
    /// A closed map of `fields`.
    pub fn obj<'a>(what: &str, fields: impl IntoIterator<Item = (&'a str, Shape)>) -> Shape {
        Shape::Obj(Obj {
            what: what.to_string(),
            fields: Arc::new(
                fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            strict: true,
        })
    }

    /// A list of `elem`.
    pub fn list(elem: Shape) -> Shape {
        Shape::List(Box::new(elem))
    }

    /// The shape of an element of this shape when iterated.
    pub fn element(&self) -> Shape {
        match self {
            Shape::List(e) => (**e).clone(),
            Shape::Str => Shape::Str,
            _ => Shape::Any,
        }
    }

    /// The shape of a JSON value written in a flow whose strings are templates (a
    /// `transform`'s fields): maps are closed, strings unknown.
    pub fn of_template_value(what: &str, v: &Value) -> Shape {
        match v {
            Value::Object(m) => Shape::Obj(Obj {
                what: what.to_string(),
                fields: Arc::new(
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                Shape::of_template_value(&format!("{what}.{k}"), v),
                            )
                        })
                        .collect(),
                ),
                strict: true,
            }),
            Value::Array(_) => Shape::list(Shape::Any),
            Value::Number(_) => Shape::Num,
            Value::Bool(_) => Shape::Bool,
            Value::String(_) | Value::Null => Shape::Any,
        }
    }
}

/// A file of a listing: `{name, size}`.
pub fn listed_file() -> Shape {
    Shape::obj(
        "a listed file",
        [("name", Shape::Str), ("size", Shape::Num)],
    )
}

/// A spooled file: `{path, name, size}` (a `fetch` output, a trigger file part).
pub fn spooled_file(what: &str) -> Shape {
    Shape::obj(
        what,
        [
            ("path", Shape::Str),
            ("name", Shape::Str),
            ("size", Shape::Num),
        ],
    )
}

/// A CSV record: `{number, fields}`; `fields` is closed when the columns are declared.
pub fn csv_record(columns: Option<&[String]>) -> Shape {
    let fields = match columns {
        Some(cols) => Shape::Obj(Obj {
            what: "the record's fields (the loop's `columns`)".into(),
            fields: Arc::new(cols.iter().map(|c| (c.clone(), Shape::Str)).collect()),
            strict: true,
        }),
        None => Shape::Map(Box::new(Shape::Str)),
    };
    Shape::obj("a CSV record", [("number", Shape::Num), ("fields", fields)])
}

/// What a REST `request` answers: `{status, json, text, suppressed, dry_run}`.
pub fn response() -> Shape {
    Shape::obj(
        "a REST answer",
        [
            ("status", Shape::Num),
            ("json", Shape::Any),
            ("text", Shape::Str),
            ("suppressed", Shape::Bool),
            ("dry_run", Shape::Bool),
        ],
    )
}

/// `run`: `{id, flow, flow_name, version, started_at, dry_run}`.
pub fn run() -> Shape {
    Shape::obj(
        "run",
        [
            ("id", Shape::Str),
            ("flow", Shape::Str),
            ("flow_name", Shape::Str),
            ("version", Shape::Str),
            ("started_at", Shape::Str),
            ("dry_run", Shape::Bool),
        ],
    )
}

/// `error`: `{step, kind, message, status, items}`; `items` holds the loop variables of the
/// failing loops (whichever flow failed: the error handler sees its caller's).
pub fn error() -> Shape {
    Shape::obj(
        "error",
        [
            ("step", Shape::Str),
            ("kind", Shape::Str),
            ("message", Shape::Str),
            ("status", Shape::Num),
            ("items", Shape::Map(Box::new(Shape::Any))),
        ],
    )
}

/// The output a step kind declares. `items` gives the element shape of a `for_each` over a
/// list (the caller types the loop's `items` expression).
pub fn step_shape(raw: &crate::model::RawStep, items: Option<Shape>) -> Shape {
    let what = format!("the output of step '{}'", raw.id);
    if raw.list.is_some() {
        Shape::obj(
            &what,
            [
                ("files", Shape::list(listed_file())),
                ("count", Shape::Num),
                (
                    "skipped",
                    Shape::list(Shape::obj(
                        "a skipped file",
                        [("name", Shape::Str), ("reason", Shape::Str)],
                    )),
                ),
            ],
        )
    } else if raw.fetch.is_some() {
        spooled_file(&what)
    } else if let Some(t) = &raw.transform {
        match (&t.fields, &t.value) {
            (Some(f), _) => Shape::of_template_value(&what, &Value::Object(f.clone())),
            (None, Some(v)) => Shape::of_template_value(&what, v),
            _ => Shape::Any,
        }
    } else if let Some(inv) = &raw.invoke {
        if inv.request.is_some() {
            let mut s = response();
            if let Shape::Obj(o) = &mut s {
                o.what = what;
            }
            s
        } else if inv.put.is_some() {
            Shape::obj(
                &what,
                [
                    ("location", Shape::Str),
                    ("name", Shape::Str),
                    ("size", Shape::Num),
                ],
            )
        } else {
            Shape::obj(&what, [("flow", Shape::Str), ("steps", Shape::Any)])
        }
    } else if raw.rename.is_some() {
        Shape::obj(&what, [("from", Shape::Str), ("to", Shape::Str)])
    } else if raw.notify.is_some() {
        Shape::obj(
            &what,
            [
                ("to", Shape::Str),
                ("subject", Shape::Str),
                ("sent_to", Shape::Str),
                ("error", Shape::Str),
            ],
        )
    } else if let Some(fe) = &raw.for_each {
        let entry = if fe.csv.is_some() {
            Shape::obj("a CSV record", [("number", Shape::Num)])
        } else {
            items.unwrap_or(Shape::Any)
        };
        Shape::obj(
            &what,
            [
                ("count", Shape::Num),
                ("done", Shape::list(entry.clone())),
                ("failed", Shape::list(entry.clone())),
                ("pending", Shape::list(entry)),
                ("skipped", Shape::Num),
            ],
        )
    } else if raw.route.is_some() {
        Shape::obj(&what, [("case", Shape::Str)])
    } else {
        Shape::obj(&what, [])
    }
}

/// A problem found in a template, at a byte offset of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset in the template's source.
    pub offset: usize,
    /// Diagnostic code: `unknown-attribute`, `unknown-filter`, `unknown-test`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

/// What the checker asks of its surroundings.
pub trait Env {
    /// The shape of a root variable, `None` when it is unknown (reported elsewhere).
    fn root(&self, name: &str) -> Option<Shape>;
    /// Whether a filter exists.
    fn has_filter(&self, name: &str) -> bool;
    /// Whether a test exists.
    fn has_test(&self, name: &str) -> bool;
    /// Filter names, for suggestions.
    fn filter_names(&self) -> Vec<String>;
    /// Test names, for suggestions.
    fn test_names(&self) -> Vec<String>;
    /// The table name and columns of the lookup a function reaches (a flow's lookup alias,
    /// `status(key, 'COLUMN')`); `None` when `function` is not a lookup alias.
    fn alias_columns(&self, _function: &str) -> Option<(String, Vec<String>)> {
        None
    }
    /// The columns of the lookup table called `table` (`lookup('TABLE', key, 'COLUMN')`);
    /// `None` when there is no such table (reported elsewhere).
    fn table_columns(&self, _table: &str) -> Option<Vec<String>> {
        None
    }
}

/// The filters whose first argument is a regular expression (compiled at run time: a
/// literal one is compiled by the checker).
pub const REGEX_FILTERS: &[&str] = &["regex_replace", "regex_capture"];

/// The one-line reason the regex crate gives for refusing `pattern`, if it does.
pub fn regex_error(pattern: &str) -> Option<String> {
    let e = regex::Regex::new(pattern).err()?;
    let text = e.to_string();
    // a syntax error is the pattern, a caret line and `error: WHY`: keep WHY
    Some(
        text.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .map(str::to_string)
            .unwrap_or_else(|| text.lines().last().unwrap_or_default().trim().to_string()),
    )
}

/// Checks a template string (with `{{ }}` and `{% %}`); returns its problems. A template that
/// does not parse, or is over the [`limits`](crate::template::limits), gives none (the
/// compiler reports those).
pub fn check_template(src: &str, env: &dyn Env) -> Vec<Problem> {
    if crate::template::limits::check(src, false).is_err() {
        return Vec::new();
    }
    let Ok(tree) =
        minijinja::machinery::parse(src, "<template>", Default::default(), Default::default())
    else {
        return Vec::new();
    };
    let mut w = Walker::new(src, env);
    w.stmt(&tree);
    w.problems
}

/// Checks an expression (`when`, `items`, `by`); returns its problems and its shape. One
/// over the [`limits`](crate::template::limits) is not walked (the compiler reports it).
pub fn check_expression(src: &str, env: &dyn Env) -> (Vec<Problem>, Shape) {
    if crate::template::limits::check(src, true).is_err() {
        return (Vec::new(), Shape::Any);
    }
    let Ok(expr) = minijinja::machinery::parse_expr(src) else {
        return (Vec::new(), Shape::Any);
    };
    let mut w = Walker::new(src, env);
    let shape = w.expr(&expr);
    (w.problems, shape)
}

/// The shape of an expression, without its problems.
pub fn expression_shape(src: &str, env: &dyn Env) -> Shape {
    check_expression(src, env).1
}

struct Walker<'s> {
    src: &'s str,
    env: &'s dyn Env,
    scopes: Vec<HashMap<String, Shape>>,
    problems: Vec<Problem>,
}

impl<'s> Walker<'s> {
    fn new(src: &'s str, env: &'s dyn Env) -> Self {
        Walker {
            src,
            env,
            scopes: vec![HashMap::new()],
            problems: Vec::new(),
        }
    }

    fn bind(&mut self, name: &str, shape: Shape) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), shape);
        }
    }

    fn bind_target(&mut self, target: &Expr<'_>, shape: Shape) {
        match target {
            Expr::Var(v) => self.bind(v.id, shape),
            Expr::List(l) => {
                for item in &l.items {
                    self.bind_target(item, Shape::Any);
                }
            }
            _ => {}
        }
    }

    fn lookup(&self, name: &str) -> Shape {
        for s in self.scopes.iter().rev() {
            if let Some(v) = s.get(name) {
                return v.clone();
            }
        }
        self.env.root(name).unwrap_or(Shape::Any)
    }

    fn body(&mut self, stmts: &[Stmt<'_>]) {
        for s in stmts {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, stmt: &Stmt<'_>) {
        match stmt {
            Stmt::Template(t) => self.body(&t.children),
            Stmt::EmitExpr(e) => {
                self.expr(&e.expr);
            }
            Stmt::EmitRaw(_) => {}
            Stmt::ForLoop(f) => {
                let iter = self.expr(&f.iter);
                self.scopes.push(HashMap::new());
                self.bind_target(&f.target, iter.element());
                self.bind("loop", Shape::Any);
                if let Some(cond) = &f.filter_expr {
                    self.expr(cond);
                }
                self.body(&f.body);
                self.scopes.pop();
                self.body(&f.else_body);
            }
            Stmt::IfCond(c) => {
                self.expr(&c.expr);
                self.body(&c.true_body);
                self.body(&c.false_body);
            }
            Stmt::WithBlock(w) => {
                let shapes: Vec<Shape> = w.assignments.iter().map(|(_, e)| self.expr(e)).collect();
                self.scopes.push(HashMap::new());
                for ((target, _), shape) in w.assignments.iter().zip(shapes) {
                    self.bind_target(target, shape);
                }
                self.body(&w.body);
                self.scopes.pop();
            }
            Stmt::Set(s) => {
                let shape = self.expr(&s.expr);
                self.bind_target(&s.target, shape);
            }
            Stmt::SetBlock(s) => {
                if let Some(f) = &s.filter {
                    self.expr(f);
                }
                self.body(&s.body);
                self.bind_target(&s.target, Shape::Str);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.body(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.body(&f.body);
            }
            Stmt::Macro(m) => {
                self.bind(m.name, Shape::Any);
                self.macro_body(m);
            }
            Stmt::CallBlock(c) => {
                self.call(&c.call);
                self.macro_body(&c.macro_decl);
            }
            Stmt::Do(d) => {
                self.call(&d.call);
            }
            // includes, imports, blocks, loop controls: nothing typed
            _ => {}
        }
    }

    fn macro_body(&mut self, m: &ast::Macro<'_>) {
        for d in &m.defaults {
            self.expr(d);
        }
        self.scopes.push(HashMap::new());
        for a in &m.args {
            self.bind_target(a, Shape::Any);
        }
        for name in ["caller", "varargs", "kwargs"] {
            self.bind(name, Shape::Any);
        }
        self.body(&m.body);
        self.scopes.pop();
    }

    fn args(&mut self, args: &[CallArg<'_>]) {
        for a in args {
            match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => {
                    self.expr(e);
                }
            }
        }
    }

    /// A string literal given as positional argument `i`, with the byte offset of its text
    /// (inside the quotes).
    fn literal_arg<'a>(args: &'a [CallArg<'_>], i: usize) -> Option<(&'a str, usize)> {
        let pos: Vec<&Expr<'_>> = args
            .iter()
            .filter_map(|a| match a {
                CallArg::Pos(e) => Some(e),
                _ => None,
            })
            .collect();
        match pos.get(i)? {
            Expr::Const(c) => Some((c.value.as_str()?, c.span().start_offset as usize + 1)),
            _ => None,
        }
    }

    /// Checks a literal column argument against the columns of the lookup it reads.
    fn lookup_column(&mut self, table: &str, columns: &[String], arg: Option<(&str, usize)>) {
        let Some((column, offset)) = arg else {
            return;
        };
        if columns.iter().any(|c| c == column) {
            return;
        }
        let hint = did_you_mean(column, columns.iter().map(String::as_str))
            .or_else(|| Some(format!("columns of {table}: {}", columns.join(", "))));
        self.problems.push(Problem {
            offset,
            code: "unknown-lookup-column",
            message: format!("lookup {table} has no column '{column}'"),
            hint,
        });
    }

    fn call(&mut self, c: &ast::Call<'_>) -> Shape {
        self.args(&c.args);
        if let Expr::Var(v) = &c.expr {
            if let Some((table, columns)) = self.env.alias_columns(v.id) {
                let arg = Self::literal_arg(&c.args, 1);
                self.lookup_column(&table, &columns, arg);
            } else if v.id == "lookup"
                && let Some((table, _)) = Self::literal_arg(&c.args, 0)
                && let Some(columns) = self.env.table_columns(table)
            {
                let arg = Self::literal_arg(&c.args, 2);
                self.lookup_column(table, &columns, arg);
            }
        }
        match &c.expr {
            Expr::Var(v) => match v.id {
                "range" => Shape::list(Shape::Num),
                "dict" | "namespace" | "debug" => Shape::Any,
                // lookup aliases, lookup(), now(): strings
                _ => Shape::Str,
            },
            // a method call (`x.items()`): the receiver is typed, the method is not
            Expr::GetAttr(g) => {
                self.expr(&g.expr);
                Shape::Any
            }
            other => {
                self.expr(other);
                Shape::Any
            }
        }
    }

    /// The byte offset of `name` at or after `from` (the token the parser spanned).
    fn find_name(&self, name: &str, from: usize, to: usize) -> usize {
        let to = to.min(self.src.len());
        self.src
            .get(from..to)
            .and_then(|s| s.find(name))
            .map(|i| from + i)
            .unwrap_or(from)
    }

    fn attribute(&mut self, base: Shape, name: &str, offset: usize, described: &str) -> Shape {
        match base {
            Shape::Obj(o) => match o.fields.get(name) {
                Some(s) => s.clone(),
                None => {
                    if o.strict {
                        let hint =
                            did_you_mean(name, o.fields.keys().map(String::as_str)).or_else(|| {
                                Some(if o.fields.is_empty() {
                                    format!("{} has no attributes", o.what)
                                } else {
                                    format!(
                                        "{} has: {}",
                                        o.what,
                                        o.fields.keys().cloned().collect::<Vec<_>>().join(", ")
                                    )
                                })
                            });
                        self.problems.push(Problem {
                            offset,
                            code: "unknown-attribute",
                            message: format!("`{described}` has no attribute '{name}'"),
                            hint,
                        });
                    }
                    Shape::Any
                }
            },
            Shape::Map(v) => *v,
            Shape::Undefined(why) => {
                self.problems.push(Problem {
                    offset,
                    code: "undefined-variable",
                    message: format!("`{described}` is undefined here: {why}"),
                    hint: Some(
                        "read it in a step with `run_on: failure`, or `run_on: always` behind \
                         `error is defined`"
                            .into(),
                    ),
                });
                Shape::Any
            }
            _ => Shape::Any,
        }
    }

    fn expr(&mut self, e: &Expr<'_>) -> Shape {
        match e {
            Expr::Var(v) => self.lookup(v.id),
            Expr::Const(c) => {
                let v = &c.value;
                if v.as_str().is_some() {
                    Shape::Str
                } else if v.is_number() {
                    Shape::Num
                } else if v.kind() == minijinja::value::ValueKind::Bool {
                    Shape::Bool
                } else {
                    Shape::Any
                }
            }
            Expr::GetAttr(g) => {
                let base = self.expr(&g.expr);
                let span = g.span();
                let end = span.end_offset as usize;
                let offset = end.saturating_sub(g.name.len());
                let offset = if self.src.get(offset..end) == Some(g.name) {
                    offset
                } else {
                    self.find_name(g.name, span.start_offset as usize, end)
                };
                self.attribute(base, g.name, offset, &described(&g.expr))
            }
            Expr::GetItem(g) => {
                let base = self.expr(&g.expr);
                let sub = self.expr(&g.subscript_expr);
                match (&base, &g.subscript_expr) {
                    (Shape::List(elem), _) => (**elem).clone(),
                    (Shape::Obj(_) | Shape::Undefined(_), Expr::Const(c))
                        if c.value.as_str().is_some() =>
                    {
                        let name = c.value.as_str().unwrap_or_default().to_string();
                        let offset = c.span().start_offset as usize + 1;
                        self.attribute(base, &name, offset, &described(&g.expr))
                    }
                    (Shape::Map(v), _) => (**v).clone(),
                    _ => {
                        let _ = sub;
                        Shape::Any
                    }
                }
            }
            Expr::Slice(s) => {
                let base = self.expr(&s.expr);
                for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(x);
                }
                base
            }
            Expr::UnaryOp(u) => {
                self.expr(&u.expr);
                match u.op {
                    ast::UnaryOpKind::Not => Shape::Bool,
                    ast::UnaryOpKind::Neg => Shape::Num,
                }
            }
            Expr::BinOp(b) => {
                let l = self.expr(&b.left);
                self.expr(&b.right);
                use ast::BinOpKind as K;
                match b.op {
                    K::Concat => Shape::Str,
                    K::Eq | K::Ne | K::Lt | K::Lte | K::Gt | K::Gte | K::In => Shape::Bool,
                    K::Sub | K::Mul | K::Div | K::FloorDiv | K::Rem | K::Pow => Shape::Num,
                    K::Add => match l {
                        Shape::Num => Shape::Num,
                        Shape::List(_) => l,
                        _ => Shape::Any,
                    },
                    K::ScAnd | K::ScOr => Shape::Any,
                }
            }
            Expr::Compare(c) => {
                self.expr(&c.expr);
                for op in &c.ops {
                    self.expr(&op.expr);
                }
                Shape::Bool
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                let t = self.expr(&i.true_expr);
                let f = i.false_expr.as_ref().map(|f| self.expr(f));
                match f {
                    Some(f) if f == t => t,
                    _ => Shape::Any,
                }
            }
            Expr::Filter(f) => {
                let input = f.expr.as_ref().map(|x| self.expr(x)).unwrap_or(Shape::Any);
                self.args(&f.args);
                let offset = f.span().start_offset as usize;
                if !self.env.has_filter(f.name) {
                    let names = self.env.filter_names();
                    let hint = did_you_mean(f.name, names.iter().map(String::as_str))
                        .or_else(|| Some(format!("filters: {}", names.join(", "))));
                    self.problems.push(Problem {
                        offset,
                        code: "unknown-filter",
                        message: format!("unknown filter '{}'", f.name),
                        hint,
                    });
                    return Shape::Any;
                }
                if REGEX_FILTERS.contains(&f.name)
                    && let Some((pattern, offset)) = Self::literal_arg(&f.args, 0)
                    && let Some(why) = regex_error(pattern)
                {
                    self.problems.push(Problem {
                        offset,
                        code: "invalid-regex",
                        message: format!(
                            "{}: invalid regular expression '{pattern}': {why}",
                            f.name
                        ),
                        hint: Some(
                            "the pattern is Rust regex syntax (https://docs.rs/regex/#syntax)"
                                .into(),
                        ),
                    });
                }
                filter_shape(f.name, input)
            }
            Expr::Test(t) => {
                self.expr(&t.expr);
                self.args(&t.args);
                if !self.env.has_test(t.name) {
                    let names = self.env.test_names();
                    let hint = did_you_mean(t.name, names.iter().map(String::as_str))
                        .or_else(|| Some(format!("tests: {}", names.join(", "))));
                    self.problems.push(Problem {
                        offset: t.span().start_offset as usize,
                        code: "unknown-test",
                        message: format!("unknown test '{}'", t.name),
                        hint,
                    });
                }
                Shape::Bool
            }
            Expr::Call(c) => self.call(c),
            Expr::List(l) => {
                let shapes: Vec<Shape> = l.items.iter().map(|x| self.expr(x)).collect();
                match shapes.first() {
                    Some(first) if shapes.iter().all(|s| s == first) => Shape::list(first.clone()),
                    _ => Shape::list(Shape::Any),
                }
            }
            Expr::Map(m) => {
                for (k, v) in m.keys.iter().zip(&m.values) {
                    self.expr(k);
                    self.expr(v);
                }
                Shape::Any
            }
        }
    }
}

/// How a message names an expression: `steps.list`, `file`, or `the value`.
fn described(e: &Expr<'_>) -> String {
    fn path(e: &Expr<'_>) -> Option<String> {
        match e {
            Expr::Var(v) => Some(v.id.to_string()),
            Expr::GetAttr(g) => Some(format!("{}.{}", path(&g.expr)?, g.name)),
            Expr::GetItem(g) => match &g.subscript_expr {
                Expr::Const(c) => Some(format!("{}[{:?}]", path(&g.expr)?, c.value)),
                _ => None,
            },
            _ => None,
        }
    }
    path(e).unwrap_or_else(|| "the value".into())
}

/// What a filter gives, from what it is given.
fn filter_shape(name: &str, input: Shape) -> Shape {
    match name {
        "length" | "count" | "int" | "float" | "round" | "abs" | "sum" => Shape::Num,
        "lower" | "upper" | "title" | "capitalize" | "replace" | "trim" | "join" | "string"
        | "tojson" | "urlencode" | "indent" | "format" | "pprint" | "stem" | "extension"
        | "regex_replace" | "escape" | "e" | "safe" => Shape::Str,
        "bool" => Shape::Bool,
        "first" | "last" | "min" | "max" => input.element(),
        "sort" | "reverse" | "unique" | "select" | "reject" | "selectattr" | "rejectattr" => {
            match input {
                Shape::List(_) => input,
                _ => Shape::Any,
            }
        }
        "list" => Shape::list(input.element()),
        "split" | "lines" => Shape::list(Shape::Str),
        "default" | "d" => input,
        _ => Shape::Any,
    }
}

/// minijinja's built-in filters and tests (for suggestions; whether one exists is asked of
/// the environment itself).
pub const KNOWN_FILTERS: &[&str] = &[
    "safe",
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "length",
    "count",
    "dictsort",
    "items",
    "reverse",
    "trim",
    "join",
    "split",
    "lines",
    "default",
    "d",
    "round",
    "abs",
    "int",
    "float",
    "attr",
    "first",
    "last",
    "min",
    "max",
    "sort",
    "list",
    "string",
    "bool",
    "batch",
    "slice",
    "sum",
    "indent",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "map",
    "groupby",
    "unique",
    "chain",
    "zip",
    "pprint",
    "format",
    "tojson",
    "urlencode",
];

/// minijinja's built-in tests, for suggestions.
pub const KNOWN_TESTS: &[&str] = &[
    "undefined",
    "defined",
    "none",
    "safe",
    "escaped",
    "boolean",
    "odd",
    "even",
    "divisibleby",
    "number",
    "integer",
    "int",
    "float",
    "string",
    "sequence",
    "iterable",
    "mapping",
    "startingwith",
    "endingwith",
    "lower",
    "upper",
    "sameas",
    "eq",
    "equalto",
    "ne",
    "lt",
    "lessthan",
    "le",
    "gt",
    "greaterthan",
    "ge",
    "in",
    "true",
    "false",
    "filter",
    "test",
];

#[cfg(test)]
mod tests {
    use super::*;

    struct TestEnv;
    impl Env for TestEnv {
        fn root(&self, name: &str) -> Option<Shape> {
            match name {
                "file" => Some(listed_file()),
                "record" => Some(csv_record(Some(&["AckStatus".to_string()]))),
                "run" => Some(run()),
                "steps" => Some(Shape::Obj(Obj {
                    what: "steps".into(),
                    fields: Arc::new(
                        [(
                            "list".to_string(),
                            Shape::obj(
                                "the output of step 'list'",
                                [("files", Shape::list(listed_file())), ("count", Shape::Num)],
                            ),
                        )]
                        .into_iter()
                        .collect(),
                    ),
                    strict: false,
                })),
                _ => None,
            }
        }
        fn has_filter(&self, name: &str) -> bool {
            KNOWN_FILTERS.contains(&name) || crate::template::FERRY_FILTERS.contains(&name)
        }
        fn has_test(&self, name: &str) -> bool {
            KNOWN_TESTS.contains(&name)
        }
        fn filter_names(&self) -> Vec<String> {
            KNOWN_FILTERS.iter().map(|s| s.to_string()).collect()
        }
        fn test_names(&self) -> Vec<String> {
            KNOWN_TESTS.iter().map(|s| s.to_string()).collect()
        }
        fn alias_columns(&self, function: &str) -> Option<(String, Vec<String>)> {
            (function == "status").then(|| {
                (
                    "StatusMap".to_string(),
                    vec!["OUT".to_string(), "IN".to_string()],
                )
            })
        }
        fn table_columns(&self, table: &str) -> Option<Vec<String>> {
            (table == "StatusMap").then(|| vec!["OUT".to_string(), "IN".to_string()])
        }
    }

    /// A column given as a literal is one of the lookup's columns, through an alias and
    /// through `lookup()`; a column that is not a literal is not checked.
    #[test]
    fn literal_lookup_columns_are_checked() {
        assert!(problems("{{ status(file.name, 'IN') }}{{ status('a', x) }}").is_empty());
        assert_eq!(
            problems("{{ status(file.name, 'INN') }}"),
            vec![(
                22,
                "lookup StatusMap has no column 'INN'".to_string(),
                Some("did you mean 'IN'?".to_string())
            )]
        );
        assert_eq!(
            problems("{{ lookup('StatusMap', 'k', 'zzzz') }}"),
            vec![(
                29,
                "lookup StatusMap has no column 'zzzz'".to_string(),
                Some("columns of StatusMap: OUT, IN".to_string())
            )]
        );
    }

    /// A literal regular expression is compiled by the checker, with the regex crate's reason.
    #[test]
    fn literal_regexes_are_compiled() {
        assert!(problems("{{ file.name | regex_replace('a(b)', 'x') }}").is_empty());
        let p = check_template("{{ file.name | regex_replace('([', 'x') }}", &TestEnv);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].offset, 30);
        assert_eq!(p[0].code, "invalid-regex");
        assert_eq!(
            p[0].message,
            "regex_replace: invalid regular expression '([': unclosed character class"
        );
        let (p, _) = check_expression("file.name | regex_capture('x{2,1}')", &TestEnv);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].offset, 27);
    }

    /// An attribute of a variable that is undefined where it is read is a problem.
    #[test]
    fn attributes_of_an_undefined_variable() {
        struct Success;
        impl Env for Success {
            fn root(&self, name: &str) -> Option<Shape> {
                (name == "error").then(|| Shape::Undefined("no step failed".into()))
            }
            fn has_filter(&self, _: &str) -> bool {
                true
            }
            fn has_test(&self, _: &str) -> bool {
                true
            }
            fn filter_names(&self) -> Vec<String> {
                Vec::new()
            }
            fn test_names(&self) -> Vec<String> {
                Vec::new()
            }
        }
        let p = check_template(
            "{% if error is defined %}{{ error.message }}{% endif %}{{ error['kind'] }}",
            &Success,
        );
        let got: Vec<_> = p.iter().map(|p| (p.offset, p.message.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (34, "`error` is undefined here: no step failed"),
                (65, "`error` is undefined here: no step failed")
            ]
        );
        assert!(check_template("{% if error %}x{% endif %}", &Success).is_empty());
    }

    fn problems(src: &str) -> Vec<(usize, String, Option<String>)> {
        check_template(src, &TestEnv)
            .into_iter()
            .map(|p| (p.offset, p.message, p.hint))
            .collect()
    }

    #[test]
    fn unknown_attribute_at_its_offset_with_suggestion() {
        assert_eq!(
            problems("x {{ file.nme }}"),
            vec![(
                10,
                "`file` has no attribute 'nme'".to_string(),
                Some("did you mean 'name'?".to_string())
            )]
        );
    }

    #[test]
    fn unknown_filter_and_test() {
        let p = check_template("{{ steps.list.files | lenght }}", &TestEnv);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].offset, 22);
        assert_eq!(p[0].code, "unknown-filter");
        assert_eq!(p[0].hint.as_deref(), Some("did you mean 'length'?"));
        let (p, shape) = check_expression("file is defind", &TestEnv);
        assert_eq!(p[0].offset, 8);
        assert_eq!(p[0].hint.as_deref(), Some("did you mean 'defined'?"));
        assert_eq!(shape, Shape::Bool);
    }

    #[test]
    fn step_outputs_loops_and_csv_columns() {
        let (p, _) = check_expression("steps.list.cont == 0", &TestEnv);
        assert_eq!(p[0].offset, 11);
        assert_eq!(p[0].message, "`steps.list` has no attribute 'cont'");
        assert_eq!(p[0].hint.as_deref(), Some("did you mean 'count'?"));
        // a loop over a listing types its variable
        assert!(problems("{% for f in steps.list.files %}{{ f.name }}{% endfor %}").is_empty());
        let p = problems("{% for f in steps.list.files %}{{ f.size.x }}{{ f.nam }}{% endfor %}");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, 50);
        // declared CSV columns are checked, by attribute and by item
        assert!(problems("{{ record.fields.AckStatus }}{{ record.number }}").is_empty());
        let p = problems("{{ record.fields.AckStatu }} {{ record.fields['Ack'] }}");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, 17);
        assert_eq!(p[0].2.as_deref(), Some("did you mean 'AckStatus'?"));
        assert_eq!(p[1].0, 47);
        // unknown steps and unknown roots are left to the compiler's other checks
        assert!(problems("{{ steps.nope.x }}{{ nope.x }}").is_empty());
    }

    #[test]
    fn filters_keep_shapes() {
        assert_eq!(
            expression_shape("steps.list.files | first", &TestEnv),
            listed_file()
        );
        let (p, _) = check_expression("(steps.list.files | first).nme", &TestEnv);
        assert_eq!(p.len(), 1);
        let (p, _) = check_expression("(steps.list.files | sort | last).name", &TestEnv);
        assert!(p.is_empty());
    }
}
