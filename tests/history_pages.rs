//! A run's detail at volume, paged: the enrollment-ack flow (flow 3) against the DACS
//! stand-in with tolerated answers (duplicate sync request ids, which DACS answers 400) and
//! an injected failure, read back through the store, `ferry runs show` (the real binary) and
//! `ferry serve` (the JSON API and the run page): each failure and tolerated answer in full,
//! the accepted records as a range, every row exactly once across pages, the page limits;
//! and a purge of 100,000 runs while the real `ferry serve` keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ferry::compile::Inputs;
use ferry::history::{self, EventFilter, RecordStatus, RunRequest, Store, Trigger};
use ferry::serve::{ServeOptions, Users, serve};
use ferry::standin::FailurePlan;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use support::Workspace;

const ENROLL_ACK: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const ACK_BUCKET: &str = "ouainamespace/OUAIEnrollAckFolder";
const ACK_FILE: &str = "feedback.dacs.program_subscription.20230210.csv";

/// A feedback file of `n` records; record `i` carries the sync request id `id(i)`.
fn feedback(n: usize, id: impl Fn(usize) -> usize) -> Vec<u8> {
    let mut s = String::from(
        "SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime\n",
    );
    for i in 1..=n {
        s.push_str(&format!(
            "SR-{:07},1234512345,EN-{i:06},{},DEV-{i:05},ACCEPTED,Subscription created,2023-02-10T02:15:00Z\n",
            id(i),
            1_122_334_455 + i
        ));
    }
    s.into_bytes()
}

async fn store_in(ws: &Workspace) -> Store {
    Store::open_sqlite(&ws.path().join("state")).await.unwrap()
}

/// Runs flow 3 over `csv`, recorded; returns the run id.
async fn run_ack(ws: &Workspace, store: &Store, csv: Vec<u8>) -> String {
    ws.put_file("ouai-os", ACK_BUCKET, ACK_FILE, csv);
    let recorded = history::run_recorded(
        &ferry::run::Engine::new(ws.load(), ws.options()),
        Some(store),
        RunRequest::new(ENROLL_ACK, Trigger::Manual),
    )
    .await
    .unwrap();
    assert!(recorded.warnings.is_empty(), "{:?}", recorded.warnings);
    recorded.report.run_id
}

