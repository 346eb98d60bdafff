//! The executor: runs a compiled flow and reports what happened.
//!
//! A block runs its steps in the order `compile` fixed. Once a step fails, the remaining
//! steps run only if they are marked `run_on: failure` or `always`, with the failure in
//! `error`; the block then fails with the first error. Loops stop at the first failing item.
//! When a run fails, the flow's `on_error` child flow is called with the failure in its
//! `error`. Everything a run does — listings, fetches, puts, renames, requests, emails — is
//! recorded as an [`Event`] (a failure once, where it happened); a dry run records what it
//! would do and changes nothing. An email that cannot be sent is an [`Event::EmailFailed`]
//! warning, never a step failure: notifications do not decide outcomes.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::compile::{FlowPlan, Project, ValueTpl};
use crate::connectors::http::HttpConnector;
use crate::connectors::mail::Mailer;
use crate::connectors::{Connector, ConnectorError, FileStore};
use crate::model::RunOn;
use crate::steps::Block;
use crate::template::Tpl;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything done.
    Succeeded,
    /// Failed after some items were done.
    Partial,
    /// Failed before any item was done.
    Failed,
    /// Nothing to do.
    NoFiles,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::NoFiles => "no_files",
        })
    }
}

/// What a step returned.
#[derive(Debug)]
pub enum StepResult {
    /// Its output.
    Value(Value),
    /// The flow ends now with this outcome.
    End(Outcome),
}

/// The kind of a step failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A template or expression failed.
    Template,
    /// A connection failed (I/O, network, authentication).
    Connector,
    /// A REST request answered with a failing status.
    Http,
    /// A REST answer did not satisfy `expect`.
    Expectation,
    /// Bad input data (a malformed CSV).
    Data,
    /// A configuration problem found at run time.
    Config,
    /// A child flow failed.
    ChildFlow,
    /// The run was stopped between steps (the server shut down).
    Interrupted,
}

/// A step failure.
#[derive(Debug, Clone)]
pub struct StepError {
    /// The innermost step that failed.
    pub step: String,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
    /// The HTTP status, for request failures.
    pub status: Option<u16>,
    /// The loop items being processed, by loop variable.
    pub items: Map<String, Value>,
    /// The step's output despite the failure (a loop's progress).
    pub output: Option<Value>,
}

impl StepError {
    /// A new error not yet attributed to a step.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StepError {
        StepError {
            step: String::new(),
            kind,
            message: message.into(),
            status: None,
            items: Map::new(),
            output: None,
        }
    }

    /// The error as the template variable `error`.
    pub fn to_value(&self) -> Value {
        json!({
            "step": self.step,
            "kind": self.kind,
            "message": self.message,
            "status": self.status,
            "items": self.items,
        })
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step '{}': {}", self.step, self.message)
    }
}

/// One thing a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A location was listed.
    Listed {
        /// Connection.
        connection: String,
        /// Location.
        location: String,
        /// Prefix.
        prefix: String,
        /// Files found.
        count: usize,
    },
    /// A file was fetched into the spool.
    Fetched {
        /// Connection.
        connection: String,
        /// Location.
        location: String,
        /// File name.
        name: String,
        /// Size.
        bytes: u64,
    },
    /// A file was put to a target.
    Put {
        /// Connection.
        connection: String,
        /// Location.
        location: String,
        /// File name.
        name: String,
        /// Size.
        bytes: u64,
    },
    /// A file was renamed.
    Renamed {
        /// Connection.
        connection: String,
        /// Location.
        location: String,
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// A REST request was sent.
    Request {
        /// Connection.
        connection: String,
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Status answered (none in a dry run).
        status: Option<u16>,
        /// Whether the status was tolerated rather than a success.
        suppressed: bool,
        /// The answer failed the request's `expect` (a 2xx whose body refuses the record,
        /// such as an acknowledgement of type FAILURE): not a record sent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rejected: bool,
    },
    /// An email was sent.
    Emailed {
        /// Recipients.
        to: Vec<String>,
        /// Subject.
        subject: String,
    },
    /// An email could not be built or sent. A warning: the run went on, and its outcome is
    /// what the other steps made it (see `notify`).
    EmailFailed {
        /// Recipients, as far as they were worked out.
        to: Vec<String>,
        /// Subject, as far as it was worked out.
        subject: String,
        /// What went wrong.
        message: String,
    },
    /// What a dry run with `verbose` would send: a request's or an email's body (shown,
    /// never sent; cut at [`MAX_SHOWN_BODY`] bytes).
    Body {
        /// What it is the body of, e.g. `request POST https://…` or `email "subject"`.
        of: String,
        /// The body as text.
        text: String,
    },
    /// A step failed.
    Failed {
        /// Step id.
        step: String,
        /// Message.
        message: String,
    },
}

