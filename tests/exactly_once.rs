//! Exactly once at the edges (issue 21): what the run history and `ferry serve` promise
//! where a run meets the outside — many writers on one SQLite history, a client that goes
//! away while its delivery is recorded, a delivery killed before its input was stored, and
//! resubmits of resubmits that were killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ferry::history::{NewRun, Outcome, RunFilter, Store, Trigger};
use ferry::run::{Checkpoint, Counters, Event, JournalBatch, RunReport};
use ferry::serve::ServeOptions;
use serde_json::{Value, json};
use serving::{EVENT_OUTCOME, OP, OUTCOME_FILE, TRIGGER_PATH, start};
use support::{Workspace, demo_input};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

// ---------------------------------------------------------------------------------------
// 2. A client that goes away while its delivery is recorded

/// Options of a server over `ws` that knows the operator alone.
fn options(ws: &Workspace) -> ServeOptions {
    serving::options(ws, serving::operator())
}

/// A delivery of the event-outcome flow as raw HTTP/1.1 bytes: the head, then the body.
fn raw_delivery(n: usize) -> (Vec<u8>, Vec<u8>) {
    let boundary = "ferry-test-boundary";
    let message = std::fs::read(demo_input("event_outcome_message.json")).unwrap();
    let file = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&message);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{n}-{OUTCOME_FILE}\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", OP.0, OP.1),
    );
    let head = format!(
        "POST {TRIGGER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    (head.into_bytes(), body)
}

/// How a client of [`clients_that_go_away`] ended.
#[derive(Debug)]
enum Client {
    /// It went away before it had an answer.
    Gone,
    /// It read the answer: status and run id (a `202`).
    Answered(u16, Option<String>),
}

