//! Exactly once at the edges (issue 21): what the run history and `ferry serve` promise
//! where a run meets the outside — many writers on one SQLite history, a client that goes
//! away while its delivery is recorded, a delivery killed before its input was stored, and
//! resubmits of resubmits that were killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry::history::{NewRun, Outcome, RunFilter, Store, Trigger};
use ferry::run::{Checkpoint, Counters, Event, JournalBatch, RunReport};

fn new_run(flow: &str) -> NewRun<'_> {
    NewRun {
        flow,
        flow_name: "A flow",
        trigger: Trigger::Manual,
        input_summary: None,
        resubmit_of: None,
        dry_run: false,
    }
}

/// The finished report of begun run `run_id`: one put.
fn report_of(run_id: &str, flow: &str) -> RunReport {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events = vec![Event::Put {
        connection: "target".into(),
        location: "bucket".into(),
        name: format!("{run_id}.csv"),
        bytes: 3,
    }];
    RunReport {
        run_id: run_id.to_string(),
        flow: flow.to_string(),
        flow_name: "A flow".into(),
        outcome: ferry::run::Outcome::Succeeded,
        dry_run: false,
        started_at: now.clone(),
        finished_at: now,
        error: None,
        counters: Counters::of(&events),
        events,
        events_omitted: 0,
        tracked: Default::default(),
    }
}

/// A journal batch: one event and a record loop's checkpoint at `through`.
fn batch(seq: u64, through: u64) -> JournalBatch {
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    JournalBatch {
        events: vec![(
            seq,
            at,
            Event::Renamed {
                connection: "source".into(),
                location: "in".into(),
                from: format!("f{seq}.csv"),
                to: format!("Sent-f{seq}.csv"),
            },
        )],
        checkpoints: vec![Checkpoint {
            key: "records".into(),
            label: "f.csv".into(),
            first: 1,
            through,
            done: through,
        }],
        ..JournalBatch::default()
    }
}

// ---------------------------------------------------------------------------------------
// 1. Many writers on one SQLite history

/// 16 writers on one SQLite history (four handles, as four processes would open it): each
/// begins runs, writes their journals and records their ends; every write waits for the
/// others instead of failing with "database is locked" (a transaction that began as a read
/// and was upgraded failed at once: SQLITE_BUSY_SNAPSHOT, code 517).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_sqlite_history_never_find_it_locked() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Store::open_sqlite(&dir.path().join("state")).await.unwrap());
    }
    const WRITERS: usize = 16;
    const RUNS: usize = 6;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for _ in 0..RUNS {
                let id = match store.begin(&new_run("F")).await {
                    Ok(id) => id,
                    Err(e) => {
                        errors.push(format!("begin: {e}"));
                        continue;
                    }
                };
                for seq in 1..=3 {
                    if let Err(e) = store.write_batch(&id, &batch(seq, seq * 10)).await {
                        errors.push(format!("write_batch: {e}"));
                    }
                }
                if let Err(e) = store.finish(&report_of(&id, "F")).await {
                    errors.push(format!("finish: {e}"));
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert_eq!(errors, Vec::<String>::new());
    let done = stores[0]
        .list(&RunFilter {
            outcome: Some(Outcome::Succeeded),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), WRITERS * RUNS);
}
