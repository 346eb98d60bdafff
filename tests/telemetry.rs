//! Structured logs and trace export, with the real binary: `--log-json` writes every run
//! event as a JSON object with typed fields; `--otlp-endpoint` exports a span per run, step
//! and child flow over OTLP/HTTP protobuf to a receiver this test runs in process, which
//! decodes the spans and checks the tree of one run.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

type Received = Arc<Mutex<Vec<Span>>>;
/// The resource attributes of every export request, as `key=value` strings.
type Resources = Arc<Mutex<Vec<String>>>;

/// An OTLP/HTTP trace receiver on a free port: keeps every span it is sent.
async fn receiver() -> (String, Received) {
    let (url, spans, _) = receiver_with_resources().await;
    (url, spans)
}

/// [`receiver`], also keeping the resource attributes the spans came with.
async fn receiver_with_resources() -> (String, Received, Resources) {
    let resources: Resources = Arc::default();
    let kept_resources = resources.clone();
    let spans: Received = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            let kept_resources = kept_resources.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
                    for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                        if let Some(Any::StringValue(v)) =
                            kv.value.as_ref().and_then(|v| v.value.as_ref())
                        {
                            kept_resources
                                .lock()
                                .unwrap()
                                .push(format!("{}={v}", kv.key));
                        }
                    }
                    for ss in rs.scope_spans {
                        kept.lock().unwrap().extend(ss.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), spans, resources)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Any::StringValue(s) => s.clone(),
            Any::IntValue(i) => i.to_string(),
            Any::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

