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
//!
//! This file holds the engine's start and finish and the public entry points; the rest is
//! in files named after it: `events` (events, results, errors and the report), `checkpoint`
//! (the journal and checkpoints as a run uses them), `scope` (the variables templates see)
//! and `exec` (the execution context steps run in).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::compile::{FlowPlan, Project};
use crate::connectors::Connector;

mod checkpoint;
mod events;
mod exec;
mod scope;

pub use checkpoint::{
    Checkpoint, JOURNAL_BATCH, JOURNAL_GATHER, JOURNAL_INTERVAL, Journal, JournalBatch, Resume,
    RunKey,
};
use checkpoint::{RunLog, RunState};
pub use events::{
    Counters, ErrorKind, Event, Outcome, REPORT_EVENTS, REPORT_RECORD_EVENTS, REPORT_TAIL_EVENTS,
    RunError, RunReport, StepError, StepResult, is_record_success,
};
pub use exec::Exec;
pub use scope::Scope;

/// One run's start: which flow, with what, under which id, recorded where.
#[derive(Debug, Default)]
pub struct RunStart {
    /// Flow id.
    pub flow: String,
    /// Trigger input (`input.<part>`).
    pub input: Map<String, Value>,
    /// The run id ([`new_run_id`] makes one).
    pub run_id: String,
    /// Where the run writes what it does as it goes.
    pub journal: Option<Arc<dyn Journal>>,
    /// What an interrupted run of the same input confirmed.
    pub resume: Resume,
    /// Checked before every step, instead of the options' fence (none: the options').
    pub fence: Option<Arc<dyn Fence>>,
    /// Flows paused when the run started, by id, with why: calling one fails the calling
    /// step with that message.
    pub paused: BTreeMap<String, String>,
    /// Files the run's input names that are held in memory instead (a delivery's parts,
    /// kept in the run history's database): a put to a local directory writes them from
    /// memory, any other reader has the file made first.
    pub held_files: Vec<(PathBuf, Arc<[u8]>)>,
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
    /// The parameters of a child flow run on its own (`ferry run CHILD --param k=v`).
    pub params: Map<String, Value>,
    /// Loops run one item at a time whatever their `concurrency` (`ferry test`: the order
    /// of requests and of a stub's answers is then the items' order).
    pub sequential: bool,
    /// Checked before every step: a run that no longer holds its flow's lease stops there
    /// with [`ErrorKind::Interrupted`] ([`RunStart::fence`] sets one per run).
    pub fence: Option<Arc<dyn Fence>>,
    /// Told how loops and transfers advance (`ferry run`'s bars on a terminal).
    pub progress: Option<Arc<dyn crate::progress::Progress>>,
    /// In a dry run, record the bodies of the requests and emails it would send
    /// ([`Event::Body`]).
    pub verbose: bool,
}

/// Whether a run may still start a step (it holds its flow's lease); read before every step,
/// so it must answer from memory, not from a database.
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// `Err(why)` once the run may no longer act.
    fn check(&self) -> Result<(), String>;
}

/// The most of a body a verbose dry run shows.
pub const MAX_SHOWN_BODY: usize = 64 * 1024;

/// Watches steps finish (the server's metrics implement it).
pub trait StepObserver: Send + Sync + std::fmt::Debug {
    /// Step `step` of kind `kind` in flow `flow` took `elapsed`; `ok` is false when it
    /// failed.
    fn step_finished(&self, flow: &str, kind: &str, elapsed: std::time::Duration, ok: bool);

    /// An engine over `project` was made (at start and on every reload): the flows it may
    /// run from now on.
    fn flows_loaded(&self, _project: &Project) {}
}

/// A run-time failure before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// No such flow.
    #[error("unknown flow '{0}'")]
    UnknownFlow(String),
    /// The trigger input is wrong.
    #[error("{0}")]
    Input(String),
    /// The flow is paused (the message says by whom, when and why).
    #[error("{0}")]
    Paused(String),
}

