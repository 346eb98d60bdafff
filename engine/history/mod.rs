//! The run history: every run of a flow, recorded in a SQL database.
//!
//! Each run is a row in `runs` — its flow, trigger (`manual`, `schedule`, `rest`,
//! `resubmit`), start and end, outcome (`running` while it runs, then `succeeded`,
//! `partial`, `failed`, `no_files`, or `interrupted` when ferry stopped during it —
//! `abandoned` when that was before its trigger input was kept), counters,
//! the error (step, kind, message, loop items, and the file and record it was on) and the
//! run's events as JSON. Beside it, derived from the [`RunReport`](crate::run::RunReport)'s events: the files it
//! fetched, put and renamed (`run_files`), the REST requests it sent — one per record of a
//! record-by-record flow — with their outcome (`run_records`), and the emails it sent
//! (`run_emails`). What a resubmit needs is kept with the run (`run_inputs`): the trigger
//! parts of a REST delivery, JSON values in the row, and a byte-exact copy of every part —
//! in an SQLite history under the data directory, `<data>/inputs/<run_id>/<part>`; in a
//! PostgreSQL history in the database itself (`run_input_chunks`), so that instances that
//! share no disk can each resubmit any run (see [`Store::keep_input`]). `resubmit_of` links a
//! resubmitted run to the original.
//!
//! Secrets never enter the store: it holds only what a [`RunReport`](crate::run::RunReport) holds (which has
//! none) and the trigger input; never the environment or connection settings.
//!
//! # Backends
//!
//! One code path over `sqlx`'s [`sqlx::Any`] driver, with runtime queries only (no
//! compile-time checked macros). The embedded default is SQLite in a data directory
//! ([`Store::open_sqlite`]; `<dir>/ferry.db`, WAL journal, a busy timeout);
//! [`Store::open_postgres`] takes a PostgreSQL URL. The SQL is written for both: `$N`
//! placeholders, TEXT ids (UUID v7 strings), TEXT timestamps (RFC 3339, UTC, milliseconds,
//! `Z` — fixed width, so they compare as text), BIGINT counters and flags.
//!
//! # Schema migrations
//!
//! `schema_migrations (version, name, applied_at)` lists the applied steps. Steps are
//! ordered and idempotent (`CREATE … IF NOT EXISTS`, the version row inserted `ON CONFLICT
//! DO NOTHING`), each in its own transaction, so opening a store twice — or from two
//! processes at once — is safe. A database with a step this ferry does not know is refused.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo(engine: &ferry::run::Engine) -> Result<(), Box<dyn std::error::Error>> {
//! use ferry::history::{self, RunFilter, RunRequest, Store, Trigger};
//! let store = Store::open_sqlite("ferry-data/state".as_ref()).await?;
//! // run a flow, recording it (a recording failure never changes the run)
//! let recorded = history::run_recorded(
//!     engine,
//!     Some(&store),
//!     RunRequest::new("MY_FLOW", Trigger::Manual),
//! )
//! .await?;
//! let runs = store.list(&RunFilter::default()).await?;
//! let detail = store.get(&recorded.report.run_id).await?;
//! let again = history::resubmit(engine, &store, &recorded.report.run_id).await?;
//! let purged = store.purge(chrono::Utc::now() - chrono::Duration::days(30)).await?;
//! # Ok(()) }
//! ```
//!
//! The lower-level calls: [`Store::begin`] (records `running`, returns the run id for
//! [`crate::run::Engine::run_with_id`]; [`Store::begin_awaiting_input`] for a run whose
//! trigger input comes next: stopped before it is kept, the run is `abandoned`),
//! [`Store::keep_input`], [`Store::finish`]; [`Store::resume_chain`] is what a resubmit
//! resumes from;
//! [`Store::record`] records a finished report in one go; [`Store::input`] gives a run's
//! kept trigger parts. A process that runs flows registers as their owner
//! ([`Store::register`]); opening a store marks the runs of owners that died `interrupted`
//! ([`Store::sweep_dead_owners`]); a flow runs under its lease ([`Store::acquire_lease`],
//! a [`HeldLease`] that is the run's fence). See `cluster.rs`.

mod cluster;
mod derive;
mod group;
mod journal;
mod pages;
mod replay;
mod schema;
mod store;
pub mod text;
mod tracking;

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

