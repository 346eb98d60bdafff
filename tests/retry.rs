//! `retry:` on `invoke` requests and puts (issue 9): transient failures are tried again, a
//! retried request is one `request` event with its attempts, 4xx and tolerated statuses
//! are never retried, and nothing is retried unless the step asks.
#![allow(clippy::unwrap_used)]

#[path = "support/oci_server.rs"]
mod oci_server;
mod support;

use std::time::Duration;

use ferry::run::{Event, Outcome, RunReport};
use ferry::standin::{FailurePlan, SYNC_REQUESTS_PATH};
use serde_json::json;
use support::Workspace;

const FLOW: &str = "RETRY-TEST";

/// A one-step flow sending one sync request, with `extra` added to the request.
fn request_flow(ws: &Workspace, extra: &str) {
    let flow = format!(
        "id: {FLOW}
name: Retry test
version: '1'
steps:
  - id: send
    invoke:
      request:
        connection: dacs_rest
        path: {SYNC_REQUESTS_PATH}
        json: {{ syncRequestId: SR-1, status: ENROLLED }}
{extra}"
    );
    std::fs::write(ws.flows_dir().join("retry_test.yaml"), flow).unwrap();
}

/// The request events of a run: (status, suppressed, attempts).
fn requests(report: &RunReport) -> Vec<(Option<u16>, bool, u32)> {
    report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Request {
                status,
                suppressed,
                attempts,
                ..
            } => Some((*status, *suppressed, *attempts)),
            _ => None,
        })
        .collect()
}

fn journal_statuses(ws: &Workspace) -> Vec<u16> {
    ws.standin.journal().iter().map(|j| j.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_retried_through_two_503s_is_one_event_with_three_attempts() {
    let ws = Workspace::new().await;
    request_flow(&ws, "        retry: { attempts: 3, backoff: 20ms }\n");
    ws.standin.fail_sync_requests(FailurePlan {
        after: 0,
        status: 503,
        times: 2,
    });
    let report = ws.run(FLOW).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.error);
    assert_eq!(requests(&report), [(Some(200), false, 3)]);
    assert_eq!(journal_statuses(&ws), [503, 503, 200]);
    assert_eq!(
        ws.standin.sync_requests(),
        [json!({"syncRequestId": "SR-1", "status": "ENROLLED"})]
    );
    // The event is stored with its attempts; an event written before retries existed
    // reads as one attempt.
    let stored = serde_json::to_value(&report.events).unwrap();
    let request = stored
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("attempts").is_some())
        .unwrap()
        .clone();
    assert_eq!(request["attempts"], 3);
    let mut old = request.clone();
    old.as_object_mut().unwrap().remove("attempts");
    match serde_json::from_value::<Event>(old).unwrap() {
        Event::Request { attempts, .. } => assert_eq!(attempts, 1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_transient_answer_fails_the_step_after_the_attempts() {
    let ws = Workspace::new().await;
    request_flow(&ws, "        retry: { attempts: 2, backoff: 10ms }\n");
    ws.standin.fail_sync_requests(FailurePlan::always(500));
    let report = ws.run(FLOW).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(requests(&report), [(Some(500), false, 2)]);
    assert_eq!(journal_statuses(&ws), [500, 500]);
    let error = report.error.unwrap();
    assert!(
        error.message.contains("answered HTTP 500"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_retried() {
    let ws = Workspace::new().await;
    request_flow(&ws, "        retry: { attempts: 5, backoff: 10ms }\n");
    ws.standin.fail_sync_requests(FailurePlan {
        after: 0,
        status: 400,
        times: 3,
    });
    let report = ws.run(FLOW).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(requests(&report), [(Some(400), false, 1)]);
    assert_eq!(journal_statuses(&ws), [400]);
    assert!(ws.standin.sync_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tolerated_503_is_not_retried() {
    let ws = Workspace::new().await;
    request_flow(
        &ws,
        "        tolerate: [503]\n        retry: { attempts: 5, backoff: 10ms }\n",
    );
    ws.standin.fail_sync_requests(FailurePlan::always(503));
    let report = ws.run(FLOW).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.error);
    assert_eq!(requests(&report), [(Some(503), true, 1)]);
    assert_eq!(journal_statuses(&ws), [503]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_is_off_by_default() {
    let ws = Workspace::new().await;
    request_flow(&ws, "");
    ws.standin.fail_sync_requests(FailurePlan {
        after: 0,
        status: 503,
        times: 1,
    });
    let report = ws.run(FLOW).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(requests(&report), [(Some(503), false, 1)]);
    assert_eq!(journal_statuses(&ws), [503]);
    assert!(ws.standin.sync_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_retried_and_the_error_says_how_often() {
    let mut ws = Workspace::new().await;
    ws.set_connection(
        "dacs_rest",
        json!({ "kind": "http", "base_url": support::dead_url(), "timeout_secs": 5 }),
    );
    request_flow(&ws, "        retry: { attempts: 3, backoff: 10ms }\n");
    let report = ws.run(FLOW).await;
    assert_eq!(report.outcome, Outcome::Failed);
    // No answer came: no request event, and the error names the attempts.
    assert!(requests(&report).is_empty());
    let message = report.error.unwrap().message;
    assert!(message.contains("cannot connect"), "{message}");
    assert!(message.contains("(gave up after 3 attempts)"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_retry_settings_are_diagnosed() {
    let ws = Workspace::new().await;
    request_flow(&ws, "        retry: { attempts: 0, backoff: soon }\n");
    let (_, diagnostics) = ws.try_load();
    let shown: Vec<String> = diagnostics.iter().map(|d| d.one_line()).collect();
    assert!(
        shown.iter().any(|d| d.contains("retry_test.yaml:11:")
            && d.contains("retry.attempts is 0; it must be between 1 and 10")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|d| d.contains("retry_test.yaml:11:")
            && d.contains("retry.backoff 'soon' is not a duration")),
        "{shown:#?}"
    );
}

/// A put whose target only starts listening after a while: without `retry` the put fails
/// (the OCI connector's own retries are over within 0.7 s), with it the put lands.
async fn put_to_a_late_server(retry: &str) -> (RunReport, Vec<u8>, Option<Vec<u8>>) {
    let mut ws = Workspace::new().await;
    let port = support::dead_port();
    ws.set_connection(
        "late_os",
        oci_server::connection_spec(&format!("http://127.0.0.1:{port}"), "test_key_pkcs1.pem"),
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = ws.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let flow = format!(
        "id: {FLOW}
name: Retry test
version: '1'
steps:
  - id: put
    invoke:
      put:
        connection: late_os
        location: {}/inbox
        name: landed.bin
        file: {}
{retry}",
        oci_server::NAMESPACE,
        src.display()
    );
    std::fs::write(ws.flows_dir().join("retry_test.yaml"), flow).unwrap();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let server = oci_server::OciServer::start_on(port, 100).await;
        server.bucket("inbox");
        server
    });
    let report = ws.run(FLOW).await;
    let server = late.await.unwrap();
    let landed = std::fs::read(server.bucket("inbox").join("landed.bin")).ok();
    (report, data, landed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_is_retried_until_its_target_answers() {
    let (report, data, landed) =
        put_to_a_late_server("        retry: { attempts: 6, backoff: 400ms }\n").await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.error);
    assert!(landed == Some(data), "the bytes on the target differ");

    let (report, _, landed) = put_to_a_late_server("").await;
    assert_eq!(report.outcome, Outcome::Failed);
    let message = report.error.unwrap().message;
    assert!(message.contains("cannot connect"), "{message}");
    assert!(landed.is_none());
}
