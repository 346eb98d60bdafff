//! The execution context steps run in: templates, connections, events, confirmations,
//! progress and child flows, as the steps of a run use them.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use minijinja::Value as JValue;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::compile::{FlowPlan, ValueTpl};
use crate::connectors::http::HttpConnector;
use crate::connectors::mail::Mailer;
use crate::connectors::{Connector, ConnectorError, FileStore};
use crate::model::RunOn;
use crate::steps::Block;
use crate::template::Tpl;

use super::{
    Checkpoint, Engine, ErrorKind, Event, JOURNAL_BATCH, MAX_SHOWN_BODY, Outcome, REPORT_EVENTS,
    REPORT_RECORD_EVENTS, REPORT_TAIL_EVENTS, RunKey, RunState, Scope, StepError, StepResult,
    is_record_success, now,
};

/// The execution context steps run in: the engine, the flow, the run's state.
pub struct Exec<'a> {
    pub(super) engine: &'a Engine,
    pub(super) flow: &'a FlowPlan,
    pub(super) state: &'a RunState,
    /// Whether this flow's side effects are confirmed for a resume (not in the error
    /// handler).
    pub(super) confirm: bool,
}

impl<'a> Exec<'a> {
    /// Renders a template to a string.
    pub fn render(&self, tpl: &Tpl, scope: &Scope) -> Result<String, StepError> {
        self.flow
            .templates
            .render(tpl, &scope.ctx())
            .map_err(|e| self.template_failed(&e, scope.step()))
    }

    /// Evaluates a template, keeping a single expression's type.
    pub fn eval(&self, tpl: &Tpl, scope: &Scope) -> Result<Value, StepError> {
        self.flow
            .templates
            .eval(tpl, &scope.ctx())
            .map_err(|e| self.template_failed(&e, scope.step()))
    }

    /// A template that failed in step `step`, named by its file, line, column and failing
    /// expression.
    fn template_failed(&self, e: &crate::template::TemplateError, step: &str) -> StepError {
        StepError::new(ErrorKind::Template, self.flow.templates.locate(e, step))
    }

    /// Notes that step `step` renamed `from` to `to` at `location` of `connection` (a fetch
    /// of `from` later in the run is then an error, not a file someone else took).
    pub fn note_renamed(&self, connection: &str, location: &str, from: &str, to: &str, step: &str) {
        let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
        log.renamed.insert(
            (
                connection.to_string(),
                location.trim_end_matches('/').to_string(),
                from.to_string(),
            ),
            (to.to_string(), step.to_string()),
        );
    }

    /// The new name and the renaming step of a file this run renamed ([`Exec::note_renamed`]).
    pub fn renamed_by_run(
        &self,
        connection: &str,
        location: &str,
        name: &str,
    ) -> Option<(String, String)> {
        let log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
        log.renamed
            .get(&(
                connection.to_string(),
                location.trim_end_matches('/').to_string(),
                name.to_string(),
            ))
            .cloned()
    }

    /// Evaluates a JSON value whose strings are templates.
    pub fn eval_value(&self, v: &ValueTpl, scope: &Scope) -> Result<Value, StepError> {
        let ctx = scope.ctx();
        self.eval_value_in(v, &ctx, scope.step())
    }

    /// Evaluates a JSON value whose strings are templates, its expressions in one pass when
    /// `batch` (registered for it) is given.
    pub fn eval_value_batch(
        &self,
        v: &ValueTpl,
        batch: Option<&crate::template::Batch>,
        scope: &Scope,
    ) -> Result<Value, StepError> {
        let ctx = scope.ctx();
        let Some(batch) = batch else {
            return self.eval_value_in(v, &ctx, scope.step());
        };
        let values = self
            .flow
            .templates
            .eval_batch(batch, &v.leaves(), &ctx)
            .map_err(|e| self.template_failed(&e, scope.step()))?;
        match v.rebuild(&mut values.into_iter()) {
            Some(value) => Ok(value),
            None => self.eval_value_in(v, &ctx, scope.step()),
        }
    }

    /// The template values of `v`'s templates (registered as `batch`), in the order of
    /// [`ValueTpl::leaves`], when one pass gives them all as strings, numbers, booleans or
    /// none; `None` otherwise ([`Exec::eval_value_batch`] then gives the value or the error).
    pub fn eval_batch_plain(
        &self,
        v: &ValueTpl,
        batch: &crate::template::Batch,
        scope: &Scope,
    ) -> Option<Vec<JValue>> {
        self.flow
            .templates
            .eval_batch_plain(batch, &v.leaves(), &scope.ctx())
    }

