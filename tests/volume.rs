//! Real volumes: the executor's cost per item does not grow with the items, record loops
//! run concurrently and stop at the lowest failure, a killed run is resumed from its
//! checkpoint, confirmed side effects are not redone, and a kill leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::history::{self, Outcome, RunFilter, RunRequest, Store, Trigger};
use ferry::run::Engine;
use support::{Workspace, demo_input};

const ENROLL_ACK: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const EVENT_OUTCOME: &str = "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR";
const ACK: (&str, &str) = ("ouai-os", "ouainamespace/OUAIEnrollAckFolder");
const ACK_FILE: &str = "feedback.dacs.program_subscription.20230210.csv";
const ACK_HEADER: &str = "SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime";

/// A feedback file of `n` records with sync request ids `SR-<number>`.
fn feedback(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 100);
    s.push_str(ACK_HEADER);
    s.push('\n');
    for i in 1..=n {
        s.push_str(&format!(
            "SR-{i},1234512345,EN-{i},1122334455,DEV-{i},ACCEPTED,Subscription created,2023-02-10T02:15:00Z\n"
        ));
    }
    s.into_bytes()
}

async fn store_of(ws: &Workspace) -> Store {
    Store::open_sqlite(&ws.path().join("state")).await.unwrap()
}

/// The records loop of flow 3 runs 8 at once (as shipped): the same outcome as one at a
/// time, every record sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_record_loop_sends_every_record_once() {
    let ws = Workspace::new().await;
    ws.put_file(ACK.0, ACK.1, ACK_FILE, feedback(500));
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(
        report.outcome,
        ferry::run::Outcome::Succeeded,
        "{report:#?}"
    );
    assert_eq!(report.requests_ok(), 500);
    let mut ids: Vec<String> = ws
        .standin
        .sync_requests()
        .iter()
        .map(|r| r["syncRequestId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500);
    assert_eq!(ws.list_files(ACK.0, ACK.1), [format!("Sent-{ACK_FILE}")]);
    // the report keeps a bounded number of a record loop's successes, and counts them all
    assert!(report.events.len() < 150, "{}", report.events.len());
    assert_eq!(report.counters.requests_ok, 500);
}

/// With records in flight, the first failure stops new records; the file is marked at the
/// lowest failed record, whatever order the answers came in, and the next run resumes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_a_concurrent_loop_marks_the_lowest_failed_record_and_resumes_there() {
    let ws = Workspace::new().await;
    ws.put_file(ACK.0, ACK.1, ACK_FILE, feedback(300));
    // two records fail with 500: the loop stops at the lower one
    ws.standin.fail_sync_request_ids(["SR-123", "SR-125"], 500);
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, ferry::run::Outcome::Partial, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(error.items["record"]["number"], 123);
    let marked = "feedback.dacs.program_subscription.20230210_ErrInRcd_123.csv";
    assert_eq!(ws.list_files(ACK.0, ACK.1), [marked]);
    // records started before the failure came back finished; none started after it
    let sent = ws.standin.sync_requests().len();
    assert!((122..300).contains(&sent), "{sent} records accepted");
    // the error email names record 123
    let emails = ws.emails();
    assert!(
        emails.iter().any(|e| e.body.contains("HTTP 500")),
        "{emails:#?}"
    );

    // DACS is fixed; the next run starts at record 123: records after it that were already
    // accepted are sent again and DACS answers 400 for them, which the flow tolerates
    ws.standin.clear_failing_sync_ids();
    let again = ws.run(ENROLL_ACK).await;
    assert_eq!(again.outcome, ferry::run::Outcome::Succeeded, "{again:#?}");
    assert_eq!(ws.list_files(ACK.0, ACK.1), [format!("Sent-{marked}")]);
    let resent = (again.counters.requests_ok + again.counters.tolerated) as usize;
    assert_eq!(resent, 300 - 122);
    assert_eq!(again.counters.tolerated as usize, sent - 122);
    let mut ids: Vec<String> = ws
        .standin
        .sync_requests()
        .iter()
        .map(|r| r["syncRequestId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);
}

/// Runs `ferry run FLOW` in the background on the workspace, with the history and spool
/// under `state/`.
fn spawn_run(ws: &Workspace, flow: &str, inputs: &[(&str, &Path)]) -> std::process::Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.arg("run")
        .arg(flow)
        .args(ws.project_args())
        .args(["--format", "json"]);
    for (name, path) in inputs {
        c.arg("--input").arg(format!("{name}={}", path.display()));
    }
    c.current_dir(ws.path())
        .env("TMPDIR", ws.spool_dir())
        .env_remove("FERRY_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c.spawn().unwrap()
}

fn ferry(ws: &Workspace, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--data")
        .arg(ws.path().join("state"))
        .current_dir(ws.path())
        .env_remove("FERRY_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The one run of `flow` in the history.
async fn only_run(store: &Store, flow: &str) -> history::RunSummary {
    let runs = store
        .list(&RunFilter {
            flow: Some(flow.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    runs[0].clone()
}

/// The spool folders under `state/spool`.
fn spool_folders(ws: &Workspace) -> Vec<String> {
    match std::fs::read_dir(ws.path().join("state").join(history::SPOOL_DIR)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A `ferry run` killed in the middle of a file records its progress as it goes; once it
/// is marked interrupted, `ferry resubmit` starts after the last record it confirmed (a few
/// records are sent twice, not the whole file), and the kill's spool folder is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_record_run_is_resumed_from_its_checkpoint() {
    const N: usize = 30_000;
    let ws = Workspace::new().await;
    ws.put_file(ACK.0, ACK.1, ACK_FILE, feedback(N));
    let mut child = spawn_run(&ws, ENROLL_ACK, &[]);
    // wait until the history shows a checkpoint past record 2,000, then kill
    let db = ws.path().join("state");
    let deadline = Instant::now() + Duration::from_secs(60);
    let through = loop {
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(store) = Store::open_sqlite_existing(&db).await else {
            continue;
        };
        let runs = store.list(&RunFilter::default()).await.unwrap();
        if let Some(r) = runs.first()
            && let Some(d) = store.get(&r.id).await.unwrap()
            && let Some(l) = d.loops.first()
            && l.through > 2_000
        {
            store.close().await;
            break l.through;
        }
        store.close().await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let accepted_at_kill = ws.standin.sync_requests().len();
    assert!(accepted_at_kill < N, "the run finished before the kill");
    assert_eq!(
        spool_folders(&ws).len(),
        1,
        "the killed run's spool is there"
    );

    // the process is gone: a ferry that opens the history marks its runs interrupted at
    // once, with the progress they recorded
    let store = store_of(&ws).await;
    let killed = only_run(&store, ENROLL_ACK).await;
    assert_eq!(killed.outcome, Outcome::Interrupted);
    assert!(killed.records_ok >= through, "{killed:#?}");
    // the last checkpoint before the kill: the run may have passed more after the one seen
    let through = store.get(&killed.id).await.unwrap().unwrap().loops[0].through;
    store.close().await;

    let out = ferry(
        &ws,
        &[
            "resubmit",
            &killed.id,
            "--flows",
            ws.flows_dir().to_str().unwrap(),
            "--lookups",
            ws.lookups_dir().to_str().unwrap(),
            "--connections",
            ws.connections_path().to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.list_files(ACK.0, ACK.1), [format!("Sent-{ACK_FILE}")]);
    // every record accepted once; the resubmit resent only what the kill left unconfirmed
    let requests = ws.standin.sync_requests().len();
    assert_eq!(requests, N);
    let store = store_of(&ws).await;
    let runs = store.list(&RunFilter::default()).await.unwrap();
    let resumed = runs
        .iter()
        .find(|r| r.trigger == Trigger::Resubmit)
        .unwrap();
    assert_eq!(resumed.outcome, Outcome::Succeeded);
    let duplicates = resumed.records_tolerated;
    assert!(
        duplicates <= (accepted_at_kill as i64 - through) + 8,
        "{duplicates} duplicates; {accepted_at_kill} accepted at the kill, {through} confirmed"
    );
    assert_eq!(
        resumed.records_ok + resumed.records_tolerated,
        N as i64 - through
    );
    // the kill's spool folder was swept by the resubmit, whose own is gone too
    assert_eq!(spool_folders(&ws), Vec::<String>::new());
}

/// Stops the run (as a shutdown does) once a step of `flow` finished.
#[derive(Debug)]
struct StopAfter {
    flow: &'static str,
    cancel: tokio_util::sync::CancellationToken,
}

impl ferry::run::StepObserver for StopAfter {
    fn step_finished(&self, flow: &str, kind: &str, _: Duration, ok: bool) {
        if flow == self.flow && kind == "invoke" && ok {
            self.cancel.cancel();
        }
    }
}

/// An event outcome delivery interrupted right after its put is resumed without putting
/// the file again: the confirmed put is skipped, DERMS gets one ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_delivery_does_not_put_again() {
    let ws = Workspace::new().await;
    let store = store_of(&ws).await;
    let project = ws.load();
    let cancel = tokio_util::sync::CancellationToken::new();
    let interrupting = Engine::new(
        project.clone(),
        ferry::run::RunOptions {
            spool_dir: Some(store.spool_dir()),
            cancel: Some(cancel.clone()),
            observer: Some(std::sync::Arc::new(StopAfter {
                flow: "OUTL-BA-OUAI_COMMON_OS_TRNFR",
                cancel,
            })),
            ..Default::default()
        },
    );
    let request = RunRequest {
        parts: vec![
            (
                "message".into(),
                demo_input("event_outcome_message.json"),
                None,
            ),
            (
                "file".into(),
                demo_input("event_outcome.4011.20221213.csv"),
                None,
            ),
        ],
        ..RunRequest::new(EVENT_OUTCOME, Trigger::Rest)
    };
    let first = history::run_recorded(&interrupting, Some(&store), request)
        .await
        .unwrap();
    assert_eq!(first.report.counters.files_put, 1, "{:#?}", first.report);
    assert!(ws.standin.outcome_acks().is_empty());
    let d = store.get(&first.report.run_id).await.unwrap().unwrap();
    assert_eq!(d.summary.outcome, Outcome::Interrupted);
    let target = ws
        .dir("ouai-os", "ouainamespace/OUAIOutcomeFolder")
        .join("event_outcome.4011.20221213.csv");
    std::fs::remove_file(&target).unwrap();

    // the resubmit skips the confirmed transfer (the file removed above stays removed) and
    // acks once
    let engine = Engine::new(
        project,
        ferry::run::RunOptions {
            spool_dir: Some(store.spool_dir()),
            ..Default::default()
        },
    );
    let again = history::resubmit(&engine, &store, &first.report.run_id)
        .await
        .unwrap();
    assert_eq!(
        again.report.outcome,
        ferry::run::Outcome::Succeeded,
        "{:#?}",
        again.report
    );
    assert_eq!(again.report.counters.files_put, 0, "the put was done again");
    assert!(!target.exists());
    let acks = ws.standin.outcome_acks();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["ackType"], "SUCCESS");

    // a resubmit of a run that was not interrupted does everything again
    let third = history::resubmit(&engine, &store, &again.report.run_id)
        .await
        .unwrap();
    assert_eq!(third.report.counters.files_put, 1);
    assert!(target.exists());
}
