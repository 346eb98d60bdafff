//! Compiling one flow: its steps in order, its `track:` values and its triggers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::connectors::ConnectionSpec;
use crate::diag::{Diagnostic, did_you_mean};
use crate::lookups::Lookups;
use crate::model::RawFlow;
use crate::template::{BUILTIN_FUNCTIONS, Templates, Tpl};
use crate::typecheck::{self, Shape};
use crate::yaml::SourceDoc;

use super::FlowPlan;
use super::context::FlowCx;
use super::types::{Shapes, collect_shapes};

pub(super) struct Index<'a> {
    pub(super) broken_lookups: BTreeSet<String>,
    /// Flows called as another flow's `on_error` handler: `error` is defined in their steps.
    pub(super) handlers: BTreeSet<String>,
    pub(super) connections: Option<&'a BTreeMap<String, ConnectionSpec>>,
    pub(super) lookups: Arc<Lookups>,
    pub(super) flows: BTreeMap<String, BTreeMap<String, crate::model::Param>>,
    /// Whether the plans compiled are kept to run (else only their diagnostics are).
    pub(super) for_runs: bool,
}

pub(super) fn compile_flow(
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
    if !index.for_runs {
        templates.check_only();
    }
    let params_shape = Shape::Obj(typecheck::Obj {
        what: "params (the flow's `params`)".into(),
        fields: Arc::new(raw.params.keys().map(|k| (k.clone(), Shape::Any)).collect()),
        strict: true,
    });
    let input_shape = Shape::Obj(typecheck::Obj {
        what: "input (the trigger's parts)".into(),
        fields: Arc::new(
            raw.trigger
                .rest
                .iter()
                .flat_map(|r| r.parts.iter())
                .map(|(k, p)| {
                    let shape = match p.kind {
                        crate::model::PartKind::File => {
                            typecheck::spooled_file("a trigger file part")
                        }
                        _ => Shape::Any,
                    };
                    (k.clone(), shape)
                })
                .collect(),
        ),
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
        source: doc.clone(),
        after_failure: usize::from(index.handlers.contains(&raw.id)),
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
        // evaluated when the run failed: `error` is defined
        cx.after_failure += 1;
        (
            call.flow.clone(),
            cx.value("/on_error/with", &Value::Object(call.with.clone())),
        )
    });
    cx.check_refs();
    let schedule = compile_trigger(raw, doc, diags);
    // checked: what the flow holds at rest is its templates' sources
    templates.release();
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
    use crate::schedule::ScheduleError;
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
    match crate::schedule::shared(&sched.cron, sched.timezone.as_deref()) {
        Ok(s) => Some(s),
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
pub(super) fn check_trigger_paths(raws: &[(RawFlow, Arc<SourceDoc>)], diags: &mut Vec<Diagnostic>) {
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
