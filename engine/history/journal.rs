//! A run's history written as the run goes, and read back a page at a time.
//!
//! [`Store::journal`] gives the [`Journal`] a run writes to (see [`crate::run::RunStart`]):
//! each write is one transaction that appends the run's new events as rows of `run_events`
//! (one row per event, kind and JSON body), records the side effects the run confirmed
//! (`run_steps`: step key and output), moves the checkpoints of its record loops
//! (`run_loops`: every record from `first_number` through `through_number` confirmed) and
//! updates the run's counters, so that a run that is killed shows the progress it made and
//! a resubmit can resume it ([`Store::resume_point`]).
//!
//! A record loop's successful requests are not rows: they are the checkpoint's range and
//! the run's `records_ok` counter, a few bytes per record whatever the volume. Requests that
//! failed or whose answer was tolerated stay rows with their record number, status and the
//! answer's message. Readers take pages ([`Store::events_page`]), never the whole run.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row as _;

use super::store::{Param, clamp_i64, insert_rows, now, upsert_rows};
use super::{HistoryError, Store};
use crate::run::{Checkpoint, Counters, Event, Journal, JournalBatch, Resume};

/// Events a run detail holds at most per page.
pub const PAGE: u32 = 200;
/// The most events one page may ask for.
pub const MAX_PAGE: u32 = 1_000;

/// The stored kind of an event: its tag, and for requests how it ended.
pub fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::Listed { .. } => "listed",
        Event::Fetched { .. } => "fetched",
        Event::Put { .. } => "put",
        Event::Renamed { .. } => "renamed",
        Event::Skipped { .. } => "skipped",
        Event::Request { status: None, .. } => "request_not_sent",
        Event::Request {
            suppressed: true, ..
        } => "request_tolerated",
        Event::Request { rejected: true, .. } => "request_failed",
        Event::Request {
            status: Some(s), ..
        } if (200..300).contains(s) => "request_ok",
        Event::Request { .. } => "request_failed",
        Event::Emailed { .. } => "emailed",
        Event::EmailFailed { .. } => "email_failed",
        Event::Body { .. } => "body",
        Event::Failed { .. } => "failed",
    }
}

/// Which events a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFilter {
    /// Every event.
    #[default]
    All,
    /// Files fetched, put, renamed and skipped.
    Files,
    /// REST requests, however they ended.
    Requests,
    /// Requests that failed, and step failures.
    Failed,
    /// Requests whose failing answer was tolerated.
    Tolerated,
    /// Emails, sent or not.
    Emails,
}

impl EventFilter {
    pub(super) fn kinds(self) -> &'static [&'static str] {
        match self {
            EventFilter::All => &[],
            EventFilter::Files => &["fetched", "put", "renamed", "skipped"],
            EventFilter::Requests => &[
                "request_ok",
                "request_tolerated",
                "request_failed",
                "request_not_sent",
            ],
            EventFilter::Failed => &["request_failed", "failed"],
            EventFilter::Tolerated => &["request_tolerated"],
            EventFilter::Emails => &["emailed", "email_failed"],
        }
    }
}

impl EventFilter {
    /// The name `--status` and `?status=` take.
    pub fn name(self) -> &'static str {
        match self {
            EventFilter::All => "all",
            EventFilter::Files => "files",
            EventFilter::Requests => "requests",
            EventFilter::Failed => "failed",
            EventFilter::Tolerated => "tolerated",
            EventFilter::Emails => "emails",
        }
    }
}

impl std::str::FromStr for EventFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "all" => EventFilter::All,
            "files" => EventFilter::Files,
            "requests" | "records" => EventFilter::Requests,
            "failed" => EventFilter::Failed,
            "tolerated" => EventFilter::Tolerated,
            "emails" => EventFilter::Emails,
            _ => {
                return Err(format!(
                    "unknown filter '{s}' (all, files, requests, failed, tolerated, emails)"
                ));
            }
        })
    }
}

/// One stored event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredEvent {
    /// Its place in the run (1, 2, …).
    pub seq: i64,
    /// When it happened.
    pub at: String,
    /// The event ([`Event`] as JSON).
    #[serde(flatten)]
    pub event: Value,
}