/// Runs flows of a compiled project.
#[derive(Debug)]
pub struct Engine {
    project: Arc<Project>,
    connectors: HashMap<String, OnceLock<Result<Connector, String>>>,
    options: RunOptions,
}

/// Removes a run's spool directory when the run ends.
#[derive(Debug)]
struct SpoolDir(PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(spool = %self.0.display(), error = %e, "cannot remove the run's spool directory");
        }
    }
}

impl Engine {
    /// An engine over `project`.
    pub fn new(project: Arc<Project>, options: RunOptions) -> Engine {
        let connectors = project
            .connections
            .keys()
            .map(|k| (k.clone(), OnceLock::new()))
            .collect();
        if let Some(observer) = &options.observer {
            observer.flows_loaded(&project);
        }
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
        self.start(RunStart {
            flow: flow_id.to_string(),
            input,
            run_id,
            ..RunStart::default()
        })
        .await
    }

    /// Like [`Engine::run_with_id`], checking `fence` (instead of the options' fence)
    /// before every step.
    pub async fn run_fenced(
        &self,
        flow_id: &str,
        input: Map<String, Value>,
        run_id: String,
        fence: Option<Arc<dyn Fence>>,
    ) -> Result<RunReport, RunFailure> {
        self.start(RunStart {
            flow: flow_id.to_string(),
            input,
            run_id,
            fence,
            ..RunStart::default()
        })
        .await
    }

    /// Runs a flow as `start` says: under its id, writing to its journal as it goes,
    /// resuming what an interrupted run confirmed.
    pub async fn start(&self, start: RunStart) -> Result<RunReport, RunFailure> {
        let RunStart {
            flow: flow_id,
            input,
            run_id,
            journal,
            resume,
            fence,
            paused,
            held_files,
        } = start;
        let flow = self
            .project
            .flows
            .get(&flow_id)
            .ok_or_else(|| RunFailure::UnknownFlow(flow_id.clone()))?;
        let started_at = now();
        let spool = match &self.options.spool_dir {
            Some(d) => d.join(&run_id),
            None => std::env::temp_dir().join(format!("ferry-run-{run_id}")),
        };
        // made at the first file a step spools ([`Exec::spool_path`]): a run that spools
        // nothing (a delivery put where it goes, a record loop over a held file) creates no
        // directory
        let spool = SpoolDir(spool);
        let run = json!({
            "id": run_id,
            "flow": flow.id,
            "flow_name": flow.name,
            "version": flow.version,
            "started_at": started_at,
            "dry_run": self.options.dry_run,
        });
        let state = RunState {
            log: Mutex::new(RunLog::default()),
            spool: spool.0.clone(),
            spool_made: AtomicBool::new(false),
            counter: AtomicUsize::new(0),
            progress: AtomicUsize::new(0),
            dry_run: self.options.dry_run,
            run: run.clone(),
            journal,
            writing: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            urgent: AtomicBool::new(false),
            durable: tokio::sync::watch::Sender::new(0),
            ended: tokio::sync::Notify::new(),
            finished: AtomicBool::new(false),
            resume,
            fence: fence.or_else(|| self.options.fence.clone()),
            paused,
            deferred: Mutex::new(
                held_files
                    .into_iter()
                    .map(|(path, bytes)| {
                        let held =
                            crate::connectors::local::HeldFile::from_bytes(path.clone(), bytes);
                        (path, crate::steps::fetch::Deferred::Held(Arc::new(held)))
                    })
                    .collect(),
            ),
        };
        let mut scope = Scope::new(Value::Object(input), self.options.params.clone(), &run);
        let ex = Exec {
            engine: self,
            flow,
            state: &state,
            confirm: true,
        };
        let tracked = ex.track_values(&scope);
        let span = tracing::info_span!("run", otel.name = %format_args!("run {}", flow.id), flow = %flow.id, run_id = %run_id, dry_run = self.options.dry_run, outcome = tracing::field::Empty, otel.status_code = tracing::field::Empty, otel.status_description = tracing::field::Empty);
        crate::telemetry::run_started(&span, &flow.id, &run_id, self.options.dry_run);
        let begun = Instant::now();
        let work = async {
            let result = ex
                .run_block(&flow.steps, &mut scope)
                .instrument(span.clone())
                .await;
            let r = self.finish_run(&ex, &mut scope, result, &span).await;
            // the run's work ends here; journal writes may still wait for the history
            let finished_at = now();
            state.finished.store(true, Ordering::Release);
            state.wake.notify_one();
            state.ended.notify_one();
            (r, finished_at)
        };
        let (((outcome, error), finished_at), ()) = tokio::join!(work, state.ticker());
        state.flush().await;
        let log = std::mem::take(&mut *state.log.lock().unwrap_or_else(|p| p.into_inner()));
        crate::telemetry::run_finished(
            &span,
            (&flow.id, &run_id),
            outcome,
            error.as_ref(),
            &log.counters,
            begun.elapsed(),
        );
        drop(spool);
        Ok(RunReport {
            run_id,
            flow: flow.id.clone(),
            flow_name: flow.name.clone(),
            outcome,
            dry_run: self.options.dry_run,
            started_at,
            finished_at,
            error,
            counters: log.counters,
            events: log.kept.into_iter().chain(log.tail).collect(),
            events_omitted: log.omitted,
            tracked,
        })
    }

