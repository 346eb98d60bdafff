//! What a run reports: its outcome, the events it records, step results and errors, the
//! counters and the run report.

use std::collections::BTreeMap;

use minijinja::Value as JValue;
use serde::Serialize;
use serde_json::{Map, Value, json};

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

    pub(super) fn count(&mut self, e: &Event) {
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

/// `attempts` of a request event recorded before retries existed.
fn one_attempt() -> u32 {
    1
}