pub use cluster::{
    DEFAULT_HEARTBEAT, HeldLease, Instance, LeaseHolder, STALE_HEARTBEATS, Tick, TickStatus,
    flow_lease, host_name, lease_margin,
};
pub use derive::{email_outcomes, error_file, error_record, file_outcomes, record_outcomes};
pub use journal::{
    EventFilter, EventPage, LoopProgress, MAX_PAGE, PAGE, RESUME_CHAIN, SPOOL_DIR, StoredEvent,
    TEST_JOURNAL_DELAY_ENV, event_kind,
};
pub use pages::{LOOP_NUMBERS, LoopSummary, thousands};
pub use replay::{
    Prepared, Recorded, ResubmitError, RunRequest, execute, input_summary, prepare, prepare_held,
    resubmit, resubmit_request, run_recorded,
};
pub use store::Store;
pub use tracking::{
    MAX_KEY_BYTES, MAX_REASON_CHARS, MAX_SEARCH_CHARS, Pause, TrackedValue, check_search,
};

use crate::model::PartKind;

/// The default data directory of the embedded store (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "ferry-data/state";
/// The SQLite database file in the data directory.
pub const DB_FILE: &str = "ferry.db";
/// The directory of kept trigger inputs in the data directory.
pub const INPUTS_DIR: &str = "inputs";
/// The directory, in the data directory, of this process's copies of the inputs kept in a
/// PostgreSQL history: `<data>/input-copies/<run_id>/<part>`. Only a cache: each copy is
/// checked against the database's size and SHA-256 before use and made again from it when it
/// is missing or differs.
pub const INPUT_COPIES_DIR: &str = "input-copies";
/// The largest chunk of a kept part's bytes in the database (one row of
/// `run_input_chunks`): keeping and reading a part holds one chunk in memory at a time.
pub const INPUT_CHUNK_BYTES: usize = 1024 * 1024;
/// The largest trigger part kept in the database: 4 GiB, the largest request body a REST
/// trigger may accept (`max_body_mib` at most 4096), so every part `ferry serve` takes fits;
/// a larger part (only `ferry run --input` can give one) is refused, and the run with it.
pub const MAX_KEPT_PART_BYTES: u64 = 4096 * 1024 * 1024;
/// Chunks of kept parts deleted per transaction by [`Store::purge`] (64 MiB at most).
pub const PURGE_CHUNKS: usize = 64;
/// Runs deleted per transaction by [`Store::purge`].
pub const PURGE_BATCH: usize = 500;
/// Event, file, record and email rows deleted per transaction by [`Store::purge`] (a run
/// of a million events is purged in many short transactions, never one long one).
pub const PURGE_ROWS: usize = 5_000;

/// A run history failure.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database failed.
    #[error("run history database: {0}")]
    Db(#[from] sqlx::Error),
    /// A file or directory of the store failed.
    #[error("run history: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// No run has this id.
    #[error("no run '{0}' in the run history")]
    UnknownRun(String),
    /// A kept trigger input file is missing or changed.
    #[error("run '{run}': the kept input part '{part}' is gone or changed ({reason})")]
    InputGone {
        /// The run.
        run: String,
        /// The part.
        part: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The database holds a schema this ferry does not know (a newer ferry wrote it).
    #[error("the run history database has schema version {found}; this ferry knows up to {known}")]
    SchemaTooNew {
        /// The highest applied version.
        found: i64,
        /// The highest version this ferry knows.
        known: i64,
    },
    /// A stored value cannot be read back.
    #[error("run history: unreadable {what}: {value}")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// The stored value.
        value: String,
    },
    /// There is no store in the directory.
    #[error("no run history in {0} (`ferry run` records there; choose another with --data)")]
    NoStore(PathBuf),
    /// An argument is unusable (a part name that is not a file name, a bad run id).
    #[error("run history: {0}")]
    Invalid(String),
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `ferry run`, or "run now".
    Manual,
    /// The flow's schedule.
    Schedule,
    /// A REST delivery.
    Rest,
    /// A resubmit of an earlier run.
    Resubmit,
}

impl Trigger {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Rest => "rest",
            Trigger::Resubmit => "resubmit",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "manual" => Trigger::Manual,
            "schedule" => Trigger::Schedule,
            "rest" => Trigger::Rest,
            "resubmit" => Trigger::Resubmit,
            _ => {
                return Err(format!(
                    "unknown trigger '{s}' (manual, schedule, rest, resubmit)"
                ));
            }
        })
    }
}

/// The outcome of a recorded run: the engine's [`crate::run::Outcome`], or `running`,
/// `interrupted` and `abandoned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still running.
    Running,
    /// Everything done.
    Succeeded,
    /// Failed after some items were done.
    Partial,
    /// Failed before any item was done.
    Failed,
    /// Nothing to do.
    NoFiles,
    /// ferry stopped while the run ran.
    Interrupted,
    /// ferry stopped before the run's trigger input was kept (a REST delivery killed
    /// between its record and its parts): there is nothing to run again, its sender got no
    /// `202`, and it is no lost work — it is not offered for resubmit.
    Abandoned,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::NoFiles => "no_files",
            Outcome::Interrupted => "interrupted",
            Outcome::Abandoned => "abandoned",
        }
    }
}