    /// The outcome of a run's block, after calling the flow's error handler on a failure.
    async fn finish_run(
        &self,
        ex: &Exec<'_>,
        scope: &mut Scope,
        result: Result<StepResult, StepError>,
        span: &tracing::Span,
    ) -> (Outcome, Option<RunError>) {
        let flow = ex.flow;
        match result {
            Ok(StepResult::End(o)) => (o, None),
            Ok(StepResult::Value(_) | StepResult::Output(_) | StepResult::Skip) => {
                (Outcome::Succeeded, None)
            }
            Err(e) => {
                let outcome = if ex.state.progress.load(Ordering::Relaxed) > 0 {
                    Outcome::Partial
                } else {
                    Outcome::Failed
                };
                tracing::warn!(parent: span, step = %e.step, error = %e.message, "run failed");
                if let Some((handler, with)) = &flow.on_error {
                    scope.set_var("error", &e.to_value());
                    let params = match ex.eval_value(with, scope) {
                        Ok(Value::Object(m)) => Ok(m),
                        Ok(_) => Ok(Map::new()),
                        Err(err) => Err(err),
                    };
                    let handled = match params {
                        Ok(p) => ex
                            .call_flow_with_error(handler, p, e.to_value(), scope, "on_error")
                            .instrument(span.clone())
                            .await
                            .map(|_| ()),
                        Err(err) => Err(err),
                    };
                    if let Err(h) = handled {
                        tracing::error!(parent: span, error = %h, "the error handler failed");
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
        }
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

/// The part called `name` of `flow`'s REST trigger `rest`; an input error that names the parts
/// it has when it has none of that name.
pub fn trigger_part<'r>(
    flow: &FlowPlan,
    rest: &'r crate::model::RestTrigger,
    name: &str,
) -> Result<&'r crate::model::PartSpec, RunFailure> {
    rest.parts.get(name).ok_or_else(|| {
        let known: Vec<_> = rest.parts.keys().cloned().collect();
        RunFailure::Input(format!(
            "flow '{}' has no trigger part '{name}' (parts: {})",
            flow.id,
            known.join(", ")
        ))
    })
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
        let spec = trigger_part(flow, rest, name)?;
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
    check_required_parts(flow, &input)?;
    Ok(input)
}

/// A trigger input `input` that lacks a part `flow` requires is [`RunFailure::Input`].
pub fn check_required_parts(flow: &FlowPlan, input: &Map<String, Value>) -> Result<(), RunFailure> {
    let Some(rest) = &flow.trigger.rest else {
        return Ok(());
    };
    match rest
        .parts
        .iter()
        .find(|(name, spec)| spec.required && !input.contains_key(*name))
    {
        Some((name, _)) => Err(RunFailure::Input(format!(
            "flow '{}' needs trigger part '{name}'",
            flow.id
        ))),
        None => Ok(()),
    }
}
