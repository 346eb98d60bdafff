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

/// An OTLP/HTTP trace receiver on a free port: keeps every span it is sent.
async fn receiver() -> (String, Received) {
    let spans: Received = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
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
    (format!("http://{addr}"), spans)
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
    let runs: Vec<&Span> = all.iter().filter(|s| s.name == "run").collect();
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
run flow=OUTL-BA-DACS_OUAI_FTP_ENROLL outcome=succeeded
  step id=list kind=list outcome=ok
  step id=no_file_email kind=notify outcome=skipped
  step id=nothing_to_do kind=end outcome=skipped
  step id=files kind=for_each outcome=ok
    step id=fetch kind=fetch file=ENROLL_SYNC_20230210_0100.csv outcome=ok
    step id=transfer kind=route file=ENROLL_SYNC_20230210_0100.csv outcome=ok
      step id=to_ouai_os kind=invoke file=ENROLL_SYNC_20230210_0100.csv outcome=ok
        child_flow flow=OUTL-BA-OUAI_COMMON_OS_TRNFR
          step id=put kind=invoke file=ENROLL_SYNC_20230210_0100.csv outcome=ok
    step id=mark_sent kind=rename file=ENROLL_SYNC_20230210_0100.csv outcome=ok
    step id=fetch kind=fetch file=ENROLL_SYNC_20230210_0200.csv outcome=ok
    step id=transfer kind=route file=ENROLL_SYNC_20230210_0200.csv outcome=ok
      step id=to_ouai_os kind=invoke file=ENROLL_SYNC_20230210_0200.csv outcome=ok
        child_flow flow=OUTL-BA-OUAI_COMMON_OS_TRNFR
          step id=put kind=invoke file=ENROLL_SYNC_20230210_0200.csv outcome=ok
    step id=mark_sent kind=rename file=ENROLL_SYNC_20230210_0200.csv outcome=ok
  step id=complete_email kind=notify outcome=ok
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
        if f["message"] != "ferry event" {
            continue;
        }
        let kind = f["event"].as_str().unwrap().to_string();
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
