//! `ferry test --coverage`: which steps, `when` branches, `route` cases and `run_on:
//! failure` steps no test reached.
//!
//! The engine opens a tracing span per step (`step`, with its `id`) inside a span naming
//! the flow (`run` or `child_flow`, with `flow`), and logs `condition false; skipped` when a
//! `when` is false. A run under test is polled with a subscriber of its own whose layer
//! records those, so the production executor needs no hook for tests.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::compile::FlowPlan;
use crate::steps::{Block, StepKind};

/// What runs reached: steps that ran and steps whose `when` was false, as (flow, step).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Steps that ran.
    pub ran: BTreeSet<(String, String)>,
    /// Steps skipped by a false `when`.
    pub skipped: BTreeSet<(String, String)>,
}

impl Seen {
    /// Adds another run's.
    pub fn merge(&mut self, other: &Seen) {
        self.ran.extend(other.ran.iter().cloned());
        self.skipped.extend(other.skipped.iter().cloned());
    }
}

/// Collects [`Seen`] from the spans of a run.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    seen: Arc<Mutex<Seen>>,
}

struct FlowField(String);
struct StepField(String, String);

#[derive(Default)]
struct Fields {
    id: Option<String>,
    flow: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        match field.name() {
            "id" => self.id = Some(v),
            "flow" => self.flow = Some(v),
            "message" => self.message = Some(v),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "id" => self.id = Some(value.to_string()),
            "flow" => self.flow = Some(value.to_string()),
            "message" => self.message = Some(value.to_string()),
            _ => {}
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collector {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        let Some(span) = ctx.span(id) else {
            return;
        };
        if let Some(flow) = f.flow {
            span.extensions_mut().insert(FlowField(flow));
        }
        if attrs.metadata().name() == "step"
            && let Some(step) = f.id
        {
            let flow = span
                .scope()
                .skip(1)
                .find_map(|s| s.extensions().get::<FlowField>().map(|f| f.0.clone()))
                .unwrap_or_default();
            span.extensions_mut()
                .insert(StepField(flow.clone(), step.clone()));
            if let Ok(mut seen) = self.seen.lock() {
                seen.ran.insert((flow, step));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if f.message.as_deref() != Some("condition false; skipped") {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        if let Some(StepField(flow, step)) = span.extensions().get::<StepField>()
            && let Ok(mut seen) = self.seen.lock()
        {
            let key = (flow.clone(), step.clone());
            seen.ran.remove(&key);
            seen.skipped.insert(key);
        }
    }
}

impl Collector {
    /// A subscriber that feeds this collector.
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync + 'static {
        tracing_subscriber::registry().with(self.clone())
    }

    /// What was seen.
    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// What no test reached in `flow`: one line per step, `when` branch, route case and
/// failure step.
pub fn gaps(flow: &FlowPlan, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    walk(&flow.id, &flow.steps, seen, "", &mut out);
    out
}

fn walk(flow: &str, block: &Block, seen: &Seen, indent: &str, out: &mut Vec<String>) {
    for step in &block.steps {
        let key = (flow.to_string(), step.id.clone());
        let ran = seen.ran.contains(&key);
        let skipped = seen.skipped.contains(&key);
        let failure = step.run_on == crate::model::RunOn::Failure;
        if !ran && !skipped {
            out.push(format!(
                "{indent}step '{}'{} never reached",
                step.id,
                if failure { " (run_on: failure)" } else { "" }
            ));
        } else if step.when.is_some() {
            if !ran {
                out.push(format!("{indent}step '{}': `when` never true", step.id));
            }
            if !skipped {
                out.push(format!("{indent}step '{}': `when` never false", step.id));
            }
        }
        if !ran {
            continue;
        }
        match &step.kind {
            StepKind::Route(r) => {
                for (case, b) in &r.cases {
                    let reached = b.steps.iter().any(|s| {
                        let k = (flow.to_string(), s.id.clone());
                        seen.ran.contains(&k) || seen.skipped.contains(&k)
                    });
                    if !reached {
                        out.push(format!(
                            "{indent}route '{}': case '{case}' never taken",
                            step.id
                        ));
                    }
                    walk(flow, b, seen, indent, out);
                }
            }
            StepKind::ForEach(f) => walk(flow, &f.body, seen, indent, out),
            _ => {}
        }
    }
}