/// The error of a failed run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RunError {
    /// The step.
    pub step: String,
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// Loop items at the failure.
    pub items: Map<String, Value>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Flow id.
    pub flow: String,
    /// Flow name.
    pub flow_name: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: String,
    /// The failure, if any.
    pub error: Option<RunError>,
    /// What happened, in order.
    pub events: Vec<Event>,
}

impl RunReport {
    /// Files put to a target (none in a dry run: see [`RunReport::files_to_move`]).
    pub fn files_moved(&self) -> usize {
        if self.dry_run {
            0
        } else {
            self.files_to_move()
        }
    }
    /// Files put to a target, or that a dry run would put.
    pub fn files_to_move(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Put { .. }))
            .count()
    }
    /// Bytes put to targets.
    pub fn bytes_moved(&self) -> u64 {
        self.events
            .iter()
            .map(|e| {
                if let Event::Put { bytes, .. } = e {
                    *bytes
                } else {
                    0
                }
            })
            .sum()
    }
    /// Renames.
    pub fn renames(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Renamed { .. }))
            .count()
    }
    /// REST requests answered with success (2xx).
    pub fn requests_ok(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Request { status: Some(s), suppressed: false, rejected: false, .. } if (200..300).contains(s)))
            .count()
    }
    /// REST requests whose failing status was tolerated.
    pub fn suppressed(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Request {
                        suppressed: true,
                        ..
                    }
                )
            })
            .count()
    }
    /// Emails sent.
    pub fn emails(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Emailed { .. }))
            .count()
    }
    /// Emails that could not be sent (warnings; they never change the outcome).
    pub fn emails_failed(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::EmailFailed { .. }))
            .count()
    }
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Report what would happen; change nothing.
    pub dry_run: bool,
    /// Where spool directories are made (the system's temp dir by default).
    pub spool_dir: Option<PathBuf>,
    /// When cancelled, runs stop before their next step (a step under way finishes, so a
    /// file is never left half-moved) and fail with [`ErrorKind::Interrupted`].
    pub cancel: Option<tokio_util::sync::CancellationToken>,
    /// Told how long each step took (metrics).
    pub observer: Option<Arc<dyn StepObserver>>,
    /// Told how loops and transfers advance (`ferry run`'s bars on a terminal).
    pub progress: Option<Arc<dyn crate::progress::Progress>>,
    /// In a dry run, record the bodies of the requests and emails it would send
    /// ([`Event::Body`]).
    pub verbose: bool,
}

/// The most of a body a verbose dry run shows.
pub const MAX_SHOWN_BODY: usize = 64 * 1024;

/// Watches steps finish (the server's metrics implement it).
pub trait StepObserver: Send + Sync + std::fmt::Debug {
    /// Step `step` of kind `kind` in flow `flow` took `elapsed`; `ok` is false when it
    /// failed.
    fn step_finished(&self, flow: &str, kind: &str, elapsed: std::time::Duration, ok: bool);
}

/// A run-time failure before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// No such flow.
    #[error("unknown flow '{0}'")]
    UnknownFlow(String),
    /// The spool directory could not be made.
    #[error("cannot create a spool directory: {0}")]
    Spool(std::io::Error),
    /// The trigger input is wrong.
    #[error("{0}")]
    Input(String),
}

/// Runs flows of a compiled project.
#[derive(Debug)]
pub struct Engine {
    project: Arc<Project>,
    connectors: HashMap<String, OnceLock<Result<Connector, String>>>,
    options: RunOptions,
}

/// Per-run shared state.
#[derive(Debug)]
struct RunState {
    events: Mutex<Vec<Event>>,
    spool: PathBuf,
    counter: AtomicUsize,
    progress: AtomicUsize,
    dry_run: bool,
    run: Value,
}

impl Engine {
    /// An engine over `project`.
    pub fn new(project: Arc<Project>, options: RunOptions) -> Engine {
        let connectors = project
            .connections
            .keys()
            .map(|k| (k.clone(), OnceLock::new()))
            .collect();
        Engine {
            project,
            connectors,
            options,
        }
    }

    /// The project.
    pub fn project(&self) -> &Arc<Project> {
        &self.project
    }

