//! `route`: run the steps of the case an expression's value names — the transfer preference
//! choosing object storage or FTP, a routing lookup choosing a system instance.
//!
//! When `by` reads only lookups, `compile` evaluates it and reports a value no case
//! handles, so a bad preference is found before anything moves.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::model::RawStep;
use crate::run::{ErrorKind, Exec, Scope, StepError, StepResult};
use crate::steps::Block;

/// Configuration of a `route` step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteStep {
    /// Expression whose value (as a string) names the case.
    pub by: String,
    /// Steps per case value.
    pub cases: BTreeMap<String, Vec<RawStep>>,
}

/// A compiled `route` step.
#[derive(Debug)]
pub struct RoutePlan {
    by: String,
    /// Compiled cases.
    pub cases: BTreeMap<String, Block>,
}

impl RouteStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> RoutePlan {
        let by_ptr = format!("{ptr}/by");
        let by = cx.expression(&by_ptr, &self.by);
        if let Some(Value::String(v)) = cx.constant(&by)
            && !self.cases.contains_key(&v)
        {
            let cases: Vec<_> = self.cases.keys().map(String::as_str).collect();
            cx.error_at(
                &by_ptr,
                "unknown-route-value",
                format!("`{}` is '{v}', which no case handles", self.by.trim()),
                Some(match cx.lookup_origin(&by) {
                    Some(origin) => format!(
                        "expected one of: {}; the value is set at {origin}",
                        cases.join(", ")
                    ),
                    None => format!("expected one of: {}", cases.join(", ")),
                }),
            );
        }
        let mut cases = BTreeMap::new();
        for (name, steps) in &self.cases {
            let case_ptr = format!("{ptr}/cases/{}", crate::yaml::escape_segment(name));
            cases.insert(name.clone(), cx.block(&case_ptr, steps));
        }
        RoutePlan { by, cases }
    }
}

impl RoutePlan {
    /// Routes.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        let value = match ex.eval_expression(&self.by, scope)? {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let Some(block) = self.cases.get(&value) else {
            let known: Vec<_> = self.cases.keys().map(String::as_str).collect();
            return Err(StepError::new(
                ErrorKind::Config,
                format!(
                    "route value '{value}' matches no case (cases: {})",
                    known.join(", ")
                ),
            ));
        };
        match ex.run_block(block, scope).await? {
            StepResult::End(o) => Ok(StepResult::End(o)),
            StepResult::Skip => Ok(StepResult::Skip),
            StepResult::Value(_) | StepResult::Output(_) => {
                Ok(StepResult::Value(json!({ "case": value })))
            }
        }
    }
}
