//! The run history store (`ferry::history`) on real SQLite in temporary directories, and the
//! commands over it (`ferry run` recording, `ferry runs`, `ferry runs show`, `ferry
//! resubmit`, `ferry purge`) run as the real binary: round trips with per-file, per-record
//! and per-email outcomes, stored errors, resubmits (a REST delivery replayed byte-exact, a
//! record-by-record flow resuming where it stopped), purge in batches, idempotent
//! migrations, interrupted runs, and no secret in the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/project.rs"]
mod project;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use ferry::history::{
    self, FileAction, HeldPart, HistoryError, InputPart, NewRun, Outcome, RecordStatus, RunFilter,
    RunRequest, Store, Trigger,
};
use ferry::model::PartKind;
use ferry::run::{Engine, Event, RunReport};
use ferry::standin::{FailurePlan, StandInConfig};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use support::{Workspace, demo_data, demo_input};

const OS_ENROLL: &str = "OUTL-BA-DACS_OUAI_OS_ENROLL";
const ENROLL_ACK: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const EVENT_OUTCOME: &str = "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR";

const ENROLL_SRC: &str = "dacsnamespace/DACS_EnrollFolder";
const ENROLL_DST: &str = "ouainamespace/OUAIEnrollFolder";
const ENROLL_FILE: &str = "ENROLL_SYNC_20230211_0100.csv";
const ACK_BUCKET: &str = "ouainamespace/OUAIEnrollAckFolder";
const ACK_FILE: &str = "feedback.dacs.program_subscription.20230210.csv";
const ACK_RECORDS: usize = 7;
const OUTCOME_BUCKET: &str = "ouainamespace/OUAIOutcomeFolder";
const OUTCOME_FILE: &str = "event_outcome.4011.20221213.csv";
const MESSAGE_FILE: &str = "event_outcome_message.json";

fn ack_bytes() -> Vec<u8> {
    demo_data(&format!("ouai-os/{ACK_BUCKET}/{ACK_FILE}"))
}

async fn store_in(dir: &Path) -> Store {
    Store::open_sqlite(&dir.join("state")).await.unwrap()
}

fn engine(ws: &Workspace) -> Engine {
    Engine::new(ws.load(), ws.options())
}

async fn run(ws: &Workspace, store: &Store, flow: &str) -> RunReport {
    let recorded = history::run_recorded(
        &engine(ws),
        Some(store),
        RunRequest::new(flow, Trigger::Manual),
    )
    .await
    .unwrap();
    assert!(recorded.warnings.is_empty(), "{:?}", recorded.warnings);
    recorded.report
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A direct connection to a store's SQLite file, for what the API does not expose.
async fn raw(dir: &Path) -> sqlx::SqlitePool {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("state/ferry.db"));
    sqlx::SqlitePool::connect_with(opts).await.unwrap()
}