    /// Runs flow `flow_id` with trigger input `input` (`input.<part>` in templates).
    pub async fn run(
        &self,
        flow_id: &str,
        input: Map<String, Value>,
    ) -> Result<RunReport, RunFailure> {
        self.run_with_id(flow_id, input, new_run_id()).await
    }

    /// Like [`Engine::run`], under a run id the caller chose ([`new_run_id`] makes one), so
    /// that a run history can record the run before it starts.
    pub async fn run_with_id(
        &self,
        flow_id: &str,
        input: Map<String, Value>,
        run_id: String,
    ) -> Result<RunReport, RunFailure> {
        let flow = self
            .project
            .flows
            .get(flow_id)
            .ok_or_else(|| RunFailure::UnknownFlow(flow_id.to_string()))?;
        let started_at = now();
        let mut builder = tempfile::Builder::new();
        builder.prefix("ferry-run-");
        let spool = match &self.options.spool_dir {
            Some(d) => builder.tempdir_in(d),
            None => builder.tempdir(),
        }
        .map_err(RunFailure::Spool)?;
        let run = json!({
            "id": run_id,
            "flow": flow.id,
            "flow_name": flow.name,
            "version": flow.version,
            "started_at": started_at,
            "dry_run": self.options.dry_run,
        });
        let state = RunState {
            events: Mutex::new(Vec::new()),
            spool: spool.path().to_path_buf(),
            counter: AtomicUsize::new(0),
            progress: AtomicUsize::new(0),
            dry_run: self.options.dry_run,
            run: run.clone(),
        };
        let mut scope = Scope::new(Value::Object(input), Map::new(), run);
        let ex = Exec {
            engine: self,
            flow,
            state: &state,
        };
        let span = tracing::info_span!("run", flow = %flow.id, run_id = %run_id, dry_run = self.options.dry_run, outcome = tracing::field::Empty);
        let result = ex
            .run_block(&flow.steps, &mut scope)
            .instrument(span.clone())
            .await;
        let (outcome, error) = match result {
            Ok(StepResult::End(o)) => (o, None),
            Ok(StepResult::Value(_)) => (Outcome::Succeeded, None),
            Err(e) => {
                let outcome = if state.progress.load(Ordering::Relaxed) > 0 {
                    Outcome::Partial
                } else {
                    Outcome::Failed
                };
                tracing::warn!(parent: &span, step = %e.step, error = %e.message, "run failed");
                if let Some((handler, with)) = &flow.on_error {
                    scope.vars.insert("error".into(), e.to_value());
                    let params = match ex.eval_value(with, &scope) {
                        Ok(Value::Object(m)) => Ok(m),
                        Ok(_) => Ok(Map::new()),
                        Err(err) => Err(err),
                    };
                    let handled = match params {
                        Ok(p) => ex
                            .call_flow_with_error(handler, p, e.to_value())
                            .instrument(span.clone())
                            .await
                            .map(|_| ()),
                        Err(err) => Err(err),
                    };
                    if let Err(h) = handled {
                        tracing::error!(parent: &span, error = %h, "the error handler failed");
                        ex.event(Event::Failed {
                            step: format!("on_error:{handler}"),
                            message: h.message.clone(),
                        });
                    }
                }
                (
                    outcome,
                    Some(RunError {
                        step: e.step,
                        kind: e.kind,
                        message: e.message,
                        items: e.items,
                    }),
                )
            }
        };
        span.record("outcome", outcome.to_string());
        tracing::info!(parent: &span, %outcome, "run finished");
        let events = std::mem::take(&mut *state.events.lock().unwrap_or_else(|p| p.into_inner()));
        drop(spool);
        Ok(RunReport {
            run_id,
            flow: flow.id.clone(),
            flow_name: flow.name.clone(),
            outcome,
            dry_run: self.options.dry_run,
            started_at,
            finished_at: now(),
            error,
            events,
        })
    }

    fn connector(&self, name: &str) -> Result<&Connector, StepError> {
        let cell = self.connectors.get(name).ok_or_else(|| {
            StepError::new(ErrorKind::Config, format!("unknown connection '{name}'"))
        })?;
        let spec = self.project.connections.get(name).ok_or_else(|| {
            StepError::new(ErrorKind::Config, format!("unknown connection '{name}'"))
        })?;
        match cell.get_or_init(|| spec.connect(name).map_err(|e| e.to_string())) {
            Ok(c) => Ok(c),
            Err(msg) => Err(StepError::new(
                ErrorKind::Connector,
                format!("connection '{name}': {msg}"),
            )),
        }
    }
}