/// A page of a run's events.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventPage {
    /// The events, in order.
    pub events: Vec<StoredEvent>,
    /// The cursor of the next page (`after`), when there is one.
    pub next: Option<i64>,
}

/// The progress of one record loop over one file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoopProgress {
    /// The loop at its place in the run.
    pub key: String,
    /// The file it walked.
    pub label: String,
    /// The first record the run processed.
    pub first: i64,
    /// Every record from `first` through this one is confirmed.
    pub through: i64,
    /// Records completed.
    pub done: i64,
}

/// For tests only: `FERRY_TEST_JOURNAL_DELAY_MS` delays every journal write by that many
/// milliseconds, so that a test can kill a run while a write is under way and prove what
/// was on disk before the next step started. Unset (always, outside tests): no delay.
pub const TEST_JOURNAL_DELAY_ENV: &str = "FERRY_TEST_JOURNAL_DELAY_MS";

fn test_write_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var(TEST_JOURNAL_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// Writes one run's batches to the store.
#[derive(Debug)]
struct StoreJournal {
    store: Store,
    run_id: String,
}

impl Journal for StoreJournal {
    fn write<'a>(
        &'a self,
        batch: &'a JournalBatch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(delay) = test_write_delay() {
                tokio::time::sleep(delay).await;
            }
            self.store
                .write_batch(&self.run_id, batch)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// A journal batch as rows, written in a group commit.
struct BatchWrite {
    run_id: String,
    events: Vec<Vec<Param>>,
    keys: Vec<Vec<Param>>,
    confirmed: Vec<(String, String)>,
    checkpoints: Vec<Checkpoint>,
    counters: Counters,
}

impl super::group::Write for BatchWrite {
    fn write<'c>(
        &'c self,
        conn: &'c mut sqlx::AnyConnection,
        _: &'c mut super::group::Shared,
    ) -> super::group::WriteFuture<'c> {
        Box::pin(async move {
            let BatchWrite {
                run_id,
                events,
                keys,
                confirmed,
                checkpoints,
                counters,
            } = self;
            insert_rows(conn, "run_events", EVENT_COLUMNS, events.clone()).await?;
            super::tracking::insert_keys(conn, keys.clone()).await?;
            // one statement for the batch; a step confirmed twice in it keeps its last output
            let mut last = HashMap::new();
            for (i, (key, _)) in confirmed.iter().enumerate() {
                last.insert(key.as_str(), i);
            }
            let steps = confirmed
                .iter()
                .enumerate()
                .filter(|(i, (key, _))| last.get(key.as_str()) == Some(i))
                .map(|(_, (key, output))| {
                    vec![
                        Param::Text(run_id.clone()),
                        Param::Text(key.clone()),
                        Param::Text(output.clone()),
                    ]
                })
                .collect();
            upsert_rows(
                conn,
                "run_steps",
                &["run_id", "key", "output"],
                "(run_id, key)",
                &["output"],
                steps,
            )
            .await?;
            for c in checkpoints {
                write_checkpoint(conn, run_id, c).await?;
            }
            write_counters(conn, run_id, counters).await
        })
    }
}

/// The most links of a resubmit chain [`Store::resume_chain`] follows.
pub const RESUME_CHAIN: usize = 100;

/// The directory of the runs' spool directories in a data directory: `<data>/spool`, one
/// folder per run, named by its id.
pub const SPOOL_DIR: &str = "spool";

