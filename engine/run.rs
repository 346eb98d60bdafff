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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use minijinja::Value as JValue;
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
    /// Its output, already a template value (a loop's compact lists).
    Output(JValue),
    /// The loop item ends here, neither done nor failed (its file was gone).
    Skip,
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
    /// The run was stopped between steps (the server shut down, or the run lost its flow's
    /// lease).
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
    pub output: Option<JValue>,
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
    /// A file was left where it is (a name ferry refuses, or gone before it was fetched).
    Skipped {
        /// Connection.
        connection: String,
        /// Location.
        location: String,
        /// File name.
        name: String,
        /// Why.
        reason: String,
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
        /// The CSV record the request was sent for, inside a record loop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<u64>,
        /// What a failing or tolerated answer said (cut short).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Attempts made (more than 1 when `retry` resent it after transient failures).
        #[serde(default = "one_attempt")]
        attempts: u32,
        /// The key of the record a failing or tolerated request was sent for, as its loop
        /// declares in `track:`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
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

/// What a run did, counted as it went (every event counts, also those the report does not
/// keep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Files fetched.
    pub fetched: u64,
    /// Files put to a target.
    pub files_put: u64,
    /// Bytes put to targets.
    pub bytes_put: u64,
    /// Renames.
    pub renames: u64,
    /// Files left where they are.
    pub skipped: u64,
    /// REST requests answered with success (2xx).
    pub requests_ok: u64,
    /// REST requests whose failing status was tolerated.
    pub tolerated: u64,
    /// REST requests answered with a failing status.
    pub requests_failed: u64,
    /// Emails sent.
    pub emails: u64,
    /// Emails that could not be sent.
    pub emails_failed: u64,
}

impl Counters {
    /// The counters of `events`.
    pub fn of(events: &[Event]) -> Counters {
        let mut c = Counters::default();
        for e in events {
            c.count(e);
        }
        c
    }

    fn count(&mut self, e: &Event) {
        match e {
            Event::Fetched { .. } => self.fetched += 1,
            Event::Put { bytes, .. } => {
                self.files_put += 1;
                self.bytes_put += bytes;
            }
            Event::Renamed { .. } => self.renames += 1,
            Event::Skipped { .. } => self.skipped += 1,
            Event::Request {
                status: Some(s),
                suppressed,
                rejected,
                ..
            } => {
                if *suppressed {
                    self.tolerated += 1;
                } else if (200..300).contains(s) && !*rejected {
                    self.requests_ok += 1;
                } else {
                    self.requests_failed += 1;
                }
            }
            Event::Emailed { .. } => self.emails += 1,
            Event::EmailFailed { .. } => self.emails_failed += 1,
            _ => {}
        }
    }
}

/// Events a run report keeps in memory; the rest are counted (and, in a recorded run,
/// written to the run history as they happen).
pub const REPORT_EVENTS: usize = 10_000;
/// Successful requests of record loops a report keeps as examples; the rest are counted.
pub const REPORT_RECORD_EVENTS: usize = 100;
/// The last events a report keeps once its first [`REPORT_EVENTS`] are kept: a long run's
/// report ends with its real last events (the summary email, the failure), the middle is
/// counted.
pub const REPORT_TAIL_EVENTS: usize = 1_000;

