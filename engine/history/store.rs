//! [`Store`]: the run history database and the kept trigger inputs beside it.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor as _, Row as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::derive::{clamp, error_file, error_record};
use super::journal::{EventFilter, EventPage, MAX_PAGE, PAGE};
use super::{
    DB_FILE, EmailSent, FileAction, FileOutcome, HeldPart, HistoryError, INPUT_COPIES_DIR,
    INPUTS_DIR, InputPart, NewRun, Outcome, PURGE_BATCH, RecordOutcome, RecordStatus, RunDetail,
    RunFilter, RunSummary, StoredError, StoredPart, Trigger, schema,
};
use crate::model::PartKind;
use crate::run::{Event, RunReport};

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// How long an SQLite connection waits for another writer.
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// Begins a transaction that writes. On SQLite it is `BEGIN IMMEDIATE`: it takes the write
/// lock at once, waiting for it up to the busy timeout. A plain (deferred) `BEGIN` would
/// start as a read and be upgraded at its first write, and an upgrade that finds another
/// writer's commit since its read fails at once with "database is locked" (SQLITE_BUSY,
/// or SQLITE_BUSY_SNAPSHOT in WAL mode) instead of waiting: SQLite cannot wait there
/// without breaking the transaction's snapshot. PostgreSQL waits row by row, so its
/// transactions begin as they always do.
pub(super) async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, HistoryError> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    })
}
/// Listing size when the filter sets none.
const DEFAULT_LIMIT: u32 = 50;
/// Bound parameters per statement (SQLite's historical limit is 999).
const MAX_PARAMS: usize = 900;
/// Rows per multi-row INSERT, at most: statements of one size repeat, so a connection's
/// statement cache prepares each once; and SQLite's cost of numbered parameters (each one
/// looked up in the statement's list of them, when prepared and when bound) grows with the
/// square of their number (a 900-parameter statement cost ~2.4 million instructions to
/// prepare).
const MAX_ROWS: usize = 32;

/// The run history: a SQL database plus a data directory for kept trigger inputs. Cheap to
/// clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) pool: AnyPool,
    data_dir: PathBuf,
    pub(super) backend: Backend,
    /// The process incarnation that owns the runs this handle begins ([`Store::register`]).
    pub(super) owner: Option<std::sync::Arc<super::cluster::Me>>,
    /// The writes waiting for a group commit ([`super::group`]), shared by every clone.
    pub(super) group: std::sync::Arc<super::group::Group>,
}

/// Now, as stored: RFC 3339, UTC, milliseconds, `Z`.
pub(crate) fn now() -> String {
    timestamp(chrono::Utc::now())
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A report's timestamp in the stored format (kept as is when it does not parse).
fn normalize(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| timestamp(d.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| t.to_string())
}

fn duration_ms(start: &str, end: &str) -> Option<i64> {
    let s = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let e = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    Some((e - s).num_milliseconds().max(0))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A path as the path of an `sqlite://` URL (percent-encoded; sqlx decodes it).
fn url_path(path: &Path) -> Result<String, HistoryError> {
    let s = path
        .to_str()
        .ok_or_else(|| HistoryError::Invalid(format!("{} is not a UTF-8 path", path.display())))?;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// Checks that a run id can name a directory: a UUID-like string.
fn check_run_id(id: &str) -> Result<(), HistoryError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(HistoryError::Invalid(format!(
            "'{}' is not a run id",
            id.escape_debug()
        )));
    }
    Ok(())
}

fn kind_str(kind: PartKind) -> &'static str {
    match kind {
        PartKind::Json => "json",
        PartKind::File => "file",
    }
}

fn parse<T: std::str::FromStr>(what: &'static str, s: String) -> Result<T, HistoryError> {
    s.parse()
        .map_err(|_| HistoryError::Corrupt { what, value: s })
}

/// One bound value of a generated statement.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    /// A kept part's chunk (`run_input_chunks.bytes`).
    Bytes(Vec<u8>),
}

/// Inserts `rows` into `table` in multi-row statements.
pub(super) async fn insert_rows(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Param>>,
) -> Result<(), HistoryError> {
    insert_rows_with(conn, table, columns, "", rows).await
}