impl From<crate::run::Outcome> for Outcome {
    fn from(o: crate::run::Outcome) -> Outcome {
        match o {
            crate::run::Outcome::Succeeded => Outcome::Succeeded,
            crate::run::Outcome::Partial => Outcome::Partial,
            crate::run::Outcome::Failed => Outcome::Failed,
            crate::run::Outcome::NoFiles => Outcome::NoFiles,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => Outcome::Running,
            "succeeded" => Outcome::Succeeded,
            "partial" => Outcome::Partial,
            "failed" => Outcome::Failed,
            "no_files" => Outcome::NoFiles,
            "interrupted" => Outcome::Interrupted,
            "abandoned" => Outcome::Abandoned,
            _ => {
                return Err(format!(
                    "unknown outcome '{s}' (running, succeeded, partial, failed, no_files, interrupted, abandoned)"
                ));
            }
        })
    }
}

/// A run about to start ([`Store::begin`]).
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Flow id.
    pub flow: &'a str,
    /// Flow name.
    pub flow_name: &'a str,
    /// What started it.
    pub trigger: Trigger,
    /// A one-line summary of the trigger input, shown in listings.
    pub input_summary: Option<&'a str>,
    /// The run this one resubmits.
    pub resubmit_of: Option<&'a str>,
    /// Whether it is a dry run.
    pub dry_run: bool,
}

/// Which runs [`Store::list`] gives, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this flow.
    pub flow: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only runs started at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many (default 50).
    pub limit: Option<u32>,
    /// Only runs that handled a file whose name contains this text, or that its flow
    /// tracks by this value (`track:`), or with a failed or tolerated record of this number
    /// or key (see the tracking module).
    pub search: Option<String>,
    /// Only runs listed after this run (the cursor of the next page: the last run id of
    /// the page before).
    pub before: Option<String>,
}

/// One run, as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Flow id.
    pub flow: String,
    /// Flow name.
    pub flow_name: String,
    /// What started it.
    pub trigger: Trigger,
    /// Outcome.
    pub outcome: Outcome,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Start (RFC 3339, UTC).
    pub started_at: String,
    /// End (RFC 3339, UTC), once it ended.
    pub finished_at: Option<String>,
    /// Duration in milliseconds, once it ended.
    pub duration_ms: Option<i64>,
    /// The run this one resubmits.
    pub resubmit_of: Option<String>,
    /// The trigger input, summed up.
    pub input_summary: Option<String>,
    /// Files put to a target.
    pub files: i64,
    /// Bytes put to targets.
    pub bytes: i64,
    /// Renames.
    pub renames: i64,
    /// REST requests (records) answered with success.
    pub records_ok: i64,
    /// REST requests whose failing status was tolerated.
    pub records_tolerated: i64,
    /// REST requests answered with a failing status.
    pub records_failed: i64,
    /// Emails sent.
    pub emails: i64,
    /// The failure, in one line (`step: message`).
    pub error: Option<String>,
    /// The file a failing loop was on.
    pub error_file: Option<String>,
    /// The record a failing CSV loop was on.
    pub error_record: Option<i64>,
}

/// One run with everything recorded about it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunDetail {
    /// The listing fields.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// The failure.
    pub failure: Option<StoredError>,
    /// Files fetched, put and renamed, in order: the first page of [`PAGE`]
    /// (`file_actions` in JSON: `files` is the summary's count).
    #[serde(rename = "file_actions")]
    pub files: Vec<FileOutcome>,
    /// REST requests that are rows, in order: a record loop's failures and tolerated
    /// answers, and requests outside record loops; the first page of [`PAGE`].
    pub records: Vec<RecordOutcome>,
    /// Emails sent, in order (`emails_sent` in JSON: `emails` is the summary's count).
    #[serde(rename = "emails_sent")]
    pub emails: Vec<EmailSent>,
    /// The kept trigger input.
    pub inputs: Vec<StoredPart>,
    /// Runs that resubmitted this one.
    pub resubmitted_as: Vec<String>,
    /// The values its flow tracks it by (`track:`), in name order.
    pub tracked: Vec<TrackedValue>,
    /// The run's first events ([`crate::run::Event`] as JSON), in order: a page of
    /// [`PAGE`]; [`Store::events_page`] reads on from `events_next`.
    pub events: Vec<Value>,
    /// The cursor of the next page of events, when the run has more.
    pub events_next: Option<i64>,
    /// The progress of the run's record loops: every record of `first..=through`
    /// confirmed, the failures and tolerated answers among them in `records`.
    pub loops: Vec<LoopProgress>,
    /// The cursor (`after`, filter `files`) of the next page of files, when there is one.
    pub files_next: Option<i64>,
    /// The cursor (`after`, filter `requests`) of the next page of records, when there is one.
    pub records_next: Option<i64>,
}