impl Store {
    /// Where runs recorded in this store spool their files: `<data>/spool/<run id>`.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.data_dir().join(SPOOL_DIR)
    }

    /// Removes the spool folders of runs that are no longer running (a process killed in
    /// the middle of a run leaves its fetched files there); returns how many. Best effort:
    /// what cannot be removed is logged.
    pub async fn sweep_spool(&self) -> Result<usize, HistoryError> {
        self.sweep_spool_in(&self.spool_dir()).await
    }

    /// Like [`Store::sweep_spool`], for the spool folders in `dir`.
    pub async fn sweep_spool_in(&self, dir: &std::path::Path) -> Result<usize, HistoryError> {
        let dir = dir.to_path_buf();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(HistoryError::Io { path: dir, source }),
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let running = sqlx::query("SELECT outcome FROM runs WHERE id = $1")
                .bind(name.clone())
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get::<String, _>("outcome"))
                .transpose()?
                .is_some_and(|o| o == super::Outcome::Running.as_str());
            if running {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => swept += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot sweep a spool folder");
                }
            }
        }
        if swept > 0 {
            tracing::info!(swept, spool = %dir.display(), "removed the spool folders of runs that no longer run");
        }
        Ok(swept)
    }

    /// The journal run `run_id` (begun with [`Store::begin`]) writes to as it goes.
    pub fn journal(&self, run_id: &str) -> Arc<dyn Journal> {
        Arc::new(StoreJournal {
            store: self.clone(),
            run_id: run_id.to_string(),
        })
    }

    /// Writes one batch of run `run_id` in the next group commit
    /// ([`super::group`]): returns once it is committed.
    pub async fn write_batch(
        &self,
        run_id: &str,
        batch: &JournalBatch,
    ) -> Result<(), HistoryError> {
        let events = batch
            .events
            .iter()
            .map(|(seq, at, e)| event_row(run_id, clamp_i64(*seq), at, e))
            .collect::<Result<Vec<_>, HistoryError>>()?;
        let keys = super::tracking::key_params(
            run_id,
            &batch.keys,
            batch.events.iter().map(|(_, _, e)| e),
        );
        self.group_write(Box::new(BatchWrite {
            run_id: run_id.to_string(),
            events,
            keys,
            confirmed: batch
                .confirmed
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            checkpoints: batch.checkpoints.clone(),
            counters: batch.counters,
        }))
        .await
    }

    /// What interrupted run `run_id` confirmed: a run resuming it skips those steps and
    /// starts its record loops after the records confirmed.
    pub async fn resume_point(&self, run_id: &str) -> Result<Resume, HistoryError> {
        let mut resume = Resume::default();
        for r in sqlx::query("SELECT key, output FROM run_steps WHERE run_id = $1")
            .bind(run_id.to_string())
            .fetch_all(&self.pool)
            .await?
        {
            let key: String = r.try_get("key")?;
            let text: String = r.try_get("output")?;
            let output = serde_json::from_str(&text).map_err(|_| HistoryError::Corrupt {
                what: "confirmed step output",
                value: text,
            })?;
            resume.confirmed.insert(key, output);
        }
        for l in self.loops(run_id).await? {
            resume
                .through
                .insert(l.key, u64::try_from(l.through).unwrap_or(0));
        }
        Ok(resume)
    }

    /// What a resubmit of run `run_id` resumes from: everything confirmed along the chain
    /// of interrupted runs that ends there — `run_id`, the run it resubmitted, and so on up
    /// `resubmit_of`, as long as each link was `interrupted` (a `failed` run's resubmit did
    /// everything again), at most [`RESUME_CHAIN`] links. A run killed before writing a
    /// checkpoint of its own thus still resumes after what its ancestors confirmed.
    /// Confirmed side effects are merged, the nearest link's output winning; a record
    /// loop's ranges are joined from the lowest `first` for as long as they touch, and the
    /// loop resumes after the highest record so confirmed. Empty when `run_id` itself was
    /// not interrupted.
    pub async fn resume_chain(&self, run_id: &str) -> Result<Resume, HistoryError> {
        let mut resume = Resume::default();
        let mut ranges: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        let mut link = Some(run_id.to_string());
        let mut seen = HashSet::new();
        while let Some(id) = link.take() {
            if seen.len() >= RESUME_CHAIN || !seen.insert(id.clone()) {
                break;
            }
            let Some(row) = sqlx::query("SELECT outcome, resubmit_of FROM runs WHERE id = $1")
                .bind(id.clone())
                .fetch_optional(&self.pool)
                .await?
            else {
                break;
            };
            let outcome: String = row.try_get("outcome")?;
            if outcome != super::Outcome::Interrupted.as_str() {
                break;
            }
            let here = self.resume_point(&id).await?;
            for (key, output) in here.confirmed {
                resume.confirmed.entry(key).or_insert(output);
            }
            for l in self.loops(&id).await? {
                ranges.entry(l.key).or_default().push((l.first, l.through));
            }
            link = row.try_get("resubmit_of")?;
        }
        for (key, mut spans) in ranges {
            spans.sort_unstable();
            let mut spans = spans.into_iter();
            let Some((first, last)) = spans.next() else {
                continue;
            };
            let mut through = last.max(first - 1);
            for (first, last) in spans {
                if first > through + 1 {
                    // a gap: what lies beyond it is not confirmed all along
                    break;
                }
                through = through.max(last);
            }
            if let Ok(t) = u64::try_from(through) {
                resume.through.insert(key, t);
            }
        }
        Ok(resume)
    }

    /// The record loops of run `run_id`, in key order (at most [`MAX_PAGE`]).
    pub async fn loops(&self, run_id: &str) -> Result<Vec<LoopProgress>, HistoryError> {
        sqlx::query(
            "SELECT key, label, first_number, through_number, done FROM run_loops
             WHERE run_id = $1 ORDER BY key LIMIT $2",
        )
        .bind(run_id.to_string())
        .bind(i64::from(MAX_PAGE))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(LoopProgress {
                key: r.try_get("key")?,
                label: r.try_get("label")?,
                first: r.try_get("first_number")?,
                through: r.try_get("through_number")?,
                done: r.try_get("done")?,
            })
        })
        .collect()
    }

    /// A page of run `run_id`'s events that pass `filter`, after event `after` (0: from
    /// the start), at most `limit` (capped at [`MAX_PAGE`]). Runs recorded before events
    /// were rows are read from their stored list.
    pub async fn events_page(
        &self,
        run_id: &str,
        filter: EventFilter,
        after: i64,
        limit: u32,
    ) -> Result<EventPage, HistoryError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let Some(row) = sqlx::query("SELECT events_in_rows, events FROM runs WHERE id = $1")
            .bind(run_id.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Err(HistoryError::UnknownRun(run_id.to_string()));
        };
        if row.try_get::<i64, _>("events_in_rows")? == 0 {
            let text: String = row.try_get("events")?;
            return legacy_page(&text, filter, after, limit);
        }
        // One query per kind, each walking the (run_id, kind, seq) index for at most a page,
        // then merged by seq: `kind IN (…) ORDER BY seq` would read and sort every row of
        // those kinds (100,000 tolerated requests: 100 ms for a page of 200).
        let kinds = filter.kinds();
        let mut rows = Vec::new();
        if kinds.is_empty() {
            let sql = format!(
                "SELECT seq, at, body FROM run_events WHERE run_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT {}",
                limit + 1
            );
            rows = sqlx::query(&sql)
                .bind(run_id.to_string())
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
        } else {
            let sql = format!(
                "SELECT seq, at, body FROM run_events WHERE run_id = $1 AND kind = $3 \
                 AND seq > $2 ORDER BY seq LIMIT {}",
                limit + 1
            );
            for k in kinds {
                rows.extend(
                    sqlx::query(&sql)
                        .bind(run_id.to_string())
                        .bind(after)
                        .bind(*k)
                        .fetch_all(&self.pool)
                        .await?,
                );
            }
            let mut keyed = Vec::with_capacity(rows.len());
            for r in rows {
                keyed.push((r.try_get::<i64, _>("seq")?, r));
            }
            keyed.sort_by_key(|(seq, _)| *seq);
            keyed.truncate(limit as usize + 1);
            rows = keyed.into_iter().map(|(_, r)| r).collect();
        }
        let mut events = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            let body: String = r.try_get("body")?;
            events.push(StoredEvent {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                event: serde_json::from_str(&body).map_err(|_| HistoryError::Corrupt {
                    what: "event",
                    value: body.chars().take(200).collect(),
                })?,
            });
        }
        let next = (rows.len() > limit as usize)
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Ok(EventPage { events, next })
    }
}

