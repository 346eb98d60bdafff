//! `for_each`: run nested steps for each item of a list (files of a listing) or for each
//! record of a CSV file, in order, stopping at the first failure.
//!
//! CSV records are read one at a time from the spool file, so a file of any size streams.
//! Each record is `{number, fields}`: `number` is the 1-based data record number (the header
//! is not counted), `fields` maps header names to values. `start_at` skips the records
//! before a number (resume after a failure). Output: `{done, failed, pending, count,
//! skipped}`, also when the loop fails, so later steps can report what was and was not
//! processed. A failing iteration's error carries the item under the loop variable's name in
//! `error.items`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::model::RawStep;
use crate::run::{ErrorKind, Exec, Scope, StepError, StepResult};
use crate::steps::Block;
use crate::template::Tpl;

/// Configuration of a `for_each` step: `items` or `csv`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachStep {
    /// Expression giving the list to walk (e.g. `steps.list.files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// Walk the records of a CSV file instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSource>,
    /// The loop variable's name (default `item`).
    #[serde(rename = "as", default = "item")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub var: String,
    /// What a failing item does: `stop` the loop (default) or `continue` with the next.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The steps run for each item.
    pub steps: Vec<RawStep>,
}

fn item() -> String {
    "item".into()
}

/// A CSV file to walk.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSource {
    /// Template: the local path of the file (a `fetch` step's `path`, a trigger file part's
    /// `path`).
    pub file: String,
    /// Template: the first record number to process (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// Field delimiter (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
}

/// What a failing item does to the loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop the loop; the step fails.
    #[default]
    Stop,
    /// Record the failure and go on; the step fails at the end if any item failed.
    Continue,
}

/// A compiled `for_each` step.
#[derive(Debug)]
pub struct ForEachPlan {
    items: Option<String>,
    csv: Option<(Tpl, Option<Tpl>, u8)>,
    var: String,
    on_failure: OnFailure,
    /// The loop body.
    pub body: Block,
}

impl ForEachStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> ForEachPlan {
        let items = self
            .items
            .as_ref()
            .map(|s| cx.expression(&format!("{ptr}/items"), s));
        let csv = self.csv.as_ref().map(|c| {
            let delimiter = match c.delimiter {
                None => b',',
                Some(d) if d.is_ascii() => d as u8,
                Some(d) => {
                    cx.error_at(
                        &format!("{ptr}/csv/delimiter"),
                        "bad-value",
                        format!("delimiter '{d}' is not ASCII"),
                        None,
                    );
                    b','
                }
            };
            (
                cx.template(&format!("{ptr}/csv/file"), &c.file),
                cx.opt_template(&format!("{ptr}/csv/start_at"), c.start_at.as_deref()),
                delimiter,
            )
        });
        if items.is_some() == csv.is_some() {
            cx.error_at_key(
                ptr,
                "for-each-shape",
                "a for_each needs exactly one of `items` or `csv`",
            );
        }
        let body = cx.with_var(&self.var, |cx| {
            cx.block(&format!("{ptr}/steps"), &self.steps)
        });
        ForEachPlan {
            items,
            csv,
            var: self.var.clone(),
            on_failure: self.on_failure,
            body,
        }
    }
}

struct Progress {
    done: Vec<Value>,
    failed: Vec<Value>,
    first_error: Option<StepError>,
}

