//! `for_each`: run nested steps for each item of a list (files of a listing) or for each
//! record of a CSV file, stopping at the first failure.
//!
//! CSV records are read one at a time from the spool file, so a file of any size streams.
//! Each record is `{number, fields}`: `number` is the 1-based data record number (the header
//! is not counted), `fields` maps header names to values. `start_at` skips the records
//! before a number (resume after a failure).
//!
//! `concurrency: N` (default 1) runs up to N items at once, started in order, each in its
//! own copy of the scope. A list item waiting for a confirmation or a disk sync leaves its
//! slot to the next item (see [`crate::slot`]): up to [`slot::held`] list items are in
//! flight, at most N at work. "Stop at the first failure" then means: start no new item,
//! let those in flight finish, and fail with the lowest-numbered failure (for records: the file
//! is marked at the lowest failed record, and records after it that were accepted are sent
//! again by the next run). After the loop, the outputs of the item that decided it (the
//! lowest failed one, else the last one) are visible to later steps.
//!
//! Output: `{done, failed, pending, count, skipped}`, also when the loop fails, so later
//! steps can report what was and was not processed. For a list, `done`, `failed` and
//! `pending` hold the items; for CSV records they hold `{number}` and `done` and `pending`
//! are compact ranges, so a loop's memory does not grow with the records it processed.
//! `skipped` counts the records before `start_at`, or the items whose file was gone. A
//! failing iteration's error carries the item under the loop variable's name in
//! `error.items`.
//!
//! A record loop checkpoints as it goes (see [`crate::run::Checkpoint`]): a run resuming an
//! interrupted one starts after the last record that run confirmed. Each item's fetched
//! spool files are removed as soon as the item ends.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use minijinja::Value as JValue;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::model::RawStep;
use crate::run::{Checkpoint, ErrorKind, Exec, Scope, StepError, StepResult};
use crate::slot;
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
    /// How many items are at work at once (default 1, one after the other; at most 256). A
    /// list item waiting for a confirmation in the run history, or for a disk sync, leaves
    /// its place to the next item.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: u32,
    /// A key each item is found by when one of its requests fails or is tolerated
    /// (`ferry runs --search`): a template over the loop variable, e.g.
    /// `"{{ record.fields.ACCOUNT_ID }}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// The steps run for each item.
    pub steps: Vec<RawStep>,
}

fn item() -> String {
    "item".into()
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The most items a loop runs at once.
pub const MAX_CONCURRENCY: u32 = 256;

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
    /// The header the file must have, in order. Templates may then read only these
    /// `record.fields`, and a file whose header differs fails before any record is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Accept an empty file (no header, no record) as a loop over nothing; by default an
    /// empty file is a data error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
    /// The largest record, in KiB (default 1024): a longer one is a data error naming its
    /// line, found while it is read (memory stays within about this much per loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_record_kib: Option<u32>,
    /// Accept NUL bytes in fields; by default a field holding one is a data error (most
    /// targets cut or refuse it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_nul: bool,
}

/// The largest CSV record by default, in KiB.
pub const DEFAULT_MAX_RECORD_KIB: u32 = 1024;

/// What the CSV reader reads ahead of the record it parses (its buffer): a record is
/// refused once the bytes read since its start pass its limit plus this.
const CSV_BUFFER: usize = 64 * 1024;

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
    /// The declared header, and whether an empty file is accepted.
    header: (Option<Vec<String>>, bool),
    /// The largest record in bytes, and whether NUL bytes are accepted.
    record_limits: (u64, bool),
    var: String,
    on_failure: OnFailure,
    concurrency: usize,
    /// The key of an item (`track`).
    track: Option<Tpl>,
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
            if let Some(cols) = &c.columns {
                if cols.is_empty() {
                    cx.error_at(
                        &format!("{ptr}/csv/columns"),
                        "bad-value",
                        "`columns` lists the header's column names; it is empty",
                        None,
                    );
                }
                for (i, col) in cols.iter().enumerate() {
                    if cols[..i].contains(col) {
                        cx.error_at(
                            &format!("{ptr}/csv/columns/{i}"),
                            "bad-value",
                            format!("column '{col}' is listed twice"),
                            None,
                        );
                    }
                }
            }
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
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            cx.error_at(
                &format!("{ptr}/concurrency"),
                "bad-value",
                format!(
                    "concurrency {} is out of range (1 to {MAX_CONCURRENCY})",
                    self.concurrency
                ),
                None,
            );
        }
        let track = cx.with_var(&self.var, |cx| {
            cx.opt_template(&format!("{ptr}/track"), self.track.as_deref())
        });
        let body = cx.with_var(&self.var, |cx| {
            cx.block(&format!("{ptr}/steps"), &self.steps)
        });
        self.warn_above_connections(cx, ptr);
        ForEachPlan {
            items,
            csv,
            header: self
                .csv
                .as_ref()
                .map(|c| (c.columns.clone(), c.allow_empty))
                .unwrap_or_default(),
            record_limits: self.csv.as_ref().map_or(
                (u64::from(DEFAULT_MAX_RECORD_KIB) * 1024, false),
                |c| {
                    (
                        u64::from(c.max_record_kib.unwrap_or(DEFAULT_MAX_RECORD_KIB).max(1)) * 1024,
                        c.allow_nul,
                    )
                },
            ),
            var: self.var.clone(),
            on_failure: self.on_failure,
            concurrency: self.concurrency.clamp(1, MAX_CONCURRENCY) as usize,
            track,
            body,
        }
    }
}