/// Whether an event is a record loop's successful request: counted and checkpointed, never
/// stored one by one.
pub fn is_record_success(e: &Event) -> bool {
    matches!(e, Event::Request { record: Some(_), status: Some(s), suppressed: false, rejected: false, .. } if (200..300).contains(s))
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
    /// What happened, counted.
    pub counters: Counters,
    /// What happened, in order: every event but the successful requests of record loops
    /// past the first [`REPORT_RECORD_EVENTS`], the first [`REPORT_EVENTS`] events and the
    /// last [`REPORT_TAIL_EVENTS`] (the middle of a longer run is counted in
    /// `events_omitted`).
    pub events: Vec<Event>,
    /// Events counted but not kept in `events`.
    pub events_omitted: u64,
    /// The values the flow tracks the run by (`track:`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracked: BTreeMap<String, String>,
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
        usize::try_from(self.counters.files_put).unwrap_or(usize::MAX)
    }
    /// Bytes put to targets.
    pub fn bytes_moved(&self) -> u64 {
        self.counters.bytes_put
    }
    /// Renames.
    pub fn renames(&self) -> usize {
        usize::try_from(self.counters.renames).unwrap_or(usize::MAX)
    }
    /// REST requests answered with success (2xx).
    pub fn requests_ok(&self) -> usize {
        usize::try_from(self.counters.requests_ok).unwrap_or(usize::MAX)
    }
    /// REST requests whose failing status was tolerated.
    pub fn suppressed(&self) -> usize {
        usize::try_from(self.counters.tolerated).unwrap_or(usize::MAX)
    }
    /// Emails sent.
    pub fn emails(&self) -> usize {
        usize::try_from(self.counters.emails).unwrap_or(usize::MAX)
    }
    /// Emails that could not be sent (warnings; they never change the outcome).
    pub fn emails_failed(&self) -> usize {
        usize::try_from(self.counters.emails_failed).unwrap_or(usize::MAX)
    }
}

/// The progress of one record loop over one file: every record from `first` through
/// `through` is confirmed (a resumed run starts after `through`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The loop at its place in the run (see [`Scope::key_of`]).
    pub key: String,
    /// What the loop walks (the CSV file's name, for people).
    pub label: String,
    /// The first record number this run processed.
    pub first: u64,
    /// Every record from `first` through this one is confirmed (`first - 1`: none yet).
    pub through: u64,
    /// Records this run completed in this loop (also above `through`).
    pub done: u64,
}

/// What a run did since the last write to its journal.
#[derive(Debug, Default)]
pub struct JournalBatch {
    /// Events with their sequence number and time, in order (a record loop's successful
    /// requests are counted and checkpointed instead).
    pub events: Vec<(u64, String, Event)>,
    /// What the run is found by, beyond what its events say: the names of the files it
    /// listed, the values its flow tracks.
    pub keys: Vec<RunKey>,
    /// Side effects confirmed, by step key, with the step's output: a resumed run skips
    /// them.
    pub confirmed: Vec<(String, Value)>,
    /// The latest checkpoint of each record loop that moved.
    pub checkpoints: Vec<Checkpoint>,
    /// The run's counters now.
    pub counters: Counters,
}

impl JournalBatch {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.confirmed.is_empty()
            && self.checkpoints.is_empty()
            && self.keys.is_empty()
    }
}

/// A value a run is found by in the run history (`ferry runs --search`), beyond its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunKey {
    /// The name of a file the run listed (or was delivered).
    File(String),
    /// A value the flow declares in `track:`.
    Tracked {
        /// The declaration's name.
        name: String,
        /// Its value for this run.
        value: String,
    },
}

/// Where a run writes what it does as it goes (the run history implements it). Writes
/// come in order, at most one at a time; a write that fails is retried with the next.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Writes a batch.
    fn write<'a>(
        &'a self,
        batch: &'a JournalBatch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// What an interrupted run had confirmed, for the run that resumes it: side effects by
/// step key (skipped, their recorded output reused) and record loops by key (resumed after
/// `through`).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Confirmed steps: key → output.
    pub confirmed: HashMap<String, Value>,
    /// Record loops: key → the last record confirmed.
    pub through: HashMap<String, u64>,
}