/// A run's failure, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredError {
    /// The step that failed.
    pub step: String,
    /// The kind of failure (`template`, `connector`, `http`, …).
    pub kind: String,
    /// What happened.
    pub message: String,
    /// The loop items being processed, by loop variable.
    pub items: Map<String, Value>,
    /// The file a loop was on (an item with a `name`).
    pub file: Option<String>,
    /// The record a CSV loop was on (an item with a `number`).
    pub record: Option<i64>,
}

/// What a run did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Fetched into the spool.
    Fetched,
    /// Put to a target.
    Put,
    /// Renamed.
    Renamed,
    /// Left where it is (a name ferry refuses; the reason is in the run's events).
    Skipped,
}

impl FileAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileAction::Fetched => "fetched",
            FileAction::Put => "put",
            FileAction::Renamed => "renamed",
            FileAction::Skipped => "skipped",
        }
    }
}

/// One file event of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileOutcome {
    /// What was done.
    pub action: FileAction,
    /// Connection.
    pub connection: String,
    /// Location.
    pub location: String,
    /// File name (the old name of a rename).
    pub name: String,
    /// The new name of a rename.
    pub renamed_to: Option<String>,
    /// Size, for fetches and puts.
    pub bytes: Option<i64>,
}

/// How a REST request (a record) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Answered with success (2xx).
    Sent,
    /// Answered with a failing status that the flow tolerates.
    Tolerated,
    /// Answered with a failing status.
    Failed,
    /// Not sent (a dry run).
    NotSent,
}

impl RecordStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Sent => "sent",
            RecordStatus::Tolerated => "tolerated",
            RecordStatus::Failed => "failed",
            RecordStatus::NotSent => "not_sent",
        }
    }
}

/// One REST request of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordOutcome {
    /// The CSV record it was sent for, inside a record loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<i64>,
    /// What a failing or tolerated answer said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Connection.
    pub connection: String,
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Status answered.
    pub status: Option<i64>,
    /// How it ended.
    pub outcome: RecordStatus,
}

/// One email a run sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailSent {
    /// Recipients.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
}

/// A trigger part to keep with a run ([`Store::keep_input`]): a file on disk holding a JSON
/// part's document or a file part's content.
#[derive(Debug, Clone)]
pub struct InputPart {
    /// Part name.
    pub name: String,
    /// Part kind.
    pub kind: PartKind,
    /// Where its bytes are now.
    pub path: PathBuf,
    /// The file name it was delivered under (file parts; default: `path`'s file name).
    pub file_name: Option<String>,
}

/// A delivered trigger part held in memory ([`Store::begin_with_held`]): a small delivery's
/// part, kept in the history database itself with its run, so that recording it creates no
/// file. `ferry serve` holds a delivery so when its body is at most
/// [`HELD_DELIVERY_BYTES`]; larger ones are staged as files ([`InputPart`]).
#[derive(Debug, Clone)]
pub struct HeldPart {
    /// Part name.
    pub name: String,
    /// Part kind.
    pub kind: PartKind,
    /// Its bytes.
    pub bytes: std::sync::Arc<[u8]>,
    /// The file name it was delivered under (file parts).
    pub file_name: Option<String>,
}

/// The largest delivery body (bytes, as its `Content-Length` says) whose parts `ferry serve`
/// holds in memory and keeps in the history database with the run's record (no file is
/// created before the `202`); a larger body, or one without a length, is staged as files.
pub const HELD_DELIVERY_BYTES: usize = 256 * 1024;

/// The most bytes of deliveries `ferry serve` holds in memory at once ([`HELD_DELIVERY_BYTES`]
/// each): past it, a delivery is staged as files instead (it is not refused).
pub const HELD_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// A kept trigger part ([`Store::input`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPart {
    /// Part name.
    pub name: String,
    /// Part kind.
    pub kind: PartKind,
    /// The file name it was delivered under (file parts).
    pub file_name: Option<String>,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// The value of a JSON part.
    pub value: Option<Value>,
    /// The kept copy: `<data>/inputs/<run_id>/<part>` for a part kept as a file (an SQLite
    /// history, or a PostgreSQL one before schema version 5); for a part kept in the
    /// database, this process's copy, `<data>/input-copies/<run_id>/<part>`, which
    /// [`Store::input`] makes from the database (the detail of [`Store::get`] names it
    /// without making it).
    pub path: PathBuf,
}

impl StoredPart {
    /// The part as [`crate::run::trigger_input`] takes it: name, path, delivered file name.
    pub fn as_trigger_part(&self) -> (String, PathBuf, Option<String>) {
        (self.name.clone(), self.path.clone(), self.file_name.clone())
    }
}