impl ForEachStep {
    /// Warns when `concurrency` is above the `max_concurrency` of a REST connection the loop
    /// calls: the connection lets no more requests out at once, so the raise changes nothing.
    fn warn_above_connections(&self, cx: &mut FlowCx<'_>, ptr: &str) {
        fn requests<'s>(steps: &'s [RawStep], out: &mut BTreeSet<&'s str>) {
            for s in steps {
                if let Some(r) = s.invoke.as_ref().and_then(|i| i.request.as_ref()) {
                    out.insert(&r.connection);
                }
                if let Some(f) = &s.for_each {
                    requests(&f.steps, out);
                }
                for case in s.route.iter().flat_map(|r| r.cases.values()) {
                    requests(case, out);
                }
            }
        }
        let mut names = BTreeSet::new();
        requests(&self.steps, &mut names);
        let wanted = self.concurrency as usize;
        for name in names {
            cx.warn_on_connection(
                &format!("{ptr}/concurrency"),
                "concurrency-above-connection",
                name,
                |spec| {
                    let crate::connectors::ConnectionSpec::Http(http) = spec else {
                        return None;
                    };
                    let max = http
                        .max_concurrency
                        .unwrap_or(crate::connectors::http::DEFAULT_MAX_CONCURRENCY);
                    (wanted > max).then(|| {
                        (
                            format!(
                                "concurrency {wanted} is above the max_concurrency {max} of connection '{name}': at most {max} of its requests run at once"
                            ),
                            format!(
                                "raise max_concurrency of '{name}' in the connections file, or set concurrency to {max}"
                            ),
                        )
                    })
                },
            );
        }
    }
}

/// One item of a loop, about to run.
struct Next {
    seq: u64,
    key: String,
    record: Option<u64>,
    item: JValue,
}

/// One item of a loop, finished.
struct Finished {
    seq: u64,
    record: Option<u64>,
    item: JValue,
    result: Result<StepResult, StepError>,
    scope: Scope,
}

type ItemFuture<'f> = Pin<Box<dyn Future<Output = Finished> + Send + 'f>>;

/// What the items of one loop came to.
#[derive(Default)]
struct Tally {
    /// Items done, by position (list loops).
    done: Vec<(u64, JValue)>,
    /// Records done (record loops).
    done_records: Ranges,
    /// Items failed, by position.
    failed: Vec<(u64, JValue)>,
    /// The lowest failure.
    first_error: Option<(u64, StepError)>,
    /// Items whose file was gone.
    skipped: u64,
    /// An `end` step's outcome, from the lowest item that ended.
    ended: Option<(u64, crate::run::Outcome)>,
    /// The item whose outputs later steps see: (position, failed, its scope).
    decider: Option<(u64, bool, Scope)>,
    /// No new item starts.
    stop: bool,
}

impl Tally {
    fn decide(&mut self, seq: u64, failed: bool, scope: Scope) {
        let better = match &self.decider {
            None => true,
            Some((s, f, _)) => match (failed, *f) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => seq < *s,
                (false, false) => seq > *s,
            },
        };
        if better {
            self.decider = Some((seq, failed, scope));
        }
    }
}