/// Journal writes happen at least this often while a run goes on.
pub const JOURNAL_INTERVAL: Duration = Duration::from_secs(1);
/// A write woken by a full batch of records waits this long for what follows, so that a
/// burst of record-loop checkpoints is one write. A confirmed side effect outside record
/// loops does not wait: it is written before the next step starts.
pub const JOURNAL_GATHER: Duration = Duration::from_millis(10);
/// A journal write happens as soon as this many records or events are waiting.
pub const JOURNAL_BATCH: usize = 1_000;

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
    /// The spool directory could not be made.
    #[error("cannot create the run's spool directory {}: {source}", path.display())]
    Spool {
        /// The directory.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
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

/// Per-run shared state.
#[derive(Debug)]
struct RunState {
    log: Mutex<RunLog>,
    spool: PathBuf,
    counter: AtomicUsize,
    progress: AtomicUsize,
    dry_run: bool,
    run: Value,
    journal: Option<Arc<dyn Journal>>,
    /// One journal write at a time, in order.
    writing: tokio::sync::Mutex<()>,
    /// Wakes the journal ticker (a batch is full, or the run ended).
    wake: tokio::sync::Notify,
    /// Wakes the journal ticker when the run's work ended.
    ended: tokio::sync::Notify,
    /// A confirmed side effect waits: the ticker writes at once, without gathering.
    urgent: AtomicBool,
    /// The number of the last confirmation written to the journal (see
    /// [`RunLog::confirmations`]): a step waits here for its own.
    durable: tokio::sync::watch::Sender<u64>,
    finished: AtomicBool,
    resume: Resume,
    fence: Option<Arc<dyn Fence>>,
    /// Paused flows: calling one fails.
    paused: BTreeMap<String, String>,
}

/// What a run did so far: the events its report keeps, its counters, and what waits for
/// the next journal write.
#[derive(Debug, Default)]
struct RunLog {
    kept: Vec<Event>,
    /// The latest events after `kept` filled up, at most [`REPORT_TAIL_EVENTS`].
    tail: std::collections::VecDeque<Event>,
    kept_records: usize,
    omitted: u64,
    counters: Counters,
    seq: u64,
    batch: JournalBatch,
    /// Checkpoints by loop key, latest first written into `batch` at the next write.
    checkpoints: BTreeMap<String, Checkpoint>,
    /// Records checkpointed since the last write.
    records_since: usize,
    /// Side effects confirmed so far, numbered 1, 2, …
    confirmations: u64,
}

impl RunLog {
    fn waiting(&self) -> usize {
        self.batch.events.len() + self.batch.confirmed.len() + self.records_since
    }
}

impl RunState {
    /// Writes what waits to the journal (no-op without one). A failed write keeps the batch
    /// for the next one and is logged. Returns whether what waited is written. Never given
    /// up half-way (a write future dropped while SQLite's `BEGIN` is answered can leave
    /// the pooled connection holding the write lock): a step that stops waiting for its
    /// confirmation waits on [`RunState::durable`] instead.
    async fn flush(&self) -> bool {
        let Some(journal) = &self.journal else {
            return true;
        };
        let _turn = self.writing.lock().await;
        let (batch, confirmations) = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let mut batch = std::mem::take(&mut log.batch);
            batch.checkpoints = std::mem::take(&mut log.checkpoints).into_values().collect();
            batch.counters = log.counters;
            log.records_since = 0;
            (batch, log.confirmations)
        };
        let mut taken = Taken {
            state: self,
            batch: Some(batch),
        };
        let Some(batch) = taken.batch.as_ref() else {
            return true;
        };
        if batch.is_empty() && batch.counters == Counters::default() {
            taken.batch = None;
            self.durable.send_if_modified(|d| raise(d, confirmations));
            return true;
        }
        match journal.write(batch).await {
            Ok(()) => {
                taken.batch = None;
                self.durable.send_if_modified(|d| raise(d, confirmations));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the run's progress to the run history; will try again");
                false
            }
        }
    }

    /// Puts a batch that was not written back in front of what came meanwhile.
    fn put_back(&self, mut batch: JournalBatch) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let newer = std::mem::take(&mut log.batch);
        batch.events.extend(newer.events);
        batch.keys.extend(newer.keys);
        batch.confirmed.extend(newer.confirmed);
        for c in batch.checkpoints.drain(..) {
            log.checkpoints.entry(c.key.clone()).or_insert(c);
        }
        log.batch = batch;
    }

    /// Writes every [`JOURNAL_INTERVAL`] and whenever woken, until the run finished; a
    /// confirmed side effect at once, and again (every 50 ms, then up to every second)
    /// while the history does not take it.
    async fn ticker(&self) {
        if self.journal.is_none() {
            return;
        }
        let mut retry = Duration::from_millis(50);
        while !self.finished.load(Ordering::Acquire) {
            tokio::select! {
                () = tokio::time::sleep(JOURNAL_INTERVAL) => {}
                () = self.wake.notified() => {}
            }
            if self.finished.load(Ordering::Acquire) {
                break;
            }
            let urgent = self.urgent.swap(false, Ordering::AcqRel);
            if !urgent {
                // what follows a wake closely goes in the same write: one transaction for
                // a burst of checkpoints, not one each (the end of the run cuts this short)
                tokio::select! {
                    () = tokio::time::sleep(JOURNAL_GATHER) => {}
                    () = self.ended.notified() => {}
                }
            }
            if self.flush().await {
                retry = Duration::from_millis(50);
            } else if urgent {
                // a step waits for its confirmation: try again soon
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = self.ended.notified() => {}
                }
                retry = (retry * 2).min(Duration::from_secs(1));
                self.urgent.store(true, Ordering::Release);
                self.wake.notify_one();
            }
        }
    }
}