fn ferry(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ferry serve` in process over the workspace (no users: every caller may read).
struct Serving {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ferry::serve::ServeError>>,
    http: reqwest::Client,
}

impl Serving {
    async fn start(ws: &Workspace) -> Serving {
        // flow 4's trigger names credentials from the environment, which serve refuses to
        // start without; these tests do not deliver to it
        let path = ws.flows_dir().join("event_outcome.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        if let Some(start) = text.find("    basic_auth:") {
            let end = text[start..].find("    max_body_mib").unwrap() + start;
            let mut out = text.clone();
            out.replace_range(start..end, "");
            std::fs::write(&path, out).unwrap();
        }
        let opts = ServeOptions {
            inputs: Inputs {
                paths: vec![ws.flows_dir()],
                lookups: Some(ws.lookups_dir()),
                connections: Some(ws.connections_path()),
            },
            data_dir: ws.path().join("state"),
            database_url: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            instance: Some("pages-test".into()),
            grace: Duration::from_secs(5),
            schedules: false,
            watch: false,
            lease_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            retention: None,
            spool_dir: Some(ws.spool_dir()),
            users: Users::new(Vec::new()),
            limits: ferry::serve::Limits::default(),
            max_file_bytes: ferry::compile::DEFAULT_MAX_FILE_BYTES,
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let task = tokio::spawn(serve(
            opts,
            async move {
                let _ = stop_rx.await;
            },
            move |a| {
                let _ = addr_tx.send(a);
            },
        ));
        Serving {
            addr: addr_rx.await.expect("serve listens"),
            stop,
            task,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get(path).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("serve stops")
            .unwrap()
            .unwrap();
    }
}

/// 30 records: 5 and 17 repeat the sync request ids of 1 and 2 (DACS answers 400, which
/// the flow tolerates), the 25th call fails with 500 (the loop stops there).
async fn mixed_run(ws: &Workspace, store: &Store) -> String {
    ws.standin.fail_sync_requests(FailurePlan {
        after: 24,
        status: 500,
        times: 1,
    });
    run_ack(
        ws,
        store,
        feedback(30, |i| match i {
            5 => 1,
            17 => 2,
            i => i,
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shows_each_failure_in_full_and_the_accepted_records_as_a_range() {
    let ws = Workspace::new().await;
    // one record at a time: the failure plan counts requests as they arrive, and the rows
    // come in record order
    ws.sequential_records();
    let store = store_in(&ws).await;
    let id = mixed_run(&ws, &store).await;

    // the store: three rows, each with its record number, status and DACS's answer; the
    // 22 accepted records are the loop's range and a counter
    let d = store.get(&id).await.unwrap().unwrap();
    assert_eq!(d.summary.outcome, history::Outcome::Partial);
    let rows: Vec<(RecordStatus, Option<i64>, Option<i64>)> = d
        .records
        .iter()
        .map(|r| (r.outcome, r.status, r.record))
        .collect();
    assert_eq!(
        rows,
        [
            (RecordStatus::Tolerated, Some(400), Some(5)),
            (RecordStatus::Tolerated, Some(400), Some(17)),
            (RecordStatus::Failed, Some(500), Some(25)),
        ]
    );
    assert!(
        d.records[0]
            .message
            .as_deref()
            .unwrap()
            .contains("duplicate sync request id SR-0000001"),
        "{:#?}",
        d.records
    );
    assert!(
        d.records[1]
            .message
            .as_deref()
            .unwrap()
            .contains("duplicate sync request id SR-0000002")
    );
    assert_eq!(
        (
            d.summary.records_ok,
            d.summary.records_tolerated,
            d.summary.records_failed
        ),
        (22, 2, 1)
    );
    assert_eq!(
        (d.files_next, d.records_next, d.events_next),
        (None, None, None)
    );
    let loops = store.loop_summaries(&d.summary, &d.loops).await.unwrap();
    assert_eq!(loops.len(), 1);
    let line = "records 1–24: 22 accepted; 2 tolerated (#5, #17); 1 failed (#25)";
    assert_eq!(loops[0].line, line);
    assert_eq!(
        (loops[0].progress.first, loops[0].progress.through),
        (1, 24)
    );
    // successes are not rows: the run's request events are the three exceptions only
    let requests = store
        .events_page(&id, EventFilter::Requests, 0, 1000)
        .await
        .unwrap();
    assert_eq!(requests.events.len(), 3);

    // `ferry runs show`: the summary, the loop as a range, the failure in full
    let d_dir = ws.path();
    let o = ferry(d_dir, &["runs", "show", &id, "--data", "state"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let show = stdout(&o);
    let failed_line = show
        .lines()
        .find(|l| l.trim_start().starts_with("#25 "))
        .unwrap_or_else(|| panic!("no record 25 in\n{show}"));
    assert!(
        failed_line.contains("POST ")
            && failed_line.contains("/rest/apis/cross/syncRequests/update -> 500 FAILED: "),
        "{failed_line}"
    );
    for needle in [
        format!("record loops:\n  {ACK_FILE}: {line}\n"),
        "failed records:\n".to_string(),
        "  totals     0 file(s) put (0 bytes), 1 rename(s), records: 22 sent, 2 tolerated, 1 failed, 2 email(s)\n"
            .to_string(),
    ] {
        assert!(show.contains(&needle), "missing {needle:?} in\n{show}");
    }
    // the tolerated records are not printed by default
    assert!(!show.contains("400 tolerated"), "{show}");
    let o = ferry(
        d_dir,
        &[
            "runs",
            "show",
            &id,
            "--data",
            "state",
            "--records",
            "tolerated",
        ],
    );
    let show = stdout(&o);
    let tolerated: Vec<&str> = show
        .lines()
        .filter(|l| l.contains("-> 400 tolerated: "))
        .collect();
    assert_eq!(tolerated.len(), 2, "{show}");
    assert!(tolerated[0].trim_start().starts_with("#5 "), "{show}");
    assert!(
        tolerated[0].contains("duplicate sync request id SR-0000001"),
        "{show}"
    );
    assert!(tolerated[1].trim_start().starts_with("#17 "), "{show}");
    assert!(show.contains("tolerated records:\n"), "{show}");

    // --records all --limit 2: two rows and the cursor of the rest
    let o = ferry(
        d_dir,
        &[
            "runs",
            "show",
            &id,
            "--data",
            "state",
            "--records",
            "all",
            "--limit",
            "2",
        ],
    );
    let show = stdout(&o);
    let numbers = |show: &str| -> Vec<String> {
        show.lines()
            .filter(|l| l.contains(" POST "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|w| w.starts_with('#'))
            .collect()
    };
    assert_eq!(numbers(&show), ["#5", "#17"], "{show}");
    let more = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("more: "))
        .unwrap_or_else(|| panic!("no cursor in\n{show}"));
    let after = more
        .split_whitespace()
        .skip_while(|w| *w != "--after")
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(
        more,
        format!("ferry runs show {id} --records all --after {after} --limit 2")
    );
    let o = ferry(
        d_dir,
        &[
            "runs",
            "show",
            &id,
            "--data",
            "state",
            "--records",
            "all",
            "--limit",
            "2",
            "--after",
            &after,
        ],
    );
    let show = stdout(&o);
    assert_eq!(numbers(&show), ["#25"], "{show}");
    assert!(!show.contains("more: "), "{show}");
    // JSON: the detail with its loops and the page asked for
    let o = ferry(
        d_dir,
        &["runs", "show", &id, "--data", "state", "--format", "json"],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["loop_summaries"][0]["line"], line);
    assert_eq!(v["records_page"]["filter"], "failed");
    assert_eq!(v["records_page"]["events"][0]["record"], 25);
    assert_eq!(v["records_page"]["events"][0]["status"], 500);
    assert_eq!(v["records_page"]["next"], Value::Null);

    // the CLI's limits: a bad page is refused with the flag named
    for (args, needle) in [
        (&["--limit", "0"][..], "--limit"),
        (&["--limit", "1001"][..], "--limit"),
        (&["--after=-3"][..], "--after"),
        (&["--records", "bogus"][..], "--records"),
    ] {
        let mut a = vec!["runs", "show", &id, "--data", "state"];
        a.extend_from_slice(args);
        let o = ferry(d_dir, &a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }

    // the API and the run page
    let s = Serving::start(&ws).await;
    let (status, run) = s.json(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["records"].as_array().unwrap().len(), 3);
    assert_eq!(run["records"][2]["record"], 25);
    assert_eq!(run["records"][2]["outcome"], "failed");
    assert_eq!(run["loops"][0]["through"], 24);
    assert_eq!(run["records_next"], Value::Null);
    assert_eq!(run["events_next"], Value::Null);
    let (status, page) = s
        .json(&format!("/api/v1/runs/{id}/events?status=tolerated"))
        .await;
    assert_eq!(status, 200, "{page}");
    let recs: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["record"])
        .collect();
    assert_eq!(recs, [&json!(5), &json!(17)]);
    assert_eq!(page["events"][0]["event"], "request");
    assert_eq!(page["events"][0]["status"], 400);
    assert_eq!(
        (&page["next"], &page["previous"]),
        (&Value::Null, &Value::Null)
    );
    // bad values: 400 with a JSON error naming the parameter
    for (query, needle) in [
        ("status=bogus", "status: unknown filter 'bogus'"),
        ("limit=0", "limit: '0'"),
        ("limit=1001", "limit: '1001'"),
        ("limit=ten", "limit: 'ten'"),
        ("after=-1", "after: '-1'"),
        ("after=x", "after: 'x'"),
    ] {
        let (status, body) = s.json(&format!("/api/v1/runs/{id}/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(needle), "{query}: {message}");
    }
    let (status, body) = s.json("/api/v1/runs/nope/events").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("unknown_run"))
    );
    let (status, page) = s
        .json(&format!("/api/v1/runs/{id}/events?limit=1000"))
        .await;
    assert_eq!(status, 200, "{page}");

    let (status, html) = s.get(&format!("/ui/runs/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("{ACK_FILE}</span>: {line}")),
        "{html}"
    );
    assert_eq!(html.matches("data-testid=\"record\"").count(), 3, "{html}");
    assert!(
        html.contains("duplicate sync request id SR-0000001"),
        "{html}"
    );
    let (status, html) = s.get(&format!("/ui/runs/{id}?status=failed")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("data-testid=\"event-filter-current\">failed<"),
        "{html}"
    );
    let events = html.split("data-testid=\"events\"").nth(1).unwrap();
    let events = events.split("</ol>").next().unwrap();
    assert!(events.contains("<strong>request</strong>"), "{events}");
    assert!(events.contains("500"), "{events}");
    assert!(!events.contains("400"), "{events}");
    let (status, _) = s.get(&format!("/ui/runs/{id}?status=bogus")).await;
    assert_eq!(status, 400);
    s.stop().await;
}

/// The `record` of every request event of an API page.
fn page_records(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["record"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_return_every_tolerated_row_exactly_once() {
    let ws = Workspace::new().await;
    // one record at a time: the failure plan counts requests as they arrive, and the rows
    // come in record order
    ws.sequential_records();
    let store = store_in(&ws).await;
    // 2,600 records, of which 2,500 repeat an id already sent: 2,500 tolerated rows
    let id = run_ack(
        &ws,
        &store,
        feedback(2_600, |i| if i > 100 { i % 100 + 1 } else { i }),
    )
    .await;
    let expected: Vec<i64> = (101..=2_600).collect();
    let d = store.get(&id).await.unwrap().unwrap();
    assert_eq!(d.summary.records_tolerated, 2_500);
    assert_eq!(d.summary.records_ok, 100);
    // the detail holds a first page only, with the cursor of the next
    assert_eq!(d.records.len(), history::PAGE as usize);
    assert!(d.records_next.is_some());
    assert_eq!(d.events.len(), history::PAGE as usize);
    assert!(d.events_next.is_some());

    // the store, 7 at a time and 1,000 at a time
    for limit in [7, 1_000] {
        let mut seen = Vec::new();
        let mut after = 0;
        let mut pages = 0;
        loop {
            let page = store
                .events_page(&id, EventFilter::Tolerated, after, limit)
                .await
                .unwrap();
            assert!(page.events.len() <= limit as usize);
            seen.extend(
                page.events
                    .iter()
                    .filter_map(|e| e.event["record"].as_i64()),
            );
            pages += 1;
            match page.next {
                Some(n) => after = n,
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages, 2_500_usize.div_ceil(limit as usize));
    }

    // the API: forward by `next`, then back by `previous`, the same pages
    let s = Serving::start(&ws).await;
    let (status, run) = s.json(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(run["records"].as_array().unwrap().len(), 200);
    let mut forward = Vec::new();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = s
            .json(&format!(
                "/api/v1/runs/{id}/events?status=tolerated&after={after}&limit=333"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page_records(&page));
        forward.push((after, page_records(&page), page["previous"].clone()));
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(forward.len(), 8);
    assert_eq!(forward[0].2, Value::Null);
    for w in forward.windows(2) {
        // the previous cursor of a page is the cursor the page before was read at
        assert_eq!(w[1].2, json!(w[0].0), "{:?}", (w[0].0, w[1].0));
    }
    // every event, unfiltered, once: 100 accepted requests are not rows
    let mut all = BTreeSet::new();
    let mut count = 0;
    let mut after = 0;
    loop {
        let (_, page) = s
            .json(&format!(
                "/api/v1/runs/{id}/events?after={after}&limit=1000"
            ))
            .await;
        for e in page["events"].as_array().unwrap() {
            all.insert(e["seq"].as_i64().unwrap());
            count += 1;
        }
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(all.len(), count);
    let requests = store
        .events_page(&id, EventFilter::Requests, 0, 1000)
        .await
        .unwrap();
    assert!(requests.events.iter().all(|e| e.event["status"] == 400));

    // the run page: one page of events and the links to walk them
    let (status, html) = s.get(&format!("/ui/runs/{id}?status=tolerated")).await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("<li value=").count(), 200);
    assert!(html.contains("data-testid=\"events-next\""));
    assert!(!html.contains("data-testid=\"events-previous\""));
    let next = html
        .split("data-testid=\"events-next\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let (status, html) = s.get(&next).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(html.matches("<li value=").count(), 200);
    assert!(html.contains("data-testid=\"events-previous\""));
    assert!(html.contains(">#301<") || html.contains("301"));
    assert!(html.len() < 1_000_000, "{} bytes", html.len());
    s.stop().await;
}

/// Inserts `n` finished runs started in 2020, two event rows each, and one run of
/// `big` event rows, straight into the database.
async fn old_runs(dir: &Path, n: i64, big: i64) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("ferry.db"));
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO runs (id, flow, flow_name, trigger_kind, outcome, dry_run, started_at,
            finished_at, duration_ms, events_in_rows)
         SELECT printf('old-%07d', i), 'OLD', 'old flow', 'manual', 'succeeded', 0,
            printf('2020-01-01T00:%02d:%02d.000Z', (i / 60) % 60, i % 60),
            '2020-01-01T01:00:00.000Z', 1, 1 FROM n",
    )
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO run_events (run_id, seq, at, kind, body)
         SELECT id, s.seq, '2020-01-01T00:00:00.000Z', 'listed',
            '{\"event\":\"listed\",\"connection\":\"c\",\"location\":\"l\",\"count\":0}'
         FROM runs, (SELECT 1 AS seq UNION ALL SELECT 2) AS s WHERE flow = 'OLD'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 3 UNION ALL SELECT i + 1 FROM n WHERE i < $1 + 2)
         INSERT INTO run_events (run_id, seq, at, kind, body)
         SELECT 'old-0000001', i, '2020-01-01T00:00:00.000Z', 'request_failed',
            '{\"event\":\"request\",\"connection\":\"c\",\"method\":\"POST\",\"url\":\"u\",\"status\":500,\"suppressed\":false}'
         FROM n",
    )
    .bind(big)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_100000_runs_keeps_serve_answering() {
    const RUNS: i64 = 100_000;
    const BIG: i64 = 300_000;
    let ws = Workspace::new().await;
    let state = ws.path().join("state");
    let store = Store::open_sqlite(&state).await.unwrap();
    // a recent run the probes read
    let kept = mixed_run(&ws, &store).await;
    old_runs(&state, RUNS, BIG).await;
    let events = |store: Store| async move {
        store
            .events_page("old-0000001", EventFilter::All, 0, 1)
            .await
            .map(|p| p.events.len())
    };
    assert_eq!(events(store.clone()).await.unwrap(), 1);

    // the real `ferry serve` over the same store
    let port = support::dead_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--flows"])
        .arg(ws.flows_dir())
        .arg("--lookups")
        .arg(ws.lookups_dir())
        .arg("--connections")
        .arg(ws.connections_path())
        .arg("--data")
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--no-schedules"])
        // flow 4's trigger names its credentials: serve refuses to start without them
        .env("FERRY_DERMS_TRIGGER_USER", "derms")
        .env("FERRY_DERMS_TRIGGER_PASSWORD", "a-test-password")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "ferry serve did not start");

    // purge in this process while probes ask serve for /healthz and the kept run's page
    let purge = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let n = store
                .purge(chrono::Utc::now() - chrono::Duration::days(30))
                .await
                .unwrap();
            (n, started.elapsed())
        })
    };
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !purge.is_finished() {
        for path in [
            "/healthz".to_string(),
            format!("/ui/runs/{kept}"),
            format!("/api/v1/runs/{kept}"),
        ] {
            let t = Instant::now();
            let r = http.get(format!("{base}{path}")).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let took = t.elapsed();
            assert_eq!(status, 200, "{path}: {body}");
            assert!(
                took < Duration::from_secs(2),
                "{path} took {took:?} while the purge ran"
            );
            slowest = slowest.max(took);
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (purged, took) = purge.await.unwrap();
    eprintln!("purged {purged} runs in {took:?}; {probes} probes, slowest {slowest:?}");
    assert_eq!(purged, RUNS as usize);
    assert!(
        probes >= 3,
        "the purge ended before serve was asked ({took:?})"
    );
    // every old run and its rows are gone; the recent run is whole
    assert!(matches!(
        events(store.clone()).await,
        Err(history::HistoryError::UnknownRun(_))
    ));
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(state.join("ferry.db"));
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let (runs, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM run_events WHERE run_id <> $1)",
    )
    .bind(&kept)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((runs, rows), (1, 0));
    let d = store.get(&kept).await.unwrap().unwrap();
    assert_eq!(d.records.len(), 3);
    child.kill().await.unwrap();
}