impl ForEachPlan {
    /// Loops.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<StepResult, StepError> {
        let loop_id = scope.step().to_string();
        let (tally, output) = if let Some(expr) = &self.items {
            let items = match ex.eval_expression_value(expr, scope) {
                Ok(v) => v,
                Err(e) => return Err(e),
            };
            let list: Vec<JValue> = if items.is_none() {
                Vec::new()
            } else if matches!(
                items.kind(),
                minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Iterable
            ) {
                items
                    .try_iter()
                    .map_err(|e| StepError::new(ErrorKind::Config, e.to_string()))?
                    .collect()
            } else {
                return Err(StepError::new(
                    ErrorKind::Config,
                    format!("`{expr}` should give a list, gave {}", items.kind()),
                ));
            };
            self.run_items(ex, scope, &loop_id, list).await
        } else if let Some(csv) = &self.csv {
            self.run_records(ex, scope, &loop_id, csv).await?
        } else {
            return Err(StepError::new(ErrorKind::Config, "invalid for_each step"));
        };
        let Tally {
            first_error,
            ended,
            decider,
            ..
        } = tally;
        if let Some((_, _, item_scope)) = decider {
            scope.adopt_outputs(&item_scope);
        }
        if let Some((_, o)) = ended {
            return Ok(StepResult::End(o));
        }
        match first_error {
            Some((_, mut e)) => {
                e.output = Some(output);
                Err(e)
            }
            None => Ok(StepResult::Output(output)),
        }
    }

    /// Starts one item in its own copy of the scope.
    fn start<'f>(
        &'f self,
        ex: &'f Exec<'_>,
        base: &Scope,
        loop_id: &str,
        n: Next,
    ) -> ItemFuture<'f> {
        let mut s = base.clone();
        let keep = s.spooled_len();
        s.set_var_value(&self.var, n.item.clone());
        s.enter_item(loop_id, n.key, n.record);
        if let Some(track) = &self.track {
            // a key that does not evaluate leaves the item without one: it never fails it
            s.set_record_key(ex.render(track, &s).ok().filter(|k| !k.is_empty()));
        }
        Box::pin(async move {
            let result = ex.run_block(&self.body, &mut s).await;
            ex.drop_spooled(&mut s, keep);
            Finished {
                seq: n.seq,
                record: n.record,
                item: n.item,
                result,
                scope: s,
            }
        })
    }

    /// Records how one item ended.
    fn settle(&self, ex: &Exec<'_>, t: &mut Tally, f: Finished) {
        match f.result {
            Ok(StepResult::Value(_) | StepResult::Output(_)) => {
                ex.progress_item();
                match f.record {
                    Some(n) => t.done_records.insert(n),
                    None => t.done.push((f.seq, f.item)),
                }
                t.decide(f.seq, false, f.scope);
            }
            Ok(StepResult::Skip) => t.skipped += 1,
            Ok(StepResult::End(o)) => {
                if t.ended.as_ref().is_none_or(|(s, _)| f.seq < *s) {
                    t.ended = Some((f.seq, o));
                }
                t.stop = true;
                t.decide(f.seq, false, f.scope);
            }
            Err(mut e) => {
                let item_json = serde_json::to_value(&f.item).unwrap_or(Value::Null);
                e.items.entry(self.var.clone()).or_insert(item_json);
                let failed_item = match f.record {
                    Some(n) => record_value(n),
                    None => f.item,
                };
                t.failed.push((f.seq, failed_item));
                if t.first_error.as_ref().is_none_or(|(s, _)| f.seq < *s) {
                    t.first_error = Some((f.seq, e));
                }
                if self.on_failure == OnFailure::Stop {
                    t.stop = true;
                }
                t.decide(f.seq, true, f.scope);
            }
        }
    }

    async fn run_items(
        &self,
        ex: &Exec<'_>,
        scope: &Scope,
        loop_id: &str,
        list: Vec<JValue>,
    ) -> (Tally, JValue) {
        let window = if ex.sequential() { 1 } else { self.concurrency };
        // `window` items at work; more wait for their confirmations (see [`slot`])
        let slots = slot::Slots::new(window);
        let held = slot::held(window);
        let tick = ex.loop_progress(&self.var, Some(list.len() as u64));
        let mut t = Tally::default();
        let mut source = list.into_iter().enumerate().peekable();
        let mut inflight = FuturesUnordered::new();
        let mut unstarted = Vec::new();
        loop {
            let finished = if !t.stop && inflight.len() < held && source.peek().is_some() {
                // the next item starts in the first slot free, unless an item ends first
                tokio::select! {
                    biased;
                    Some(f) = inflight.next(), if !inflight.is_empty() => Some(f),
                    free = slots.free() => {
                        if let Some((i, item)) = source.next() {
                            let key = item
                                .get_attr("name")
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_else(|| i.to_string());
                            let n = Next {
                                seq: i as u64,
                                key,
                                record: None,
                                item,
                            };
                            inflight.push(Box::pin(slots.run(free, self.start(ex, scope, loop_id, n))));
                        }
                        None
                    }
                }
            } else {
                match inflight.next().await {
                    Some(f) => Some(f),
                    None => break,
                }
            };
            if let Some(f) = finished {
                self.settle(ex, &mut t, f);
                tick.inc(1);
                ex.pace().await;
            }
        }
        unstarted.extend(source.map(|(_, v)| v));
        t.done.sort_by_key(|(s, _)| *s);
        t.failed.sort_by_key(|(s, _)| *s);
        let mut pending: Vec<JValue> = Vec::new();
        if self.on_failure == OnFailure::Stop {
            pending.extend(t.failed.iter().map(|(_, v)| v.clone()));
        }
        pending.extend(unstarted);
        let done: Vec<JValue> = t.done.iter().map(|(_, v)| v.clone()).collect();
        let failed: Vec<JValue> = t.failed.iter().map(|(_, v)| v.clone()).collect();
        let output = loop_output(
            done.len() as u64 + failed.len() as u64,
            JValue::from(done),
            JValue::from(failed),
            JValue::from(pending),
            t.skipped,
        );
        (t, output)
    }

    async fn run_records(
        &self,
        ex: &Exec<'_>,
        scope: &Scope,
        loop_id: &str,
        (file, start_at, delimiter): &(Tpl, Option<Tpl>, u8),
    ) -> Result<(Tally, JValue), StepError> {
        let path = ex.render(file, scope)?;
        let mut start = match start_at {
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
        let key = scope.key_of(loop_id);
        if let Some(through) = ex.resumed_through(&key)
            && through + 1 > start
        {
            tracing::info!(key = %key, through, "resuming after the records the interrupted run confirmed");
            start = through + 1;
        }
        let label = scope.item_key().map_or_else(
            || {
                std::path::Path::new(&path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            },
            str::to_string,
        );
        super::fetch::materialize(ex, std::path::Path::new(&path)).await?;
        let file = std::fs::File::open(&path).map_err(|e| {
            StepError::new(ErrorKind::Data, format!("cannot open CSV file {path}: {e}"))
        })?;
        let (max_record, allow_nul) = self.record_limits;
        let bounded = BoundedRecords::new(file, max_record);
        let record_start = bounded.record_start.clone();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(*delimiter)
            .flexible(false)
            .buffer_capacity(CSV_BUFFER)
            .from_reader(bounded);
        let headers = reader
            .headers()
            .map_err(|e| {
                StepError::new(
                    ErrorKind::Data,
                    format!("CSV header of {path}: {}", csv_message(&e, max_record, 1)),
                )
            })?
            .clone();
        check_header(&path, &headers, &self.header)?;
        let names: Vec<Arc<str>> = headers.iter().map(Arc::from).collect();
        let window = if ex.sequential() { 1 } else { self.concurrency };
        let tick = ex.loop_progress(&self.var, None);
        let mut t = Tally::default();
        let mut pending = Ranges::default();
        let mut record = csv::StringRecord::new();
        let mut number = 0u64;
        let mut read_error: Option<StepError> = None;
        let mut inflight = FuturesUnordered::new();
        let mut confirmed = start - 1;
        let mut above: BTreeSet<u64> = BTreeSet::new();
        let mut done_count = 0u64;
        let mut skipped_before = 0u64;
        loop {
            while !t.stop && read_error.is_none() && inflight.len() < window {
                let at = reader.position().clone();
                record_start.store(at.byte(), std::sync::atomic::Ordering::Relaxed);
                let problem = match reader.read_record(&mut record) {
                    Ok(true) => {
                        record_problem(&record, &at, reader.position(), max_record, allow_nul)
                    }
                    Ok(false) => break,
                    Err(e) => Some(csv_message(&e, max_record, at.line())),
                };
                if let Some(problem) = problem {
                    let mut err = StepError::new(ErrorKind::Data, format!("CSV {path}: {problem}"));
                    err.items
                        .insert(self.var.clone(), json!({ "number": number + 1 }));
                    read_error = Some(err);
                    break;
                }
                number += 1;
                if number < start {
                    skipped_before += 1;
                    continue;
                }
                let fields: Vec<(JValue, JValue)> = names
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (JValue::from(h.clone()), JValue::from(v)))
                    .collect();
                let item = JValue::from_iter([
                    ("number", JValue::from(number)),
                    ("fields", JValue::from_iter(fields)),
                ]);
                let n = Next {
                    seq: number,
                    key: number.to_string(),
                    record: Some(number),
                    item,
                };
                let record = self.start(ex, scope, loop_id, n);
                // records at once share their item's slot: their waits keep it
                let record: ItemFuture<'_> = if window > 1 {
                    Box::pin(slot::apart(record))
                } else {
                    record
                };
                inflight.push(record);
            }
            let Some(f) = inflight.next().await else {
                break;
            };
            let n = f.seq;
            let ok = matches!(f.result, Ok(StepResult::Value(_) | StepResult::Output(_)));
            self.settle(ex, &mut t, f);
            tick.inc(1);
            if ok {
                done_count += 1;
                above.insert(n);
                while above.remove(&(confirmed + 1)) {
                    confirmed += 1;
                }
                ex.checkpoint(
                    Checkpoint {
                        key: key.clone(),
                        label: label.clone(),
                        first: start,
                        through: confirmed,
                        done: done_count,
                    },
                    1,
                );
            }
            ex.pace().await;
        }
        // what was not started: the rest of the file, counted (it streams; nothing is kept)
        let first_unstarted = number + 1;
        if t.stop || read_error.is_some() {
            if read_error.is_none() {
                loop {
                    record_start.store(
                        reader.position().byte(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    match reader.read_record(&mut record) {
                        Ok(true) => number += 1,
                        Ok(false) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "CSV error after the loop stopped");
                            break;
                        }
                    }
                }
            }
            if number >= first_unstarted {
                pending.insert_range(first_unstarted, number);
            }
        }
        // a malformed record fails the loop unless a record before it failed already
        if let Some(e) = read_error
            && t.first_error.is_none()
        {
            t.first_error = Some((u64::MAX, e));
        }
        t.failed.sort_by_key(|(s, _)| *s);
        if self.on_failure == OnFailure::Stop {
            for (s, _) in &t.failed {
                pending.insert(*s);
            }
        }
        t.skipped += skipped_before;
        ex.checkpoint(
            Checkpoint {
                key,
                label,
                first: start,
                through: confirmed,
                done: done_count,
            },
            0,
        );
        ex.flush().await;
        let failed: Vec<JValue> = t.failed.iter().map(|(_, v)| v.clone()).collect();
        let output = loop_output(
            done_count + failed.len() as u64,
            JValue::from_object(std::mem::take(&mut t.done_records)),
            JValue::from(failed),
            JValue::from_object(pending),
            t.skipped,
        );
        Ok((t, output))
    }
}