/// Raises the durable confirmation number to `to` (never lowers it).
fn raise(durable: &mut u64, to: u64) -> bool {
    if to > *durable {
        *durable = to;
        true
    } else {
        false
    }
}

/// A batch taken from the log for a journal write: put back unless the write succeeded.
struct Taken<'a> {
    state: &'a RunState,
    batch: Option<JournalBatch>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.state.put_back(batch);
        }
    }
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
        std::fs::create_dir_all(&spool).map_err(|source| RunFailure::Spool {
            path: spool.clone(),
            source,
        })?;
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

/// `attempts` of a request event recorded before retries existed.
fn one_attempt() -> u32 {
    1
}

/// A new run id: a UUID v7 string (time-ordered).
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, as run reports write it: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The variables templates see: `input`, `params`, `steps`, `run`, `error` and the loop
/// variables, held as template values.
///
/// Values are converted to template values once, when they are set, and shared (a template
/// value is reference-counted): the context a template renders in is built once per change of
/// the scope and cached, so the cost of a render does not depend on how much the scope holds
/// (a listing of 100,000 files costs nothing to a template that reads `file.name`). Cloning a
/// scope (one per item of a concurrent loop) clones references, not values.
#[derive(Debug, Clone)]
pub struct Scope {
    vars: BTreeMap<String, JValue>,
    steps: BTreeMap<String, JValue>,
    ctx: OnceLock<JValue>,
    /// Where this scope is in the run: the loop items it is inside, outermost first, as
    /// `(loop step id, item key)`. Keys of step confirmations and record checkpoints.
    path: Vec<(String, String)>,
    /// The CSV record this scope is processing, if inside a record loop.
    record: Option<u64>,
    /// That record's key, as its loop declares in `track:`.
    record_key: Option<String>,
    /// Spool files fetched in this scope: a loop item removes them when it ends.
    spooled: Vec<PathBuf>,
    /// The step running in this scope.
    step: String,
    /// How many loop items deep this scope is.
    loops: usize,
}

