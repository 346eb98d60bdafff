//! Schema migrations: ordered, idempotent steps recorded in `schema_migrations`.
//!
//! Each step is a list of single statements (PostgreSQL's extended protocol takes one per
//! query), applied in one transaction together with its `schema_migrations` row, which is
//! written first (`ON CONFLICT DO NOTHING`): a step another process applied meanwhile is
//! skipped. On PostgreSQL a table lock on
//! `schema_migrations` serialises concurrent migrators; on SQLite the write lock does. A new step
//! is appended with the next version; applied steps are never edited.
//!
//! The statements are written for both backends; the one type that differs, a column of
//! bytes, is spelled `{BYTES}` and becomes `BYTEA` on PostgreSQL and `BLOB` on SQLite;
//! `{WITHOUT_ROWID}` after a table is SQLite's `WITHOUT ROWID` and nothing on PostgreSQL.

use sqlx::{AnyPool, Row as _};

use super::HistoryError;
use super::store::{Backend, now};

/// One migration step.
#[derive(Debug)]
struct Migration {
    version: i64,
    name: &'static str,
    statements: &'static [&'static str],
}

/// The steps, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "runs, files, records, emails, inputs",
        statements: &[
            "CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY,
            flow TEXT NOT NULL,
            flow_name TEXT NOT NULL,
            trigger_kind TEXT NOT NULL,
            outcome TEXT NOT NULL,
            dry_run BIGINT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms BIGINT,
            resubmit_of TEXT,
            input_summary TEXT,
            files_put BIGINT NOT NULL DEFAULT 0,
            bytes_put BIGINT NOT NULL DEFAULT 0,
            renames BIGINT NOT NULL DEFAULT 0,
            records_ok BIGINT NOT NULL DEFAULT 0,
            records_tolerated BIGINT NOT NULL DEFAULT 0,
            records_failed BIGINT NOT NULL DEFAULT 0,
            emails BIGINT NOT NULL DEFAULT 0,
            error_step TEXT,
            error_kind TEXT,
            error_message TEXT,
            error_items TEXT,
            error_file TEXT,
            error_record BIGINT,
            events TEXT NOT NULL DEFAULT '[]'
        )",
            "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at)",
            "CREATE INDEX IF NOT EXISTS runs_flow_started ON runs (flow, started_at)",
            "CREATE INDEX IF NOT EXISTS runs_outcome ON runs (outcome)",
            "CREATE INDEX IF NOT EXISTS runs_resubmit_of ON runs (resubmit_of)",
            "CREATE TABLE IF NOT EXISTS run_files (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            action TEXT NOT NULL,
            connection TEXT NOT NULL,
            location TEXT NOT NULL,
            name TEXT NOT NULL,
            renamed_to TEXT,
            bytes BIGINT,
            PRIMARY KEY (run_id, seq)
        )",
            "CREATE TABLE IF NOT EXISTS run_records (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            connection TEXT NOT NULL,
            method TEXT NOT NULL,
            url TEXT NOT NULL,
            status BIGINT,
            outcome TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        )",
            "CREATE TABLE IF NOT EXISTS run_emails (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            recipients TEXT NOT NULL,
            subject TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        )",
            "CREATE TABLE IF NOT EXISTS run_inputs (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            part TEXT NOT NULL,
            kind TEXT NOT NULL,
            file_name TEXT,
            size BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            json_value TEXT,
            PRIMARY KEY (run_id, part)
        )",
        ],
    },
    Migration {
        version: 2,
        name: "serve: run owners, instances, leases, schedule ticks",
        statements: &[
            "ALTER TABLE runs ADD COLUMN instance TEXT",
            "CREATE INDEX IF NOT EXISTS runs_instance_outcome ON runs (instance, outcome)",
            "CREATE TABLE IF NOT EXISTS instances (
                id TEXT PRIMARY KEY,
                host TEXT NOT NULL,
                pid BIGINT NOT NULL,
                started_at TEXT NOT NULL,
                heartbeat_ms BIGINT NOT NULL
            )",
            "CREATE TABLE IF NOT EXISTS leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_ms BIGINT NOT NULL
            )",
            "CREATE TABLE IF NOT EXISTS ticks (
                flow TEXT NOT NULL,
                tick_at TEXT NOT NULL,
                instance TEXT NOT NULL,
                status TEXT NOT NULL,
                run_id TEXT,
                note TEXT,
                PRIMARY KEY (flow, tick_at)
            )",
            "CREATE INDEX IF NOT EXISTS ticks_at ON ticks (tick_at)",
        ],
    },
    Migration {
        version: 3,
        name: "runs at volume: events as rows, record loop checkpoints, confirmed steps",
        statements: &[
            // 1: the run's events are rows in run_events, written as the run goes (0: the
            // `events` column holds them as one JSON value, as runs before version 3 do)
            "ALTER TABLE runs ADD COLUMN events_in_rows BIGINT NOT NULL DEFAULT 0",
            "CREATE TABLE IF NOT EXISTS run_events (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                at TEXT NOT NULL,
                kind TEXT NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            )",
            "CREATE INDEX IF NOT EXISTS run_events_kind ON run_events (run_id, kind, seq)",
            "CREATE TABLE IF NOT EXISTS run_loops (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                key TEXT NOT NULL,
                label TEXT NOT NULL,
                first_number BIGINT NOT NULL,
                through_number BIGINT NOT NULL,
                done BIGINT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (run_id, key)
            )",
            "CREATE TABLE IF NOT EXISTS run_steps (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                key TEXT NOT NULL,
                output TEXT NOT NULL,
                PRIMARY KEY (run_id, key)
            )",
        ],
    },
    Migration {
        version: 4,
        name: "run owners are process incarnations; fenced leases",
        statements: &[
            // one row per process that runs flows (an incarnation of an instance name)
            "CREATE TABLE IF NOT EXISTS owners (
                id TEXT PRIMARY KEY,
                instance TEXT NOT NULL,
                host TEXT NOT NULL,
                pid BIGINT NOT NULL,
                pid_start BIGINT,
                locality TEXT,
                started_at TEXT NOT NULL,
                heartbeat_ms BIGINT NOT NULL,
                stale_ms BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS owners_instance ON owners (instance)",
            "ALTER TABLE runs ADD COLUMN owner TEXT",
            "CREATE INDEX IF NOT EXISTS runs_owner_outcome ON runs (owner, outcome)",
            // the incarnation holding a lease, and its fencing token
            "ALTER TABLE leases ADD COLUMN owner TEXT",
            "ALTER TABLE leases ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0",
            // instance names as owners: replaced by `owners`
            "DROP TABLE IF EXISTS instances",
        ],
    },
    Migration {
        version: 5,
        name: "kept trigger inputs in the database",
        statements: &[
            // where a kept part's bytes are: 'file' (a copy under <data>/inputs/<run>/, as
            // every part kept before version 5 and every part of an SQLite history) or 'db'
            // (rows of run_input_chunks, any instance reads them)
            "ALTER TABLE run_inputs ADD COLUMN stored TEXT NOT NULL DEFAULT 'file'",
            // a part's bytes in order, in chunks of at most INPUT_CHUNK_BYTES: written and
            // read one chunk at a time, whatever the part's size
            "CREATE TABLE IF NOT EXISTS run_input_chunks (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                part TEXT NOT NULL,
                seq BIGINT NOT NULL,
                bytes {BYTES} NOT NULL,
                PRIMARY KEY (run_id, part, seq)
            )",
        ],
    },
    Migration {
        version: 6,
        name: "paused flows; runs tracked by file name and business key",
        statements: &[
            // a flow paused by an operator (OIC's "deactivate"): one row while it is paused
            "CREATE TABLE IF NOT EXISTS flow_pauses (
                flow TEXT PRIMARY KEY,
                paused_at TEXT NOT NULL,
                paused_by TEXT NOT NULL,
                reason TEXT
            )",
            // what a run is found by (`ferry runs --search`): kind 'f' a file name it
            // handled (substring search), 't' a value its flow declares in `track:` (name:
            // the declaration), 'r' the number of a failed or tolerated record, 'k' that
            // record's declared key (exact search); one row per distinct value of a run.
            // SQLite keeps the rows in the primary key's b-tree alone (no rowid table).
            "CREATE TABLE IF NOT EXISTS run_keys (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                name TEXT,
                PRIMARY KEY (run_id, kind, value)
            ){WITHOUT_ROWID}",
            // exact values found without a scan; file names (most keys) are not in it
            "CREATE INDEX IF NOT EXISTS run_keys_values ON run_keys (value) WHERE kind <> 'f'",
        ],
    },
    Migration {
        version: 7,
        name: "runs waiting for their trigger input",
        statements: &[
            // 1 from a run's record until its trigger input is kept (the same transaction
            // sets it to 0): a run ferry stopped while it was 1 is recorded 'abandoned',
            // not 'interrupted', as there is nothing to resubmit
            "ALTER TABLE runs ADD COLUMN input_pending BIGINT NOT NULL DEFAULT 0",
        ],
    },
];