/// The tree under `root`: one line per span, indented, children in start order.
fn render(root: &Span, all: &[Span], depth: usize, out: &mut String) {
    let mut line = format!("{}{}", "  ".repeat(depth), root.name);
    for key in ["flow", "id", "kind", "file", "record", "outcome"] {
        if let Some(v) = attr(root, key) {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    out.push_str(&line);
    out.push('\n');
    let mut children: Vec<&Span> = all
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    for c in children {
        assert_eq!(c.trace_id, root.trace_id, "a child in another trace");
        render(c, all, depth + 1, out);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traced_demo_run_arrives_at_the_receiver_as_a_tree() {
    let (endpoint, spans) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["--otlp-endpoint", &endpoint, "demo"])
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the run id the demo printed for the FTP enrollment flow
    let run_id = stdout
        .lines()
        .find(|l| l.starts_with("OUTL-BA-DACS_OUAI_FTP_ENROLL "))
        .and_then(|l| l.split("(run ").nth(1))
        .map(|r| r.trim_end_matches(')').to_string())
        .unwrap();
    let all = spans.lock().unwrap().clone();
    let runs: Vec<&Span> = all.iter().filter(|s| s.name.starts_with("run ")).collect();
    assert_eq!(runs.len(), 6, "one run span per demo run");
    assert!(
        runs.iter().all(|s| s.parent_span_id.is_empty()),
        "runs are roots"
    );
    let run = runs
        .iter()
        .find(|s| attr(s, "run_id").as_deref() == Some(run_id.as_str()))
        .unwrap();
    let mut tree = String::new();
    render(run, &all, 0, &mut tree);
    pretty_assertions::assert_eq!(
        tree,
        "\
run OUTL-BA-DACS_OUAI_FTP_ENROLL flow=OUTL-BA-DACS_OUAI_FTP_ENROLL outcome=succeeded
  list (list) id=list kind=list outcome=ok
  no_file_email (notify) id=no_file_email kind=notify outcome=skipped
  nothing_to_do (end) id=nothing_to_do kind=end outcome=skipped
  files (for_each) id=files kind=for_each outcome=ok
    fetch (fetch) id=fetch kind=fetch file=ENROLL_SYNC_20230210_0100.csv outcome=ok
    transfer (route) id=transfer kind=route file=ENROLL_SYNC_20230210_0100.csv outcome=ok
      to_ouai_os (invoke) id=to_ouai_os kind=invoke file=ENROLL_SYNC_20230210_0100.csv outcome=ok
        child OUTL-BA-OUAI_COMMON_OS_TRNFR flow=OUTL-BA-OUAI_COMMON_OS_TRNFR
          put (invoke) id=put kind=invoke file=ENROLL_SYNC_20230210_0100.csv outcome=ok
    mark_sent (rename) id=mark_sent kind=rename file=ENROLL_SYNC_20230210_0100.csv outcome=ok
    fetch (fetch) id=fetch kind=fetch file=ENROLL_SYNC_20230210_0200.csv outcome=ok
    transfer (route) id=transfer kind=route file=ENROLL_SYNC_20230210_0200.csv outcome=ok
      to_ouai_os (invoke) id=to_ouai_os kind=invoke file=ENROLL_SYNC_20230210_0200.csv outcome=ok
        child OUTL-BA-OUAI_COMMON_OS_TRNFR flow=OUTL-BA-OUAI_COMMON_OS_TRNFR
          put (invoke) id=put kind=invoke file=ENROLL_SYNC_20230210_0200.csv outcome=ok
    mark_sent (rename) id=mark_sent kind=rename file=ENROLL_SYNC_20230210_0200.csv outcome=ok
  complete_email (notify) id=complete_email kind=notify outcome=ok
"
    );
}

#[test]
fn log_json_writes_every_run_event_with_typed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--log-json", "demo"])
        .env("FERRY_LOG", "ferry::run=info")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let f = &v["fields"];
        let Some(kind) = f["event"].as_str().map(str::to_string) else {
            continue;
        };
        if kind.starts_with("run_") {
            continue;
        }
        // the message names the event
        assert_eq!(f["message"], kind, "{line}");
        match kind.as_str() {
            "put" | "fetched" => {
                assert!(f["bytes"].is_u64(), "{line}");
                assert!(
                    f["name"].is_string() && f["connection"].is_string(),
                    "{line}"
                );
            }
            "listed" => assert!(f["count"].is_u64(), "{line}"),
            "request" => {
                assert!(f["status"].is_u64(), "{line}");
                assert!(f["suppressed"].is_boolean(), "{line}");
            }
            _ => {}
        }
        *kinds.entry(kind).or_default() += 1;
    }
    // the demo's table: 5 files put, 9 requests, 6 renames, 6 emails
    assert_eq!(kinds.get("put"), Some(&5), "{kinds:?}");
    assert_eq!(kinds.get("request"), Some(&9), "{kinds:?}");
    assert_eq!(kinds.get("renamed"), Some(&6), "{kinds:?}");
    assert_eq!(kinds.get("emailed"), Some(&6), "{kinds:?}");
}

/// A project from `ferry init` with a flow `broken` that lists, copies `here.csv` (8 bytes)
/// and then fails fetching a file that is not there.
fn broken_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["init"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    std::fs::write(
        dir.path().join("flows/broken.yaml"),
        "id: broken\nname: Broken\nversion: \"1\"\ntrigger: { manual: true }\nsteps:\n  \
         - id: look\n    list: { connection: files, location: inbox }\n  \
         - id: take\n    fetch: { connection: files, location: inbox, name: here.csv }\n  \
         - id: copy\n    invoke:\n      put: { connection: files, location: outbox, name: here.csv, \
         file: \"{{ steps.take.path }}\" }\n  \
         - id: get\n    fetch: { connection: files, location: inbox, name: missing.csv }\n",
    )
    .unwrap();
    let inbox = dir.path().join("ferry-data/files/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("here.csv"), "a,b\n1,2\n").unwrap();
    dir
}

/// A failed run used to show green in Jaeger and Tempo (status UNSET), every step span was
/// named `step`, and the resource had no `service.version`.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_and_its_failed_step_have_status_error_with_the_message() {
    let (endpoint, spans, resources) = receiver_with_resources().await;
    let dir = broken_project();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["--otlp-endpoint", &endpoint, "run", "broken"])
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let all = spans.lock().unwrap().clone();
    let span = |name: &str| {
        all.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {all:?}"))
    };
    let status = |s: &Span| {
        let st = s.status.clone().unwrap_or_default();
        (st.code, st.message)
    };
    const ERROR: i32 = 2;
    const UNSET: i32 = 0;
    let step_error = status(span("get (fetch)"));
    assert_eq!(step_error.0, ERROR, "{:?}", span("get (fetch)"));
    assert!(step_error.1.contains("missing.csv"), "{step_error:?}");
    assert_eq!(
        status(span("run broken")),
        (ERROR, format!("step 'get': {}", step_error.1))
    );
    assert_eq!(status(span("look (list)")), (UNSET, String::new()));
    // no attributes of the tracing library, only ferry's own
    for s in &all {
        for kv in &s.attributes {
            assert!(
                [
                    "flow", "run_id", "dry_run", "outcome", "id", "kind", "file", "record"
                ]
                .contains(&kv.key.as_str()),
                "{}: {}",
                s.name,
                kv.key
            );
        }
    }
    let resources = resources.lock().unwrap().clone();
    assert!(
        resources.contains(&format!("service.version={}", env!("CARGO_PKG_VERSION"))),
        "{resources:?}"
    );
    assert!(
        resources.contains(&"service.name=ferry".to_string()),
        "{resources:?}"
    );
}