/// [`insert_rows`] with `tail` after each statement's values (a conflict clause).
async fn insert_rows_with(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    columns: &[&str],
    tail: &str,
    rows: Vec<Vec<Param>>,
) -> Result<(), HistoryError> {
    let per = (MAX_PARAMS / columns.len()).clamp(1, MAX_ROWS);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Param>> = rows.by_ref().take(per).collect();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut n = 0;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns.len() {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&format!("${n}"));
            }
            sql.push(')');
        }
        sql.push_str(tail);
        let mut q = sqlx::query(&sql);
        for p in chunk.into_iter().flatten() {
            q = match p {
                Param::Text(v) => q.bind(v),
                Param::OptText(v) => q.bind(v),
                Param::Int(v) => q.bind(v),
                Param::Bytes(v) => q.bind(v),
            };
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts `rows` into `table` in multi-row statements, leaving out rows whose `key`
/// (the conflict target, e.g. `(run_id, kind, value)`) is already there.
pub(super) async fn insert_rows_ignoring(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    columns: &[&str],
    key: &str,
    rows: Vec<Vec<Param>>,
) -> Result<(), HistoryError> {
    insert_rows_with(
        conn,
        table,
        columns,
        &format!(" ON CONFLICT {key} DO NOTHING"),
        rows,
    )
    .await
}

/// Inserts `rows` into `table` in multi-row statements, a row whose `key` is already there
/// replacing its `update` columns. No two rows may share a key (PostgreSQL refuses a
/// statement that updates one row twice).
pub(super) async fn upsert_rows(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    columns: &[&str],
    key: &str,
    update: &[&str],
    rows: Vec<Vec<Param>>,
) -> Result<(), HistoryError> {
    let set = update
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    insert_rows_with(
        conn,
        table,
        columns,
        &format!(" ON CONFLICT {key} DO UPDATE SET {set}"),
        rows,
    )
    .await
}

/// A count as a BIGINT.
pub(super) fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `$from, $from+1, …` for `n` values.
pub(super) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an `abandoned` run's error says, before why ferry stopped.
pub(super) const ABANDONED: &str = "ferry stopped before the run's trigger input was kept: there is nothing to run again \
     (a delivery's sender had no 202; a resubmit's original run can be resubmitted)";

/// Ends the `running` runs that `condition` selects (SQL over `runs`; its placeholders
/// start at `$4` and take `args`), which ferry stopped for reason `why`: `interrupted`,
/// or `abandoned` when the run's trigger input was never kept (`input_pending`), which
/// cannot be resubmitted. Keeps the counters and progress they recorded; returns how many.
pub(super) async fn stop_runs(
    pool: &AnyPool,
    condition: &str,
    args: &[&str],
    why: &str,
) -> Result<u64, HistoryError> {
    let sql = format!(
        "UPDATE runs SET
            outcome = CASE WHEN input_pending = 1 THEN '{}' ELSE '{}' END,
            finished_at = $1,
            error_message = CASE WHEN input_pending = 1 THEN $2 ELSE $3 END
         WHERE outcome = '{}' AND ({condition})",
        Outcome::Abandoned.as_str(),
        Outcome::Interrupted.as_str(),
        Outcome::Running.as_str(),
    );
    let mut q = sqlx::query(&sql)
        .bind(now())
        .bind(format!("{ABANDONED}; {why}"))
        .bind(why.to_string());
    for a in args {
        q = q.bind(a.to_string());
    }
    Ok(q.execute(pool).await?.rows_affected())
}

const SUMMARY_COLUMNS: &str = "id, flow, flow_name, trigger_kind, outcome, dry_run, started_at, \
    finished_at, duration_ms, resubmit_of, input_summary, files_put, bytes_put, renames, \
    records_ok, records_tolerated, records_failed, emails, error_step, error_message, \
    error_file, error_record";

fn summary(row: &AnyRow) -> Result<RunSummary, HistoryError> {
    let step: Option<String> = row.try_get("error_step")?;
    let message: Option<String> = row.try_get("error_message")?;
    let error = match (step, message) {
        (Some(s), Some(m)) if !s.is_empty() => Some(format!("{s}: {m}")),
        (_, Some(m)) => Some(m),
        (Some(s), None) => Some(s),
        (None, None) => None,
    };
    Ok(RunSummary {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        flow_name: row.try_get("flow_name")?,
        trigger: parse::<Trigger>("trigger", row.try_get("trigger_kind")?)?,
        outcome: parse::<Outcome>("outcome", row.try_get("outcome")?)?,
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        duration_ms: row.try_get("duration_ms")?,
        resubmit_of: row.try_get("resubmit_of")?,
        input_summary: row.try_get("input_summary")?,
        files: row.try_get("files_put")?,
        bytes: row.try_get("bytes_put")?,
        renames: row.try_get("renames")?,
        records_ok: row.try_get("records_ok")?,
        records_tolerated: row.try_get("records_tolerated")?,
        records_failed: row.try_get("records_failed")?,
        emails: row.try_get("emails")?,
        error,
        error_file: row.try_get("error_file")?,
        error_record: row.try_get("error_record")?,
    })
}

impl Store {
    /// Opens (creating it if need be) the embedded store in `dir`: the SQLite database
    /// `dir/ferry.db` in WAL mode, kept inputs under `dir/inputs`. Applies migrations.
    pub async fn open_sqlite(dir: &Path) -> Result<Store, HistoryError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
        let url = format!("sqlite://{}?mode=rwc", url_path(&dir.join(DB_FILE))?);
        Store::open_url(&url, dir, Backend::Sqlite).await
    }

    /// Opens the embedded store in `dir` if there is one ([`HistoryError::NoStore`] if not).
    pub async fn open_sqlite_existing(dir: &Path) -> Result<Store, HistoryError> {
        if !dir.join(DB_FILE).is_file() {
            return Err(HistoryError::NoStore(dir.to_path_buf()));
        }
        Store::open_sqlite(dir).await
    }

    /// Opens a store in the PostgreSQL database at `url` (`postgres://…`). Trigger inputs
    /// are kept in the database; `data_dir` holds this process's copies of them
    /// (`<data>/input-copies`, made when an input is first kept or read back: a command that
    /// only reads the history creates nothing), and the files of inputs kept before schema
    /// version 5 (`<data>/inputs`). Applies migrations.
    pub async fn open_postgres(url: &str, data_dir: &Path) -> Result<Store, HistoryError> {
        Store::open_url(url, data_dir.to_path_buf(), Backend::Postgres).await
    }

    async fn open_url(
        url: &str,
        data_dir: PathBuf,
        backend: Backend,
    ) -> Result<Store, HistoryError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30))
            // a local SQLite file does not drop its connections: no ping before each use
            // (a round trip to the connection's thread for every transaction)
            .test_before_acquire(backend != Backend::Sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}").as_str())
                            .await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // a statement's undo journal in memory, not a file in /var/tmp: a
                        // multi-row insert inside a transaction wrote one (a tolerated
                        // record cost 2.6 writes there); it holds the pages one statement
                        // changes, at most a few dozen
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        // Two processes opening a new SQLite history at once can find it locked where
        // SQLite does not wait (changing the journal mode, a read upgraded to a write):
        // opening tries again for up to 10 s.
        let mut attempt = 0;
        loop {
            let opened = async {
                if backend == Backend::Sqlite {
                    // persistent in the database file: every later connection is in WAL mode
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&pool)
                        .await?;
                }
                schema::migrate(&pool, backend).await
            }
            .await;
            match opened {
                Err(HistoryError::Db(sqlx::Error::Database(e)))
                    if backend == Backend::Sqlite
                        && attempt < 100
                        && (e.message().contains("locked") || e.message().contains("busy")) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        }
        let store = Store {
            pool,
            data_dir,
            backend,
            owner: None,
            group: std::sync::Arc::default(),
        };
        // whoever opens the history finds the runs of dead processes at once
        match store.sweep_dead_owners().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "runs of ferry processes that stopped are recorded as interrupted"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot look for runs of stopped ferry processes"),
        }
        Ok(store)
    }

    /// Closes the connections (an SQLite store folds its write-ahead log back in).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the store is the embedded SQLite one.
    pub fn is_sqlite(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// Begins a transaction that writes ([`begin_write`]): every write transaction of the
    /// store begins here.
    pub(super) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, HistoryError> {
        begin_write(&self.pool, self.backend).await
    }

    /// The applied schema version.
    pub async fn schema_version(&self) -> Result<i64, HistoryError> {
        schema::applied_max(&self.pool).await
    }

    /// The directory of a run's kept inputs, `<data>/inputs/<run_id>`.
    pub fn inputs_dir(&self, run_id: &str) -> Result<PathBuf, HistoryError> {
        check_run_id(run_id)?;
        Ok(self.data_dir.join(INPUTS_DIR).join(run_id))
    }

    /// Records a run that is about to start as `running`; returns its new run id (give it
    /// to [`crate::run::Engine::run_with_id`]).
    pub async fn begin(&self, run: &NewRun<'_>) -> Result<String, HistoryError> {
        self.begin_run(run, false).await
    }

    /// [`Store::begin`] for a run whose trigger input is to be kept next
    /// ([`Store::keep_input`]): until it is, the run is waiting for it, and a run ferry
    /// stops in between is recorded `abandoned` (there is nothing to resubmit), not
    /// `interrupted`.
    pub async fn begin_awaiting_input(&self, run: &NewRun<'_>) -> Result<String, HistoryError> {
        self.begin_run(run, true).await
    }

    async fn begin_run(&self, run: &NewRun<'_>, awaiting: bool) -> Result<String, HistoryError> {
        let id = crate::run::new_run_id();
        // the owner is on record before its run (an owner taken for dead comes back here)
        self.heartbeat().await?;
        sqlx::query(
            "INSERT INTO runs (id, flow, flow_name, trigger_kind, outcome, dry_run, started_at,
                resubmit_of, input_summary, instance, owner, input_pending)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(id.clone())
        .bind(run.flow.to_string())
        .bind(run.flow_name.to_string())
        .bind(run.trigger.as_str())
        .bind(Outcome::Running.as_str())
        .bind(i64::from(run.dry_run))
        .bind(now())
        .bind(run.resubmit_of.map(str::to_string))
        .bind(run.input_summary.map(str::to_string))
        .bind(self.owner.as_ref().map(|m| m.instance.clone()))
        .bind(self.owner.as_ref().map(|m| m.id.clone()))
        .bind(i64::from(awaiting))
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Records run `run_id`, begun but never started because its trigger input could not
    /// be kept, `abandoned` (`why`: what failed), if it is still `running`. Returns whether
    /// it was.
    pub async fn mark_abandoned(&self, run_id: &str, why: &str) -> Result<bool, HistoryError> {
        let done = sqlx::query(
            "UPDATE runs SET outcome = $1, finished_at = $2, error_message = $3
             WHERE id = $4 AND outcome = $5",
        )
        .bind(Outcome::Abandoned.as_str())
        .bind(now())
        .bind(format!("the run's trigger input could not be kept ({why}): there is nothing to resubmit (its sender had no 202)"))
        .bind(run_id.to_string())
        .bind(Outcome::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records how a begun run ended (the run is `report.run_id`): outcome, times,
    /// counters, error, files, records, emails and events. Recording again replaces.
    ///
    /// A report of few events is written in the next group commit ([`super::group`]); a
    /// large one (a run without a journal) in a transaction of its own, not copied.
    pub async fn finish(&self, report: &RunReport) -> Result<(), HistoryError> {
        if report.events.len() <= GROUPED_REPORT_EVENTS {
            return self
                .group_write(Box::new(ReportWrite(report.clone())))
                .await;
        }
        let mut tx = self.write_tx().await?;
        write_report(&mut tx, report).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a finished run in one go (no `begin`), under `report.run_id`.
    pub async fn record(&self, report: &RunReport, trigger: Trigger) -> Result<(), HistoryError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO runs (id, flow, flow_name, trigger_kind, outcome, dry_run, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(report.run_id.clone())
        .bind(report.flow.clone())
        .bind(report.flow_name.clone())
        .bind(trigger.as_str())
        .bind(Outcome::Running.as_str())
        .bind(i64::from(report.dry_run))
        .bind(normalize(&report.started_at))
        .execute(&mut *tx)
        .await?;
        write_report(&mut tx, report).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that a begun run could not start (`message` says why): outcome `failed`.
    pub async fn abandon(&self, run_id: &str, message: &str) -> Result<(), HistoryError> {
        let at = now();
        let done = sqlx::query(
            "UPDATE runs SET outcome = $1, finished_at = $2, duration_ms = 0,
                error_step = '', error_kind = 'start', error_message = $3
             WHERE id = $4",
        )
        .bind(Outcome::Failed.as_str())
        .bind(at)
        .bind(message.to_string())
        .bind(run_id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(HistoryError::UnknownRun(run_id.to_string()));
        }
        Ok(())
    }

    /// Runs, newest first.
    pub async fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, HistoryError> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM runs");
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        if let Some(flow) = &filter.flow {
            params.push(flow.clone());
            conditions.push(format!("flow = ${}", params.len()));
        }
        if let Some(outcome) = filter.outcome {
            params.push(outcome.as_str().to_string());
            conditions.push(format!("outcome = ${}", params.len()));
        }
        if let Some(since) = filter.since {
            params.push(timestamp(since));
            conditions.push(format!("started_at >= ${}", params.len()));
        }
        if let Some(before) = &filter.before {
            params.push(before.clone());
            let n = params.len();
            conditions.push(format!(
                "(started_at < (SELECT started_at FROM runs WHERE id = ${n}) \
                 OR (started_at = (SELECT started_at FROM runs WHERE id = ${n}) AND id < ${n}))"
            ));
        }
        if let Some(text) = &filter.search {
            let text = super::tracking::check_search(text)?;
            // the runs it matches, when they are few: read by id; else walk the runs
            let probe = super::tracking::KeySearch::new(self.backend, &text, 1);
            let sql = format!(
                "SELECT run_id FROM ({}) m LIMIT {}",
                probe.runs,
                super::tracking::NARROW_SEARCH + 1
            );
            let mut q = sqlx::query(&sql);
            for v in &probe.params {
                q = q.bind(v.clone());
            }
            let rows = q.fetch_all(&self.pool).await?;
            let mut ids = std::collections::BTreeSet::new();
            for r in &rows {
                ids.insert(r.try_get::<String, _>("run_id")?);
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            if rows.len() <= super::tracking::NARROW_SEARCH {
                conditions.push(format!(
                    "id IN ({})",
                    placeholders(params.len() + 1, ids.len())
                ));
                params.extend(ids);
            } else {
                let search = super::tracking::KeySearch::new(self.backend, &text, params.len() + 1);
                conditions.push(format!(
                    "EXISTS (SELECT 1 FROM run_keys k WHERE k.run_id = runs.id AND ({}))",
                    search.condition
                ));
                params.extend(search.params);
            }
        }
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY started_at DESC, id DESC LIMIT ${}",
            params.len() + 1
        ));
        let mut q = sqlx::query(&sql);
        for p in params {
            q = q.bind(p);
        }
        let rows = q
            .bind(i64::from(filter.limit.unwrap_or(DEFAULT_LIMIT)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(summary).collect()
    }

    /// The ids of at most `limit` runs whose id starts with `prefix`, in id order (a run id
    /// abbreviated as the README and `ferry demo` print it). A prefix with other characters
    /// than a run id's (hex digits and `-`) matches nothing.
    pub async fn ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, HistoryError> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id FROM runs WHERE id LIKE $1 ORDER BY id LIMIT $2")
            .bind(format!("{}%", prefix.to_ascii_lowercase()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(HistoryError::from))
            .collect()
    }

    /// Everything recorded about run `id`.
    pub async fn get(&self, id: &str) -> Result<Option<RunDetail>, HistoryError> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS}, error_kind, error_items, events_in_rows FROM runs WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let summary = summary(&row)?;
        let step: Option<String> = row.try_get("error_step")?;
        let message: Option<String> = row.try_get("error_message")?;
        let failure = if step.is_some() || message.is_some() {
            let items: Option<String> = row.try_get("error_items")?;
            let items = match items {
                Some(text) => serde_json::from_str::<Map<String, Value>>(&text).map_err(|_| {
                    HistoryError::Corrupt {
                        what: "error items",
                        value: text,
                    }
                })?,
                None => Map::new(),
            };
            Some(StoredError {
                step: step.unwrap_or_default(),
                kind: row
                    .try_get::<Option<String>, _>("error_kind")?
                    .unwrap_or_default(),
                message: message.unwrap_or_default(),
                items,
                file: summary.error_file.clone(),
                record: summary.error_record,
            })
        } else {
            None
        };
        let in_rows = row.try_get::<i64, _>("events_in_rows")? != 0;
        let first = self.events_page(id, EventFilter::All, 0, PAGE).await?;
        let events_next = first.next;
        let events: Vec<Value> = first.events.into_iter().map(|e| e.event).collect();
        let (mut files_next, mut records_next) = (None, None);
        let (files, records, emails) = if in_rows {
            let of = |page: EventPage| -> Vec<Event> {
                page.events
                    .into_iter()
                    .filter_map(|e| serde_json::from_value::<Event>(e.event).ok())
                    .collect()
            };
            let files = self.events_page(id, EventFilter::Files, 0, PAGE).await?;
            files_next = files.next;
            let records = self.events_page(id, EventFilter::Requests, 0, PAGE).await?;
            records_next = records.next;
            let emails = of(self
                .events_page(id, EventFilter::Emails, 0, MAX_PAGE)
                .await?);
            (
                super::derive::files_of(&of(files)),
                super::derive::records_of(&of(records)),
                super::derive::emails_of(&emails),
            )
        } else {
            self.legacy_children(id).await?
        };
        let loops = self.loops(id).await?;
        let inputs = self.input_rows(id).await?;
        let resubmitted_as =
            sqlx::query("SELECT id FROM runs WHERE resubmit_of = $1 ORDER BY started_at, id")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("id"))
                .collect::<Result<Vec<_>, _>>()?;
        let tracked = self.tracked(id).await?;

        Ok(Some(RunDetail {
            summary,
            failure,
            files,
            records,
            emails,
            inputs,
            resubmitted_as,
            tracked,
            events,
            events_next,
            loops,
            files_next,
            records_next,
        }))
    }

    /// Files, records and emails of a run recorded before events were rows.
    async fn legacy_children(
        &self,
        id: &str,
    ) -> Result<(Vec<FileOutcome>, Vec<RecordOutcome>, Vec<EmailSent>), HistoryError> {
        let mut files = Vec::new();
        for r in sqlx::query(
            "SELECT action, connection, location, name, renamed_to, bytes FROM run_files
             WHERE run_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        {
            let action: String = r.try_get("action")?;
            files.push(FileOutcome {
                action: match action.as_str() {
                    "fetched" => FileAction::Fetched,
                    "put" => FileAction::Put,
                    "renamed" => FileAction::Renamed,
                    "skipped" => FileAction::Skipped,
                    _ => {
                        return Err(HistoryError::Corrupt {
                            what: "file action",
                            value: action,
                        });
                    }
                },
                connection: r.try_get("connection")?,
                location: r.try_get("location")?,
                name: r.try_get("name")?,
                renamed_to: r.try_get("renamed_to")?,
                bytes: r.try_get("bytes")?,
            });
        }

        let mut records = Vec::new();
        for r in sqlx::query(
            "SELECT connection, method, url, status, outcome FROM run_records
             WHERE run_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        {
            let outcome: String = r.try_get("outcome")?;
            records.push(RecordOutcome {
                record: None,
                message: None,
                connection: r.try_get("connection")?,
                method: r.try_get("method")?,
                url: r.try_get("url")?,
                status: r.try_get("status")?,
                outcome: match outcome.as_str() {
                    "sent" => RecordStatus::Sent,
                    "tolerated" => RecordStatus::Tolerated,
                    "failed" => RecordStatus::Failed,
                    "not_sent" => RecordStatus::NotSent,
                    _ => {
                        return Err(HistoryError::Corrupt {
                            what: "record outcome",
                            value: outcome,
                        });
                    }
                },
            });
        }

        let mut emails = Vec::new();
        for r in
            sqlx::query("SELECT recipients, subject FROM run_emails WHERE run_id = $1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?
        {
            let recipients: String = r.try_get("recipients")?;
            emails.push(EmailSent {
                to: serde_json::from_str(&recipients).map_err(|_| HistoryError::Corrupt {
                    what: "email recipients",
                    value: recipients.clone(),
                })?,
                subject: r.try_get("subject")?,
            });
        }

        Ok((files, records, emails))
    }

    /// Keeps a run's trigger parts for a resubmit: a byte-exact copy of each, and its name,
    /// kind, delivered file name, size, SHA-256 and (JSON parts) value in the database.
    /// Keeping a part again replaces it.
    ///
    /// Where the bytes go depends on the backend. An SQLite history is one machine's: the
    /// copy is a file, `<data>/inputs/<run_id>/<part>`. A PostgreSQL history may be shared
    /// by instances that share no disk, so the bytes go into the database
    /// (`run_input_chunks`, [`super::INPUT_CHUNK_BYTES`] a row) and any instance can
    /// resubmit the run; this process also keeps its copy under
    /// `<data>/input-copies/<run_id>/`, which the run reads. The file is streamed chunk by
    /// chunk, hashed as it goes, in one transaction with the part's row: memory stays
    /// bounded by the chunk size whatever the part's size, and a failure keeps nothing. A
    /// part over [`super::MAX_KEPT_PART_BYTES`] is refused ([`HistoryError::Invalid`]).
    pub async fn keep_input(&self, run_id: &str, parts: &[InputPart]) -> Result<(), HistoryError> {
        let dir = self.inputs_dir(run_id)?;
        for p in parts {
            crate::connectors::check_name(&p.name)
                .map_err(|e| HistoryError::Invalid(format!("trigger part name: {e}")))?;
        }
        let exists = sqlx::query("SELECT id FROM runs WHERE id = $1")
            .bind(run_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(HistoryError::UnknownRun(run_id.to_string()));
        }
        // a delivered file is found by its name (`ferry runs --search`)
        let names: Vec<crate::run::RunKey> = parts
            .iter()
            .filter(|p| p.kind == PartKind::File)
            .filter_map(|p| {
                p.file_name
                    .clone()
                    .or_else(|| p.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .map(crate::run::RunKey::File)
            .collect();
        let in_db = self.keeps_inputs_in_db();
        if in_db {
            // the bytes go in with the rows, in one transaction
            let copies = self.input_copies_dir(run_id)?;
            let mut tx = self.write_tx().await?;
            forget_parts(&mut tx, run_id, parts).await?;
            let mut rows = Vec::new();
            for p in parts {
                let (size, sha256) = stream_into_db(&mut tx, run_id, p, &copies).await?;
                rows.push(input_row(run_id, p, size, sha256, &copies, Stored::Db).await?);
            }
            insert_rows(&mut tx, "run_inputs", INPUT_COLUMNS, rows).await?;
            super::tracking::write_keys(&mut tx, run_id, &names, std::iter::empty()).await?;
            input_kept(&mut tx, run_id).await?;
            tx.commit().await?;
        } else {
            // the files first: an SQLite write transaction holds the whole database
            let mut rows = Vec::new();
            for p in parts {
                let (size, sha256) =
                    copy_and_hash(p.path.clone(), dir.clone(), p.name.clone()).await?;
                rows.push(input_row(run_id, p, size, sha256, &dir, Stored::File).await?);
            }
            let mut tx = self.write_tx().await?;
            forget_parts(&mut tx, run_id, parts).await?;
            insert_rows(&mut tx, "run_inputs", INPUT_COLUMNS, rows).await?;
            super::tracking::write_keys(&mut tx, run_id, &names, std::iter::empty()).await?;
            input_kept(&mut tx, run_id).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Records run `run` as `running` with its trigger `parts` kept, in one write of the next
    /// group commit ([`super::group`]): the run's row, its owner's heartbeat, the parts' rows
    /// (and, on PostgreSQL, their bytes) and the names it is found by commit together, so
    /// the run is never seen waiting for its input. Returns the run id and the kept parts
    /// (what [`Store::input`] would read back). The parts are kept as [`Store::keep_input`]
    /// keeps them: on SQLite as files (copied and synced before the commit), on PostgreSQL
    /// in the database (this process's copy, which the commit covers, is not synced).
    pub async fn begin_with_input(
        &self,
        run: &NewRun<'_>,
        parts: &[InputPart],
    ) -> Result<(String, Vec<StoredPart>), HistoryError> {
        let id = crate::run::new_run_id();
        for p in parts {
            crate::connectors::check_name(&p.name)
                .map_err(|e| HistoryError::Invalid(format!("trigger part name: {e}")))?;
        }
        let names: Vec<crate::run::RunKey> = parts
            .iter()
            .filter(|p| p.kind == PartKind::File)
            .filter_map(|p| {
                p.file_name
                    .clone()
                    .or_else(|| p.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .map(crate::run::RunKey::File)
            .collect();
        let keys = super::tracking::key_params(&id, &names, std::iter::empty());
        let in_db = self.keeps_inputs_in_db();
        let dir = if in_db {
            self.input_copies_dir(&id)?
        } else {
            self.inputs_dir(&id)?
        };
        let mut kept = Vec::with_capacity(parts.len());
        let mut rows = Vec::new();
        for p in parts {
            let (size, sha256) = if in_db {
                let size = tokio::fs::metadata(&p.path)
                    .await
                    .map_err(io(&p.path))?
                    .len();
                if size > super::MAX_KEPT_PART_BYTES {
                    return Err(HistoryError::Invalid(format!(
                        "trigger part '{}' is over {} MiB, the largest part kept in the run history",
                        p.name,
                        super::MAX_KEPT_PART_BYTES / (1024 * 1024)
                    )));
                }
                (clamp(size), hash_file(&p.path).await?)
            } else {
                let (size, sha256) =
                    copy_and_hash(p.path.clone(), dir.clone(), p.name.clone()).await?;
                rows.push(input_row(&id, p, size, sha256.clone(), &dir, Stored::File).await?);
                (size, sha256)
            };
            let value = match p.kind {
                PartKind::Json => {
                    let bytes = tokio::fs::read(&p.path).await.map_err(io(&p.path))?;
                    serde_json::from_slice::<Value>(&bytes).ok()
                }
                PartKind::File => None,
            };
            kept.push(StoredPart {
                name: p.name.clone(),
                kind: p.kind,
                file_name: match p.kind {
                    PartKind::Json => None,
                    PartKind::File => p
                        .file_name
                        .clone()
                        .or_else(|| p.path.file_name().map(|n| n.to_string_lossy().into_owned())),
                },
                size,
                sha256,
                value,
                path: dir.join(&p.name),
            });
        }
        let run_row = self.run_row(&id, run);
        let written = self
            .group_write(Box::new(BeginWrite {
                heartbeat: self.heartbeat_parts(),
                run_id: id.clone(),
                run_row,
                in_db: in_db.then(|| (parts.to_vec(), dir.clone())),
                rows,
                keys,
            }))
            .await;
        if let Err(e) = written {
            // nothing of the run was recorded: its copies go too
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        Ok((id, kept))
    }

    /// Records run `id` (a new run id) as `running` with its trigger `parts` held in
    /// memory, in one write of the next group commit: the run's row, its owner's heartbeat,
    /// the parts' rows and their bytes (in the database, on SQLite as on PostgreSQL) and the
    /// names it is found by commit together, and no file is created. Returns the kept parts
    /// as [`Store::input`] reads them back: each at this process's copy,
    /// `<data>/input-copies/<id>/<part>`, which the caller writes (unsynced: the database
    /// holds the bytes, and [`Store::input`] makes a missing copy again from it).
    pub async fn begin_with_held(
        &self,
        id: &str,
        run: &NewRun<'_>,
        parts: &[HeldPart],
    ) -> Result<Vec<StoredPart>, HistoryError> {
        let copies = self.input_copies_dir(id)?;
        let mut names = Vec::new();
        let mut rows = Vec::with_capacity(parts.len());
        let mut kept = Vec::with_capacity(parts.len());
        for p in parts {
            crate::connectors::check_name(&p.name)
                .map_err(|e| HistoryError::Invalid(format!("trigger part name: {e}")))?;
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&p.bytes);
            let sha256 = hex(ctx);
            let size = clamp(p.bytes.len() as u64);
            let (file_name, value) = match p.kind {
                PartKind::Json => (None, serde_json::from_slice::<Value>(&p.bytes).ok()),
                PartKind::File => {
                    let name = p.file_name.clone().unwrap_or_else(|| p.name.clone());
                    // a delivered file is found by its name (`ferry runs --search`)
                    names.push(crate::run::RunKey::File(name.clone()));
                    (Some(name), None)
                }
            };
            rows.push(vec![
                Param::Text(id.to_string()),
                Param::Text(p.name.clone()),
                Param::Text(kind_str(p.kind).to_string()),
                Param::OptText(file_name.clone()),
                Param::Int(size),
                Param::Text(sha256.clone()),
                Param::OptText(value.as_ref().and_then(|v| serde_json::to_string(v).ok())),
                Param::Text(Stored::Db.as_str().to_string()),
            ]);
            kept.push(StoredPart {
                name: p.name.clone(),
                kind: p.kind,
                file_name,
                size,
                sha256,
                value,
                path: copies.join(&p.name),
            });
        }
        let keys = super::tracking::key_params(id, &names, std::iter::empty());
        self.group_write(Box::new(HeldWrite {
            heartbeat: self.heartbeat_parts(),
            run_id: id.to_string(),
            run_row: self.run_row(id, run),
            rows,
            parts: parts.to_vec(),
            keys,
        }))
        .await?;
        Ok(kept)
    }

    /// The `runs` row of new run `id`, `running`, owned by this process ([`RUN_COLUMNS`]).
    fn run_row(&self, id: &str, run: &NewRun<'_>) -> Vec<Param> {
        vec![
            Param::Text(id.to_string()),
            Param::Text(run.flow.to_string()),
            Param::Text(run.flow_name.to_string()),
            Param::Text(run.trigger.as_str().to_string()),
            Param::Text(Outcome::Running.as_str().to_string()),
            Param::Int(i64::from(run.dry_run)),
            Param::Text(now()),
            Param::OptText(run.resubmit_of.map(str::to_string)),
            Param::OptText(run.input_summary.map(str::to_string)),
            Param::OptText(self.owner.as_ref().map(|m| m.instance.clone())),
            Param::OptText(self.owner.as_ref().map(|m| m.id.clone())),
            Param::Int(0),
        ]
    }

    /// Whether this store keeps trigger inputs in the database (a PostgreSQL history).
    pub fn keeps_inputs_in_db(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// The directory of this process's copies of a run's inputs kept in the database,
    /// `<data>/input-copies/<run_id>`.
    pub fn input_copies_dir(&self, run_id: &str) -> Result<PathBuf, HistoryError> {
        check_run_id(run_id)?;
        Ok(self.data_dir.join(INPUT_COPIES_DIR).join(run_id))
    }

    /// A run's kept parts, with where their bytes are.
    async fn kept_parts(&self, run_id: &str) -> Result<Vec<(StoredPart, Stored)>, HistoryError> {
        let rows = sqlx::query(
            "SELECT part, kind, file_name, size, sha256, json_value, stored FROM run_inputs
             WHERE run_id = $1 ORDER BY part",
        )
        .bind(run_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let files = self.inputs_dir(run_id)?;
        let copies = self.input_copies_dir(run_id)?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get("part")?;
            // the name becomes a path: one that is not a plain file name is not ours
            if crate::connectors::check_name(&name).is_err() {
                return Err(HistoryError::Corrupt {
                    what: "part name",
                    value: name,
                });
            }
            let kind: String = r.try_get("kind")?;
            let value: Option<String> = r.try_get("json_value")?;
            let stored = Stored::parse(r.try_get("stored")?)?;
            out.push((
                StoredPart {
                    path: match stored {
                        Stored::File => files.join(&name),
                        Stored::Db => copies.join(&name),
                    },
                    name,
                    kind: match kind.as_str() {
                        "json" => PartKind::Json,
                        "file" => PartKind::File,
                        _ => {
                            return Err(HistoryError::Corrupt {
                                what: "part kind",
                                value: kind,
                            });
                        }
                    },
                    file_name: r.try_get("file_name")?,
                    size: r.try_get("size")?,
                    sha256: r.try_get("sha256")?,
                    value: match value {
                        Some(text) => Some(serde_json::from_str(&text).map_err(|_| {
                            HistoryError::Corrupt {
                                what: "JSON part",
                                value: text,
                            }
                        })?),
                        None => None,
                    },
                },
                stored,
            ));
        }
        Ok(out)
    }

    async fn input_rows(&self, run_id: &str) -> Result<Vec<StoredPart>, HistoryError> {
        Ok(self
            .kept_parts(run_id)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// A run's kept trigger parts, each at its `path` on this machine: a part kept as a file
    /// is checked to be there with its recorded size; a part kept in the database is this
    /// process's copy, checked against the recorded size and SHA-256, and made again from
    /// the database, chunk by chunk, when it is missing or differs. A part that is gone or
    /// whose bytes differ from the record is [`HistoryError::InputGone`].
    pub async fn input(&self, run_id: &str) -> Result<Vec<StoredPart>, HistoryError> {
        let parts = self.kept_parts(run_id).await?;
        for (p, stored) in &parts {
            let reason = match stored {
                Stored::File => match std::fs::metadata(&p.path) {
                    Ok(m) if m.is_file() && clamp(m.len()) == p.size => None,
                    Ok(m) => Some(format!("{} bytes, {} recorded", m.len(), p.size)),
                    Err(e) => Some(e.to_string()),
                },
                Stored::Db => self.copy_from_db(run_id, p).await?,
            };
            if let Some(reason) = reason {
                return Err(HistoryError::InputGone {
                    run: run_id.to_string(),
                    part: p.name.clone(),
                    reason,
                });
            }
        }
        Ok(parts.into_iter().map(|(p, _)| p).collect())
    }

    /// Makes sure `p.path` holds part `p` of run `run_id` as kept in the database: a copy
    /// already there with the recorded size and SHA-256 is used as is; otherwise the chunks
    /// are written, one at a time, to a temporary file beside it, hashed as they come, and
    /// the file takes the copy's place only when its size and SHA-256 are the recorded ones
    /// (so a reader never sees half a copy, and two processes making it at once both make a
    /// whole one). Returns why the kept bytes cannot be used, if they cannot.
    async fn copy_from_db(
        &self,
        run_id: &str,
        p: &StoredPart,
    ) -> Result<Option<String>, HistoryError> {
        let recorded = u64::try_from(p.size).map_err(|_| HistoryError::Corrupt {
            what: "part size",
            value: p.size.to_string(),
        })?;
        if let Ok(m) = tokio::fs::metadata(&p.path).await
            && m.is_file()
            && m.len() == recorded
            && hash_file(&p.path).await? == p.sha256
        {
            return Ok(None);
        }
        let dir = p
            .path
            .parent()
            .ok_or_else(|| HistoryError::Invalid(format!("{} has no folder", p.path.display())))?
            .to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", p.name))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        let mut out = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io(tmp.path()))?);
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size = 0u64;
        let mut seq = 0i64;
        while size < recorded {
            let Some(row) = sqlx::query(
                "SELECT bytes FROM run_input_chunks WHERE run_id = $1 AND part = $2 AND seq = $3",
            )
            .bind(run_id.to_string())
            .bind(p.name.clone())
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?
            else {
                return Ok(Some(format!(
                    "chunk {seq} is not in the database ({size} of {recorded} bytes found)"
                )));
            };
            let bytes: Vec<u8> = row.try_get("bytes")?;
            size += bytes.len() as u64;
            if size > recorded {
                return Ok(Some(format!(
                    "the database holds more than the {recorded} bytes recorded"
                )));
            }
            ctx.update(&bytes);
            out.write_all(&bytes).await.map_err(io(tmp.path()))?;
            seq += 1;
        }
        let sha256 = hex(ctx);
        if sha256 != p.sha256 {
            return Ok(Some(format!(
                "the SHA-256 of its {size} bytes in the database is {sha256}, {} recorded",
                p.sha256
            )));
        }
        out.flush().await.map_err(io(tmp.path()))?;
        out.sync_all().await.map_err(io(tmp.path()))?;
        drop(out);
        tmp.persist(&p.path).map_err(|e| HistoryError::Io {
            path: p.path.clone(),
            source: e.error,
        })?;
        Ok(None)
    }

    /// Deletes finished runs (every outcome but `running`) that started before `cutoff`,
    /// with their events, files, records, emails and kept inputs: [`super::PURGE_BATCH`]
    /// runs at a time, their child rows in transactions of at most [`super::PURGE_ROWS`]
    /// rows, then the runs in one more, until none is left. Returns how many runs were
    /// deleted.
    pub async fn purge(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, HistoryError> {
        let cutoff = timestamp(cutoff);
        let mut total = 0;
        loop {
            let ids: Vec<String> = sqlx::query(
                "SELECT id FROM runs WHERE outcome <> $1 AND started_at < $2
                 ORDER BY started_at LIMIT $3",
            )
            .bind(Outcome::Running.as_str())
            .bind(cutoff.clone())
            .bind(i64::try_from(PURGE_BATCH).unwrap_or(500))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                break;
            }
            let list = placeholders(1, ids.len());
            // the rows of a run's events, files, records and emails can number millions:
            // they go in transactions of at most PURGE_ROWS rows, so none holds the
            // database for long
            for table in ["run_events", "run_records", "run_files", "run_emails"] {
                self.purge_rows(table, &ids, &list).await?;
            }
            self.purge_keys(&ids).await?;
            // kept parts' bytes: megabytes a row, fewer rows a transaction
            self.purge_chunks(&ids, &list).await?;
            let mut tx = self.write_tx().await?;
            for table in ["run_inputs", "run_loops", "run_steps"] {
                let sql = format!("DELETE FROM {table} WHERE run_id IN ({list})");
                let mut q = sqlx::query(&sql);
                for id in &ids {
                    q = q.bind(id.clone());
                }
                q.execute(&mut *tx).await?;
            }
            let sql = format!("DELETE FROM runs WHERE id IN ({list})");
            let mut q = sqlx::query(&sql);
            for id in &ids {
                q = q.bind(id.clone());
            }
            q.execute(&mut *tx).await?;
            tx.commit().await?;
            for id in &ids {
                for dir in [self.inputs_dir(id), self.input_copies_dir(id)] {
                    let Ok(dir) = dir else {
                        continue;
                    };
                    remove_dir(&dir, "the kept input of a purged run");
                }
            }
            total += ids.len();
            tracing::debug!(batch = ids.len(), total, "purged runs");
        }
        // the copies of inputs of runs that another instance purged
        self.sweep_copies(Sweep::Gone).await?;
        Ok(total)
    }

    /// Deletes the chunks of kept parts of runs `ids` (`list`: their placeholders),
    /// [`super::PURGE_CHUNKS`] rows per transaction.
    async fn purge_chunks(&self, ids: &[String], list: &str) -> Result<(), HistoryError> {
        let select = format!(
            "SELECT run_id, part, seq FROM run_input_chunks WHERE run_id IN ({list})
             ORDER BY run_id, part, seq LIMIT {}",
            super::PURGE_CHUNKS
        );
        loop {
            let mut q = sqlx::query(&select);
            for id in ids {
                q = q.bind(id.clone());
            }
            let rows = q.fetch_all(&self.pool).await?;
            if rows.is_empty() {
                return Ok(());
            }
            // in (run_id, part, seq) order, the chunks of each part in the batch are its
            // lowest: everything up to the highest seq in the batch is in it
            let mut last: Vec<(String, String, i64)> = Vec::new();
            for r in &rows {
                let run: String = r.try_get("run_id")?;
                let part: String = r.try_get("part")?;
                let seq: i64 = r.try_get("seq")?;
                match last.last_mut() {
                    Some((id, name, max)) if *id == run && *name == part => *max = seq,
                    _ => last.push((run, part, seq)),
                }
            }
            let mut tx = self.write_tx().await?;
            for (run, part, max) in last {
                sqlx::query(
                    "DELETE FROM run_input_chunks WHERE run_id = $1 AND part = $2 AND seq <= $3",
                )
                .bind(run)
                .bind(part)
                .bind(max)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            tokio::task::yield_now().await;
        }
    }

    /// Removes this process's copies of inputs kept in the database
    /// (`<data>/input-copies/<run_id>`) of runs that are not running: nothing uses them, and
    /// [`Store::input`] makes them again when a resubmit needs them. `ferry serve` calls it
    /// as it starts, with its spool sweep; returns how many runs' copies were removed.
    pub async fn sweep_input_copies(&self) -> Result<usize, HistoryError> {
        self.sweep_copies(Sweep::NotRunning).await
    }

    /// Removes the folders of kept inputs, `<data>/inputs/<run_id>`, of runs the history
    /// does not have: a process killed after it kept a delivery's files and before its
    /// run's record committed leaves one (nothing acknowledged it: the sender was not
    /// answered `202`). Only folders idle for longer than `max_age` go, so that a run
    /// another process is recording right now keeps its own. `ferry serve` calls it as it
    /// starts; returns how many folders were removed.
    pub async fn sweep_orphan_inputs(&self, max_age: Duration) -> Result<usize, HistoryError> {
        let root = self.data_dir.join(INPUTS_DIR);
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(HistoryError::Io { path: root, source }),
        };
        // only folders named like runs, idle long enough: whatever else is there is not ours
        let names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_run_id(n).is_ok())
            .filter(|n| idle_for(&root.join(n)).is_some_and(|idle| idle > max_age))
            .collect();
        let mut swept = 0;
        for batch in names.chunks(PURGE_BATCH) {
            let sql = format!(
                "SELECT id FROM runs WHERE id IN ({})",
                placeholders(1, batch.len())
            );
            let mut q = sqlx::query(&sql);
            for id in batch {
                q = q.bind(id.clone());
            }
            let mut known = std::collections::HashSet::new();
            for r in q.fetch_all(&self.pool).await? {
                known.insert(r.try_get::<String, _>("id")?);
            }
            for id in batch {
                if !known.contains(id)
                    && remove_dir(&root.join(id), "the kept input of a run never recorded")
                {
                    swept += 1;
                }
            }
        }
        if swept > 0 {
            tracing::info!(
                swept,
                "removed kept inputs of deliveries whose run was never recorded"
            );
        }
        Ok(swept)
    }

    /// Removes the copies of inputs of the runs `which` names.
    async fn sweep_copies(&self, which: Sweep) -> Result<usize, HistoryError> {
        let root = self.data_dir.join(INPUT_COPIES_DIR);
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(HistoryError::Io { path: root, source }),
        };
        // only folders named like runs: whatever else is there is not ours to remove
        let names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_run_id(n).is_ok())
            .collect();
        let mut swept = 0;
        for batch in names.chunks(PURGE_BATCH) {
            let sql = format!(
                "SELECT id, outcome FROM runs WHERE id IN ({})",
                placeholders(1, batch.len())
            );
            let mut q = sqlx::query(&sql);
            for id in batch {
                q = q.bind(id.clone());
            }
            let mut outcomes = std::collections::HashMap::new();
            for r in q.fetch_all(&self.pool).await? {
                outcomes.insert(
                    r.try_get::<String, _>("id")?,
                    r.try_get::<String, _>("outcome")?,
                );
            }
            for id in batch {
                let remove = match (which, outcomes.get(id)) {
                    (_, None) => true,
                    (Sweep::Gone, Some(_)) => false,
                    (Sweep::NotRunning, Some(o)) => o != Outcome::Running.as_str(),
                };
                if remove && remove_dir(&root.join(id), "a copy of a kept input") {
                    swept += 1;
                }
            }
        }
        if swept > 0 {
            tracing::debug!(swept, "removed the copies of kept inputs that no run needs");
        }
        Ok(swept)
    }

    /// Deletes the rows of `table` (keyed by `run_id, seq`) of runs `ids` (`list`: their
    /// placeholders), [`super::PURGE_ROWS`] rows per transaction.
    async fn purge_rows(
        &self,
        table: &str,
        ids: &[String],
        list: &str,
    ) -> Result<(), HistoryError> {
        let select = format!(
            "SELECT run_id, seq FROM {table} WHERE run_id IN ({list})
             ORDER BY run_id, seq LIMIT {}",
            super::PURGE_ROWS
        );
        let delete = format!("DELETE FROM {table} WHERE run_id = $1 AND seq <= $2");
        loop {
            let mut q = sqlx::query(&select);
            for id in ids {
                q = q.bind(id.clone());
            }
            let rows = q.fetch_all(&self.pool).await?;
            if rows.is_empty() {
                return Ok(());
            }
            if rows.len() < super::PURGE_ROWS {
                // the runs' last rows: fewer than a chunk, in one statement
                let sql = format!("DELETE FROM {table} WHERE run_id IN ({list})");
                let mut q = sqlx::query(&sql);
                for id in ids {
                    q = q.bind(id.clone());
                }
                q.execute(&self.pool).await?;
                return Ok(());
            }
            // in (run_id, seq) order, the rows of each run in the chunk are its lowest:
            // everything up to the highest seq in the chunk is in it
            let mut last: Vec<(String, i64)> = Vec::new();
            for r in &rows {
                let run: String = r.try_get("run_id")?;
                let seq: i64 = r.try_get("seq")?;
                match last.last_mut() {
                    Some((id, max)) if *id == run => *max = seq,
                    _ => last.push((run, seq)),
                }
            }
            let mut tx = self.write_tx().await?;
            for (run, max) in last {
                sqlx::query(&delete)
                    .bind(run)
                    .bind(max)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            tokio::task::yield_now().await;
        }
    }

    /// Marks every run still `running` as `interrupted` (ferry stopped while it ran),
    /// whoever owns it; returns how many. Only for a store no other process uses: runs of
    /// dead processes are found by [`Store::sweep_dead_owners`].
    pub async fn mark_interrupted_runs(&self) -> Result<usize, HistoryError> {
        let n = stop_runs(&self.pool, "1 = 1", &[], "ferry stopped while the run ran").await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Marks `interrupted` the runs still `running` that no process owns (begun by a
    /// ferry before run owners, or through [`Store::begin`] on a handle without owner);
    /// returns how many. `ferry serve` on the embedded store calls it when it starts.
    pub async fn mark_ownerless_runs(&self) -> Result<usize, HistoryError> {
        let n = stop_runs(
            &self.pool,
            "owner IS NULL",
            &[],
            "ferry stopped while the run ran",
        )
        .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Records that run `run_id`'s trigger input is kept (in the transaction that keeps it).
async fn input_kept(conn: &mut sqlx::AnyConnection, run_id: &str) -> Result<(), HistoryError> {
    sqlx::query("UPDATE runs SET input_pending = 0 WHERE id = $1")
        .bind(run_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The most events a report written in a group commit holds (it is copied into the group).
const GROUPED_REPORT_EVENTS: usize = 1_000;

/// A run's end, written in a group commit.
struct ReportWrite(RunReport);

impl super::group::Write for ReportWrite {
    fn write<'c>(
        &'c self,
        conn: &'c mut sqlx::AnyConnection,
        _: &'c mut super::group::Shared,
    ) -> super::group::WriteFuture<'c> {
        Box::pin(async move { write_report(conn, &self.0).await })
    }
}

/// A run recorded with its trigger input ([`Store::begin_with_input`]), written in a group
/// commit.
struct BeginWrite {
    heartbeat: Option<(std::sync::Arc<super::cluster::Me>, &'static str)>,
    run_id: String,
    run_row: Vec<Param>,
    /// On PostgreSQL: the parts to stream into the database, and this process's copies.
    in_db: Option<(Vec<InputPart>, PathBuf)>,
    /// On SQLite: the parts' rows (their files are in place).
    rows: Vec<Vec<Param>>,
    keys: Vec<Vec<Param>>,
}

/// The columns of a new run's row, in [`Store::begin_with_input`]'s order.
const RUN_COLUMNS: &[&str] = &[
    "id",
    "flow",
    "flow_name",
    "trigger_kind",
    "outcome",
    "dry_run",
    "started_at",
    "resubmit_of",
    "input_summary",
    "instance",
    "owner",
    "input_pending",
];

impl super::group::Write for BeginWrite {
    fn write<'c>(
        &'c self,
        conn: &'c mut sqlx::AnyConnection,
        shared: &'c mut super::group::Shared,
    ) -> super::group::WriteFuture<'c> {
        Box::pin(async move {
            let BeginWrite {
                heartbeat,
                run_id,
                run_row,
                in_db,
                rows,
                keys,
            } = self;
            let mut rows = rows.clone();
            // the owner is on record before its run (an owner taken for dead comes back
            // here); once per transaction is enough
            if let Some((me, now_ms)) = heartbeat
                && !shared.heartbeat
            {
                super::cluster::heartbeat_on(conn, me, now_ms).await?;
                shared.heartbeat = true;
            }
            insert_rows(conn, "runs", RUN_COLUMNS, vec![run_row.clone()]).await?;
            if let Some((parts, copies)) = in_db {
                for p in parts {
                    let (size, sha256) = stream_into_db(conn, run_id, p, copies).await?;
                    rows.push(input_row(run_id, p, size, sha256, copies, Stored::Db).await?);
                }
            }
            insert_rows(conn, "run_inputs", INPUT_COLUMNS, rows).await?;
            super::tracking::insert_keys(conn, keys.clone()).await
        })
    }
}

/// A run recorded with its trigger parts held in memory ([`Store::begin_with_held`]),
/// written in a group commit: the run's row, the parts' rows and their bytes (rows of
/// `run_input_chunks`), the names it is found by.
struct HeldWrite {
    heartbeat: Option<(std::sync::Arc<super::cluster::Me>, &'static str)>,
    run_id: String,
    run_row: Vec<Param>,
    rows: Vec<Vec<Param>>,
    parts: Vec<HeldPart>,
    keys: Vec<Vec<Param>>,
}

impl super::group::Write for HeldWrite {
    fn write<'c>(
        &'c self,
        conn: &'c mut sqlx::AnyConnection,
        shared: &'c mut super::group::Shared,
    ) -> super::group::WriteFuture<'c> {
        Box::pin(async move {
            let rows = super::group::Write::rows(self).ok_or_else(|| {
                HistoryError::Invalid("a held delivery's write has no rows".into())
            })?;
            super::group::insert_all(conn, rows, shared).await
        })
    }

    fn rows(&self) -> Option<super::group::Rows> {
        use super::group::TableRows;
        let mut chunks = Vec::new();
        for p in &self.parts {
            for (seq, chunk) in p.bytes.chunks(super::INPUT_CHUNK_BYTES).enumerate() {
                chunks.push(vec![
                    Param::Text(self.run_id.clone()),
                    Param::Text(p.name.clone()),
                    Param::Int(i64::try_from(seq).unwrap_or(i64::MAX)),
                    Param::Bytes(chunk.to_vec()),
                ]);
            }
        }
        Some(super::group::Rows {
            heartbeat: self.heartbeat.clone(),
            tables: vec![
                TableRows {
                    table: "runs",
                    columns: RUN_COLUMNS,
                    ignoring: None,
                    rows: vec![self.run_row.clone()],
                },
                TableRows {
                    table: "run_inputs",
                    columns: INPUT_COLUMNS,
                    ignoring: None,
                    rows: self.rows.clone(),
                },
                TableRows {
                    table: "run_input_chunks",
                    columns: &["run_id", "part", "seq", "bytes"],
                    ignoring: None,
                    rows: chunks,
                },
                TableRows {
                    table: "run_keys",
                    columns: super::tracking::KEY_COLUMNS,
                    ignoring: Some(super::tracking::KEY_CONFLICT),
                    rows: self.keys.clone(),
                },
            ],
        })
    }
}

/// The outcome to store: the engine's, or `interrupted` when the run was stopped between
/// steps by a shutdown.
fn stored_outcome(report: &RunReport) -> Outcome {
    match &report.error {
        Some(e) if e.kind == crate::run::ErrorKind::Interrupted => Outcome::Interrupted,
        _ => Outcome::from(report.outcome),
    }
}

/// Writes a report's outcome and counters over run `report.run_id`, and its events as rows
/// unless the run's journal wrote them as it went.
async fn write_report(
    conn: &mut sqlx::AnyConnection,
    report: &RunReport,
) -> Result<(), HistoryError> {
    let started = normalize(&report.started_at);
    let finished = normalize(&report.finished_at);
    let (step, kind, message, items, file, record) = match &report.error {
        Some(e) => (
            Some(e.step.clone()),
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string)),
            Some(e.message.clone()),
            serde_json::to_string(&e.items).ok(),
            error_file(&e.items),
            error_record(&e.items),
        ),
        None => (None, None, None, None, None, None),
    };
    let journaled = sqlx::query("SELECT events_in_rows FROM runs WHERE id = $1")
        .bind(report.run_id.clone())
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get::<i64, _>("events_in_rows"))
        .transpose()?
        .ok_or_else(|| HistoryError::UnknownRun(report.run_id.clone()))?
        != 0;
    sqlx::query(
        "UPDATE runs SET flow_name = $1, outcome = $2, dry_run = $3, started_at = $4,
            finished_at = $5, duration_ms = $6, error_step = $7, error_kind = $8,
            error_message = $9, error_items = $10, error_file = $11, error_record = $12,
            events = '[]'
         WHERE id = $13",
    )
    .bind(report.flow_name.clone())
    .bind(stored_outcome(report).as_str())
    .bind(i64::from(report.dry_run))
    .bind(started.clone())
    .bind(finished.clone())
    .bind(duration_ms(&started, &finished))
    .bind(step)
    .bind(kind)
    .bind(message)
    .bind(items)
    .bind(file)
    .bind(record)
    .bind(report.run_id.clone())
    .execute(&mut *conn)
    .await?;
    if !journaled {
        super::journal::write_events(conn, &report.run_id, &report.events, &finished).await?;
    }
    // the keys the journal wrote are there already: these add nothing twice
    let tracked: Vec<crate::run::RunKey> = report
        .tracked
        .iter()
        .map(|(name, value)| crate::run::RunKey::Tracked {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    super::tracking::write_keys(conn, &report.run_id, &tracked, report.events.iter()).await?;
    // a dry run moved nothing: its history counts no file put
    let mut counters = report.counters;
    if report.dry_run {
        counters.files_put = 0;
        counters.bytes_put = 0;
    }
    super::journal::write_counters(conn, &report.run_id, &counters).await?;
    Ok(())
}

/// Copies `from` to `dir/name` (through a temporary file, renamed into place), returning
/// its size and SHA-256 (hex).
async fn copy_and_hash(
    from: PathBuf,
    dir: PathBuf,
    name: String,
) -> Result<(i64, String), HistoryError> {
    let task = tokio::task::spawn_blocking(move || -> Result<(i64, String), HistoryError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let to = dir.join(&name);
        let tmp = dir.join(format!(".{name}.partial"));
        let mut src = std::fs::File::open(&from).map_err(io(&from))?;
        let mut dst = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(io(&from))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(io(&tmp))?;
            size += n as u64;
        }
        dst.sync_all().map_err(io(&tmp))?;
        drop(dst);
        std::fs::rename(&tmp, &to).map_err(io(&to))?;
        Ok((clamp(size), hex(ctx)))
    });
    task.await.map_err(|e| HistoryError::Io {
        path: PathBuf::from(INPUTS_DIR),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// Where a kept part's bytes are (`run_inputs.stored`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// A file, `<data>/inputs/<run_id>/<part>`.
    File,
    /// Rows of `run_input_chunks`.
    Db,
}

impl Stored {
    fn as_str(self) -> &'static str {
        match self {
            Stored::File => "file",
            Stored::Db => "db",
        }
    }

    fn parse(s: String) -> Result<Stored, HistoryError> {
        match s.as_str() {
            "file" => Ok(Stored::File),
            "db" => Ok(Stored::Db),
            _ => Err(HistoryError::Corrupt {
                what: "kept part storage",
                value: s,
            }),
        }
    }
}

/// The columns of a `run_inputs` row, in [`input_row`]'s order.
const INPUT_COLUMNS: &[&str] = &[
    "run_id",
    "part",
    "kind",
    "file_name",
    "size",
    "sha256",
    "json_value",
    "stored",
];

/// The `run_inputs` row of part `p` kept with size `size` and hash `sha256`, its copy in
/// `dir` (a JSON part's value is read from it).
async fn input_row(
    run_id: &str,
    p: &InputPart,
    size: i64,
    sha256: String,
    dir: &Path,
    stored: Stored,
) -> Result<Vec<Param>, HistoryError> {
    let (file_name, value) = match p.kind {
        PartKind::Json => {
            // at most the JSON part limit of `ferry serve`
            let copy = dir.join(&p.name);
            let bytes = tokio::fs::read(&copy).await.map_err(io(&copy))?;
            let value = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| serde_json::to_string(&v).ok());
            (None, value)
        }
        PartKind::File => (
            p.file_name
                .clone()
                .or_else(|| p.path.file_name().map(|n| n.to_string_lossy().into_owned())),
            None,
        ),
    };
    Ok(vec![
        Param::Text(run_id.to_string()),
        Param::Text(p.name.clone()),
        Param::Text(kind_str(p.kind).to_string()),
        Param::OptText(file_name),
        Param::Int(size),
        Param::Text(sha256),
        Param::OptText(value),
        Param::Text(stored.as_str().to_string()),
    ])
}

/// Deletes what was kept of `parts` of run `run_id` (keeping a part again replaces it).
async fn forget_parts(
    conn: &mut sqlx::AnyConnection,
    run_id: &str,
    parts: &[InputPart],
) -> Result<(), HistoryError> {
    for p in parts {
        for table in ["run_inputs", "run_input_chunks"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE run_id = $1 AND part = $2"
            ))
            .bind(run_id.to_string())
            .bind(p.name.clone())
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Streams part `p` into `run_input_chunks` (rows of [`super::INPUT_CHUNK_BYTES`], the last
/// shorter; none for an empty part) and into this process's copy `copies/<part>` (a
/// temporary file renamed into place), hashing as it goes; returns its size and SHA-256
/// (hex). One chunk is in memory at a time.
async fn stream_into_db(
    conn: &mut sqlx::AnyConnection,
    run_id: &str,
    p: &InputPart,
    copies: &Path,
) -> Result<(i64, String), HistoryError> {
    tokio::fs::create_dir_all(copies)
        .await
        .map_err(io(copies))?;
    let mut src = tokio::fs::File::open(&p.path).await.map_err(io(&p.path))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", p.name))
        .suffix(".partial")
        .tempfile_in(copies)
        .map_err(io(copies))?;
    let mut out = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io(tmp.path()))?);
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; super::INPUT_CHUNK_BYTES];
    let mut size = 0u64;
    let mut seq = 0i64;
    loop {
        let n = fill(&mut src, &mut buf).await.map_err(io(&p.path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > super::MAX_KEPT_PART_BYTES {
            return Err(HistoryError::Invalid(format!(
                "trigger part '{}' is over {} MiB, the largest part kept in the run history",
                p.name,
                super::MAX_KEPT_PART_BYTES / (1024 * 1024)
            )));
        }
        let chunk = &buf[..n];
        ctx.update(chunk);
        out.write_all(chunk).await.map_err(io(tmp.path()))?;
        sqlx::query(
            "INSERT INTO run_input_chunks (run_id, part, seq, bytes) VALUES ($1, $2, $3, $4)",
        )
        .bind(run_id.to_string())
        .bind(p.name.clone())
        .bind(seq)
        .bind(chunk)
        .execute(&mut *conn)
        .await?;
        seq += 1;
        if n < buf.len() {
            break;
        }
    }
    // no sync: the database holds the bytes (its commit is what is durable), and a copy
    // that is missing or differs is made again from it
    out.flush().await.map_err(io(tmp.path()))?;
    drop(out);
    let copy = copies.join(&p.name);
    tmp.persist(&copy).map_err(|e| HistoryError::Io {
        path: copy.clone(),
        source: e.error,
    })?;
    Ok((clamp(size), hex(ctx)))
}

/// Reads from `src` until `buf` is full or the file ends; returns how many bytes it read.
async fn fill(src: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The SHA-256 (hex) of the file at `path`, read in chunks.
async fn hash_file(path: &Path) -> Result<String, HistoryError> {
    let mut f = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await.map_err(io(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx))
}

/// A finished SHA-256 as lowercase hex.
fn hex(ctx: aws_lc_rs::digest::Context) -> String {
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Which runs' input copies [`Store::sweep_input_copies`] removes.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    /// Runs no longer in the history.
    Gone,
    /// Runs not running (or gone).
    NotRunning,
}

/// How long folder `dir` and the files in it have not changed (`None`: it cannot be read).
fn idle_for(dir: &Path) -> Option<Duration> {
    let mut newest = std::fs::symlink_metadata(dir).ok()?.modified().ok()?;
    if let Ok(inner) = std::fs::read_dir(dir) {
        for e in inner.flatten() {
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    Some(
        std::time::SystemTime::now()
            .duration_since(newest)
            .unwrap_or(Duration::ZERO),
    )
}

/// Removes directory `dir` and what it holds (`what` it is, for the log); whether it was
/// there and is gone now.
fn remove_dir(dir: &Path, what: &str) -> bool {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove {what}");
            false
        }
    }
}