/// The highest version this ferry knows.
pub(super) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies the steps not applied yet.
pub(super) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), HistoryError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TEXT NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    let found = applied_max(pool).await?;
    if found > latest() {
        return Err(HistoryError::SchemaTooNew {
            found,
            known: latest(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let mut tx = super::store::begin_write(pool, backend).await?;
        if backend == Backend::Postgres {
            sqlx::query("LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        // The version row first: it takes SQLite's write lock, and a migrator that lost a
        // race to another process finds the row there and leaves the step alone (statements
        // such as ADD COLUMN cannot run twice).
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            continue;
        }
        for statement in m.statements {
            let statement = statement
                .replace("{BYTES}", bytes_type(backend))
                .replace("{WITHOUT_ROWID}", without_rowid(backend));
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        tracing::debug!(version = m.version, name = m.name, "run history migrated");
    }
    Ok(())
}

/// The column type of bytes on `backend`.
fn bytes_type(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "BYTEA",
        Backend::Sqlite => "BLOB",
    }
}

/// The table option of a table kept in its primary key's b-tree (SQLite's `WITHOUT ROWID`;
/// nothing on PostgreSQL).
fn without_rowid(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "",
        Backend::Sqlite => " WITHOUT ROWID",
    }
}

/// The highest applied version (0 for a new database).
pub(super) async fn applied_max(pool: &AnyPool) -> Result<i64, HistoryError> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MAX(version) AS v FROM schema_migrations")
        .fetch_one(pool)
        .await?;
    let n: i64 = row.try_get("n")?;
    if n == 0 {
        return Ok(0);
    }
    Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
}