    fn eval_value_in(&self, v: &ValueTpl, ctx: &JValue, step: &str) -> Result<Value, StepError> {
        Ok(match v {
            ValueTpl::Tpl(t) => self
                .flow
                .templates
                .eval(t, ctx)
                .map_err(|e| self.template_failed(&e, step))?,
            ValueTpl::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| self.eval_value_in(x, ctx, step))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTpl::Object(fields) => {
                let mut m = Map::new();
                for (k, x) in fields {
                    m.insert(k.clone(), self.eval_value_in(x, ctx, step)?);
                }
                Value::Object(m)
            }
            ValueTpl::Plain(p) => p.clone(),
        })
    }

    /// Evaluates an expression.
    pub fn eval_expression(&self, src: &str, scope: &Scope) -> Result<Value, StepError> {
        self.flow
            .templates
            .eval_expression(src, &scope.ctx())
            .map_err(|e| self.template_failed(&e, scope.step()))
    }

    /// Evaluates an expression to a template value (no copy into JSON: a loop's items).
    pub fn eval_expression_value(&self, src: &str, scope: &Scope) -> Result<JValue, StepError> {
        self.flow
            .templates
            .eval_expression_value(src, &scope.ctx())
            .map_err(|e| self.template_failed(&e, scope.step()))
    }

    /// Evaluates a condition.
    pub fn eval_bool(&self, src: &str, scope: &Scope) -> Result<bool, StepError> {
        self.flow
            .templates
            .eval_bool(src, &scope.ctx())
            .map_err(|e| self.template_failed(&e, scope.step()))
    }

    /// The file store called `name`.
    pub fn files(&self, name: &str) -> Result<&'a FileStore, StepError> {
        match self.engine.connector(name)? {
            Connector::Files(f) => Ok(f),
            _ => Err(StepError::new(
                ErrorKind::Config,
                format!("connection '{name}' is not a file connection"),
            )),
        }
    }

    /// The HTTP connection called `name`.
    pub fn http(&self, name: &str) -> Result<&'a HttpConnector, StepError> {
        match self.engine.connector(name)? {
            Connector::Http(h) => Ok(h),
            _ => Err(StepError::new(
                ErrorKind::Config,
                format!("connection '{name}' is not an HTTP connection"),
            )),
        }
    }

    /// The mail connection called `name`.
    pub fn mailer(&self, name: &str) -> Result<&'a Mailer, StepError> {
        match self.engine.connector(name)? {
            Connector::Mail(m) => Ok(m),
            _ => Err(StepError::new(
                ErrorKind::Config,
                format!("connection '{name}' is not a mail connection"),
            )),
        }
    }

    /// Wraps a connector error, naming the connection.
    pub fn connector_error(&self, name: &str, e: ConnectorError) -> StepError {
        StepError::new(ErrorKind::Connector, format!("connection '{name}': {e}"))
    }

    /// A fresh path in the run's spool directory, ending in `name`. The caller owns the
    /// file: a loop item removes the spool files its steps made when it ends (see
    /// [`Scope::spooled`]).
    /// The run's spool directory is made at the first.
    pub fn spool_path(&self, name: &str) -> Result<PathBuf, StepError> {
        if !self.state.spool_made.load(Ordering::Acquire) {
            std::fs::create_dir_all(&self.state.spool).map_err(|e| {
                StepError::new(
                    ErrorKind::Connector,
                    format!(
                        "cannot create the run's spool directory {}: {e}",
                        self.state.spool.display()
                    ),
                )
            })?;
            self.state.spool_made.store(true, Ordering::Release);
        }
        let n = self.state.counter.fetch_add(1, Ordering::Relaxed);
        Ok(self.state.spool.join(format!("{n:06}-{name}")))
    }

    /// Notes that spool path `path` stands for `file`, not fetched yet.
    pub fn defer_fetch(&self, path: PathBuf, file: crate::steps::fetch::RemoteFile) {
        self.deferred()
            .insert(path, crate::steps::fetch::Deferred::Remote(file));
    }

    /// The file spool path `path` stands for while it is not fetched; `take` forgets it.
    pub fn deferred_fetch(
        &self,
        path: &std::path::Path,
        take: bool,
    ) -> Option<crate::steps::fetch::RemoteFile> {
        use crate::steps::fetch::Deferred;
        let mut deferred = self.deferred();
        match deferred.get(path) {
            Some(Deferred::Remote(file)) if !take => Some(file.clone()),
            Some(Deferred::Remote(_)) => match deferred.remove(path) {
                Some(Deferred::Remote(file)) => Some(file),
                _ => None,
            },
            _ => None,
        }
    }

    /// Notes that spool path `path` stands for a local file a fetch holds open.
    pub fn hold_fetch(
        &self,
        path: PathBuf,
        file: std::sync::Arc<crate::connectors::local::HeldFile>,
    ) {
        self.deferred()
            .insert(path, crate::steps::fetch::Deferred::Held(file));
    }

    /// The local file spool path `path` stands for while it holds no file; `take` forgets
    /// it.
    pub fn held_fetch(
        &self,
        path: &std::path::Path,
        take: bool,
    ) -> Option<std::sync::Arc<crate::connectors::local::HeldFile>> {
        use crate::steps::fetch::Deferred;
        let mut deferred = self.deferred();
        match deferred.get(path) {
            Some(Deferred::Held(file)) if !take => Some(file.clone()),
            Some(Deferred::Held(_)) => match deferred.remove(path) {
                Some(Deferred::Held(file)) => Some(file),
                _ => None,
            },
            _ => None,
        }
    }

    /// Ends a loop item's spool files: those fetched in `scope` since it held `keep` of them
    /// are removed, and the files they stand for forgotten (a held file is closed).
    pub fn drop_spooled(&self, scope: &mut Scope, keep: usize) {
        use crate::steps::fetch::Deferred;
        let mut held = std::collections::HashSet::new();
        {
            let mut deferred = self.deferred();
            if !deferred.is_empty() {
                for p in scope.spooled_since(keep) {
                    if let Some(Deferred::Held(_)) = deferred.remove(p) {
                        held.insert(p.clone());
                    }
                }
            }
        }
        scope.drop_spooled_but(keep, |p| held.contains(p));
    }

    fn deferred(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, crate::steps::fetch::Deferred>>
    {
        self.state
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The run's spool directory.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.state.spool
    }

    /// Records an event: counted, kept for the report (within its bounds), and written to
    /// the run's journal (a record loop's successful requests are counted and checkpointed
    /// instead).
    pub fn event(&self, e: Event) {
        crate::telemetry::log_event(&e);
        let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
        log.counters.count(&e);
        let record_success = is_record_success(&e);
        if !record_success && self.state.journal.is_some() {
            log.seq += 1;
            let seq = log.seq;
            log.batch.events.push((seq, now(), e.clone()));
        }
        if record_success && log.kept_records >= REPORT_RECORD_EVENTS {
            log.omitted += 1;
        } else if log.kept.len() < REPORT_EVENTS {
            if record_success {
                log.kept_records += 1;
            }
            log.kept.push(e);
        } else {
            // the head is full: keep the latest, count what falls out of the middle
            if log.tail.len() == REPORT_TAIL_EVENTS {
                log.tail.pop_front();
                log.omitted += 1;
            }
            log.tail.push_back(e);
        }
        if log.waiting() >= JOURNAL_BATCH {
            self.state.wake.notify_one();
        }
    }

    /// The values the flow tracks the run by (`track:`), evaluated over the trigger input
    /// and parameters, and noted for the journal. A declaration that does not evaluate (a
    /// part the delivery lacks) is left out with a warning: tracking never fails a run.
    pub(super) fn track_values(&self, scope: &Scope) -> BTreeMap<String, String> {
        let mut values = BTreeMap::new();
        for (name, tpl) in &self.flow.track {
            match self.render(tpl, scope) {
                Ok(v) if !v.is_empty() => {
                    values.insert(name.clone(), v);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(flow = %self.flow.id, track = %name, error = %e.message, "a tracked value does not evaluate; the run is not tracked by it");
                }
            }
        }
        if self.state.journal.is_some() && !values.is_empty() {
            let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
            log.batch
                .keys
                .extend(values.iter().map(|(name, value)| RunKey::Tracked {
                    name: name.clone(),
                    value: value.clone(),
                }));
        }
        values
    }

    /// Notes the names of files the run listed: it is found by them
    /// (`ferry runs --search`), written with the next journal write.
    pub fn listed_files<'n>(&self, names: impl Iterator<Item = &'n str>) {
        if self.state.journal.is_none() || self.state.dry_run {
            return;
        }
        let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
        log.batch
            .keys
            .extend(names.map(|n| RunKey::File(n.to_string())));
        if log.batch.keys.len() >= JOURNAL_BATCH {
            self.state.wake.notify_one();
        }
    }

    /// Records the progress of a record loop (written with the next journal write).
    pub fn checkpoint(&self, c: Checkpoint, records: usize) {
        if self.state.journal.is_none() || self.state.dry_run {
            return;
        }
        let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
        log.records_since += records;
        log.checkpoints.insert(c.key.clone(), c);
        if log.waiting() >= JOURNAL_BATCH {
            self.state.wake.notify_one();
        }
    }

    /// Writes what waits to the journal now if a batch is full (back-pressure for loops:
    /// a loop never runs more than a batch ahead of its history).
    pub async fn pace(&self) {
        if self.state.journal.is_none() {
            return;
        }
        let full = {
            let log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
            log.waiting() >= 2 * JOURNAL_BATCH
        };
        if full {
            self.state.flush().await;
        }
    }

    /// Writes what waits to the journal now (the end of a file's records).
    pub async fn flush(&self) {
        self.state.flush().await;
    }

    /// The last record an interrupted run confirmed in the record loop `key`.
    pub fn resumed_through(&self, key: &str) -> Option<u64> {
        self.state.resume.through.get(key).copied()
    }

    /// Confirms side effect `key` (its step's output) and waits until it is written to the
    /// journal: the step after it starts only once a resume would skip it. The run's
    /// journal ticker writes it at once (not gathered), and again while the history does
    /// not answer; the step waits until it is written or the run must stop (shutdown,
    /// lease lost or lapsed: a resume may then do this side effect again). Record loops'
    /// checkpoints are not waited for: they gather (see [`JOURNAL_GATHER`]).
    async fn confirm(&self, key: String, output: &Value) {
        if self.state.journal.is_none() || self.state.dry_run {
            return;
        }
        let mine = {
            let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
            log.batch.confirmed.push((key, output.clone()));
            log.confirmations += 1;
            log.confirmations
        };
        let mut durable = self.state.durable.subscribe();
        self.state.urgent.store(true, Ordering::Release);
        self.state.wake.notify_one();
        // a concurrent loop's item waits here without its slot (see [`crate::slot`])
        crate::slot::idle(async {
            tokio::select! {
                written = durable.wait_for(|d| *d >= mine) => {
                    if written.is_err() {
                        tracing::warn!("the run's journal stopped before a confirmed side effect was written");
                    }
                }
                why = self.stop_requested() => {
                    tracing::warn!(%why, "a confirmed side effect is not in the run history yet; a resume may do it again");
                }
            }
        })
        .await;
    }

    /// Records side effect `key` as confirmed (its step's output) with the next journal
    /// write, without waiting for it (see [`Exec::confirm`]).
    fn note_confirmed(&self, key: String, output: &Value) {
        if self.state.journal.is_none() || self.state.dry_run {
            return;
        }
        let mut log = self.state.log.lock().unwrap_or_else(|p| p.into_inner());
        log.batch.confirmed.push((key, output.clone()));
        log.confirmations += 1;
    }

    /// Resolves once the run must stop ([`Exec::must_stop`]), with why (checked every
    /// 20 ms: the check reads memory only).
    async fn stop_requested(&self) -> String {
        loop {
            if let Some(why) = self.must_stop() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Why the run must start no further step (a shutdown, its lease lost or lapsed), if
    /// it must stop.
    fn must_stop(&self) -> Option<String> {
        if let Some(cancel) = &self.engine.options.cancel
            && cancel.is_cancelled()
        {
            return Some("ferry is shutting down".to_string());
        }
        self.state.fence.as_ref().and_then(|f| f.check().err())
    }

    /// Whether loops must run one item at a time ([`RunOptions::sequential`]).
    pub fn sequential(&self) -> bool {
        self.engine.options.sequential
    }

    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.state.dry_run
    }

    /// In a verbose dry run, records the body of what would be sent (cut at
    /// [`MAX_SHOWN_BODY`] bytes).
    pub fn show_body(&self, of: String, text: impl FnOnce() -> String) {
        if self.state.dry_run && self.engine.options.verbose {
            let mut text = text();
            if text.len() > MAX_SHOWN_BODY {
                let mut cut = MAX_SHOWN_BODY;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("\n… (cut)");
            }
            self.event(Event::Body { of, text });
        }
    }

    /// Starts reporting a loop of `total` items (see [`crate::progress`]).
    pub fn loop_progress(&self, label: &str, total: Option<u64>) -> Box<dyn crate::progress::Tick> {
        match &self.engine.options.progress {
            Some(p) => p.start_loop(label, total),
            None => Box::new(crate::progress::NoTick),
        }
    }

    /// Starts reporting a transfer through local file `spool` (a fetch writes it, a put
    /// reads it).
    pub fn transfer_progress(
        &self,
        label: &str,
        spool: &std::path::Path,
        total: Option<u64>,
        fetch: bool,
    ) -> Box<dyn crate::progress::Tick> {
        match &self.engine.options.progress {
            Some(p) => p.start_transfer(label, spool, total, fetch),
            None => Box::new(crate::progress::NoTick),
        }
    }

    /// Counts a completed loop item (a failed run with progress is `partial`).
    pub fn progress_item(&self) {
        self.state.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls child flow `flow_id` with `params` from step `step` of `caller`; its failure
    /// fails the calling step. A child called inside a loop item is inside it too: a skip
    /// there (a file gone, a name the target refuses) is [`StepResult::Skip`], which ends
    /// the caller's item as if its own step had skipped.
    pub fn call_flow<'s>(
        &'s self,
        flow_id: &'s str,
        params: Map<String, Value>,
        caller: &Scope,
        step: &str,
    ) -> Pin<Box<dyn Future<Output = Result<StepResult, StepError>> + Send + 's>> {
        self.call_flow_with_error(flow_id, params, Value::Null, caller, step)
    }

    /// Calls child flow `flow_id` with `params` and `error` as its `error` variable (an
    /// `on_error` handler sees the failure it handles).
    pub fn call_flow_with_error<'s>(
        &'s self,
        flow_id: &'s str,
        params: Map<String, Value>,
        error: Value,
        caller: &Scope,
        step: &str,
    ) -> Pin<Box<dyn Future<Output = Result<StepResult, StepError>> + Send + 's>> {
        let mut path = caller.path.clone();
        path.push((step.to_string(), flow_id.to_string()));
        let loops = caller.loops();
        let record = caller.record;
        let record_key = caller.record_key.clone();
        let confirm = self.confirm && step != "on_error";
        Box::pin(async move {
            let child = self.engine.project.flows.get(flow_id).ok_or_else(|| {
                StepError::new(ErrorKind::Config, format!("unknown flow '{flow_id}'"))
            })?;
            if let Some(why) = self.state.paused.get(flow_id) {
                return Err(StepError::new(
                    ErrorKind::Config,
                    format!("cannot call child flow '{flow_id}': {why}"),
                ));
            }
            let ex = Exec {
                engine: self.engine,
                flow: child,
                state: self.state,
                confirm,
            };
            let mut scope = Scope::new(Value::Object(Map::new()), params, &self.state.run);
            if !error.is_null() {
                scope.set_var("error", &error);
            }
            scope.path = path;
            scope.record = record;
            scope.record_key = record_key;
            scope.set_loops(loops);
            let span = tracing::info_span!("child_flow", otel.name = %format_args!("child {}", child.id), flow = %child.id);
            match ex
                .run_block(&child.steps, &mut scope)
                .instrument(span)
                .await
            {
                Ok(StepResult::Skip) => Ok(StepResult::Skip),
                Ok(_) => Ok(StepResult::Value(
                    json!({ "flow": child.id, "steps": scope.steps_json() }),
                )),
                Err(mut e) => {
                    e.message = format!(
                        "child flow '{}' failed at step '{}': {}",
                        child.id, e.step, e.message
                    );
                    e.output = None;
                    Err(e)
                }
            }
        })
    }

    /// Runs a block of steps (see the module documentation for the failure rules).
    pub fn run_block<'s>(
        &'s self,
        block: &'s Block,
        scope: &'s mut Scope,
    ) -> Pin<Box<dyn Future<Output = Result<StepResult, StepError>> + Send + 's>> {
        Box::pin(async move {
            let mut failure: Option<StepError> = None;
            // An `end` ends the block: after it only `run_on: always` steps still run.
            let mut ended: Option<Outcome> = None;
            for step in &block.steps {
                match (step.run_on, failure.is_some()) {
                    (RunOn::Success, true) | (RunOn::Failure, false) => continue,
                    _ if ended.is_some() && step.run_on != RunOn::Always => continue,
                    _ => {}
                }
                if let Some(why) = self.must_stop() {
                    let e = StepError::new(
                        ErrorKind::Interrupted,
                        format!("interrupted: {why}; resubmit the run to finish it"),
                    );
                    scope.set_var("error", &e.to_value());
                    self.event(Event::Failed {
                        step: step.id.clone(),
                        message: e.message.clone(),
                    });
                    let mut e = e;
                    e.step = step.id.clone();
                    return Err(e);
                }
                // A side effect outside a record loop is confirmed once done; a run resuming
                // an interrupted one skips what that run confirmed and reuses its output.
                let key = (self.confirm && step.kind.confirmable() && scope.record.is_none())
                    .then(|| scope.key_of(&step.id));
                let span = tracing::info_span!("step", otel.name = %format_args!("{} ({})", step.id, step.kind.name()), id = %step.id, kind = step.kind.name(), file = tracing::field::Empty, record = tracing::field::Empty, outcome = tracing::field::Empty, otel.status_code = tracing::field::Empty, otel.status_description = tracing::field::Empty);
                crate::telemetry::annotate_step(&span, &scope.vars);
                scope.step.clone_from(&step.id);
                let started = Instant::now();
                let result: Result<Option<StepResult>, StepError> = async {
                    if let Some(cond) = &step.when
                        && !self.eval_bool(cond, scope)?
                    {
                        tracing::debug!("condition false; skipped");
                        return Ok(None);
                    }
                    if let Some(k) = &key
                        && let Some(out) = self.state.resume.confirmed.get(k)
                    {
                        tracing::info!(key = %k, "confirmed by the interrupted run; not done again");
                        self.confirm(k.clone(), out).await;
                        return Ok(Some(StepResult::Value(out.clone())));
                    }
                    let r = step.kind.run(self, scope).await?;
                    if let (Some(k), StepResult::Value(v)) = (&key, &r) {
                        if calls_flow(&step.kind) {
                            // the child's own side effects were each confirmed and written
                            // before its next step: a resume that finds no record of the
                            // call enters the child again and skips them. So the call's
                            // record goes with the next write, without a wait of its own.
                            self.note_confirmed(k.clone(), v);
                        } else {
                            self.confirm(k.clone(), v).await;
                        }
                    }
                    Ok(Some(r))
                }
                .instrument(span.clone())
                .await;
                crate::telemetry::step_outcome(&span, &result);
                if let Some(observer) = &self.engine.options.observer
                    && !matches!(result, Ok(None))
                {
                    observer.step_finished(
                        &self.flow.id,
                        step.kind.name(),
                        started.elapsed(),
                        result.is_ok(),
                    );
                }
                match result {
                    Ok(None) => {}
                    Ok(Some(StepResult::Value(v))) => scope.set_output(&step.id, &v),
                    Ok(Some(StepResult::Output(v))) => scope.set_output_value(&step.id, v),
                    Ok(Some(StepResult::Skip)) => {
                        if failure.is_none() {
                            return Ok(StepResult::Skip);
                        }
                    }
                    Ok(Some(StepResult::End(o))) => {
                        if failure.is_none() && ended.is_none() {
                            ended = Some(o);
                        }
                    }
                    Err(mut e) => {
                        // A failure is recorded once, by the block of the step it started
                        // in, not again by each enclosing loop, route or child flow call.
                        let origin = e.step.is_empty();
                        if origin {
                            e.step = step.id.clone();
                        }
                        if let Some(out) = e.output.take() {
                            scope.set_output_value(&step.id, out);
                        }
                        if origin {
                            self.event(Event::Failed {
                                step: e.step.clone(),
                                message: e.message.clone(),
                            });
                        }
                        if failure.is_none() {
                            scope.set_var("error", &e.to_value());
                            failure = Some(e);
                        } else {
                            tracing::warn!(step = %step.id, error = %e.message, "a step after the failure also failed");
                        }
                    }
                }
            }
            match (failure, ended) {
                (Some(e), _) => Err(e),
                (None, Some(o)) => Ok(StepResult::End(o)),
                (None, None) => Ok(StepResult::Value(Value::Null)),
            }
        })
    }
}

/// Whether step `kind` calls a child flow (`invoke: { flow: … }`).
fn calls_flow(kind: &crate::steps::StepKind) -> bool {
    matches!(
        kind,
        crate::steps::StepKind::Invoke(crate::steps::invoke::InvokePlan::Flow { .. })
    )
}
