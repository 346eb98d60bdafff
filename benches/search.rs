//! Finding a run by file name or business key, printed, never asserted
//! (`cargo bench --bench search`): a run history of N runs (default 100,000), each having
//! handled two files (a CSV fetched, put and renamed; an acknowledgement skipped) and tracked
//! by an event id, recorded through the store as `ferry run` records them, on SQLite and on
//! PostgreSQL (a throwaway cluster, tests/support/postgres.rs). Then, each the median of 9:
//!
//! - a file name by substring that one run handled (`_054321.csv`);
//! - an event id, exactly (`EV054321`);
//! - a substring every run matches (`ENROLL_SYNC`), first page of 50;
//! - a miss (every key read), and a miss within one flow;
//! - `ferry runs --search` (the real binary, the whole command) on SQLite.
//!
//! And the history's cost of the keys: bytes of `run_keys` (table and index) per file name
//! kept (goal: ≤ 200 bytes; search goal: ≤ 100 ms at 100,000 runs).
//!
//! `FERRY_BENCH_RUNS` sets N; `FERRY_BENCH_PG=0` skips PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

#[path = "../tests/support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use ferry::history::{RunFilter, Store, Trigger};
use ferry::run::{Counters, Event, Outcome, RunReport};
use sqlx::Row as _;

const FLOWS: [&str; 4] = ["ENROLL_FTP", "ENROLL_OS", "EVENT_OUTCOME", "KWH_AVOIDED"];

/// Run `i`: fetched and put `ENROLL_SYNC_…_{i}.csv`, skipped its acknowledgement, tracked
/// by `EV{i}`.
fn report(i: usize, started: chrono::DateTime<chrono::Utc>) -> RunReport {
    let name = format!("ENROLL_SYNC_20230210_{i:06}.csv");
    let events = vec![
        Event::Fetched {
            connection: "dacs_ftp".into(),
            location: "sploutput/DACSEnv/enroll".into(),
            name: name.clone(),
            bytes: 100,
        },
        Event::Put {
            connection: "ouai_os".into(),
            location: "ouainamespace/OUAIEnrollFolder".into(),
            name: name.clone(),
            bytes: 100,
        },
        Event::Renamed {
            connection: "dacs_ftp".into(),
            location: "sploutput/DACSEnv/enroll".into(),
            from: name,
            to: format!("Sent-ENROLL_SYNC_20230210_{i:06}.csv"),
        },
        Event::Skipped {
            connection: "dacs_ftp".into(),
            location: "sploutput/DACSEnv/enroll".into(),
            name: format!("ACK_20230210_{i:06}.csv"),
            reason: "gone".into(),
        },
    ];
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut r = RunReport {
        run_id: ferry::run::new_run_id(),
        flow: FLOWS[i % FLOWS.len()].into(),
        flow_name: "A flow".into(),
        outcome: Outcome::Succeeded,
        dry_run: false,
        started_at: ts(started),
        finished_at: ts(started + chrono::Duration::milliseconds(300)),
        error: None,
        counters: Counters::of(&events),
        events,
        events_omitted: 0,
        tracked: Default::default(),
    };
    r.tracked.insert("eventId".into(), format!("EV{i:06}"));
    r
}

/// Records `n` runs, 8 at a time.
async fn fill(store: &Store, n: usize) -> Duration {
    let began = Instant::now();
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 8).min(n))
            .map(|j| {
                let store = store.clone();
                let r = report(j, start + chrono::Duration::seconds(j as i64 * 20));
                tokio::spawn(async move { store.record(&r, Trigger::Schedule).await.unwrap() })
            })
            .collect();
        for t in batch {
            t.await.unwrap();
        }
        i += 8;
        if i % 20_000 < 8 {
            eprintln!(
                "  {i} runs recorded ({:.0} s)",
                began.elapsed().as_secs_f64()
            );
        }
    }
    began.elapsed()
}

/// The median time of 9 listings with `filter`, and how many runs the last one found.
async fn median(store: &Store, filter: &RunFilter) -> (f64, usize) {
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..9 {
        let t = Instant::now();
        found = store.list(filter).await.unwrap().len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[4], found)
}