fn loop_output(count: u64, done: JValue, failed: JValue, pending: JValue, skipped: u64) -> JValue {
    JValue::from_iter([
        ("count", JValue::from(count)),
        ("done", done),
        ("failed", failed),
        ("pending", pending),
        ("skipped", JValue::from(skipped)),
    ])
}

fn record_value(n: u64) -> JValue {
    JValue::from_iter([("number", JValue::from(n))])
}

/// Record numbers as sorted, disjoint, non-adjacent ranges: a sequence of `{number}` to
/// templates (`| length`, `for`), whose memory grows with the gaps, not the records.
#[derive(Debug, Default, Clone)]
pub struct Ranges {
    ranges: Vec<(u64, u64)>,
    len: u64,
}

impl Ranges {
    /// Adds one number.
    pub fn insert(&mut self, n: u64) {
        self.insert_range(n, n);
    }

    /// Adds `from..=to`.
    pub fn insert_range(&mut self, from: u64, to: u64) {
        if from > to {
            return;
        }
        // the common case: appending after the last range
        if let Some(last) = self.ranges.last_mut() {
            if from > last.1 + 1 {
                self.ranges.push((from, to));
                self.len += to - from + 1;
                return;
            }
            if from == last.1 + 1 {
                last.1 = to;
                self.len += to - from + 1;
                return;
            }
        } else {
            self.ranges.push((from, to));
            self.len = to - from + 1;
            return;
        }
        // out of order (concurrent items): merge
        let mut all = std::mem::take(&mut self.ranges);
        all.push((from, to));
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.len = merged.iter().map(|(a, b)| b - a + 1).sum();
        self.ranges = merged;
    }

