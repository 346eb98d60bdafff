//! `transform`: build a value from templates — a CSV record mapped to a JSON message, one
//! JSON document mapped to another — with lookups and domain value maps as functions.
//!
//! Output: the value built. Inside a `for_each` over CSV records it runs once per record,
//! so a file of any size is mapped record by record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use minijinja::Value as JValue;

use crate::compile::{FlowCx, ValueTpl};
use crate::run::{Exec, Scope, StepError, StepResult};

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
    /// Builds the value. When its expressions give strings, numbers, booleans or none (a
    /// record's fields), it is built from their template values, without a JSON copy of each
    /// and a conversion of the whole back into a template value.
    pub fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        if let Some(batch) = &self.batch
            && let Some(values) = ex.eval_batch_plain(&self.value, batch, scope)
            && let Some(v) = rebuild(&self.value, &mut values.into_iter())
        {
            return Ok(StepResult::Output(v));
        }
        ex.eval_value_batch(&self.value, self.batch.as_ref(), scope)
            .map(StepResult::Value)
    }
}

/// The template value of `v` whose templates' values are `values`, in the order of
/// [`ValueTpl::leaves`] (as [`ValueTpl::rebuild`] builds JSON); `None` when they run out.
fn rebuild(v: &ValueTpl, values: &mut impl Iterator<Item = JValue>) -> Option<JValue> {
    Some(match v {
        ValueTpl::Tpl(_) => values.next()?,
        ValueTpl::Array(items) => JValue::from(
            items
                .iter()
                .map(|x| rebuild(x, values))
                .collect::<Option<Vec<_>>>()?,
        ),
        ValueTpl::Object(fields) => {
            let mut m = Vec::with_capacity(fields.len());
            for (k, x) in fields {
                m.push((JValue::from(k.as_str()), rebuild(x, values)?));
            }
            JValue::from_iter(m)
        }
        ValueTpl::Plain(p) => JValue::from_serialize(p),
    })
}
