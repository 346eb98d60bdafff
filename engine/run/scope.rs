//! The scope of a run: the variables its templates see.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use minijinja::Value as JValue;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::{Map, Value};

/// The variables templates see: `input`, `params`, `steps`, `run`, `error` and the loop
/// variables, held as template values.
///
/// Values are converted to template values once, when they are set, and shared (a template
/// value is reference-counted): the context a template renders in is built once per change of
/// the scope and cached, so the cost of a render does not depend on how much the scope holds
/// (a listing of 100,000 files costs nothing to a template that reads `file.name`). Cloning a
/// scope (one per item of a concurrent loop) clones references, not values: the maps of
/// variables and step outputs are shared until one of the scopes changes one of them, and the
/// context is a view over them, not a copy.
#[derive(Debug, Clone)]
pub struct Scope {
    pub(super) vars: Arc<BTreeMap<String, JValue>>,
    steps: Arc<BTreeMap<String, JValue>>,
    ctx: OnceLock<JValue>,
    /// Where this scope is in the run: the loop items it is inside, outermost first, as
    /// `(loop step id, item key)`. Keys of step confirmations and record checkpoints.
    pub(super) path: Vec<(String, String)>,
    /// The CSV record this scope is processing, if inside a record loop.
    pub(super) record: Option<u64>,
    /// That record's key, as its loop declares in `track:`.
    pub(super) record_key: Option<String>,
    /// Spool files fetched in this scope: a loop item removes them when it ends.
    spooled: Vec<PathBuf>,
    /// The step running in this scope.
    pub(super) step: String,
    /// How many loop items deep this scope is.
    loops: usize,
}

impl Scope {
    pub(super) fn new(input: Value, params: Map<String, Value>, run: &Value) -> Scope {
        let mut s = Scope {
            vars: Arc::default(),
            steps: Arc::default(),
            ctx: OnceLock::new(),
            path: Vec::new(),
            record: None,
            record_key: None,
            spooled: Vec::new(),
            step: String::new(),
            loops: 0,
        };
        s.set_var("input", &input);
        s.set_var("params", &Value::Object(params));
        s.set_var("run", run);
        // undefined where no step failed: `{% if error %}` and `error is defined` agree
        s.set_var_value("error", crate::template::no_error());
        s
    }

    /// The template context (built once per change).
    pub(super) fn ctx(&self) -> JValue {
        self.ctx
            .get_or_init(|| {
                JValue::from_object(Root {
                    vars: Arc::clone(&self.vars),
                    steps: JValue::from_dyn_object(Arc::clone(&self.steps)),
                })
            })
            .clone()
    }

    /// Forgets the cached context (which shares the maps), before a map changes.
    fn changed(&mut self) {
        self.ctx = OnceLock::new();
    }

    /// Sets a root variable.
    pub fn set_var(&mut self, name: &str, v: &Value) {
        self.set_var_value(name, JValue::from_serialize(v));
    }

    /// Sets a root variable to a template value.
    pub fn set_var_value(&mut self, name: &str, v: JValue) {
        self.changed();
        Arc::make_mut(&mut self.vars).insert(name.to_string(), v);
    }

    /// Removes a root variable.
    pub fn remove_var(&mut self, name: &str) {
        if self.vars.contains_key(name) {
            self.changed();
            Arc::make_mut(&mut self.vars).remove(name);
        }
    }

    /// Sets the output of step `id` (`steps.<id>`).
    pub fn set_output(&mut self, id: &str, v: &Value) {
        self.set_output_value(id, JValue::from_serialize(v));
    }

    /// Sets the output of step `id` to a template value.
    pub fn set_output_value(&mut self, id: &str, v: JValue) {
        self.changed();
        Arc::make_mut(&mut self.steps).insert(id.to_string(), v);
    }

    /// The output of step `id`, if it ran.
    pub fn output(&self, id: &str) -> Option<&JValue> {
        self.steps.get(id)
    }

    /// All step outputs, as JSON (a child flow's result).
    pub(super) fn steps_json(&self) -> Value {
        serde_json::to_value(&*self.steps).unwrap_or(Value::Null)
    }

    /// Enters an item of loop `step`, known by `key` (a file name, a record number).
    pub fn enter_item(&mut self, step: &str, key: String, record: Option<u64>) {
        self.path.push((step.to_string(), key));
        self.loops += 1;
        if record.is_some() {
            self.record = record;
        }
    }

    /// The key of step `id` at this place in the run: the loop items, then the step.
    pub fn key_of(&self, id: &str) -> String {
        let mut k = String::new();
        for (step, item) in &self.path {
            k.push_str(step);
            k.push('[');
            k.push_str(item);
            k.push_str("]/");
        }
        k.push_str(id);
        k
    }

    /// Takes the step outputs of `other`, a copy of this scope that ran a loop item.
    pub fn adopt_outputs(&mut self, other: &Scope) {
        self.changed();
        self.steps = Arc::clone(&other.steps);
    }