    /// How many numbers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The number at position `i`.
    fn nth(&self, mut i: u64) -> Option<u64> {
        for (a, b) in &self.ranges {
            let n = b - a + 1;
            if i < n {
                return Some(a + i);
            }
            i -= n;
        }
        None
    }
}

impl Object for Ranges {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let i = key.as_usize()?;
        self.nth(i as u64).map(record_value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(usize::try_from(self.len).unwrap_or(usize::MAX))
    }
}

/// Checks a CSV file's header against the declared `columns` (and refuses an empty file
/// unless `allow_empty`), naming the file and line 1, before any record is sent.
fn check_header(
    path: &str,
    headers: &csv::StringRecord,
    (columns, allow_empty): &(Option<Vec<String>>, bool),
) -> Result<(), StepError> {
    let empty = headers.iter().all(|h| h.trim().is_empty());
    if empty {
        if *allow_empty {
            return Ok(());
        }
        return Err(StepError::new(
            ErrorKind::Data,
            format!(
                "CSV {path}: line 1: the file is empty (no header); `allow_empty: true` accepts an empty file"
            ),
        ));
    }
    if let Some(cols) = columns
        && !headers.iter().eq(cols.iter().map(String::as_str))
    {
        let mut got = headers.iter().collect::<Vec<_>>().join(",");
        if got.chars().count() > 200 {
            got = got.chars().take(200).collect::<String>() + "…";
        }
        return Err(StepError::new(
            ErrorKind::Data,
            format!(
                "CSV {path}: line 1: the header is '{got}', expected '{}'",
                cols.join(",")
            ),
        ));
    }
    Ok(())
}

