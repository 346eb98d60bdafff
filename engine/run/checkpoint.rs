//! The journal and checkpoints as a run uses them: what a run writes to the run history
//! as it goes, what a resumed run reads back, and the per-run state that batches the writes.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{Counters, Event, Fence};

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

/// Per-run shared state.
#[derive(Debug)]
pub(super) struct RunState {
    pub(super) log: Mutex<RunLog>,
    pub(super) spool: PathBuf,
    /// Whether `spool` was made (at the first [`super::Exec::spool_path`]).
    pub(super) spool_made: AtomicBool,
    pub(super) counter: AtomicUsize,
    pub(super) progress: AtomicUsize,
    pub(super) dry_run: bool,
    pub(super) run: Value,
    pub(super) journal: Option<Arc<dyn Journal>>,
    /// One journal write at a time, in order.
    pub(super) writing: tokio::sync::Mutex<()>,
    /// Wakes the journal ticker (a batch is full, or the run ended).
    pub(super) wake: tokio::sync::Notify,
    /// Wakes the journal ticker when the run's work ended.
    pub(super) ended: tokio::sync::Notify,
    /// A confirmed side effect waits: the ticker writes at once, without gathering.
    pub(super) urgent: AtomicBool,
    /// The number of the last confirmation written to the journal (see
    /// [`RunLog::confirmations`]): a step waits here for its own.
    pub(super) durable: tokio::sync::watch::Sender<u64>,
    pub(super) finished: AtomicBool,
    pub(super) resume: Resume,
    pub(super) fence: Option<Arc<dyn Fence>>,
    /// Paused flows: calling one fails.
    pub(super) paused: BTreeMap<String, String>,
    /// Spool paths of fetched files still on their object store, or held open (see
    /// [`crate::steps::fetch`]): the download or link happens when something reads the path.
    pub(super) deferred: Mutex<HashMap<PathBuf, crate::steps::fetch::Deferred>>,
}

/// What a run did so far: the events its report keeps, its counters, and what waits for
/// the next journal write.
#[derive(Debug, Default)]
pub(super) struct RunLog {
    pub(super) kept: Vec<Event>,
    /// The latest events after `kept` filled up, at most [`REPORT_TAIL_EVENTS`].
    pub(super) tail: std::collections::VecDeque<Event>,
    pub(super) kept_records: usize,
    pub(super) omitted: u64,
    pub(super) counters: Counters,
    pub(super) seq: u64,
    pub(super) batch: JournalBatch,
    /// Checkpoints by loop key, latest first written into `batch` at the next write.
    pub(super) checkpoints: BTreeMap<String, Checkpoint>,
    /// Records checkpointed since the last write.
    pub(super) records_since: usize,
    /// Side effects confirmed so far, numbered 1, 2, …
    pub(super) confirmations: u64,
    /// Files this run renamed: (connection, location, old name) → (new name, step).
    pub(super) renamed: std::collections::HashMap<(String, String, String), (String, String)>,
}

impl RunLog {
    pub(super) fn waiting(&self) -> usize {
        self.batch.events.len() + self.batch.confirmed.len() + self.records_since
    }
}

impl RunState {
    /// Writes what waits to the journal (no-op without one). A failed write keeps the batch
    /// for the next one and is logged. Returns whether what waited is written. Never given
    /// up half-way (a write future dropped while SQLite's `BEGIN` is answered can leave
    /// the pooled connection holding the write lock): a step that stops waiting for its
    /// confirmation waits on [`RunState::durable`] instead.
    pub(super) async fn flush(&self) -> bool {
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
    pub(super) fn put_back(&self, mut batch: JournalBatch) {
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
    pub(super) async fn ticker(&self) {
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