async fn count(pool: &sqlx::SqlitePool, sql: &str) -> i64 {
    use sqlx::Row as _;
    sqlx::query(sql).fetch_one(pool).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_list_filter_and_get_round_trip_with_files_records_and_emails() {
    let ws = Workspace::new().await;
    let store = store_in(ws.path()).await;
    ws.seed_demo(&format!("dacs-os/{ENROLL_SRC}"));
    let moved = run(&ws, &store, OS_ENROLL).await;
    ws.put_file("ouai-os", ACK_BUCKET, ACK_FILE, ack_bytes());
    let sent = run(&ws, &store, ENROLL_ACK).await;
    // the same records again: DACS answers 400 for each, which the flow tolerates
    ws.put_file("ouai-os", ACK_BUCKET, ACK_FILE, ack_bytes());
    let tolerated = run(&ws, &store, ENROLL_ACK).await;
    for r in [&moved, &sent, &tolerated] {
        assert_eq!(r.outcome, ferry::run::Outcome::Succeeded, "{r:#?}");
    }

    // list: newest first, filters, limit
    let all = store.list(&RunFilter::default()).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [&tolerated.run_id, &sent.run_id, &moved.run_id]);
    let by_flow = store
        .list(&RunFilter {
            flow: Some(ENROLL_ACK.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_flow.len(), 2);
    assert!(by_flow.iter().all(|r| r.flow == ENROLL_ACK));
    let failed = store
        .list(&RunFilter {
            outcome: Some(Outcome::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(failed.is_empty());
    let newest = store
        .list(&RunFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest[0].id, tolerated.run_id);
    let future = store
        .list(&RunFilter {
            since: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(future.is_empty());

    // the file flow: put and rename, one email
    let m = &all[2];
    assert_eq!(
        (m.trigger, m.outcome, m.files, m.renames, m.emails),
        (Trigger::Manual, Outcome::Succeeded, 1, 1, 1)
    );
    assert_eq!(
        m.bytes,
        demo_data(&format!("dacs-os/{ENROLL_SRC}/{ENROLL_FILE}")).len() as i64
    );
    assert_eq!(m.started_at, moved.started_at);
    assert_eq!(m.finished_at.as_deref(), Some(moved.finished_at.as_str()));
    assert!(m.duration_ms.is_some());
    let d = store.get(&moved.run_id).await.unwrap().unwrap();
    let put = d
        .files
        .iter()
        .find(|f| f.action == FileAction::Put)
        .unwrap();
    assert_eq!(
        (
            put.connection.as_str(),
            put.location.as_str(),
            put.name.as_str()
        ),
        ("ouai_os", ENROLL_DST, ENROLL_FILE)
    );
    let renamed = d
        .files
        .iter()
        .find(|f| f.action == FileAction::Renamed)
        .unwrap();
    assert_eq!(renamed.name, ENROLL_FILE);
    assert_eq!(
        renamed.renamed_to.as_deref(),
        Some(format!("Sent-{ENROLL_FILE}").as_str())
    );
    assert_eq!(d.files, history::file_outcomes(&moved));
    assert_eq!(d.emails.len(), 1);
    let Some(Event::Emailed { to, subject }) = moved
        .events
        .iter()
        .find(|e| matches!(e, Event::Emailed { .. }))
    else {
        panic!("no email event")
    };
    assert_eq!((&d.emails[0].to, &d.emails[0].subject), (to, subject));
    assert_eq!(
        Value::Array(d.events.clone()),
        serde_json::to_value(&moved.events).unwrap()
    );
    assert!(d.failure.is_none() && d.inputs.is_empty() && d.resubmitted_as.is_empty());

    // the record flow: every record sent (a range, no row per record), then every record
    // tolerated (a row each, with its record number and DACS's message)
    let s = store.get(&sent.run_id).await.unwrap().unwrap();
    assert!(s.records.is_empty(), "{:#?}", s.records);
    assert_eq!(s.loops.len(), 1, "{:#?}", s.loops);
    assert_eq!(s.loops[0].label, ACK_FILE);
    assert_eq!(
        (s.loops[0].first, s.loops[0].through, s.loops[0].done),
        (1, ACK_RECORDS as i64, ACK_RECORDS as i64)
    );
    assert_eq!(s.summary.records_ok, ACK_RECORDS as i64);
    let t = store.get(&tolerated.run_id).await.unwrap().unwrap();
    assert!(
        t.records
            .iter()
            .all(|r| r.outcome == RecordStatus::Tolerated && r.status == Some(400)),
        "{:#?}",
        t.records
    );
    assert_eq!(
        (
            t.summary.records_ok,
            t.summary.records_tolerated,
            t.summary.records_failed
        ),
        (0, ACK_RECORDS as i64, 0)
    );
    assert_eq!(t.records, history::record_outcomes(&tolerated));
    // in the order the answers came (8 records are in flight at once)
    let mut numbers: Vec<Option<i64>> = t.records.iter().map(|r| r.record).collect();
    numbers.sort();
    let expected: Vec<Option<i64>> = (1..=ACK_RECORDS as i64).map(Some).collect();
    assert_eq!(numbers, expected);
    assert!(
        t.records.iter().all(|r| r.message.is_some()),
        "{:#?}",
        t.records
    );
    assert_eq!(t.records[0].method, "POST");
    assert!(
        t.records[0]
            .url
            .ends_with("/rest/apis/cross/syncRequests/update")
    );
    assert_eq!(t.emails, history::email_outcomes(&tolerated));
    assert!(store.get("no-such-run").await.unwrap().is_none());

    // found by what they handled: the file (listed, fetched, put, renamed) by a part of its
    // name in any case, a tolerated record by its number and by the key its loop declares
    // (`track: "{{ record.fields.SyncRequestId }}"`), never a record that was sent
    let found = |text: &str| {
        let filter = RunFilter {
            search: Some(text.into()),
            ..Default::default()
        };
        let store = store.clone();
        async move {
            store
                .list(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found("enroll_sync_20230211").await,
        std::slice::from_ref(&moved.run_id)
    );
    assert_eq!(
        found("program_subscription").await,
        [tolerated.run_id.clone(), sent.run_id.clone()]
    );
    assert_eq!(found("#3").await, std::slice::from_ref(&tolerated.run_id));
    assert_eq!(found("0003").await, std::slice::from_ref(&tolerated.run_id));
    assert_eq!(
        found("SR-20230210-0003").await,
        std::slice::from_ref(&tolerated.run_id)
    );
    assert!(found("SR-20230210-00").await.is_empty(), "keys match whole");
    assert!(found(&format!("#{}", ACK_RECORDS + 1)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_stores_step_file_and_record_and_its_resubmit_resumes_there() {
    let ws = Workspace::new().await;
    let store = store_in(ws.path()).await;
    ws.put_file("ouai-os", ACK_BUCKET, ACK_FILE, ack_bytes());
    ws.sequential_records();
    ws.standin.fail_sync_requests(FailurePlan {
        after: 2,
        status: 500,
        times: 1,
    });
    let first = run(&ws, &store, ENROLL_ACK).await;
    assert_eq!(first.outcome, ferry::run::Outcome::Partial, "{first:#?}");
    let marked = "feedback.dacs.program_subscription.20230210_ErrInRcd_3.csv";
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [marked]);

    let d = store.get(&first.run_id).await.unwrap().unwrap();
    assert_eq!(d.summary.outcome, Outcome::Partial);
    let e = d.failure.clone().unwrap();
    assert_eq!((e.step.as_str(), e.kind.as_str()), ("send", "http"));
    assert!(e.message.contains("HTTP 500"), "{}", e.message);
    assert_eq!(e.file.as_deref(), Some(ACK_FILE));
    assert_eq!(e.record, Some(3));
    assert_eq!(e.items["record"]["number"], json!(3));
    assert_eq!(
        d.summary.error.as_deref(),
        Some(format!("send: {}", e.message).as_str())
    );
    // records 1 and 2 were accepted: a range; record 3 failed: a row with its number
    let outcomes: Vec<(RecordStatus, Option<i64>, Option<i64>)> = d
        .records
        .iter()
        .map(|r| (r.outcome, r.status, r.record))
        .collect();
    assert_eq!(outcomes, [(RecordStatus::Failed, Some(500), Some(3))]);
    assert_eq!(
        d.loops
            .iter()
            .map(|l| (l.first, l.through, l.done))
            .collect::<Vec<_>>(),
        [(1, 2, 2)]
    );
    assert_eq!((d.summary.records_ok, d.summary.records_failed), (2, 1));
    let renamed = d
        .files
        .iter()
        .find(|f| f.action == FileAction::Renamed)
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.renamed_to.as_deref()),
        (ACK_FILE, Some(marked))
    );
    // the error handler's email is among the emails
    assert!(!d.emails.is_empty());
    assert_eq!(d.emails, history::email_outcomes(&first));

    // a resubmit is a new run of the flow, linked to the original; the flow resumes at
    // record 3 of the marked file by itself
    let again = history::resubmit(&engine(&ws), &store, &first.run_id)
        .await
        .unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    let r = again.report;
    assert_ne!(r.run_id, first.run_id);
    assert_eq!(r.outcome, ferry::run::Outcome::Succeeded, "{r:#?}");
    assert_eq!(r.requests_ok(), ACK_RECORDS - 2);
    assert_eq!(
        ws.list_files("ouai-os", ACK_BUCKET),
        [format!("Sent-{marked}")]
    );
    assert_eq!(ws.standin.sync_requests().len(), ACK_RECORDS);
    let n = store.get(&r.run_id).await.unwrap().unwrap();
    assert_eq!(n.summary.trigger, Trigger::Resubmit);
    assert_eq!(
        n.summary.resubmit_of.as_deref(),
        Some(first.run_id.as_str())
    );
    assert_eq!(n.summary.outcome, Outcome::Succeeded);
    // the records it sent are a range from record 3, not rows
    assert!(n.records.is_empty(), "{:#?}", n.records);
    assert_eq!(
        n.loops
            .iter()
            .map(|l| (l.first, l.through))
            .collect::<Vec<_>>(),
        [(3, ACK_RECORDS as i64)]
    );
    let o = store.get(&first.run_id).await.unwrap().unwrap();
    assert_eq!(o.resubmitted_as, std::slice::from_ref(&r.run_id));
    let resubmits = store
        .list(&RunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.trigger == Trigger::Resubmit)
        .count();
    assert_eq!(resubmits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_delivery_is_kept_and_its_resubmit_replays_it_byte_exact() {
    let ws = Workspace::new().await;
    let store = store_in(ws.path()).await;
    // the delivery, as a server would spool it; removed before the resubmit
    let delivery = ws.path().join("delivery");
    std::fs::create_dir_all(&delivery).unwrap();
    let csv = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();
    let message_text = std::fs::read(demo_input(MESSAGE_FILE)).unwrap();
    std::fs::write(delivery.join("message.part"), &message_text).unwrap();
    std::fs::write(delivery.join("file.part"), &csv).unwrap();
    let request = RunRequest {
        parts: vec![
            ("message".into(), delivery.join("message.part"), None),
            (
                "file".into(),
                delivery.join("file.part"),
                Some(OUTCOME_FILE.to_string()),
            ),
        ],
        ..RunRequest::new(EVENT_OUTCOME, Trigger::Rest)
    };
    let first = history::run_recorded(&engine(&ws), Some(&store), request)
        .await
        .unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let first = first.report;
    assert_eq!(first.outcome, ferry::run::Outcome::Succeeded, "{first:#?}");
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(csv.clone())
    );

    // what is kept: the JSON value and a byte-exact copy of each part
    let kept = store.input(&first.run_id).await.unwrap();
    assert_eq!(kept.len(), 2);
    let (file, message) = (&kept[0], &kept[1]);
    assert_eq!((file.name.as_str(), file.kind), ("file", PartKind::File));
    assert_eq!(file.file_name.as_deref(), Some(OUTCOME_FILE));
    assert_eq!(file.size, csv.len() as i64);
    assert_eq!(file.sha256, sha256_hex(&csv));
    assert_eq!(
        file.path,
        store
            .data_dir()
            .join("inputs")
            .join(&first.run_id)
            .join("file")
    );
    assert_eq!(std::fs::read(&file.path).unwrap(), csv);
    assert_eq!(
        (message.name.as_str(), message.kind),
        ("message", PartKind::Json)
    );
    let message_value: Value = serde_json::from_slice(&message_text).unwrap();
    assert_eq!(message.value.as_ref(), Some(&message_value));
    assert_eq!(std::fs::read(&message.path).unwrap(), message_text);
    let d = store.get(&first.run_id).await.unwrap().unwrap();
    assert_eq!(d.summary.trigger, Trigger::Rest);
    let summary = d.summary.input_summary.clone().unwrap();
    assert!(
        summary.contains(&format!("file={OUTCOME_FILE} ({} bytes)", csv.len())),
        "{summary}"
    );
    assert!(summary.contains("\"eventId\":\"4011\""), "{summary}");
    assert_eq!(d.inputs, kept);

    // the resubmit replays the kept delivery: the same object, the same acknowledgment
    std::fs::remove_dir_all(&delivery).unwrap();
    std::fs::remove_file(ws.dir("ouai-os", OUTCOME_BUCKET).join(OUTCOME_FILE)).unwrap();
    let again = history::resubmit(&engine(&ws), &store, &first.run_id)
        .await
        .unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    let again = again.report;
    assert_eq!(again.outcome, ferry::run::Outcome::Succeeded, "{again:#?}");
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(csv.clone())
    );
    let acks = ws.standin.outcome_acks();
    assert_eq!(acks.len(), 2, "{acks:#?}");
    assert_eq!(acks[0], acks[1]);
    assert_eq!(acks[1]["eventId"], "4011");
    assert_eq!(acks[1]["fileName"], OUTCOME_FILE);
    // the resubmit keeps its own copy, so it can be resubmitted after the original is gone
    let n = store.get(&again.run_id).await.unwrap().unwrap();
    assert_eq!(
        n.summary.resubmit_of.as_deref(),
        Some(first.run_id.as_str())
    );
    assert_eq!(n.summary.input_summary.as_deref(), Some(summary.as_str()));
    assert_eq!(n.inputs.len(), 2);
    assert_eq!(std::fs::read(&n.inputs[0].path).unwrap(), csv);
    assert_eq!(n.inputs[0].sha256, file.sha256);
    assert_ne!(n.inputs[0].path, file.path);
}

/// A finished report of `flow` that started `age` ago: one put, one email.
fn fake_report(flow: &str, age: chrono::Duration) -> RunReport {
    let start = chrono::Utc::now() - age;
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events = vec![
        Event::Put {
            connection: "target".into(),
            location: "bucket".into(),
            name: "a.csv".into(),
            bytes: 3,
        },
        Event::Emailed {
            to: vec!["ops@example.com".into()],
            subject: "done".into(),
        },
    ];
    RunReport {
        run_id: ferry::run::new_run_id(),
        flow: flow.to_string(),
        flow_name: "A flow".into(),
        outcome: ferry::run::Outcome::Succeeded,
        dry_run: false,
        started_at: ts(start),
        finished_at: ts(start + chrono::Duration::seconds(2)),
        error: None,
        counters: ferry::run::Counters::of(&events),
        events,
        events_omitted: 0,
        tracked: Default::default(),
    }
}

/// The parts of held delivery `n`: a CSV file and a JSON message, both naming `n`.
fn held_parts(n: usize) -> Vec<HeldPart> {
    vec![
        HeldPart {
            name: "file".into(),
            kind: PartKind::File,
            bytes: format!("a,b\n{n},2\n").into_bytes().into(),
            file_name: Some(format!("delivery-{n}.csv")),
        },
        HeldPart {
            name: "message".into(),
            kind: PartKind::Json,
            bytes: format!("{{\"n\": {n}}}").into_bytes().into(),
            file_name: None,
        },
    ]
}

/// Deliveries recorded at once share group commits (written whole, without savepoints);
/// one that cannot be recorded (its run id is taken) fails alone, and every other is
/// recorded with its parts, which are read back from the database byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_deliveries_recorded_at_once_fail_alone_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let new = || NewRun {
        flow: "HELD",
        flow_name: "A flow",
        trigger: Trigger::Rest,
        input_summary: None,
        resubmit_of: None,
        dry_run: false,
    };
    let taken = ferry::run::new_run_id();
    store
        .begin_with_held(&taken, &new(), &held_parts(0))
        .await
        .unwrap();
    let mut ids: Vec<String> = (0..40).map(|_| ferry::run::new_run_id()).collect();
    ids.insert(20, taken.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (store, id) = (store.clone(), id.clone());
        tasks.spawn(async move {
            let r = store.begin_with_held(&id, &new(), &held_parts(i + 1)).await;
            (i, id, r)
        });
    }
    let mut recorded = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, id, r) = done.unwrap();
        if id == taken {
            assert!(r.is_err(), "a second run under a taken id was recorded");
            continue;
        }
        let kept = r.unwrap();
        assert_eq!(kept.len(), 2);
        let parts = store.input(&id).await.unwrap();
        let file = parts.iter().find(|p| p.name == "file").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file.path).unwrap(),
            format!("a,b\n{},2\n", i + 1)
        );
        assert_eq!(
            file.file_name.as_deref(),
            Some(&*format!("delivery-{}.csv", i + 1))
        );
        let message = parts.iter().find(|p| p.name == "message").unwrap();
        assert_eq!(message.value, Some(json!({ "n": i + 1 })));
        recorded += 1;
    }
    assert_eq!(recorded, 40);
    // the run that held the id first keeps its own input
    let parts = store.input(&taken).await.unwrap();
    let file = parts.iter().find(|p| p.name == "file").unwrap();
    assert_eq!(std::fs::read_to_string(&file.path).unwrap(), "a,b\n0,2\n");
}

async fn keep_one(store: &Store, dir: &Path, run_id: &str) {
    let f = dir.join(format!("{run_id}.csv"));
    std::fs::write(&f, b"a,b\n1,2\n").unwrap();
    store
        .keep_input(
            run_id,
            &[InputPart {
                name: "file".into(),
                kind: PartKind::File,
                path: f,
                file_name: None,
            }],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_only_old_finished_runs_in_batches_with_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let old = chrono::Duration::days(40);
    let mut old_with_input = Vec::new();
    for i in 0..1200 {
        let r = fake_report("OLD", old + chrono::Duration::seconds(i));
        store.record(&r, Trigger::Schedule).await.unwrap();
        if i % 400 == 0 {
            keep_one(&store, dir.path(), &r.run_id).await;
            old_with_input.push(r.run_id);
        }
    }
    let mut recent = Vec::new();
    for i in 0..5 {
        let r = fake_report(
            "NEW",
            chrono::Duration::days(1) + chrono::Duration::seconds(i),
        );
        store.record(&r, Trigger::Manual).await.unwrap();
        recent.push(r.run_id);
    }
    keep_one(&store, dir.path(), &recent[0]).await;
    // a run that started long ago and is still running is kept
    let running = store
        .begin(&NewRun {
            flow: "OLD",
            flow_name: "A flow",
            trigger: Trigger::Schedule,
            input_summary: None,
            resubmit_of: None,
            dry_run: false,
        })
        .await
        .unwrap();
    let pool = raw(dir.path()).await;
    sqlx::query("UPDATE runs SET started_at = '2000-01-01T00:00:00.000Z' WHERE id = $1")
        .bind(&running)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM runs").await, 1206);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM run_events").await, 2410);
    for id in &old_with_input {
        assert!(store.inputs_dir(id).unwrap().join("file").is_file());
    }

    let purged = store
        .purge(chrono::Utc::now() - chrono::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(purged, 1200);
    let left = store
        .list(&RunFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut left: Vec<String> = left.into_iter().map(|r| r.id).collect();
    left.sort();
    let mut expected = recent.clone();
    expected.push(running.clone());
    expected.sort();
    assert_eq!(left, expected);
    for id in &old_with_input {
        assert!(
            !store.inputs_dir(id).unwrap().exists(),
            "inputs of {id} kept"
        );
    }
    assert_eq!(store.input(&recent[0]).await.unwrap().len(), 1);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM run_events").await, 10);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM run_emails").await, 0);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM run_inputs").await, 1);
    assert_eq!(
        store
            .purge(chrono::Utc::now() - chrono::Duration::days(30))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = store_in(dir.path()).await;
    let r = fake_report("F", chrono::Duration::minutes(5));
    first.record(&r, Trigger::Manual).await.unwrap();
    first.close().await;
    // opened again, and twice at once
    let state = dir.path().join("state");
    let (a, b) = tokio::join!(Store::open_sqlite(&state), Store::open_sqlite(&state));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), 7);
    assert!(b.get(&r.run_id).await.unwrap().is_some());
    let pool = raw(dir.path()).await;
    // one row per migration step (1: runs, 2: serve's instances, leases and ticks, 3: events
    // as rows, loop checkpoints, confirmed steps, 4: run owners as process incarnations,
    // fenced leases, 5: kept inputs in the database, 6: pauses and run keys, 7: runs
    // waiting for their trigger input)
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM schema_migrations").await,
        7
    );
    let journal: String = {
        use sqlx::Row as _;
        sqlx::query("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(journal, "wal");
    // two fresh stores opened at once
    let fresh = tempfile::tempdir().unwrap();
    let fresh_state = fresh.path().join("state");
    let (c, d) = tokio::join!(
        Store::open_sqlite(&fresh_state),
        Store::open_sqlite(&fresh_state)
    );
    assert_eq!(c.unwrap().schema_version().await.unwrap(), 7);
    assert_eq!(d.unwrap().schema_version().await.unwrap(), 7);

    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 'x')",
    )
    .execute(&pool)
    .await
    .unwrap();
    match Store::open_sqlite(&dir.path().join("state")).await {
        Err(HistoryError::SchemaTooNew {
            found: 99,
            known: 7,
        }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_left_running_becomes_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let crashed = store
        .begin(&NewRun {
            flow: "F",
            flow_name: "A flow",
            trigger: Trigger::Schedule,
            input_summary: None,
            resubmit_of: None,
            dry_run: false,
        })
        .await
        .unwrap();
    let done = fake_report("F", chrono::Duration::minutes(1));
    store.record(&done, Trigger::Manual).await.unwrap();
    let running = store
        .list(&RunFilter {
            outcome: Some(Outcome::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].finished_at, None);
    store.close().await;

    // the process that owns the store starts again
    let store = store_in(dir.path()).await;
    assert_eq!(store.mark_interrupted_runs().await.unwrap(), 1);
    let d = store.get(&crashed).await.unwrap().unwrap();
    assert_eq!(d.summary.outcome, Outcome::Interrupted);
    assert!(d.summary.finished_at.is_some());
    assert_eq!(
        d.summary.error.as_deref(),
        Some("ferry stopped while the run ran")
    );
    assert_eq!(
        store
            .get(&done.run_id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .outcome,
        Outcome::Succeeded
    );
    assert_eq!(store.mark_interrupted_runs().await.unwrap(), 0);
    // an interrupted run is finished: purge takes it
    assert_eq!(
        store
            .purge(chrono::Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        2
    );
}

// ---------------------------------------------------------------------------------------
// The commands, as the real binary

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ferry(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

async fn ferry_env(dir: &Path, args: &[&str], env: (&str, &str)) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env(env.0, env.1)
        .output()
        .await
        .unwrap()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)))
}

#[test]
fn run_records_and_runs_lists_shows_resubmits_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(d);
    let src = d.join("data/dacs-os").join(ENROLL_SRC);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ENROLL_SYNC_1.csv"), "a,b\n1,2\n").unwrap();
    let acks = d.join("data/ouai-os").join(ACK_BUCKET);
    std::fs::create_dir_all(&acks).unwrap();
    std::fs::write(acks.join(ACK_FILE), ack_bytes()).unwrap();

    let o = ferry(d, &["run", OS_ENROLL]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        d.join("ferry-data/state/ferry.db").is_file(),
        "recorded in the default store"
    );
    // DACS is unreachable: the first record fails
    let o = ferry(d, &["run", ENROLL_ACK]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));

    let o = ferry(d, &["runs"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for col in [
        "ID",
        "FLOW",
        "TRIGGER",
        "STARTED (UTC)",
        "DURATION",
        "OUTCOME",
        "FILES",
        "RECORDS",
        "ERROR",
    ] {
        assert!(lines[0].contains(col), "{table}");
    }
    assert!(
        lines[1].contains(ENROLL_ACK) && lines[1].contains(" failed "),
        "{table}"
    );
    assert!(
        lines[1].contains("send: connection 'dacs_rest': "),
        "{table}"
    );
    assert!(
        lines[2].contains(OS_ENROLL) && lines[2].contains(" succeeded "),
        "{table}"
    );
    assert!(lines[2].contains(" manual "), "{table}");

    let failed = json_out(&ferry(
        d,
        &["runs", "--outcome", "failed", "--format", "json"],
    ));
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["flow"], ENROLL_ACK);
    assert_eq!(failed[0]["trigger"], "manual");
    let failed_id = failed[0]["id"].as_str().unwrap().to_string();
    let by_flow = json_out(&ferry(
        d,
        &["runs", "--flow", OS_ENROLL, "--format", "json"],
    ));
    assert_eq!(by_flow.as_array().unwrap().len(), 1);
    assert_eq!(by_flow[0]["files"], 1);
    let since = json_out(&ferry(
        d,
        &["runs", "--since", "1h", "--limit", "1", "--format", "json"],
    ));
    assert_eq!(since.as_array().unwrap().len(), 1);
    assert_eq!(since[0]["id"].as_str(), Some(failed_id.as_str()));
    let o = ferry(d, &["runs", "--outcome", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown outcome 'bogus'"),
        "{}",
        stderr(&o)
    );

    let o = ferry(d, &["runs", "show", &failed_id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let show = stdout(&o);
    for needle in [
        format!("run {failed_id}\n"),
        "  trigger    manual\n".to_string(),
        "  outcome    failed\n".to_string(),
        "error: step 'send' (connector): connection 'dacs_rest': ".to_string(),
        format!("  at file {ACK_FILE}, record 1\n"),
        format!(
            "  renamed  ouai_os:{ACK_BUCKET}/{ACK_FILE} -> feedback.dacs.program_subscription.20230210_ErrInRcd_1.csv\n"
        ),
        format!("  fetched  ouai_os:{ACK_BUCKET}/{ACK_FILE} ("),
        "emails:\n  to ".to_string(),
        "events:\n  list    ouai_os:".to_string(),
        "  FAILED  send: connection 'dacs_rest': ".to_string(),
    ] {
        assert!(show.contains(&needle), "missing {needle:?} in\n{show}");
    }
    let detail = json_out(&ferry(d, &["runs", "show", &failed_id, "--format", "json"]));
    assert_eq!(detail["failure"]["step"], "send");
    assert_eq!(detail["failure"]["record"], 1);
    assert_eq!(detail["failure"]["file"], ACK_FILE);
    let o = ferry(d, &["runs", "show", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no run 'nope'"), "{}", stderr(&o));

    // a resubmit re-runs the flow, which picks up the marked file; DACS is still down
    let o = ferry(d, &["resubmit", &failed_id]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("resubmit of run {failed_id}\n")),
        "{}",
        stdout(&o)
    );
    let all = json_out(&ferry(d, &["runs", "--format", "json"]));
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[0]["trigger"], "resubmit");
    assert_eq!(all[0]["resubmit_of"].as_str(), Some(failed_id.as_str()));
    let resubmit = json_out(&ferry(
        d,
        &[
            "runs",
            "show",
            all[0]["id"].as_str().unwrap(),
            "--format",
            "json",
        ],
    ));
    assert_eq!(
        resubmit["failure"]["file"],
        "feedback.dacs.program_subscription.20230210_ErrInRcd_1.csv"
    );
    let o = ferry(d, &["resubmit", "nope"]);
    assert_eq!(o.status.code(), Some(2));

    let o = ferry(d, &["purge", "--older-than", "30d"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("purged 0 run(s) that started before "),
        "{}",
        stdout(&o)
    );
    for age in ["12h", "90m"] {
        assert_eq!(
            ferry(d, &["purge", "--older-than", age]).status.code(),
            Some(0)
        );
    }
    let o = ferry(d, &["purge", "--older-than", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not an age like 30d"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        json_out(&ferry(d, &["runs", "--format", "json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // a store that cannot be opened never changes the run
    std::fs::write(src.join("ENROLL_SYNC_2.csv"), "a,b\n3,4\n").unwrap();
    std::fs::write(d.join("not-a-dir"), "x").unwrap();
    let o = ferry(d, &["run", OS_ENROLL, "--data", "not-a-dir/state"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).starts_with("warning: the run is not recorded: "),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("outcome: succeeded"), "{}", stdout(&o));
    let o = ferry(d, &["runs", "--data", "elsewhere"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no run history in elsewhere"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("elsewhere").exists());
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_flow_run_and_resubmitted_by_the_cli_leaves_no_secret_in_the_store() {
    const PW_VAR: &str = "FERRY_TEST_HISTORY_DRMS_PASSWORD";
    const PW: &str = "hist-S3cret-7f1c2e9a";
    let mut ws = Workspace::with_standin(StandInConfig::with_basic_auth("ferry", PW)).await;
    let url = ws.standin_url().to_string();
    ws.set_connection(
        "drms_rest",
        json!({
            "kind": "http",
            "base_url": url,
            "timeout_secs": 10,
            "basic_auth": { "username": "ferry", "password_env": PW_VAR },
        }),
    );
    let d = ws.path().to_path_buf();
    let delivery = d.join("delivery");
    std::fs::create_dir_all(&delivery).unwrap();
    let csv = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();
    std::fs::write(delivery.join(OUTCOME_FILE), &csv).unwrap();
    std::fs::copy(demo_input(MESSAGE_FILE), delivery.join("message.json")).unwrap();
    let sources = [
        "--flows",
        "flows",
        "--lookups",
        "lookups",
        "--connections",
        "connections.yaml",
        "--data",
        "state",
    ];
    let message_arg = "message=delivery/message.json".to_string();
    let file_arg = format!("file=delivery/{OUTCOME_FILE}");
    let mut args = vec![
        "run",
        EVENT_OUTCOME,
        "--input",
        &message_arg,
        "--input",
        &file_arg,
    ];
    args.extend(sources);
    let o = ferry_env(&d, &args, (PW_VAR, PW)).await;
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(ws.standin.outcome_acks().len(), 1, "the password was used");

    let runs = json_out(&ferry(&d, &["runs", "--data", "state", "--format", "json"]));
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["outcome"], "succeeded");

    // the delivery is gone; the resubmit uses the kept copy
    std::fs::remove_dir_all(&delivery).unwrap();
    std::fs::remove_file(ws.dir("ouai-os", OUTCOME_BUCKET).join(OUTCOME_FILE)).unwrap();
    let mut args = vec!["resubmit", id.as_str()];
    args.extend(sources);
    let o = ferry_env(&d, &args, (PW_VAR, PW)).await;
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(csv)
    );
    assert_eq!(ws.standin.outcome_acks().len(), 2);
    let runs = json_out(&ferry(&d, &["runs", "--data", "state", "--format", "json"]));
    let new_id = runs[0]["id"].as_str().unwrap().to_string();
    let show = stdout(&ferry(&d, &["runs", "show", &new_id, "--data", "state"]));
    assert!(
        show.contains(&format!("  trigger    resubmit of {id}\n")),
        "{show}"
    );
    assert!(
        show.contains("kept input:\n  file       file event_outcome.4011.20221213.csv, "),
        "{show}"
    );
    assert!(show.contains("request POST "), "{show}");
    let show = stdout(&ferry(&d, &["runs", "show", &id, "--data", "state"]));
    assert!(
        show.contains(&format!("  resubmitted as {new_id}\n")),
        "{show}"
    );

    // no byte of the secret anywhere in the store: database, WAL, kept inputs
    let mut files = Vec::new();
    files_under(&d.join("state"), &mut files);
    assert!(files.iter().any(|f| f.ends_with("ferry.db")), "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(PW.len()).any(|w| w == PW.as_bytes()),
            "{} holds the password",
            f.display()
        );
    }
}

/// The store's contract on any backend: record, list, get, keep and read inputs, purge in
/// batches, interrupted runs, migrations applied once.
async fn store_contract(store: &Store, scratch: &Path) {
    // flow names of their own, so the contract can run again on a database that has runs
    let id = ferry::run::new_run_id();
    let tag = &id[id.len() - 12..];
    let (old_flow, new_flow) = (format!("OLD_{tag}"), format!("NEW_{tag}"));
    let old = chrono::Duration::days(40);
    let mut an_old_run = String::new();
    for i in 0..1100 {
        let r = fake_report(&old_flow, old + chrono::Duration::seconds(i));
        store.record(&r, Trigger::Schedule).await.unwrap();
        an_old_run.clone_from(&r.run_id);
    }
    assert_eq!(store.key_count(&an_old_run).await.unwrap(), 1, "a.csv");
    let recent = fake_report(&new_flow, chrono::Duration::minutes(1));
    store.record(&recent, Trigger::Rest).await.unwrap();
    keep_one(store, scratch, &recent.run_id).await;
    let running = store
        .begin(&NewRun {
            flow: &new_flow,
            flow_name: "A flow",
            trigger: Trigger::Manual,
            input_summary: Some("file=a.csv (8 bytes)"),
            resubmit_of: Some(&recent.run_id),
            dry_run: false,
        })
        .await
        .unwrap();
    // a journal batch's confirmed steps are one statement: a step confirmed twice in it
    // keeps its last output (PostgreSQL refuses a statement that updates a row twice), and
    // a later batch replaces an earlier one's
    let confirmed = |steps: &[(&str, Value)]| ferry::run::JournalBatch {
        confirmed: steps
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let twice = confirmed(&[("put", json!(1)), ("mail", json!("a")), ("put", json!(2))]);
    store.write_batch(&running, &twice).await.unwrap();
    let later = confirmed(&[("mail", json!("b"))]);
    store.write_batch(&running, &later).await.unwrap();
    // a batch that fails (its run is not in the history: the foreign key refuses it) is
    // rolled back and reported; it leaves no transaction open on the connection it used,
    // so every later write on the pool goes through
    let stray = ferry::run::new_run_id();
    let refused = store
        .write_batch(&stray, &confirmed(&[("put", json!(9))]))
        .await;
    assert!(refused.is_err(), "a batch of an unknown run was written");
    for _ in 0..8 {
        store.write_batch(&running, &later).await.unwrap();
    }
    assert!(
        store
            .resume_point(&stray)
            .await
            .unwrap()
            .confirmed
            .is_empty(),
        "the refused batch left a row"
    );
    let resume = store.resume_point(&running).await.unwrap();
    assert_eq!(resume.confirmed.len(), 2);
    assert_eq!(resume.confirmed["put"], json!(2));
    assert_eq!(resume.confirmed["mail"], json!("b"));
    let listed = store
        .list(&RunFilter {
            flow: Some(new_flow.clone()),
            since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [running.as_str(), recent.run_id.as_str()]);
    assert_eq!(listed[0].outcome, Outcome::Running);
    assert_eq!(listed[1].trigger, Trigger::Rest);
    let d = store.get(&recent.run_id).await.unwrap().unwrap();
    assert_eq!(
        (d.summary.files, d.summary.bytes, d.summary.emails),
        (1, 3, 1)
    );
    assert_eq!(d.files, history::file_outcomes(&recent));
    assert_eq!(d.emails, history::email_outcomes(&recent));
    assert_eq!(d.resubmitted_as, std::slice::from_ref(&running));
    let kept = store.input(&recent.run_id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0].path).unwrap(), b"a,b\n1,2\n");
    assert_eq!(kept[0].sha256, sha256_hex(b"a,b\n1,2\n"));
    let mut failing = fake_report(&new_flow, chrono::Duration::seconds(30));
    failing.outcome = ferry::run::Outcome::Failed;
    failing.error = Some(ferry::run::RunError {
        step: "send".into(),
        kind: ferry::run::ErrorKind::Http,
        message: "HTTP 500".into(),
        items: json!({ "file": { "name": "f.csv", "size": 9 }, "record": { "number": 4 } })
            .as_object()
            .unwrap()
            .clone(),
    });
    store.record(&failing, Trigger::Schedule).await.unwrap();
    let f = store.get(&failing.run_id).await.unwrap().unwrap();
    let e = f.failure.unwrap();
    assert_eq!(
        (
            e.step.as_str(),
            e.kind.as_str(),
            e.file.as_deref(),
            e.record
        ),
        ("send", "http", Some("f.csv"), Some(4))
    );
    assert_eq!(f.summary.error.as_deref(), Some("send: HTTP 500"));

    // pauses: on record with who, when and why, until resumed; pausing twice keeps the first
    let paused_flow = format!("PAUSED_{tag}");
    let p = store
        .pause_flow(&paused_flow, "ops", Some("  DACS maintenance  "))
        .await
        .unwrap();
    assert_eq!(
        (p.paused_by.as_str(), p.reason.as_deref()),
        ("ops", Some("DACS maintenance"))
    );
    let again = store
        .pause_flow(&paused_flow, "someone else", None)
        .await
        .unwrap();
    assert_eq!(again, p);
    assert!(store.pauses().await.unwrap().contains(&p));
    assert_eq!(store.pause_of(&paused_flow).await.unwrap(), Some(p.clone()));
    assert_eq!(store.resume_flow(&paused_flow).await.unwrap(), Some(p));
    assert_eq!(store.pause_of(&paused_flow).await.unwrap(), None);
    assert_eq!(store.resume_flow(&paused_flow).await.unwrap(), None);

    // search: a file name by substring whatever its case, a tracked value exactly, combined
    // with the other filters, paged newest first
    let mut tracked = fake_report(&new_flow, chrono::Duration::seconds(20));
    tracked.tracked.insert("eventId".into(), format!("EV{tag}"));
    if let Some(Event::Put { name, .. }) = tracked.events.first_mut() {
        *name = format!("OUTCOME_{tag}_100%.csv");
    }
    store.record(&tracked, Trigger::Rest).await.unwrap();
    let search = |text: String, flow: Option<String>| {
        let filter = RunFilter {
            flow,
            search: Some(text),
            ..Default::default()
        };
        async move {
            store
                .list(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let only = vec![tracked.run_id.clone()];
    assert_eq!(search(format!("outcome_{tag}"), None).await, only);
    assert_eq!(search(format!("{tag}_100%"), None).await, only);
    assert_eq!(
        search(format!("EV{tag}"), Some(new_flow.clone())).await,
        only
    );
    assert!(
        search(format!("EV{tag}"), Some(old_flow.clone()))
            .await
            .is_empty()
    );
    // a tracked value is matched whole; `%` and `_` are no wildcards
    assert!(search(format!("V{tag}"), None).await.is_empty());
    assert!(search(format!("{tag}_1_0"), None).await.is_empty());
    assert_eq!(
        store.get(&tracked.run_id).await.unwrap().unwrap().tracked,
        vec![history::TrackedValue {
            name: "eventId".into(),
            value: format!("EV{tag}")
        }]
    );
    // `a.csv` was put by every run of the contract: a page of one, then the rest after it
    let first = store
        .list(&RunFilter {
            flow: Some(new_flow.clone()),
            search: Some("A.CSV".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let rest = store
        .list(&RunFilter {
            flow: Some(new_flow.clone()),
            search: Some("A.CSV".into()),
            before: Some(first[0].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = first.iter().chain(&rest).map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [failing.run_id.as_str(), recent.run_id.as_str()]);
    // a search matching more runs than it reads by id walks them newest first: the same
    // page as the plain listing of that flow
    let broad = |search: Option<String>| RunFilter {
        flow: Some(old_flow.clone()),
        search,
        limit: Some(3),
        ..Default::default()
    };
    let all_old = store.list(&broad(None)).await.unwrap();
    let found_old = store.list(&broad(Some("a.csv".into()))).await.unwrap();
    assert_eq!(found_old, all_old);
    assert_eq!(found_old.len(), 3);
    assert!(matches!(
        store
            .list(&RunFilter {
                search: Some(" ".into()),
                ..Default::default()
            })
            .await,
        Err(HistoryError::Invalid(_))
    ));

    let purged = store
        .purge(chrono::Utc::now() - chrono::Duration::days(30))
        .await
        .unwrap();
    assert!(purged >= 1100, "{purged}");
    let old_left = store
        .list(&RunFilter {
            flow: Some(old_flow),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(old_left.is_empty());
    assert_eq!(
        store.key_count(&an_old_run).await.unwrap(),
        0,
        "purged with its run"
    );
    assert_eq!(store.mark_interrupted_runs().await.unwrap(), 1);
    let new_left = store
        .list(&RunFilter {
            flow: Some(new_flow),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = new_left.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Interrupted,
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::Succeeded
        ]
    );
    assert_eq!(store.schema_version().await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    store_contract(&store, dir.path()).await;
}

/// The same contract on PostgreSQL (the SQL is written for both), on a throwaway cluster
/// (tests/support/postgres.rs; CI installs the server binaries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_postgres() {
    let pg = postgres::Postgres::start();
    let url = pg.database("history");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_postgres(&url, &dir.path().join("state"))
        .await
        .unwrap();
    // opening again applies nothing twice
    Store::open_postgres(&url, &dir.path().join("state"))
        .await
        .unwrap();
    store_contract(&store, dir.path()).await;
}

/// `n` bytes that do not repeat: the SHA-256 of 0, 1, 2, … one after the other.
fn distinct_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_le_bytes()).as_ref(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

async fn pg_count(pool: &sqlx::PgPool, sql: &str, run_id: &str) -> i64 {
    use sqlx::Row as _;
    sqlx::query(sql)
        .bind(run_id)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

/// Instances without a shared disk: on PostgreSQL a kept part's bytes are rows of 1 MiB
/// chunks, so a store on another data directory reads them back byte for byte (and makes
/// its copy again when it is missing or changed); a changed or missing chunk is the typed
/// "gone or changed" error, never wrong bytes; purge deletes the chunks with the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_kept_in_postgres_are_read_back_on_another_disk_and_purged_with_the_run() {
    let pg = postgres::Postgres::start();
    let url = pg.database("kept");
    let (disk_a, disk_b, disk_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = Store::open_postgres(&url, &disk_a.path().join("state"))
        .await
        .unwrap();
    assert!(a.keeps_inputs_in_db());
    let run = fake_report("KEPT", chrono::Duration::days(40));
    a.record(&run, Trigger::Rest).await.unwrap();
    let id = run.run_id.as_str();
    // 3.5 MiB and 7 bytes: four chunks, the last short
    let bytes = distinct_bytes(3 * 1024 * 1024 + 512 * 1024 + 7);
    let delivered = disk_a.path().join("delivered");
    std::fs::create_dir_all(&delivered).unwrap();
    std::fs::write(delivered.join("file.part"), &bytes).unwrap();
    std::fs::write(delivered.join("message.part"), br#"{"eventId": "4011"}"#).unwrap();
    a.keep_input(
        id,
        &[
            InputPart {
                name: "file".into(),
                kind: PartKind::File,
                path: delivered.join("file.part"),
                file_name: Some("big.csv".into()),
            },
            InputPart {
                name: "message".into(),
                kind: PartKind::Json,
                path: delivered.join("message.part"),
                file_name: None,
            },
        ],
    )
    .await
    .unwrap();
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    let chunks = "SELECT COUNT(*) FROM run_input_chunks WHERE run_id = $1 AND part = 'file'";
    assert_eq!(pg_count(&raw, chunks, id).await, 4);
    assert_eq!(
        pg_count(
            &raw,
            "SELECT MAX(length(bytes))::BIGINT FROM run_input_chunks WHERE run_id = $1",
            id
        )
        .await,
        1024 * 1024
    );
    assert_eq!(
        pg_count(
            &raw,
            "SELECT COUNT(*) FROM run_inputs WHERE run_id = $1 AND stored = 'db'",
            id
        )
        .await,
        2
    );
    // nothing of it under A's <data>/inputs: the delivery left A's disk with its copy
    assert!(!a.inputs_dir(id).unwrap().exists());
    std::fs::remove_dir_all(disk_a.path()).unwrap();

    // another instance, another disk: the same bytes, from the database
    let b = Store::open_postgres(&url, &disk_b.path().join("state"))
        .await
        .unwrap();
    let kept = b.input(id).await.unwrap();
    let (file, message) = (&kept[0], &kept[1]);
    assert_eq!(file.name, "file");
    assert_eq!(file.file_name.as_deref(), Some("big.csv"));
    assert_eq!(file.size, bytes.len() as i64);
    assert_eq!(file.sha256, sha256_hex(&bytes));
    assert_eq!(file.path, b.input_copies_dir(id).unwrap().join("file"));
    assert!(file.path.starts_with(disk_b.path()));
    assert_eq!(std::fs::read(&file.path).unwrap(), bytes);
    assert_eq!(message.value, Some(json!({ "eventId": "4011" })));
    assert_eq!(
        std::fs::read(&message.path).unwrap(),
        br#"{"eventId": "4011"}"#
    );
    // the detail names the same parts without reading them
    assert_eq!(b.get(id).await.unwrap().unwrap().inputs, kept);
    // B's copy removed or changed: made again from the database
    std::fs::remove_dir_all(b.input_copies_dir(id).unwrap()).unwrap();
    assert_eq!(
        std::fs::read(&b.input(id).await.unwrap()[0].path).unwrap(),
        bytes
    );
    let mut changed = bytes.clone();
    changed[5] ^= 0xff;
    std::fs::write(&file.path, &changed).unwrap();
    assert_eq!(
        std::fs::read(&b.input(id).await.unwrap()[0].path).unwrap(),
        bytes
    );

    // a byte changed in the database: refused on a disk without a good copy
    sqlx::query(
        "UPDATE run_input_chunks SET bytes = set_byte(bytes, 100, (get_byte(bytes, 100) + 1) % 256)
         WHERE run_id = $1 AND part = 'file' AND seq = 2",
    )
    .bind(id)
    .execute(&raw)
    .await
    .unwrap();
    let c = Store::open_postgres(&url, &disk_c.path().join("state"))
        .await
        .unwrap();
    let gone = |e: HistoryError| match e {
        HistoryError::InputGone { run, part, reason } => {
            assert_eq!((run.as_str(), part.as_str()), (id, "file"));
            reason
        }
        other => panic!("expected InputGone, got {other:?}"),
    };
    let reason = gone(c.input(id).await.unwrap_err());
    assert!(reason.contains("SHA-256"), "{reason}");
    // no half copy left behind
    let copies = c.input_copies_dir(id).unwrap();
    let left: Vec<_> = std::fs::read_dir(&copies)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(!left.iter().any(|n| n == "file"), "{left:?}");
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().ends_with(".partial")),
        "{left:?}"
    );
    // a chunk missing
    sqlx::query("DELETE FROM run_input_chunks WHERE run_id = $1 AND part = 'file' AND seq = 3")
        .bind(id)
        .execute(&raw)
        .await
        .unwrap();
    let reason = gone(c.input(id).await.unwrap_err());
    assert!(reason.contains("chunk 3"), "{reason}");

    // purge: the chunks go with the run, and this disk's copies with them
    assert!(b.input_copies_dir(id).unwrap().is_dir());
    let purged = b
        .purge(chrono::Utc::now() - chrono::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        pg_count(
            &raw,
            "SELECT COUNT(*) FROM run_input_chunks WHERE run_id = $1",
            id
        )
        .await,
        0
    );
    assert_eq!(
        pg_count(
            &raw,
            "SELECT COUNT(*) FROM run_inputs WHERE run_id = $1",
            id
        )
        .await,
        0
    );
    assert!(!b.input_copies_dir(id).unwrap().exists());
    // C's folder for the run (made by its refused reads) goes at its next purge: the run
    // is no longer in the history
    assert_eq!(
        c.purge(chrono::Utc::now() - chrono::Duration::days(30))
            .await
            .unwrap(),
        0
    );
    assert!(!c.input_copies_dir(id).unwrap().exists());
    raw.close().await;
}

/// A PostgreSQL history written before schema version 5 kept inputs as files under the
/// data directory: migrated, its rows read as before and a resubmit reads the bytes from the
/// file where it is; an instance without that file gets the typed error; new inputs go to
/// the database beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_history_from_version_4_keeps_its_inputs_as_files() {
    let pg = postgres::Postgres::start();
    let url = pg.database("v4");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::open_postgres(&url, &state).await.unwrap();
    let old = fake_report("OLD", chrono::Duration::minutes(5));
    store.record(&old, Trigger::Rest).await.unwrap();
    store.close().await;
    // back to version 4, with a part kept as that ferry kept it: a file and a row
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    for sql in [
        "ALTER TABLE run_inputs DROP COLUMN stored",
        "DROP TABLE run_input_chunks",
        "ALTER TABLE runs DROP COLUMN input_pending",
        "DELETE FROM schema_migrations WHERE version >= 5",
    ] {
        sqlx::query(sql).execute(&raw).await.unwrap();
    }
    let csv = b"id,outcome\n4011,OK\n".to_vec();
    let file = state.join("inputs").join(&old.run_id).join("file");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &csv).unwrap();
    sqlx::query(
        "INSERT INTO run_inputs (run_id, part, kind, file_name, size, sha256, json_value)
         VALUES ($1, 'file', 'file', 'outcome.csv', $2, $3, NULL)",
    )
    .bind(&old.run_id)
    .bind(csv.len() as i64)
    .bind(sha256_hex(&csv))
    .execute(&raw)
    .await
    .unwrap();

    let store = Store::open_postgres(&url, &state).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 7);
    let kept = store.input(&old.run_id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].path, file);
    assert_eq!(kept[0].file_name.as_deref(), Some("outcome.csv"));
    assert_eq!(std::fs::read(&kept[0].path).unwrap(), csv);
    // an instance on another disk: the old file is not there
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Store::open_postgres(&url, &elsewhere.path().join("state"))
        .await
        .unwrap();
    match other.input(&old.run_id).await {
        Err(HistoryError::InputGone { part, .. }) => assert_eq!(part, "file"),
        other => panic!("expected InputGone, got {other:?}"),
    }
    // a new run's input goes to the database
    let new = fake_report("NEW", chrono::Duration::minutes(1));
    store.record(&new, Trigger::Rest).await.unwrap();
    keep_one(&store, dir.path(), &new.run_id).await;
    assert_eq!(
        pg_count(
            &raw,
            "SELECT COUNT(*) FROM run_inputs WHERE run_id = $1 AND stored = 'db'",
            &new.run_id
        )
        .await,
        1
    );
    assert_eq!(
        std::fs::read(&other.input(&new.run_id).await.unwrap()[0].path).unwrap(),
        b"a,b\n1,2\n"
    );
    raw.close().await;
}

/// The shipped flows under `dir`, with the stand-ins on a closed port (as in tests/cli.rs).
fn project(dir: &Path) {
    project::shipped_project(dir, "http://127.0.0.1:9");
}

/// A history written by the release before events were rows (schema version 2, made with
/// that release's `ferry run`: two record runs of the enrollment ack flow, 7 records sent
/// then 7 tolerated; a file run; an event outcome delivery with its kept input) opens,
/// migrates, and reads as it did; new runs are recorded beside the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_written_by_the_previous_release_migrates_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    support::copy_tree(&support::repo().join("tests/fixtures/history-v2"), &state);
    {
        let pool = raw(dir.path()).await;
        let before = count(&pool, "SELECT MAX(version) FROM schema_migrations").await;
        assert_eq!(before, 2, "the fixture is a version-2 history");
        pool.close().await;
    }
    let store = Store::open_sqlite(&state).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 7);
    let runs = store.list(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 4);
    let by = |flow: &str, ok: i64| {
        runs.iter()
            .find(|r| r.flow == flow && r.records_ok == ok)
            .unwrap_or_else(|| panic!("no run of {flow} with {ok} ok: {runs:#?}"))
            .clone()
    };
    // the tolerated run: its 7 requests are rows of the old table, its events the old list
    let tolerated = by(ENROLL_ACK, 0);
    assert_eq!(tolerated.records_tolerated, ACK_RECORDS as i64);
    let t = store.get(&tolerated.id).await.unwrap().unwrap();
    assert_eq!(t.records.len(), ACK_RECORDS);
    assert!(
        t.records
            .iter()
            .all(|r| r.outcome == RecordStatus::Tolerated && r.status == Some(400))
    );
    assert!(t.events.len() > ACK_RECORDS, "{:#?}", t.events);
    assert!(t.loops.is_empty());
    // its events page through as new runs' do
    let page = store
        .events_page(&tolerated.id, history::EventFilter::Tolerated, 0, 5)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 5);
    let rest = store
        .events_page(
            &tolerated.id,
            history::EventFilter::Tolerated,
            page.next.unwrap(),
            5,
        )
        .await
        .unwrap();
    assert_eq!(rest.events.len(), 2);
    assert_eq!(rest.next, None);
    // the sent run
    let sent = by(ENROLL_ACK, ACK_RECORDS as i64);
    let s = store.get(&sent.id).await.unwrap().unwrap();
    assert_eq!(s.records.len(), ACK_RECORDS);
    assert_eq!(s.emails.len(), 1);
    // the delivery's kept input is still there, byte for byte
    let delivery = runs
        .iter()
        .find(|r| r.flow == "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR")
        .unwrap();
    let kept = store.input(&delivery.id).await.unwrap();
    assert_eq!(kept.len(), 2);
    let file = kept.iter().find(|p| p.name == "file").unwrap();
    assert_eq!(
        std::fs::read(&file.path).unwrap(),
        std::fs::read(demo_input(OUTCOME_FILE)).unwrap()
    );
    // and the migrated history takes new runs
    let r = fake_report("F", chrono::Duration::minutes(1));
    store.record(&r, Trigger::Manual).await.unwrap();
    let n = store.get(&r.run_id).await.unwrap().unwrap();
    assert_eq!(n.events.len(), 2);
    assert_eq!(store.list(&RunFilter::default()).await.unwrap().len(), 5);
}

/// An HTTP peer that holds the first request unanswered (a DACS that hangs) and answers
/// every later one `200 {}`; it counts the requests it received.
struct HangsOnce {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HangsOnce {
    fn start() -> HangsOnce {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                // one request per connection: read the head and the body it announces
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while req.len() < head_end + length {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    held.push(conn);
                    continue;
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        HangsOnce { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A `ferry run` killed with SIGKILL in the middle of its run (flow 3 waiting for DACS to
/// answer its first record) is shown `interrupted` by the next `ferry runs` at once — its
/// process is gone — and `ferry resubmit` accepts it and sends the file's records.
#[test]
fn a_killed_ferry_run_is_shown_interrupted_at_once_and_resubmitted() {
    let dacs = HangsOnce::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project::shipped_project(d, &dacs.url());
    let acks = d.join("data/ouai-os").join(ACK_BUCKET);
    std::fs::create_dir_all(&acks).unwrap();
    std::fs::write(acks.join(ACK_FILE), ack_bytes()).unwrap();

    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", ENROLL_ACK])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dacs.requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached DACS"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // alive: running
    let o = ferry(d, &["runs", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs = json_out(&o);
    assert_eq!(runs[0]["outcome"], "running", "{runs:#}");
    let id = runs[0]["id"].as_str().unwrap().to_string();

    run.kill().unwrap();
    run.wait().unwrap();
    let o = ferry(d, &["runs"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    let line = table
        .lines()
        .find(|l| l.contains(&id[..8]))
        .unwrap_or_else(|| panic!("run {id} not listed:\n{table}"));
    assert!(line.contains("interrupted"), "{table}");
    let o = ferry(d, &["runs", "show", &id, "--format", "json"]);
    let shown = json_out(&o);
    assert_eq!(shown["outcome"], "interrupted", "{shown:#}");
    let error = shown["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the ferry instance running it stopped") && error.contains("is gone"),
        "{error}"
    );
    assert!(shown["finished_at"].is_string(), "{shown:#}");

    let o = ferry(d, &["resubmit", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!("resubmit of run {id}")));
    // the first run's requests (8 in flight at once: every record, one of them hung), then
    // the records after the last one the killed run confirmed, once each
    let requests = dacs.requests();
    assert!(
        (ACK_RECORDS + 1..=2 * ACK_RECORDS).contains(&requests),
        "{requests} requests"
    );
    let o = ferry(d, &["runs", "--format", "json"]);
    let runs = json_out(&o);
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs:#}");
    assert_eq!(runs[0]["resubmit_of"], id.as_str(), "{runs:#}");
    assert_eq!(runs[0]["trigger"], "resubmit");
    assert_eq!(runs[0]["outcome"], "succeeded", "{runs:#}");
    assert_eq!(runs[0]["records_ok"], ACK_RECORDS, "{runs:#}");
}
