//! Step kinds: one file each, one closed enum, one dispatch.
//!
//! The six kinds of the specification (`list`, `fetch`, `transform`, `invoke`, `rename`,
//! `notify`) do work; `for_each`, `route` and `end` compose them. Each file holds the kind's
//! raw config (serde + schemars), its `compile` (checks, collecting diagnostics into
//! [`FlowCx`]) and its `run`. Adding a kind is one file and one variant.

pub mod end;
pub mod fetch;
pub mod for_each;
pub mod invoke;
pub mod list;
pub mod notify;
pub mod rename;
pub mod retry;
pub mod route;
pub mod transform;

use serde_json::Value;

use crate::compile::FlowCx;
use crate::model::{RawStep, RunOn};
use crate::run::{Exec, Scope, StepError, StepResult};

/// A compiled step.
#[derive(Debug)]
pub struct StepPlan {
    /// The step's id.
    pub id: String,
    /// The JSON pointer of the step in its file (for messages).
    pub pointer: String,
    /// Condition expression.
    pub when: Option<String>,
    /// When it runs relative to failures.
    pub run_on: RunOn,
    /// What it does.
    pub kind: StepKind,
}

/// Compiled steps of one block, in execution order.
#[derive(Debug, Default)]
pub struct Block {
    /// The steps.
    pub steps: Vec<StepPlan>,
}

/// The closed set of step kinds.
#[derive(Debug)]
pub enum StepKind {
    /// List files.
    List(list::ListPlan),
    /// Fetch a file into the spool.
    Fetch(fetch::FetchPlan),
    /// Build a value.
    Transform(transform::TransformPlan),
    /// Call something.
    Invoke(invoke::InvokePlan),
    /// Rename a file.
    Rename(rename::RenamePlan),
    /// Send an email.
    Notify(notify::NotifyPlan),
    /// Loop.
    ForEach(for_each::ForEachPlan),
    /// Branch.
    Route(route::RoutePlan),
    /// End the flow.
    End(end::EndPlan),
}

/// The kind keys a step may carry, in the order they are reported.
pub const KIND_KEYS: &[&str] = &[
    "list",
    "fetch",
    "transform",
    "invoke",
    "rename",
    "notify",
    "for_each",
    "route",
    "end",
];

impl StepKind {
    /// Compiles the one kind `raw` carries (the caller checked there is exactly one).
    pub fn compile(raw: &RawStep, cx: &mut FlowCx<'_>, ptr: &str) -> Option<StepKind> {
        Some(if let Some(s) = &raw.list {
            StepKind::List(s.compile(cx, &format!("{ptr}/list")))
        } else if let Some(s) = &raw.fetch {
            StepKind::Fetch(s.compile(cx, &format!("{ptr}/fetch")))
        } else if let Some(s) = &raw.transform {
            StepKind::Transform(s.compile(cx, &format!("{ptr}/transform")))
        } else if let Some(s) = &raw.invoke {
            StepKind::Invoke(s.compile(cx, &format!("{ptr}/invoke")))
        } else if let Some(s) = &raw.rename {
            StepKind::Rename(s.compile(cx, &format!("{ptr}/rename")))
        } else if let Some(s) = &raw.notify {
            StepKind::Notify(s.compile(cx, &format!("{ptr}/notify")))
        } else if let Some(s) = &raw.for_each {
            StepKind::ForEach(s.compile(cx, &format!("{ptr}/for_each")))
        } else if let Some(s) = &raw.route {
            StepKind::Route(s.compile(cx, &format!("{ptr}/route")))
        } else if let Some(s) = &raw.end {
            StepKind::End(s.compile(cx, &format!("{ptr}/end")))
        } else {
            return None;
        })
    }

    /// Runs the step.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        match self {
            StepKind::List(s) => s.run(ex, scope).await.map(StepResult::Value),
            StepKind::Fetch(s) => s.run(ex, scope).await,
            StepKind::Transform(s) => s.run(ex, scope),
            StepKind::Invoke(s) => s.run(ex, scope).await,
            StepKind::Rename(s) => s.run(ex, scope).await.map(StepResult::Value),
            StepKind::Notify(s) => s.run(ex, scope).await.map(StepResult::Value),
            StepKind::ForEach(s) => s.run(ex, scope).await,
            StepKind::Route(s) => s.run(ex, scope).await,
            StepKind::End(s) => s.run(ex, scope),
        }
    }

    /// Nested blocks (for graph rendering).
    pub fn children(&self) -> Vec<(String, &Block)> {
        match self {
            StepKind::ForEach(s) => vec![("each".to_string(), &s.body)],
            StepKind::Route(s) => s.cases.iter().map(|(k, b)| (k.clone(), b)).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the step has a side effect a resumed run must not repeat once confirmed:
    /// a request, a put or a child flow call (`invoke`), a rename.
    pub fn confirmable(&self) -> bool {
        matches!(self, StepKind::Invoke(_) | StepKind::Rename(_))
    }

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::List(_) => "list",
            StepKind::Fetch(_) => "fetch",
            StepKind::Transform(_) => "transform",
            StepKind::Invoke(_) => "invoke",
            StepKind::Rename(_) => "rename",
            StepKind::Notify(_) => "notify",
            StepKind::ForEach(_) => "for_each",
            StepKind::Route(_) => "route",
            StepKind::End(_) => "end",
        }
    }
}

/// Takes a string field of a value, for outputs.
pub fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}