/// A file read for a CSV loop that fails once the bytes read since the start of the record
/// being parsed (`record_start`, set before each record) pass `limit` plus the reader's
/// buffer: a record without end costs no more memory than that.
struct BoundedRecords<R> {
    inner: R,
    read: u64,
    limit: u64,
    record_start: Arc<std::sync::atomic::AtomicU64>,
}

impl<R> BoundedRecords<R> {
    fn new(inner: R, limit: u64) -> BoundedRecords<R> {
        BoundedRecords {
            inner,
            read: 0,
            limit,
            record_start: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

/// The error a [`BoundedRecords`] reader fails with.
#[derive(Debug, thiserror::Error)]
#[error("a record over {0} bytes")]
struct RecordTooLong(u64);

impl<R: std::io::Read> std::io::Read for BoundedRecords<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.record_start.load(std::sync::atomic::Ordering::Relaxed);
        if self.read.saturating_sub(start) > self.limit + CSV_BUFFER as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLong(self.limit),
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// What is wrong with a record that parsed: longer than `limit` bytes (from `at` to
/// `next`), or a NUL byte in a field when they are refused.
fn record_problem(
    record: &csv::StringRecord,
    at: &csv::Position,
    next: &csv::Position,
    limit: u64,
    allow_nul: bool,
) -> Option<String> {
    let len = next.byte().saturating_sub(at.byte());
    if len > limit {
        return Some(too_long(at.line(), limit));
    }
    if !allow_nul && let Some(i) = record.iter().position(|f| f.contains('\0')) {
        return Some(format!(
            "line {}: field {} holds a NUL byte (`allow_nul: true` accepts it)",
            at.line(),
            i + 1
        ));
    }
    None
}

fn too_long(line: u64, limit: u64) -> String {
    format!(
        "line {line}: the record is longer than {} KiB (`max_record_kib` sets the limit)",
        limit / 1024
    )
}

/// A CSV error for people; `line` is where the record being read started.
fn csv_message(e: &csv::Error, limit: u64, line: u64) -> String {
    if let csv::ErrorKind::Io(io) = e.kind()
        && io
            .get_ref()
            .is_some_and(|inner| inner.is::<RecordTooLong>())
    {
        return too_long(line, limit);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A record without end (an endless stream of one byte) is refused after its limit
    /// plus the reader's buffer: reading stops, memory stays bounded.
    #[test]
    fn an_endless_record_stops_the_reader() {
        let bounded = BoundedRecords::new(std::io::repeat(b'x'), 4096);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .buffer_capacity(CSV_BUFFER)
            .from_reader(bounded);
        let mut record = csv::StringRecord::new();
        let Err(e) = reader.read_record(&mut record) else {
            panic!("an endless record was read");
        };
        assert_eq!(
            csv_message(&e, 4096, 7),
            "line 7: the record is longer than 4 KiB (`max_record_kib` sets the limit)"
        );
        let read = reader.get_ref().read;
        assert!(read <= 4096 + 2 * CSV_BUFFER as u64, "{read} bytes read");
    }
}
