//! Type environments: the shapes of a flow's step outputs and loop variables, and the
//! typed root variables templates are checked against.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::lookups::{Lookup, Lookups};

use crate::model::RawStep;
use crate::template::Templates;
use crate::typecheck::{self, Shape};

/// The shapes of a flow's step outputs and of the variables its steps bring into scope
/// (keyed by step id and variable name), found before its templates are checked.
#[derive(Debug, Default)]
pub(super) struct Shapes {
    /// Shared with every `steps` a template reads (the map is not copied for each).
    pub(super) steps: Arc<BTreeMap<String, Shape>>,
    pub(super) vars: HashMap<(String, String), Shape>,
}

/// Walks a block in document order, recording each step's output shape and the shapes of
/// the loop variables (a `for_each` over `items` types its variable from the expression).
pub(super) fn collect_shapes(
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
                        aliases: None,
                        lookups: None,
                        no_error: None,
                        templates,
                        steps: &out.steps,
                        vars: vars.iter().map(|(n, s)| (n.as_str(), s)).collect(),
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
        Arc::make_mut(&mut out.steps).insert(raw.id.clone(), typecheck::step_shape(raw, items));
    }
}

/// The root variables of a template, typed, for [`typecheck`].
pub(super) struct TypeEnv<'a> {
    /// The flow's lookup aliases and the project's lookups (their columns are checked).
    pub(super) aliases: Option<&'a BTreeMap<String, Arc<Lookup>>>,
    pub(super) lookups: Option<&'a Lookups>,
    /// Why `error` is undefined here, when it is (no step can have failed).
    pub(super) no_error: Option<String>,
    pub(super) templates: &'a Templates,
    pub(super) steps: &'a Arc<BTreeMap<String, Shape>>,
    /// The loop variables in scope, innermost last.
    pub(super) vars: Vec<(&'a str, &'a Shape)>,
    pub(super) params: &'a Shape,
    pub(super) input: &'a Shape,
}

impl typecheck::Env for TypeEnv<'_> {
    fn root(&self, name: &str) -> Option<Shape> {
        if let Some((_, s)) = self.vars.iter().rev().find(|(v, _)| *v == name) {
            return Some((*s).clone());
        }
        match name {
            "steps" => Some(Shape::Obj(typecheck::Obj {
                what: "steps".into(),
                fields: self.steps.clone(),
                strict: false,
            })),
            "run" => Some(typecheck::run()),
            "error" => Some(match &self.no_error {
                Some(why) => Shape::Undefined(why.clone()),
                None => typecheck::error(),
            }),
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
    fn alias_columns(&self, function: &str) -> Option<(String, Vec<String>)> {
        let t = self.aliases?.get(function)?;
        Some((t.name.clone(), t.columns.clone()))
    }
    fn table_columns(&self, table: &str) -> Option<Vec<String>> {
        Some(self.lookups?.get(table)?.columns.clone())
    }
}
