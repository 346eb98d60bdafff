//! `transform`: build a value from templates — a CSV record mapped to a JSON message, one
//! JSON document mapped to another — with lookups and domain value maps as functions.
//!
//! Output: the value built. Inside a `for_each` over CSV records it runs once per record,
//! so a file of any size is mapped record by record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compile::{FlowCx, ValueTpl};
use crate::run::{Exec, Scope, StepError};

/// Configuration of a `transform` step: `fields` or `value`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformStep {
    /// A field map: output field → template (nested maps and lists allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
    /// Any value whose strings are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A compiled `transform` step.
#[derive(Debug)]
pub struct TransformPlan {
    value: ValueTpl,
    /// Its expressions, evaluated in one pass (a record's fields: one render, not one each).
    batch: Option<crate::template::Batch>,
}

impl TransformStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> TransformPlan {
        let value = match (&self.fields, &self.value) {
            (Some(f), None) => cx.value(&format!("{ptr}/fields"), &Value::Object(f.clone())),
            (None, Some(v)) => cx.value(&format!("{ptr}/value"), v),
            _ => {
                cx.error_at_key(
                    ptr,
                    "transform-shape",
                    "a transform needs exactly one of `fields` or `value`",
                );
                ValueTpl::Plain(Value::Null)
            }
        };
        let batch = cx.batch(&value);
        TransformPlan { value, batch }
    }
}

impl TransformPlan {
    /// Builds the value.
    pub fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<Value, StepError> {
        ex.eval_value_batch(&self.value, self.batch.as_ref(), scope)
    }
}