fn search(text: &str, flow: Option<&str>) -> RunFilter {
    RunFilter {
        search: Some(text.into()),
        flow: flow.map(str::to_string),
        ..Default::default()
    }
}

async fn searches(store: &Store, n: usize) {
    let probe = n / 2;
    for (what, filter) in [
        (
            format!("file substring '_{probe:06}.csv'"),
            search(&format!("_{probe:06}.csv"), None),
        ),
        (
            format!("event id 'EV{probe:06}'"),
            search(&format!("EV{probe:06}"), None),
        ),
        (
            "substring every run has, page of 50".into(),
            search("ENROLL_SYNC", None),
        ),
        ("a miss".into(), search("NO_SUCH_FILE", None)),
        (
            "a miss in one flow".into(),
            search("NO_SUCH_FILE", Some(FLOWS[0])),
        ),
    ] {
        let (ms, found) = median(store, &filter).await;
        println!("  {what:<44} {ms:>8.1} ms  ({found} found)");
    }
}

fn main() {
    let n: usize = std::env::var("FERRY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "search benchmark, {} UTC, {n} runs of 2 file names and 1 tracked value each",
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    );
    rt.block_on(async {
        // SQLite
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open_sqlite(&state).await.unwrap();
        let took = fill(&store, n).await;
        println!("SQLite: recorded in {:.0} s", took.as_secs_f64());
        searches(&store, n).await;
        let bin = env!("CARGO_BIN_EXE_ferry");
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let out = std::process::Command::new(bin)
                .args(["runs", "--search", &format!("EV{:06}", n / 3), "--data"])
                .arg(&state)
                .output()
                .unwrap();
            assert!(out.status.success());
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!("  {:<44} {:>8.1} ms", "`ferry runs --search EV…` (whole command)", times[2]);
        store.close().await;
        // the keys' share of the file: the database with and without them, vacuumed
        let db = state.join(ferry::history::DB_FILE);
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let files: i64 = sqlx::query("SELECT COUNT(*) FROM run_keys WHERE kind = 'f'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
        sqlx::query("VACUUM").execute(&pool).await.unwrap();
        let with = std::fs::metadata(&db).unwrap().len();
        sqlx::query("DELETE FROM run_keys WHERE kind = 'f'").execute(&pool).await.unwrap();
        sqlx::query("VACUUM").execute(&pool).await.unwrap();
        let without = std::fs::metadata(&db).unwrap().len();
        pool.close().await;
        println!(
            "  run_keys: {:.0} bytes per file name kept ({files} names; database {:.1} MB with them, {:.1} MB without)",
            (with - without) as f64 / files as f64,
            with as f64 / 1e6,
            without as f64 / 1e6
        );

        if std::env::var("FERRY_BENCH_PG").as_deref() == Ok("0") {
            return;
        }
        let pg = postgres::Postgres::start();
        let url = pg.database("search");
        let pdir = tempfile::tempdir().unwrap();
        let store = Store::open_postgres(&url, pdir.path()).await.unwrap();
        let took = fill(&store, n).await;
        println!("PostgreSQL: recorded in {:.0} s", took.as_secs_f64());
        let raw = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("VACUUM ANALYZE run_keys").execute(&raw).await.unwrap();
        searches(&store, n).await;
        let row = sqlx::query(
            "SELECT pg_total_relation_size('run_keys') AS bytes,
                (SELECT COUNT(*) FROM run_keys) AS keys,
                (SELECT COUNT(*) FROM run_keys WHERE kind = 'f') AS files",
        )
        .fetch_one(&raw)
        .await
        .unwrap();
        let (bytes, keys, files): (i64, i64, i64) =
            (row.get("bytes"), row.get("keys"), row.get("files"));
        println!(
            "  run_keys: {:.0} bytes per key row, table and index ({keys} rows, {files} file names, {:.1} MB)",
            bytes as f64 / keys as f64,
            bytes as f64 / 1e6
        );
        raw.close().await;
        store.close().await;
        drop(pg);
    });
}