/// A new run id: a UUID v7 string (time-ordered).
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, as run reports write it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The variables templates see.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Root variables: `input`, `params`, `steps`, `run`, `error`, loop variables.
    pub vars: Map<String, Value>,
}

impl Scope {
    fn new(input: Value, params: Map<String, Value>, run: Value) -> Scope {
        let mut vars = Map::new();
        vars.insert("input".into(), input);
        vars.insert("params".into(), Value::Object(params));
        vars.insert("steps".into(), Value::Object(Map::new()));
        vars.insert("run".into(), run);
        vars.insert("error".into(), Value::Null);
        Scope { vars }
    }

    fn ctx(&self) -> minijinja::Value {
        minijinja::Value::from_serialize(&self.vars)
    }

    fn set_output(&mut self, id: &str, v: Value) {
        if let Some(Value::Object(steps)) = self.vars.get_mut("steps") {
            steps.insert(id.to_string(), v);
        }
    }
}

/// The execution context steps run in: the engine, the flow, the run's state.
pub struct Exec<'a> {
    engine: &'a Engine,
    flow: &'a FlowPlan,
    state: &'a RunState,
}

impl<'a> Exec<'a> {
    /// Renders a template to a string.
    pub fn render(&self, tpl: &Tpl, scope: &Scope) -> Result<String, StepError> {
        self.flow
            .templates
            .render(tpl, &scope.ctx())
            .map_err(template_error)
    }

    /// Evaluates a template, keeping a single expression's type.
    pub fn eval(&self, tpl: &Tpl, scope: &Scope) -> Result<Value, StepError> {
        self.flow
            .templates
            .eval(tpl, &scope.ctx())
            .map_err(template_error)
    }

    /// Evaluates a JSON value whose strings are templates.
    pub fn eval_value(&self, v: &ValueTpl, scope: &Scope) -> Result<Value, StepError> {
        let ctx = scope.ctx();
        self.eval_value_in(v, &ctx)
    }