/// Sends delivery `n` and goes away at a point chosen by `n`: after part of the body,
/// right after the whole body, a few milliseconds later (while the server records it), or
/// not at all (it reads the answer).
async fn deliver_and_maybe_leave(addr: SocketAddr, n: usize) -> Client {
    let (head, body) = raw_delivery(n);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&head).await.unwrap();
    // a small deterministic spread of points (n drives it, so a failure is repeatable)
    let point = (n * 7919) % 40;
    if point < 4 {
        let _ = conn.write_all(&body[..body.len() / 2]).await;
        return Client::Gone;
    }
    if conn.write_all(&body).await.is_err() {
        return Client::Gone;
    }
    if point < 36 {
        // 0..=31 ms after the body: around the time the server records the delivery
        tokio::time::sleep(Duration::from_millis((point - 4) as u64)).await;
        return Client::Gone;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => {
                answer.extend_from_slice(&buf[..k]);
                let text = String::from_utf8_lossy(&answer);
                if let Some(i) = text.find("\r\n\r\n")
                    && text[i + 4..].trim_end().ends_with('}')
                {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let run_id = text.find("\r\n\r\n").and_then(|i| {
        serde_json::from_str::<Value>(&text[i + 4..])
            .ok()
            .and_then(|v| v["run_id"].as_str().map(str::to_string))
    });
    Client::Answered(status, run_id)
}

/// 200 deliveries from clients that go away at all points of the exchange: every run the
/// history recorded finishes (none is left `running` with nothing running it), every `202`
/// has its run finished, and the history, `/api/v1/status` and `ferry_runs_running` agree
/// that nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_whose_client_goes_away_is_recorded_and_run_or_not_at_all() {
    let ws = Workspace::new().await;
    let s = start(options(&ws)).await;
    const DELIVERIES: usize = 200;
    const AT_ONCE: usize = 8;
    let mut clients = Vec::new();
    let mut next = 0;
    while next < DELIVERIES {
        let batch: Vec<_> = (next..(next + AT_ONCE).min(DELIVERIES))
            .map(|n| tokio::spawn(deliver_and_maybe_leave(s.addr, n)))
            .collect();
        next += batch.len();
        for c in batch {
            clients.push(c.await.unwrap());
        }
    }
    let accepted: Vec<String> = clients
        .iter()
        .filter_map(|c| match c {
            Client::Answered(202, Some(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let answered = clients
        .iter()
        .filter(|c| matches!(c, Client::Answered(..)))
        .count();
    assert_eq!(accepted.len(), answered, "{clients:?}");
    assert!(!accepted.is_empty());

    // every run recorded ends, soon
    let store = Store::open_sqlite(&ws.path().join("state")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = store
            .list(&RunFilter {
                flow: Some(EVENT_OUTCOME.into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let running: Vec<&str> = runs
            .iter()
            .filter(|r| r.outcome == Outcome::Running)
            .map(|r| r.id.as_str())
            .collect();
        if running.is_empty() {
            break runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs left running: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for r in &runs {
        assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");
    }
    for id in &accepted {
        assert!(runs.iter().any(|r| &r.id == id), "202 for {id}, no run");
    }
    // and the server says the same
    let (status, body) = s.get("/api/v1/status", Some(OP)).await;
    assert_eq!(status, 200);
    assert_eq!(body["active_runs"], json!([]));
    let (_, metrics) = s.get("/metrics", Some(OP)).await;
    let text = metrics.as_str().unwrap();
    assert!(text.lines().any(|l| l == "ferry_runs_running 0"), "{text}");
    eprintln!(
        "{} deliveries: {} answered 202, {} runs recorded",
        DELIVERIES,
        accepted.len(),
        runs.len()
    );
    store.close().await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Abandoned, not interrupted

/// A file part to keep.
fn part(dir: &std::path::Path, name: &str) -> ferry::history::InputPart {
    let path = dir.join(name);
    std::fs::write(&path, b"event,kw\n4011,42\n").unwrap();
    ferry::history::InputPart {
        name: "file".into(),
        kind: ferry::model::PartKind::File,
        path,
        file_name: Some(name.into()),
    }
}

/// A delivery recorded, then stopped before its parts were kept, is `abandoned` (with the
/// reason) and refused for resubmit; one stopped after its parts were kept, and a run
/// without parts, are `interrupted` and resubmittable, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_before_its_input_was_kept_is_abandoned_not_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("state")).await.unwrap();
    let lost = store.begin_awaiting_input(&new_run("F")).await.unwrap();
    let kept = store.begin_awaiting_input(&new_run("F")).await.unwrap();
    store
        .keep_input(&kept, &[part(dir.path(), "kept.csv")])
        .await
        .unwrap();
    let plain = store.begin(&new_run("F")).await.unwrap();
    // ferry was killed; it starts again
    assert_eq!(store.mark_ownerless_runs().await.unwrap(), 3);

    let d = store.get(&lost).await.unwrap().unwrap();
    assert_eq!(d.summary.outcome, Outcome::Abandoned);
    let why = d.summary.error.unwrap();
    assert!(
        why.starts_with("ferry stopped before the run's trigger input was kept"),
        "{why}"
    );
    assert!(why.ends_with("; ferry stopped while the run ran"), "{why}");
    for id in [&kept, &plain] {
        let d = store.get(id).await.unwrap().unwrap();
        assert_eq!(d.summary.outcome, Outcome::Interrupted);
        assert_eq!(
            d.summary.error.as_deref(),
            Some("ferry stopped while the run ran")
        );
    }
    match ferry::history::resubmit_request(&store, &lost).await {
        Err(ferry::history::ResubmitError::Abandoned { run, .. }) => assert_eq!(run, lost),
        other => panic!("resubmit of an abandoned run: {other:?}"),
    }
    let again = ferry::history::resubmit_request(&store, &kept)
        .await
        .unwrap();
    assert_eq!(again.parts.len(), 1);
    // an abandoned run counts nowhere as interrupted (lost) work
    let interrupted = store
        .list(&RunFilter {
            outcome: Some(Outcome::Interrupted),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<&str> = interrupted.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![kept.as_str(), plain.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // a shutdown that gives up on a run waiting for its input records it abandoned too
    let waiting = store.begin_awaiting_input(&new_run("F")).await.unwrap();
    assert!(store.mark_interrupted(&waiting, "shutdown").await.unwrap());
    let d = store.get(&waiting).await.unwrap().unwrap();
    assert_eq!(d.summary.outcome, Outcome::Abandoned);
    store.close().await;
}

/// An abandoned run: the API answers its resubmit `410 abandoned`, the page offers no
/// resubmit and says why, and `ferry resubmit` refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_run_is_offered_for_resubmit_nowhere() {
    let ws = Workspace::new().await;
    let s = start(options(&ws)).await;
    let store = Store::open_sqlite(&ws.path().join("state")).await.unwrap();
    let mut run = new_run(EVENT_OUTCOME);
    run.trigger = Trigger::Rest;
    let lost = store.begin_awaiting_input(&run).await.unwrap();
    assert!(store.mark_interrupted(&lost, "killed").await.unwrap());

    let r = s
        .http
        .post(s.url(&format!("/api/v1/runs/{lost}/resubmit")))
        .basic_auth(OP.0, Some(OP.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 410);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "abandoned", "{body}");

    let (status, page) = s.get(&format!("/ui/runs/{lost}"), Some(OP)).await;
    assert_eq!(status, 200);
    let html = page.as_str().unwrap();
    assert!(html.contains("data-testid=\"not-resubmittable\""), "{html}");
    assert!(!html.contains("data-testid=\"resubmit\""), "{html}");
    s.stop().await;

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["resubmit", &lost, "--flows"])
        .arg(ws.flows_dir())
        .arg("--lookups")
        .arg(ws.lookups_dir())
        .arg("--connections")
        .arg(ws.connections_path())
        .arg("--data")
        .arg(ws.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("was abandoned and cannot be resubmitted"),
        "{err}"
    );
    assert_eq!(
        store.list(&RunFilter::default()).await.unwrap().len(),
        1,
        "the refused resubmit recorded a run"
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// 5. Resume from the chain

/// Begins a run of `F` resubmitting `of`, writes `batch` to its journal, and records it
/// `interrupted` (killed).
async fn killed_link(store: &Store, of: Option<&str>, batch: Option<JournalBatch>) -> String {
    let mut run = new_run("F");
    run.resubmit_of = of;
    run.trigger = if of.is_some() {
        Trigger::Resubmit
    } else {
        Trigger::Manual
    };
    let id = store.begin(&run).await.unwrap();
    if let Some(b) = batch {
        store.write_batch(&id, &b).await.unwrap();
    }
    assert!(store.mark_interrupted(&id, "killed").await.unwrap());
    id
}

/// A batch confirming side effect `step` and record loop `L` over `first..=through`.
fn progress(step: &str, first: u64, through: u64) -> JournalBatch {
    JournalBatch {
        confirmed: vec![(step.to_string(), json!({ "by": step }))],
        checkpoints: vec![Checkpoint {
            key: "L".into(),
            label: "acks.csv".into(),
            first,
            through,
            done: through + 1 - first,
        }],
        ..JournalBatch::default()
    }
}

/// Run A is killed at record 13,264; its resubmit B is killed before a checkpoint of its
/// own; so is B's resubmit C. The resubmit of C resumes after record 13,264 with A's
/// confirmed side effects, not at record 1 (it read only C's progress: nothing). A link
/// that confirmed more moves the point on; a `failed` link ends the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmit_resumes_from_everything_its_killed_ancestors_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("state")).await.unwrap();
    let a = killed_link(&store, None, Some(progress("put", 1, 13_264))).await;
    let b = killed_link(&store, Some(&a), None).await;
    let c = killed_link(&store, Some(&b), None).await;

    // what a resubmit read before: the direct parent's progress alone
    let parent_only = store.resume_point(&c).await.unwrap();
    assert_eq!(parent_only.through.get("L"), None);
    // now: the chain's
    let r = store.resume_chain(&c).await.unwrap();
    assert_eq!(r.through.get("L"), Some(&13_264));
    assert_eq!(r.confirmed.get("put"), Some(&json!({ "by": "put" })));

    // the next link confirms more (it started after 13,264) and is killed again
    let d = killed_link(&store, Some(&c), Some(progress("ack", 13_265, 13_300))).await;
    let r = store.resume_chain(&d).await.unwrap();
    assert_eq!(r.through.get("L"), Some(&13_300));
    assert_eq!(r.confirmed.len(), 2);

    // a failed link did everything again: what came before it is not resumed from
    let mut run = new_run("F");
    run.resubmit_of = Some(&d);
    let e = store.begin(&run).await.unwrap();
    store.abandon(&e, "failed to start").await.unwrap();
    let f = killed_link(&store, Some(&e), None).await;
    let r = store.resume_chain(&f).await.unwrap();
    assert!(r.through.is_empty() && r.confirmed.is_empty(), "{r:?}");
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// 6. Durable before the next step

/// `ferry` on the workspace's flows, lookups, connections and history.
fn ferry_cmd(ws: &Workspace, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .args(ws.project_args())
        .current_dir(ws.path())
        .env("TMPDIR", ws.spool_dir())
        .env_remove("FERRY_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

/// The event-outcome flow puts the delivered file (a child flow call), then acknowledges
/// it to DERMS. With every history write slowed to 1.5 s, `ferry run` is killed the moment
/// DERMS has the acknowledgment: the put was in the history before the acknowledgment
/// started, so the resubmit puts nothing; only the acknowledgment under way at the kill is
/// sent again (before, the put's record was still gathering: the resubmit put again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_effect_is_in_the_history_before_the_next_step_starts() {
    let ws = Workspace::new().await;
    let message = demo_input("event_outcome_message.json");
    let file = demo_input(OUTCOME_FILE);
    let mut run = ferry_cmd(
        &ws,
        &[
            "run",
            EVENT_OUTCOME,
            "--input",
            &format!("message={}", message.display()),
            "--input",
            &format!("file={}", file.display()),
        ],
    );
    run.env(ferry::history::TEST_JOURNAL_DELAY_ENV, "1500");
    let mut child = run.spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ws.standin.outcome_acks().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no acknowledgment");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert_eq!(ws.standin.outcome_acks().len(), 1);

    // opening the history finds the killed run interrupted
    let store = Store::open_sqlite(&ws.path().join("state")).await.unwrap();
    let runs = store.list(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, Outcome::Interrupted, "{runs:?}");
    let killed = runs[0].id.clone();
    store.close().await;

    let out = ferry_cmd(&ws, &["resubmit", &killed, "--format", "json"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open_sqlite(&ws.path().join("state")).await.unwrap();
    let again = store
        .list(&RunFilter {
            flow: Some(EVENT_OUTCOME.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.resubmit_of.as_deref() == Some(killed.as_str()))
        .expect("the resubmit is recorded");
    assert_eq!(again.outcome, Outcome::Succeeded, "{again:?}");
    // the put was confirmed before the kill: not done again
    assert_eq!(again.files, 0, "{again:?}");
    // the acknowledgment under way at the kill is sent once more, and only it
    assert_eq!(ws.standin.outcome_acks().len(), 2);
    store.close().await;
}