impl Scope {
    fn new(input: Value, params: Map<String, Value>, run: &Value) -> Scope {
        let mut s = Scope {
            vars: BTreeMap::new(),
            steps: BTreeMap::new(),
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
        s.set_var("error", &Value::Null);
        s
    }

    /// The template context (built once per change).
    fn ctx(&self) -> JValue {
        self.ctx
            .get_or_init(|| {
                let mut root: BTreeMap<String, JValue> = self.vars.clone();
                root.insert("steps".into(), JValue::from(self.steps.clone()));
                JValue::from(root)
            })
            .clone()
    }

    fn changed(&mut self) {
        self.ctx = OnceLock::new();
    }

    /// Sets a root variable.
    pub fn set_var(&mut self, name: &str, v: &Value) {
        self.set_var_value(name, JValue::from_serialize(v));
    }

    /// Sets a root variable to a template value.
    pub fn set_var_value(&mut self, name: &str, v: JValue) {
        self.vars.insert(name.to_string(), v);
        self.changed();
    }

    /// Removes a root variable.
    pub fn remove_var(&mut self, name: &str) {
        if self.vars.remove(name).is_some() {
            self.changed();
        }
    }

    /// Sets the output of step `id` (`steps.<id>`).
    pub fn set_output(&mut self, id: &str, v: &Value) {
        self.set_output_value(id, JValue::from_serialize(v));
    }

    /// Sets the output of step `id` to a template value.
    pub fn set_output_value(&mut self, id: &str, v: JValue) {
        self.steps.insert(id.to_string(), v);
        self.changed();
    }

    /// The output of step `id`, if it ran.
    pub fn output(&self, id: &str) -> Option<&JValue> {
        self.steps.get(id)
    }

    /// All step outputs, as JSON (a child flow's result).
    fn steps_json(&self) -> Value {
        serde_json::to_value(&self.steps).unwrap_or(Value::Null)
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
        self.steps.clone_from(&other.steps);
        self.changed();
    }

    /// The key of the innermost loop item this scope is in.
    pub fn item_key(&self) -> Option<&str> {
        self.path.last().map(|(_, k)| k.as_str())
    }

    /// Whether this scope is inside a loop item.
    pub fn in_loop(&self) -> bool {
        self.loops > 0
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
        for p in self.spooled.drain(keep.min(self.spooled.len())..) {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a spool file");
            }
        }
    }

    /// How many spool files this scope holds.
    pub fn spooled_len(&self) -> usize {
        self.spooled.len()
    }
}

/// The execution context steps run in: the engine, the flow, the run's state.
pub struct Exec<'a> {
    engine: &'a Engine,
    flow: &'a FlowPlan,
    state: &'a RunState,
    /// Whether this flow's side effects are confirmed for a resume (not in the error
    /// handler).
    confirm: bool,
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

    fn eval_value_in(&self, v: &ValueTpl, ctx: &JValue) -> Result<Value, StepError> {
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

    /// Evaluates an expression to a template value (no copy into JSON: a loop's items).
    pub fn eval_expression_value(&self, src: &str, scope: &Scope) -> Result<JValue, StepError> {
        self.flow
            .templates
            .eval_expression_value(src, &scope.ctx())
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

    /// A fresh path in the run's spool directory, ending in `name`. The caller owns the
    /// file: a loop item removes the spool files its steps made when it ends (see
    /// [`Scope::spooled`]).
    pub fn spool_path(&self, name: &str) -> PathBuf {
        let n = self.state.counter.fetch_add(1, Ordering::Relaxed);
        self.state.spool.join(format!("{n:06}-{name}"))
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
    fn track_values(&self, scope: &Scope) -> BTreeMap<String, String> {
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
    /// fails the calling step.
    pub fn call_flow<'s>(
        &'s self,
        flow_id: &'s str,
        params: Map<String, Value>,
        caller: &Scope,
        step: &str,
    ) -> Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send + 's>> {
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
    ) -> Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send + 's>> {
        let mut path = caller.path.clone();
        path.push((step.to_string(), flow_id.to_string()));
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
            scope.set_var("error", &error);
            scope.path = path;
            scope.record = record;
            scope.record_key = record_key;
            let span = tracing::info_span!("child_flow", otel.name = %format_args!("child {}", child.id), flow = %child.id);
            match ex
                .run_block(&child.steps, &mut scope)
                .instrument(span)
                .await
            {
                Ok(_) => Ok(json!({ "flow": child.id, "steps": scope.steps_json() })),
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
                        self.confirm(k.clone(), v).await;
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