/// A page of a run recorded before events were rows (its events as one JSON list).
fn legacy_page(
    text: &str,
    filter: EventFilter,
    after: i64,
    limit: u32,
) -> Result<EventPage, HistoryError> {
    let all: Vec<Value> = serde_json::from_str(text).map_err(|_| HistoryError::Corrupt {
        what: "events",
        value: text.chars().take(200).collect(),
    })?;
    let kinds = filter.kinds();
    let mut events = Vec::new();
    let mut next = None;
    for (i, v) in all.into_iter().enumerate() {
        let seq = i as i64 + 1;
        if seq <= after {
            continue;
        }
        let kind = serde_json::from_value::<Event>(v.clone())
            .map(|e| event_kind(&e))
            .unwrap_or("");
        if !kinds.is_empty() && !kinds.contains(&kind) {
            continue;
        }
        if events.len() == limit as usize {
            next = events.last().map(|e: &StoredEvent| e.seq);
            break;
        }
        events.push(StoredEvent {
            seq,
            at: String::new(),
            event: v,
        });
    }
    Ok(EventPage { events, next })
}

async fn write_checkpoint(
    conn: &mut sqlx::AnyConnection,
    run_id: &str,
    c: &Checkpoint,
) -> Result<(), HistoryError> {
    sqlx::query(
        "INSERT INTO run_loops (run_id, key, label, first_number, through_number, done, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (run_id, key) DO UPDATE SET label = excluded.label,
            first_number = excluded.first_number, through_number = excluded.through_number,
            done = excluded.done, updated_at = excluded.updated_at",
    )
    .bind(run_id.to_string())
    .bind(c.key.clone())
    .bind(c.label.clone())
    .bind(clamp_i64(c.first))
    .bind(clamp_i64(c.through))
    .bind(clamp_i64(c.done))
    .bind(now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The run's counters and that its events are rows.
pub(super) async fn write_counters(
    conn: &mut sqlx::AnyConnection,
    run_id: &str,
    c: &Counters,
) -> Result<(), HistoryError> {
    sqlx::query(
        "UPDATE runs SET events_in_rows = 1, files_put = $1, bytes_put = $2, renames = $3,
            records_ok = $4, records_tolerated = $5, records_failed = $6, emails = $7
         WHERE id = $8",
    )
    .bind(clamp_i64(c.files_put))
    .bind(clamp_i64(c.bytes_put))
    .bind(clamp_i64(c.renames))
    .bind(clamp_i64(c.requests_ok))
    .bind(clamp_i64(c.tolerated))
    .bind(clamp_i64(c.requests_failed))
    .bind(clamp_i64(c.emails))
    .bind(run_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes a whole report's events as rows (a run recorded in one go, or without a journal).
pub(super) async fn write_events(
    conn: &mut sqlx::AnyConnection,
    run_id: &str,
    events: &[Event],
    at: &str,
) -> Result<(), HistoryError> {
    sqlx::query("DELETE FROM run_events WHERE run_id = $1")
        .bind(run_id.to_string())
        .execute(&mut *conn)
        .await?;
    let rows = events
        .iter()
        .filter(|e| !crate::run::is_record_success(e))
        .enumerate()
        .map(|(i, e)| event_row(run_id, i as i64 + 1, at, e))
        .collect::<Result<Vec<_>, HistoryError>>()?;
    insert_rows(conn, "run_events", EVENT_COLUMNS, rows).await
}

/// The columns of a `run_events` row, in [`event_row`]'s order.
const EVENT_COLUMNS: &[&str] = &["run_id", "seq", "at", "kind", "body"];

/// One `run_events` row: the event's place in the run, time, stored kind and JSON body.
fn event_row(run_id: &str, seq: i64, at: &str, e: &Event) -> Result<Vec<Param>, HistoryError> {
    let body = serde_json::to_string(e).map_err(|err| HistoryError::Corrupt {
        what: "event",
        value: err.to_string(),
    })?;
    Ok(vec![
        Param::Text(run_id.to_string()),
        Param::Int(seq),
        Param::Text(at.to_string()),
        Param::Text(event_kind(e).to_string()),
        Param::Text(body),
    ])
}