    fn eval_value_in(&self, v: &ValueTpl, ctx: &minijinja::Value) -> Result<Value, StepError> {
        Ok(match v {
            ValueTpl::Tpl(t) => self.flow.templates.eval(t, ctx).map_err(template_error)?,
            ValueTpl::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| self.eval_value_in(x, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTpl::Object(fields) => {
                let mut m = Map::new();
                for (k, x) in fields {
                    m.insert(k.clone(), self.eval_value_in(x, ctx)?);
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
            .map_err(template_error)
    }

    /// Evaluates a condition.
    pub fn eval_bool(&self, src: &str, scope: &Scope) -> Result<bool, StepError> {
        self.flow
            .templates
            .eval_bool(src, &scope.ctx())
            .map_err(template_error)
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

    /// A fresh path in the run's spool directory, ending in `name`.
    pub fn spool_path(&self, name: &str) -> PathBuf {
        let n = self.state.counter.fetch_add(1, Ordering::Relaxed);
        self.state.spool.join(format!("{n:06}-{name}"))
    }

    /// Records an event.
    pub fn event(&self, e: Event) {
        crate::telemetry::log_event(&e);
        self.state
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
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

    /// Calls child flow `flow_id` with `params`; its failure fails the calling step.
    pub fn call_flow<'s>(
        &'s self,
        flow_id: &'s str,
        params: Map<String, Value>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send + 's>> {
        self.call_flow_with_error(flow_id, params, Value::Null)
    }

    /// Calls child flow `flow_id` with `params` and `error` as its `error` variable (an
    /// `on_error` handler sees the failure it handles).
    pub fn call_flow_with_error<'s>(
        &'s self,
        flow_id: &'s str,
        params: Map<String, Value>,
        error: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send + 's>> {
        Box::pin(async move {
            let child = self.engine.project.flows.get(flow_id).ok_or_else(|| {
                StepError::new(ErrorKind::Config, format!("unknown flow '{flow_id}'"))
            })?;
            let ex = Exec {
                engine: self.engine,
                flow: child,
                state: self.state,
            };
            let mut scope = Scope::new(Value::Object(Map::new()), params, self.state.run.clone());
            scope.vars.insert("error".into(), error);
            let span = tracing::info_span!("child_flow", flow = %child.id);
            match ex
                .run_block(&child.steps, &mut scope)
                .instrument(span)
                .await
            {
                Ok(_) => Ok(json!({ "flow": child.id, "steps": scope.vars.get("steps") })),
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
            for step in &block.steps {
                match (step.run_on, failure.is_some()) {
                    (RunOn::Success, true) | (RunOn::Failure, false) => continue,
                    _ => {}
                }
                if let Some(cancel) = &self.engine.options.cancel
                    && cancel.is_cancelled()
                {
                    let e = StepError::new(
                        ErrorKind::Interrupted,
                        "interrupted: ferry is shutting down; resubmit the run to finish it",
                    );
                    scope.vars.insert("error".into(), e.to_value());
                    self.event(Event::Failed {
                        step: step.id.clone(),
                        message: e.message.clone(),
                    });
                    let mut e = e;
                    e.step = step.id.clone();
                    return Err(e);
                }
                let span = tracing::info_span!("step", id = %step.id, kind = step.kind.name(), file = tracing::field::Empty, record = tracing::field::Empty, outcome = tracing::field::Empty);
                crate::telemetry::annotate_step(&span, &scope.vars);
                let started = std::time::Instant::now();
                let result = async {
                    if let Some(cond) = &step.when
                        && !self.eval_bool(cond, scope)?
                    {
                        tracing::debug!("condition false; skipped");
                        return Ok(None);
                    }
                    step.kind.run(self, scope).await.map(Some)
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
                    Ok(Some(StepResult::Value(v))) => scope.set_output(&step.id, v),
                    Ok(Some(StepResult::End(o))) => {
                        if failure.is_none() {
                            return Ok(StepResult::End(o));
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
                            scope.set_output(&step.id, out);
                        }
                        if origin {
                            self.event(Event::Failed {
                                step: e.step.clone(),
                                message: e.message.clone(),
                            });
                        }
                        if failure.is_none() {
                            scope.vars.insert("error".into(), e.to_value());
                            failure = Some(e);
                        } else {
                            tracing::warn!(step = %step.id, error = %e.message, "a step after the failure also failed");
                        }
                    }
                }
            }
            match failure {
                Some(e) => Err(e),
                None => Ok(StepResult::Value(Value::Null)),
            }
        })
    }
}

fn template_error(e: crate::template::TemplateError) -> StepError {
    StepError::new(ErrorKind::Template, e.0)
}

/// Builds a flow's trigger input from named files, as `ferry run --input NAME=PATH` and a
/// REST delivery supply them: a `json` part is parsed, a `file` part becomes
/// `{path, name, size}`. Unknown and missing parts are errors.
pub fn trigger_input(
    flow: &FlowPlan,
    parts: &[(String, PathBuf, Option<String>)],
) -> Result<Map<String, Value>, RunFailure> {
    let mut input = Map::new();
    let Some(rest) = &flow.trigger.rest else {
        if let Some((name, _, _)) = parts.first() {
            return Err(RunFailure::Input(format!(
                "flow '{}' takes no trigger input, got part '{name}'",
                flow.id
            )));
        }
        return Ok(input);
    };
    for (name, path, file_name) in parts {
        let Some(spec) = rest.parts.get(name) else {
            let known: Vec<_> = rest.parts.keys().cloned().collect();
            return Err(RunFailure::Input(format!(
                "flow '{}' has no trigger part '{name}' (parts: {})",
                flow.id,
                known.join(", ")
            )));
        };
        let value = match spec.kind {
            crate::model::PartKind::Json => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    RunFailure::Input(format!(
                        "part '{name}': cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                serde_json::from_str::<Value>(&text).map_err(|e| {
                    RunFailure::Input(format!(
                        "part '{name}': {} is not valid JSON: {e}",
                        path.display()
                    ))
                })?
            }
            crate::model::PartKind::File => {
                let size = std::fs::metadata(path)
                    .map_err(|e| {
                        RunFailure::Input(format!(
                            "part '{name}': cannot read {}: {e}",
                            path.display()
                        ))
                    })?
                    .len();
                let name = file_name.clone().unwrap_or_else(|| {
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                crate::connectors::check_name(&name)
                    .map_err(|e| RunFailure::Input(format!("part file name: {e}")))?;
                json!({ "path": path.display().to_string(), "name": name, "size": size })
            }
        };
        input.insert(name.clone(), value);
    }
    for (name, spec) in &rest.parts {
        if spec.required && !input.contains_key(name) {
            return Err(RunFailure::Input(format!(
                "flow '{}' needs trigger part '{name}'",
                flow.id
            )));
        }
    }
    Ok(input)
}