impl ForEachPlan {
    /// Loops.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        let mut p = Progress {
            done: Vec::new(),
            failed: Vec::new(),
            first_error: None,
        };
        let mut pending: Vec<Value> = Vec::new();
        let mut skipped = 0usize;
        let mut ended = None;
        if let Some(expr) = &self.items {
            let items = match ex.eval_expression(expr, scope)? {
                Value::Array(a) => a,
                Value::Null => Vec::new(),
                other => {
                    return Err(StepError::new(
                        ErrorKind::Config,
                        format!("`{expr}` should give a list, gave {}", kind_of(&other)),
                    ));
                }
            };
            let tick = ex.loop_progress(&self.var, Some(items.len() as u64));
            let mut iter = items.into_iter();
            for item in iter.by_ref() {
                let step = self.iteration(ex, scope, item, &mut p).await;
                tick.inc(1);
                match step {
                    Iter::Next => {}
                    Iter::Stop(rest_from) => {
                        pending.push(rest_from);
                        break;
                    }
                    Iter::End(o) => {
                        ended = Some(o);
                        break;
                    }
                }
            }
            pending.extend(iter);
        } else if let Some((file, start_at, delimiter)) = &self.csv {
            let path = ex.render(file, scope)?;
            let start = match start_at {
                Some(t) => match ex.eval(t, scope)? {
                    Value::Number(n) => n.as_u64().unwrap_or(1).max(1),
                    Value::String(s) if s.trim().is_empty() => 1,
                    Value::String(s) => s.trim().parse::<u64>().map_err(|_| {
                        StepError::new(
                            ErrorKind::Config,
                            format!("start_at '{s}' is not a record number"),
                        )
                    })?,
                    _ => 1,
                },
                None => 1,
            };
            let file = std::fs::File::open(&path).map_err(|e| {
                StepError::new(ErrorKind::Data, format!("cannot open CSV file {path}: {e}"))
            })?;
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(*delimiter)
                .flexible(false)
                .from_reader(std::io::BufReader::new(file));
            let headers = reader
                .headers()
                .map_err(|e| StepError::new(ErrorKind::Data, format!("CSV header of {path}: {e}")))?
                .clone();
            let tick = ex.loop_progress(&self.var, None);
            let mut record = csv::StringRecord::new();
            let mut number = 0u64;
            let mut stopped = false;
            loop {
                let more = reader.read_record(&mut record).map_err(|e| {
                    let mut err =
                        StepError::new(ErrorKind::Data, format!("CSV {path}: {}", csv_message(&e)));
                    err.items
                        .insert(self.var.clone(), json!({ "number": number + 1 }));
                    err
                });
                let more = match more {
                    Ok(m) => m,
                    Err(e) => {
                        p.first_error.get_or_insert(e);
                        break;
                    }
                };
                if !more {
                    break;
                }
                number += 1;
                if stopped {
                    pending.push(json!({ "number": number }));
                    continue;
                }
                if number < start {
                    skipped += 1;
                    continue;
                }
                let fields: serde_json::Map<String, Value> = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                    .collect();
                let item = json!({ "number": number, "fields": fields });
                let step = self.iteration(ex, scope, item, &mut p).await;
                tick.inc(1);
                match step {
                    Iter::Next => {}
                    Iter::Stop(_) => {
                        stopped = true;
                        pending.push(json!({ "number": number }));
                    }
                    Iter::End(o) => {
                        ended = Some(o);
                        break;
                    }
                }
            }
        }
        scope.vars.remove(&self.var);
        let output = json!({
            "count": p.done.len() + p.failed.len(),
            "done": p.done,
            "failed": p.failed,
            "pending": pending,
            "skipped": skipped,
        });
        if let Some(o) = ended {
            return Ok(StepResult::End(o));
        }
        match p.first_error {
            Some(mut e) => {
                e.output = Some(output);
                Err(e)
            }
            None => Ok(StepResult::Value(output)),
        }
    }

    async fn iteration(
        &self,
        ex: &Exec<'_>,
        scope: &mut Scope,
        item: Value,
        p: &mut Progress,
    ) -> Iter {
        scope.vars.insert(self.var.clone(), item.clone());
        match ex.run_block(&self.body, scope).await {
            Ok(StepResult::Value(_)) => {
                ex.progress_item();
                p.done.push(item);
                Iter::Next
            }
            Ok(StepResult::End(o)) => Iter::End(o),
            Err(mut e) => {
                e.items
                    .entry(self.var.clone())
                    .or_insert_with(|| item.clone());
                p.failed.push(item.clone());
                p.first_error.get_or_insert(e);
                match self.on_failure {
                    OnFailure::Stop => Iter::Stop(item),
                    OnFailure::Continue => Iter::Next,
                }
            }
        }
    }
}

enum Iter {
    Next,
    /// Stopped at this item (already recorded as failed; it is also pending).
    Stop(Value),
    End(crate::run::Outcome),
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {}: record has {len} fields, the header has {expected_len}",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        csv::ErrorKind::Utf8 { pos, .. } => {
            format!(
                "line {}: not valid UTF-8",
                pos.as_ref().map_or(0, |p| p.line())
            )
        }
        _ => e.to_string(),
    }
}