    /// The key of the innermost loop item this scope is in.
    pub fn item_key(&self) -> Option<&str> {
        self.path.last().map(|(_, k)| k.as_str())
    }

    /// Whether this scope is inside a loop item.
    pub fn in_loop(&self) -> bool {
        self.loops > 0
    }

    /// How many loop items deep this scope is.
    pub(super) fn loops(&self) -> usize {
        self.loops
    }

    /// Puts a child flow's scope as deep in loop items as its caller's.
    pub(super) fn set_loops(&mut self, loops: usize) {
        self.loops = loops;
    }

    /// The CSV record being processed, if any.
    pub fn record(&self) -> Option<u64> {
        self.record
    }

    /// The key of the record being processed, as its loop declares in `track:`.
    pub fn record_key(&self) -> Option<&str> {
        self.record_key.as_deref()
    }

    /// Sets the key of the record being processed.
    pub fn set_record_key(&mut self, key: Option<String>) {
        self.record_key = key;
    }

    /// The id of the step running in this scope.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// Notes a spool file fetched in this scope.
    pub fn spooled(&mut self, path: PathBuf) {
        self.spooled.push(path);
    }

    /// Removes the spool files fetched in this scope since it held `keep` of them.
    pub fn drop_spooled(&mut self, keep: usize) {
        self.drop_spooled_but(keep, |_| false);
    }

    /// [`Scope::drop_spooled`], but paths for which `no_file` holds are only forgotten (a
    /// held file never made a spool file).
    pub fn drop_spooled_but(&mut self, keep: usize, no_file: impl Fn(&std::path::Path) -> bool) {
        for p in self.spooled.drain(keep.min(self.spooled.len())..) {
            if no_file(&p) {
                continue;
            }
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a spool file");
            }
        }
    }

    /// The spool files fetched in this scope since it held `keep` of them.
    pub fn spooled_since(&self, keep: usize) -> &[PathBuf] {
        &self.spooled[keep.min(self.spooled.len())..]
    }

    /// How many spool files this scope holds.
    pub fn spooled_len(&self) -> usize {
        self.spooled.len()
    }
}

/// The template context of a [`Scope`]: its variables and `steps`, read where they are.
#[derive(Debug)]
struct Root {
    vars: Arc<BTreeMap<String, JValue>>,
    /// The step outputs, as a map over the scope's own.
    steps: JValue,
}

impl Object for Root {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let key = key.as_str()?;
        if key == "steps" {
            return Some(self.steps.clone());
        }
        self.vars.get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        // in order, `steps` among the variables (a variable of that name is hidden by it)
        let mut keys: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        if let Err(at) = keys.binary_search(&"steps") {
            keys.insert(at, "steps");
        }
        Enumerator::Values(keys.into_iter().map(JValue::from).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.vars.len() + usize::from(!self.vars.contains_key("steps")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, ctx: &JValue) -> String {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.render_str(source, ctx).unwrap()
    }

    /// The context reads the scope's maps where they are, as a map would, and a copy of a
    /// scope changes its own maps only.
    #[test]
    fn the_context_is_a_map_of_the_variables_and_steps_and_copies_stay_apart() {
        let run = serde_json::json!({"id": "r1"});
        let mut base = Scope::new(serde_json::json!({"m": 1}), Map::new(), &run);
        base.set_output("list", &serde_json::json!({"count": 2}));
        let ctx = base.ctx();
        assert_eq!(
            render(
                "{{ run.id }} {{ input.m }} {{ steps.list.count }} {{ steps | length }} \
                 {{ 'list' in steps }} {{ steps | tojson }} \
                 {% for k, v in steps | items %}{{ k }}={{ v.count }}{% endfor %} \
                 {% for k in steps %}{{ k }}{% endfor %}",
                &ctx
            ),
            r#"r1 1 2 1 True {"list":{"count":2}} list=2 list"#
        );
        // the whole context as JSON: every variable and `steps`, in order
        assert_eq!(
            serde_json::to_value(&ctx).unwrap(),
            serde_json::json!({
                "error": null,
                "input": {"m": 1},
                "params": {},
                "run": {"id": "r1"},
                "steps": {"list": {"count": 2}},
            })
        );

        let mut item = base.clone();
        item.set_var("file", &serde_json::json!({"name": "a.csv"}));
        item.set_output("put", &serde_json::json!({"size": 8}));
        assert_eq!(
            render(
                "{{ file.name }} {{ steps.put.size }} {{ steps.list.count }}",
                &item.ctx()
            ),
            "a.csv 8 2"
        );
        // the copy's changes are its own; the context taken before them is unchanged
        assert_eq!(
            render("{{ file is defined }} {{ steps | length }}", &base.ctx()),
            "False 1"
        );
        assert_eq!(render("{{ steps | length }}", &ctx), "1");
        // a loop item's outputs come back to the scope it was copied from
        base.adopt_outputs(&item);
        assert_eq!(render("{{ steps.put.size }}", &base.ctx()), "8");
        item.remove_var("file");
        assert_eq!(render("{{ file is defined }}", &item.ctx()), "False");
    }
}