/// The `jq` filters of the log queries in `docs/operating.md`: `select(.PATH == "VALUE")` each.
fn readme_log_queries() -> Vec<(Vec<String>, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md")).unwrap();
    let block = readme
        .split("```sh\nexport FERRY_LOG=ferry::run=info\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    block
        .lines()
        .map(|l| {
            let filter = l.split("jq -c '").nth(1).and_then(|f| f.split('\'').next());
            let filter = filter.unwrap_or_else(|| panic!("no jq filter in {l}"));
            let inner = filter
                .strip_prefix("select(.")
                .and_then(|f| f.strip_suffix("\")"))
                .unwrap_or_else(|| panic!("not select(.PATH == \"VALUE\"): {filter}"));
            let (path, value) = inner.split_once(" == \"").unwrap();
            (
                path.split('.').map(str::to_string).collect(),
                value.to_string(),
            )
        })
        .collect()
}

/// The log queries the docs give find what they say in a failed run's JSON log: the
/// failure used to be an INFO line with `message` set to the error (so a filter on the
/// message or the level missed it), and "run finished" had no counters.
#[test]
fn the_readme_log_queries_find_a_failed_runs_lines() {
    let dir = broken_project();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--log-json", "run", "broken"])
        .env("FERRY_LOG", "ferry::run=info")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let queries = readme_log_queries();
    assert_eq!(queries.len(), 4, "{queries:?}");
    let found = |(path, value): &(Vec<String>, String)| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| path.iter().fold(*l, |v, k| &v[k.as_str()]) == value.as_str())
            .collect()
    };
    // select(.fields.event == "failed"): the failed step with its error, a warning
    let failed = found(&queries[0]);
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(failed[0]["level"], "WARN");
    assert_eq!(failed[0]["fields"]["step"], "get");
    let error = failed[0]["fields"]["error"].as_str().unwrap();
    assert!(error.contains("missing.csv"), "{error}");
    // select(.level == "WARN"): the failure is among the warnings
    let warnings = found(&queries[1]);
    assert!(warnings.contains(&failed[0]), "{warnings:#?}");
    // select(.fields.message == "run finished"): outcome, duration and counters
    let finished = found(&queries[2]);
    assert_eq!(finished.len(), 1, "{lines:#?}");
    let f = &finished[0]["fields"];
    assert_eq!(f["event"], "run_finished");
    assert_eq!(f["flow"], "broken");
    assert_eq!(f["outcome"], "failed");
    assert_eq!(f["files_put"], 1);
    assert_eq!(f["bytes_put"], 8);
    assert_eq!(f["records_ok"], 0);
    assert_eq!(f["records_tolerated"], 0);
    assert_eq!(f["records_failed"], 0);
    assert_eq!(f["emails"], 0);
    assert!(f["duration_ms"].is_u64(), "{f}");
    assert_eq!(f["error"], format!("step 'get': {error}"));
    // select(.level == "ERROR"): the failed run
    assert_eq!(found(&queries[3]), finished);
    // and its start, with the same run id
    let started: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "run started")
        .collect();
    assert_eq!(started.len(), 1, "{lines:#?}");
    assert_eq!(started[0]["fields"]["run_id"], f["run_id"]);
    assert_eq!(started[0]["level"], "INFO");
}

/// Under `ferry serve`, a run logs one "run finished" line, the engine's with its counters:
/// serve used to log a second one of its own, without counters, so the docs' query counted
/// each run twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_under_serve_logs_run_finished_once_with_its_counters() {
    let dir = broken_project();
    let log_path = dir.path().join("serve.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "--log-json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-schedules",
        ])
        .current_dir(dir.path())
        .env("FERRY_OPERATOR_USER", "op")
        .env("FERRY_OPERATOR_PASSWORD", "op-password-for-tests")
        .env("FERRY_LOG", "ferry=info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let addr = loop {
        if let Some(rest) = log().split("listening on http://").nth(1) {
            break rest
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap()
                .to_string();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited:\n{}",
            log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not listen:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/flows/broken/runs"))
        .basic_auth("op", Some("op-password-for-tests"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        202,
        "{}",
        answer.text().await.unwrap()
    );
    let finished = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "run finished")
            .collect()
    };
    while finished(&log()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no run finished:\n{}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // a second line, if any, follows the engine's within moments
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    child.kill().await.unwrap();
    let lines = finished(&log());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let f = &lines[0]["fields"];
    assert_eq!(f["event"], "run_finished");
    assert_eq!(f["flow"], "broken");
    assert_eq!(f["outcome"], "failed");
    assert_eq!(f["files_put"], 1);
}
