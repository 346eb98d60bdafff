//! `ferry serve` in process: REST triggers (auth, parts, limits), run now and resubmit
//! under ferry's and OIC's paths, API roles, the scheduler's skipped ticks, hot reload,
//! metrics. Each test starts its own server on a free port over its own workspace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::time::Duration;

use ferry::connectors::Secret;
use ferry::serve::{Role, ServeOptions, User, Users, serve};
use serde_json::{Value, json};
use serving::{
    EVENT_OUTCOME, OP, OUTCOME_FILE, Serving, TRIGGER_PATH, start, without_trigger_credentials,
};
use support::{Workspace, demo_input};

const OUTCOME_BUCKET: &str = "ouainamespace/OUAIOutcomeFolder";
const FTP_ENROLL: &str = "OUTL-BA-DACS_OUAI_FTP_ENROLL";

const VIEWER: (&str, &str) = ("viewer", "viewer-secret");

fn users() -> Users {
    Users::new(vec![
        User::new(OP.0, Secret::new(OP.1.into()), Role::Operator),
        User::new(VIEWER.0, Secret::new(VIEWER.1.into()), Role::Viewer),
    ])
}

/// Options of a server over `ws` that knows the operator and the viewer.
fn options(ws: &Workspace) -> ServeOptions {
    serving::options(ws, users())
}

fn set_body_limit(ws: &Workspace, mib: u64) {
    let path = ws.flows_dir().join("event_outcome.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("max_body_mib: 64", &format!("max_body_mib: {mib}")),
    )
    .unwrap();
}

fn delivery(message: Vec<u8>, file: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "message",
            reqwest::multipart::Part::bytes(message)
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name(OUTCOME_FILE),
        )
}

fn sample_delivery() -> reqwest::multipart::Form {
    delivery(
        std::fs::read(demo_input("event_outcome_message.json")).unwrap(),
        std::fs::read(demo_input(OUTCOME_FILE)).unwrap(),
    )
}

async fn post_delivery(
    s: &Serving,
    who: Option<(&str, &str)>,
    form: reqwest::multipart::Form,
) -> (u16, Value) {
    s.send(s.http.post(s.url(TRIGGER_PATH)).multipart(form), who)
        .await
}

#[tokio::test]
async fn a_delivery_is_recorded_answered_with_its_run_id_and_run() {
    let ws = Workspace::new().await;
    without_trigger_credentials(&ws);
    let s = start(options(&ws)).await;
    let (status, body) = post_delivery(&s, Some(OP), sample_delivery()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["flow"], json!(EVENT_OUTCOME));
    let run_id = body["run_id"].as_str().unwrap().to_string();
    let run = s.wait_run(&run_id).await;
    assert_eq!(run["outcome"], json!("succeeded"), "{run:#}");
    assert_eq!(run["trigger"], json!("rest"));
    // the attachment reached the bucket byte for byte, DERMS got its ack
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(std::fs::read(demo_input(OUTCOME_FILE)).unwrap())
    );
    let acks = ws.standin.outcome_acks();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["ackType"], json!("SUCCESS"));
    // the delivery is kept with the run
    let inputs = run["inputs"].as_array().unwrap();
    let names: Vec<&str> = inputs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["file", "message"]);
    // and the spool of deliveries is empty again
    let left: Vec<_> = std::fs::read_dir(ws.path().join("state/incoming"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    s.stop().await;
}

/// A kept delivery whose bytes are gone cannot be resubmitted, and retrying will not help:
/// 410 `input_gone`, naming the part, not a 503 that invites a retry.
#[tokio::test]
async fn a_resubmit_whose_kept_input_is_gone_answers_410() {
    let ws = Workspace::new().await;
    // staged as files (a held delivery's bytes are in the database)
    let mut opts = options(&ws);
    opts.limits.held_delivery_bytes = 0;
    let s = start(opts).await;
    let (status, body) = post_delivery(&s, Some(OP), sample_delivery()).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_run(&run_id).await["outcome"], json!("succeeded"));
    let kept = ws.path().join("state/inputs").join(&run_id);
    std::fs::remove_file(kept.join("file")).unwrap();
    let (status, body) = s
        .post(
            &format!("/api/v1/runs/{run_id}/resubmit"),
            Some(OP),
            json!({}),
        )
        .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], json!("input_gone"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("run '{run_id}'"))
            && message.contains("kept input part 'file' is gone or changed"),
        "{message}"
    );
    // nothing was started
    let (_, runs) = s
        .get(&format!("/api/v1/runs?flow={EVENT_OUTCOME}"), Some(VIEWER))
        .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs:#}");
    s.stop().await;
}

/// A small delivery is held in memory and kept in the history database with its run: no
/// file is kept under `inputs/`, the run reads its copy, and a resubmit makes the copy
/// again from the database when it is gone. A delivery over the bound is kept as files.
#[tokio::test]
async fn a_small_delivery_is_kept_in_the_database_and_a_large_one_as_files() {
    let ws = Workspace::new().await;
    let mut opts = options(&ws);
    let file = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();
    // the sample is held; the same with a bound below its size is staged as files
    opts.limits.held_delivery_bytes = 64 * 1024;
    let s = start(opts).await;
    let (status, body) = post_delivery(&s, Some(OP), sample_delivery()).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    let run = s.wait_run(&run_id).await;
    assert_eq!(run["outcome"], json!("succeeded"), "{run:#}");
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(file.clone())
    );
    let state = ws.path().join("state");
    assert!(!state.join("inputs").join(&run_id).exists());
    // the flow's put to a local directory wrote the held bytes: no copy was made
    let copy = state.join("input-copies").join(&run_id).join("file");
    assert!(
        !state.join("input-copies").exists(),
        "a copy of the held part was made for a put"
    );
    let inputs = run["inputs"].as_array().unwrap();
    let file_part = inputs.iter().find(|p| p["name"] == json!("file")).unwrap();
    assert_eq!(file_part["size"], json!(file.len()), "{run:#}");
    assert_eq!(file_part["file_name"], json!(OUTCOME_FILE), "{run:#}");
    let message = inputs
        .iter()
        .find(|p| p["name"] == json!("message"))
        .unwrap();
    let sent: Value =
        serde_json::from_slice(&std::fs::read(demo_input("event_outcome_message.json")).unwrap())
            .unwrap();
    assert_eq!(message["value"], sent, "{run:#}");
    // a resubmit makes it again from the database
    std::fs::remove_file(ws.dir("ouai-os", OUTCOME_BUCKET).join(OUTCOME_FILE)).unwrap();
    let (status, body) = s
        .post(
            &format!("/api/v1/runs/{run_id}/resubmit"),
            Some(OP),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let again = s.wait_run(body["run_id"].as_str().unwrap()).await;
    assert_eq!(again["outcome"], json!("succeeded"), "{again:#}");
    assert_eq!(std::fs::read(&copy).unwrap(), file);
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(file.clone())
    );
    // a body over the bound: its parts are kept as files
    let big = vec![b'x'; 70 * 1024];
    let mut padded = file.clone();
    padded.extend_from_slice(&big);
    let (status, body) = post_delivery(
        &s,
        Some(OP),
        delivery(
            std::fs::read(demo_input("event_outcome_message.json")).unwrap(),
            padded.clone(),
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let big_id = body["run_id"].as_str().unwrap().to_string();
    s.wait_run(&big_id).await;
    assert_eq!(
        std::fs::read(state.join("inputs").join(&big_id).join("file")).unwrap(),
        padded
    );
    s.stop().await;
}

#[tokio::test]
async fn trigger_refuses_bad_requests_with_clear_json_errors() {
    let ws = Workspace::new().await;
    without_trigger_credentials(&ws);
    set_body_limit(&ws, 1);
    let s = start(options(&ws)).await;
    let message = std::fs::read(demo_input("event_outcome_message.json")).unwrap();
    let file = std::fs::read(demo_input(OUTCOME_FILE)).unwrap();

    let (status, body) = post_delivery(&s, None, sample_delivery()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], json!("unauthorized"));
    let (status, body) = post_delivery(&s, Some((OP.0, "wrong")), sample_delivery()).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        json!("wrong user name or password")
    );

    let only_file = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(file.clone()).file_name(OUTCOME_FILE),
    );
    let (status, body) = post_delivery(&s, Some(OP), only_file).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], json!("missing part(s): message"));

    let (status, body) =
        post_delivery(&s, Some(OP), delivery(b"{not json".to_vec(), file.clone())).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], json!("bad_json"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("part 'message' is not JSON: key must be a string at line 1 column 2"),
        "{body}"
    );

    let extra = delivery(message.clone(), file.clone())
        .part("extra", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let (status, body) = post_delivery(&s, Some(OP), extra).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        json!("unexpected part 'extra' (this trigger takes: file, message)")
    );

    // 2 MiB over a 1 MiB limit
    let big = delivery(message.clone(), vec![b'x'; 2 * 1024 * 1024]);
    let (status, body) = post_delivery(&s, Some(OP), big).await;
    assert_eq!(status, 413);
    assert_eq!(
        body["error"]["message"],
        json!("the request body is over the trigger's limit of 1 MiB")
    );

    let r = s.http.get(s.url(TRIGGER_PATH)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = s.http.post(s.url("/no/such/trigger")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // nothing was run or recorded for any of them
    let (_, runs) = s.get("/api/v1/runs", Some(VIEWER)).await;
    assert_eq!(runs["runs"], json!([]));
    assert!(ws.standin.outcome_acks().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn the_trigger_takes_the_credentials_its_flow_names_from_the_environment() {
    // the real binary, with DERMS's credentials in its environment
    let ws = Workspace::new().await;
    let port = support::dead_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .args(ws.project_args())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--no-schedules"])
        .env("FERRY_DERMS_TRIGGER_USER", "derms")
        .env("FERRY_DERMS_TRIGGER_PASSWORD", "derms-secret")
        .env("FERRY_OPERATOR_USER", OP.0)
        .env("FERRY_OPERATOR_PASSWORD", OP.1)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let s = Serving {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        stop: None,
        task: tokio::spawn(async { Ok(()) }),
        http: reqwest::Client::new(),
    };
    let mut up = false;
    for _ in 0..100 {
        if s.http.get(s.url("/readyz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "ferry serve did not start");
    // the operator's credentials do not open a trigger that names its own
    let (status, _) = post_delivery(&s, Some(OP), sample_delivery()).await;
    assert_eq!(status, 401);
    let (status, body) =
        post_delivery(&s, Some(("derms", "derms-secret")), sample_delivery()).await;
    assert_eq!(status, 202, "{body}");
    let run = s.wait_run(body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["outcome"], json!("succeeded"));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn run_now_and_resubmit_under_ferry_and_oic_paths() {
    let ws = Workspace::new().await;
    let s = start(options(&ws)).await;
    // OIC's "submit now", with the version as OIC writes it; the source directory is
    // missing so the run fails
    let path =
        format!("/ic/api/integration/v1/integrations/{FTP_ENROLL}%7C01.23.2000/schedule/jobs");
    let (status, body) = s.post(&path, Some(OP), json!({ "action": "NOW" })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], json!("SUBMITTED"));
    let failed_id = body["id"].as_str().unwrap().to_string();
    let failed = s.wait_run(&failed_id).await;
    assert_eq!(failed["outcome"], json!("failed"));
    assert_eq!(failed["trigger"], json!("manual"));

    // a wrong version, a wrong action, an unknown flow
    let bad =
        format!("/ic/api/integration/v1/integrations/{FTP_ENROLL}%7C02.00.0000/schedule/jobs");
    let (status, body) = s.post(&bad, Some(OP), json!({ "action": "NOW" })).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["error"]["message"],
        json!(format!(
            "flow '{FTP_ENROLL}' is at version 01.23.2000, not 02.00.0000"
        ))
    );
    let (status, _) = s.post(&path, Some(OP), json!({ "action": "LATER" })).await;
    assert_eq!(status, 400);
    // OIC's "pause schedule" and "resume schedule": the flow's pause, submit now refused
    // between them
    let oic = |verb: &str| {
        format!("/ic/api/integration/v1/integrations/{FTP_ENROLL}%7C01.23.2000/schedule/{verb}")
    };
    let (status, body) = s.post(&oic("pause"), Some(OP), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "integration": FTP_ENROLL, "status": "PAUSED" })
    );
    let (status, body) = s.post(&path, Some(OP), json!({ "action": "NOW" })).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("paused")),
        "{body}"
    );
    // the pause shows in the metrics, and the resume
    let paused_line = |v: u8| format!("ferry_flow_paused{{flow=\"{FTP_ENROLL}\"}} {v}");
    let metrics = s.get("/metrics", None).await.1;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.lines().any(|l| l == paused_line(1)), "{metrics}");
    let (status, body) = s.post(&oic("resume"), Some(OP), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("ACTIVATED"));
    let metrics = s.get("/metrics", None).await.1;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.lines().any(|l| l == paused_line(0)), "{metrics}");
    let (status, body) = s
        .post("/api/v1/flows/NO_SUCH_FLOW/runs", Some(OP), json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        json!("unknown flow 'NO_SUCH_FLOW'")
    );
    // a flow only its REST trigger starts cannot be "run now"
    let (status, body) = s
        .post(
            &format!("/api/v1/flows/{EVENT_OUTCOME}/runs"),
            Some(OP),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // fix the cause, resubmit through OIC's path: a new run linked to the failed one
    ws.seed_demo("dacs-ftp/sploutput/DACSEnv/enroll");
    let (status, body) = s
        .post(
            &format!("/ic/api/integration/v1/monitoring/errors/{failed_id}/resubmit"),
            Some(OP),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let second = s.wait_run(body["id"].as_str().unwrap()).await;
    assert_eq!(second["resubmit_of"], json!(failed_id));
    assert_eq!(second["trigger"], json!("resubmit"));
    assert_eq!(second["outcome"], json!("succeeded"), "{second:#}");

    // bulk resubmit: one known run, one unknown
    let (status, body) = s
        .post(
            "/ic/api/integration/v1/monitoring/errors/resubmit",
            Some(OP),
            json!({ "ids": [failed_id, "0000-no-such-run"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], json!("SUBMITTED"));
    assert_eq!(results[1]["status"], json!("FAILED"));
    assert_eq!(results[1]["code"], json!("unknown_run"));
    let third = s
        .wait_run(results[0]["resubmittedAs"].as_str().unwrap())
        .await;
    // nothing left to move: the files were sent by the second run
    assert_eq!(third["outcome"], json!("no_files"));

    // the list filters by flow and outcome
    let (_, runs) = s
        .get(
            &format!("/api/v1/runs?flow={FTP_ENROLL}&outcome=failed"),
            Some(VIEWER),
        )
        .await;
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed_id.as_str()]);
    let (status, body) = s.get("/api/v1/runs?outcome=bogus", Some(VIEWER)).await;
    assert_eq!(status, 400, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn roles_viewer_reads_operator_acts_strangers_nothing() {
    let ws = Workspace::new().await;
    let s = start(options(&ws)).await;
    assert_eq!(s.get("/api/v1/runs", None).await.0, 401);
    assert_eq!(s.get("/api/v1/runs", Some(("viewer", "nope"))).await.0, 401);
    assert_eq!(s.get("/api/v1/runs", Some(VIEWER)).await.0, 200);
    assert_eq!(s.get("/api/v1/flows", Some(VIEWER)).await.0, 200);
    let (status, body) = s
        .post(
            &format!("/api/v1/flows/{FTP_ENROLL}/runs"),
            Some(VIEWER),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], json!("forbidden"));
    // health, readiness and metrics are open
    assert_eq!(s.get("/healthz", None).await.0, 200);
    assert_eq!(s.get("/readyz", None).await.0, 200);
    assert_eq!(s.get("/metrics", None).await.0, 200);
    s.stop().await;
}

/// The metric names the HTTP API's documentation (`docs/http-api.md`) lists for `GET /metrics`.
fn readme_metric_names() -> Vec<String> {
    let readme = std::fs::read_to_string(support::repo().join("docs/http-api.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `GET /metrics` |"))
        .unwrap();
    row.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.starts_with("ferry_"))
        .map(|t| t.split('{').next().unwrap().to_string())
        .collect()
}

/// A fresh server used to expose `ferry_runs_running` alone: the other families appeared
/// on first use, so dashboards and `absent()` alerts saw nothing. Every family the docs
/// list is now there before any run, the loaded flows' label sets at zero.
#[tokio::test]
async fn a_fresh_server_exposes_every_family_the_readme_lists() {
    let ws = Workspace::new().await;
    let s = start(options(&ws)).await;
    let text = s.get("/metrics", None).await.1;
    let text = text.as_str().unwrap();
    let names = readme_metric_names();
    assert!(names.len() >= 10, "{names:?}");
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    for name in &names {
        let found = samples.iter().any(|m| {
            *m == name
                || m.strip_prefix(name.as_str())
                    .is_some_and(|rest| ["_bucket", "_count", "_sum"].contains(&rest))
        });
        assert!(found, "no sample of {name} in\n{text}");
    }
    for line in [
        format!("ferry_runs_total{{flow=\"{FTP_ENROLL}\",outcome=\"failed\"}} 0"),
        format!("ferry_errors_total{{flow=\"{FTP_ENROLL}\",kind=\"connector\"}} 0"),
        format!("ferry_trigger_requests_total{{flow=\"{EVENT_OUTCOME}\",status=\"202\"}} 0"),
        format!("ferry_skipped_ticks_total{{flow=\"{FTP_ENROLL}\"}} 0"),
        format!("ferry_flow_paused{{flow=\"{FTP_ENROLL}\"}} 0"),
        "ferry_runs_running 0".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_count_runs_files_bytes_and_steps() {
    let ws = Workspace::new().await;
    ws.seed_demo("dacs-ftp/sploutput/DACSEnv/enroll");
    let s = start(options(&ws)).await;
    let (status, body) = s
        .post(
            &format!("/api/v1/flows/{FTP_ENROLL}/runs"),
            Some(OP),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    let run = s.wait_run(body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["outcome"], json!("succeeded"));
    let files = run["files"].as_i64().unwrap();
    let bytes = run["bytes"].as_i64().unwrap();
    assert!(files > 0);
    let text = s.text("/metrics").await;
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        line(&format!(
            "ferry_runs_total{{flow=\"{FTP_ENROLL}\",outcome=\"succeeded\"}}"
        )),
        "1"
    );
    assert_eq!(
        line(&format!("ferry_files_moved_total{{flow=\"{FTP_ENROLL}\"}}")),
        files.to_string()
    );
    assert_eq!(
        line(&format!("ferry_bytes_moved_total{{flow=\"{FTP_ENROLL}\"}}")),
        bytes.to_string()
    );
    assert!(text.contains(&format!(
        "ferry_step_duration_seconds_count{{flow=\"{FTP_ENROLL}\",kind=\"list\",result=\"ok\"}} 1"
    )));
    assert!(text.ends_with("# EOF\n"));
    s.stop().await;
}

/// A flow that calls a slow HTTP endpoint on every tick of a one-second schedule.
fn slow_flow(ws: &Workspace) {
    std::fs::write(
        ws.flows_dir().join("slow.yaml"),
        "id: SLOW_TICKS\nname: Slow ticks\nversion: \"1\"\ntrigger:\n  schedule: { cron: \"* * * * * *\" }\nsteps:\n  - id: call\n    invoke:\n      request:\n        connection: slow\n        method: GET\n        path: /slow\n",
    )
    .unwrap();
}

#[tokio::test]
async fn a_tick_while_the_previous_run_goes_on_is_recorded_skipped() {
    // an HTTP endpoint that answers after 2.5 s
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            "done"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut ws = Workspace::new().await;
    ws.set_connection(
        "slow",
        json!({ "kind": "http", "base_url": slow_url, "timeout_secs": 10 }),
    );
    slow_flow(&ws);
    let mut opts = options(&ws);
    opts.schedules = true;
    let s = start(opts).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (_, ticks) = s.get("/api/v1/ticks?flow=SLOW_TICKS", Some(VIEWER)).await;
    let ticks = ticks["ticks"].as_array().unwrap().clone();
    let started: Vec<&Value> = ticks
        .iter()
        .filter(|t| t["status"] == json!("started"))
        .collect();
    let skipped: Vec<&Value> = ticks
        .iter()
        .filter(|t| t["status"] == json!("skipped"))
        .collect();
    assert!(!started.is_empty(), "{ticks:#?}");
    let (_, runs) = s.get("/api/v1/runs?flow=SLOW_TICKS", Some(VIEWER)).await;
    assert!(skipped.len() >= 2, "{ticks:#?} {runs:#}");
    assert!(
        skipped[0]["note"]
            .as_str()
            .unwrap()
            .starts_with("flow 'SLOW_TICKS' is already running (on instance test-instance)"),
        "{:?}",
        skipped[0]
    );
    // never two runs at once: each started run ended before the next began
    let (_, runs) = s.get("/api/v1/runs?flow=SLOW_TICKS", Some(VIEWER)).await;
    let mut spans: Vec<(String, String)> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["finished_at"].is_string())
        .map(|r| {
            (
                r["started_at"].as_str().unwrap().to_string(),
                r["finished_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping runs: {spans:?}");
    }
    let metrics = s.text("/metrics").await;
    // the family is there at zero from the start: the count must have moved
    let skipped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_skipped_ticks_total{flow=\"SLOW_TICKS\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(skipped.is_some_and(|n| n >= 1), "{metrics}");
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_a_valid_one_swapped_in() {
    let ws = Workspace::new().await;
    let mut opts = options(&ws);
    opts.watch = true;
    let s = start(opts).await;
    let status = || async { s.get("/api/v1/status", Some(VIEWER)).await.1 };
    assert_eq!(status().await["generation"], json!(1));

    // a broken flow file: the old flows keep running, the failure is reported with its place
    let broken = ws.flows_dir().join("broken.yaml");
    std::fs::write(
        &broken,
        "id: BROKEN\nname: Broken\nversion: \"1\"\nsteps:\n  - id: x\n    lisst: {}\n",
    )
    .unwrap();
    let mut failure = Value::Null;
    for _ in 0..100 {
        failure = status().await["reload_failure"].clone();
        if !failure.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = failure["diagnostics"].as_array().expect("a reload failure");
    let first = lines[0].as_str().unwrap();
    assert!(first.contains("broken.yaml:6:5"), "{first}");
    assert!(first.contains("unknown field 'lisst'"), "{first}");
    assert_eq!(status().await["generation"], json!(1));
    let (code, _) = s
        .post(
            &format!("/api/v1/flows/{FTP_ENROLL}/runs"),
            Some(OP),
            json!({}),
        )
        .await;
    assert_eq!(code, 202, "the old flows still run");

    // fixed: swapped in, and the new flow is there
    std::fs::write(
        &broken,
        "id: FIXED\nname: Fixed\nversion: \"1\"\ntrigger: { manual: true }\nsteps:\n  - id: x\n    end: { outcome: succeeded }\n",
    )
    .unwrap();
    let mut st = Value::Null;
    for _ in 0..100 {
        st = status().await;
        if st["generation"] == json!(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(st["generation"], json!(2), "{st:#}");
    assert!(st["reload_failure"].is_null());
    // the new flow's metrics are there at zero before it runs
    let metrics = s.get("/metrics", None).await.1;
    let metrics = metrics.as_str().unwrap();
    for line in [
        "ferry_runs_total{flow=\"FIXED\",outcome=\"failed\"} 0\n",
        "ferry_step_duration_seconds_count{flow=\"FIXED\",kind=\"end\",result=\"ok\"} 0\n",
        "ferry_reloads_total{result=\"ok\"} 1\n",
        "ferry_reloads_total{result=\"invalid\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let (code, body) = s
        .post("/api/v1/flows/FIXED/runs", Some(OP), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
    let run = s.wait_run(body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["outcome"], json!("succeeded"));
    s.stop().await;
}

#[tokio::test]
async fn an_open_api_is_refused_on_a_public_address() {
    let ws = Workspace::new().await;
    let mut opts = options(&ws);
    opts.users = Users::default();
    opts.listen = "0.0.0.0:0".parse().unwrap();
    let err = serve(opts, async {}, |_| {}).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no API users are configured (FERRY_OPERATOR_USER / FERRY_OPERATOR_PASSWORD): an open API is only served on a loopback address, not 0.0.0.0:0"
    );
}

/// Issue 9: staging folders of deliveries that a killed ferry never acknowledged are deleted
/// when serve starts, once idle for longer than an hour; younger ones are kept.
#[tokio::test]
async fn serve_start_sweeps_stale_delivery_staging_folders() {
    let ws = Workspace::new().await;
    let incoming = ws.path().join("state/incoming");
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    let stale = incoming.join("ferry-delivery-KILLED");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("part-0"), b"a delivery nobody acknowledged").unwrap();
    std::fs::File::open(stale.join("part-0"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let fresh = incoming.join("ferry-delivery-RECENT");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("part-0"), b"under way").unwrap();

    // the kept files of a delivery whose run was never recorded (killed between keeping
    // them and the commit), idle for two hours; a recent one may be another process's
    let inputs = ws.path().join("state/inputs");
    let orphan = inputs.join("0190a3b2-0000-7000-8000-000000000001");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("file"), b"never acknowledged").unwrap();
    for p in [orphan.join("file"), orphan.clone()] {
        std::fs::File::open(&p).unwrap().set_modified(old).unwrap();
    }
    let recent = inputs.join("0190a3b2-0000-7000-8000-000000000002");
    std::fs::create_dir_all(&recent).unwrap();
    std::fs::write(recent.join("file"), b"being recorded").unwrap();
    // not named like a run: not ours
    let other = inputs.join("notes.d");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::File::open(&other)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let mut opts = options(&ws);
    // staged as files: kept under inputs/
    opts.limits.held_delivery_bytes = 0;
    let s = start(opts).await;
    assert!(!stale.exists(), "the stale staging folder is still there");
    assert!(fresh.join("part-0").exists(), "a recent one was deleted");
    assert!(
        !orphan.exists(),
        "the unrecorded run's input is still there"
    );
    assert!(
        recent.join("file").exists(),
        "a recent input folder was deleted"
    );
    assert!(other.exists(), "a folder not named like a run was deleted");
    // a recorded run's kept input stays, however old, through a restart
    let (status, body) = post_delivery(&s, Some(OP), sample_delivery()).await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    s.wait_run(&run_id).await;
    s.stop().await;
    let kept = inputs.join(&run_id);
    for p in std::fs::read_dir(&kept).unwrap() {
        std::fs::File::open(p.unwrap().path())
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    std::fs::File::open(&kept)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut opts = options(&ws);
    opts.limits.held_delivery_bytes = 0;
    let s = start(opts).await;
    assert!(
        kept.join("file").exists(),
        "a recorded run's input was swept"
    );
    s.stop().await;
}

/// A held delivery's file part read by its path (a CSV loop) has its copy made for the
/// reader, from the bytes held in memory; a put after it writes the same bytes.
#[tokio::test]
async fn a_held_part_read_by_its_path_is_copied_for_the_reader() {
    let ws = Workspace::new().await;
    std::fs::write(
        ws.flows_dir().join("held_csv.yaml"),
        "id: held-csv\nname: Held CSV\nversion: '1'\ntrigger:\n  rest:\n    method: POST\n    path: /hooks/held-csv\n    parts:\n      file: { kind: file }\nsteps:\n  - id: rows\n    for_each:\n      csv: { file: \"{{ input.file.path }}\", columns: [id, text] }\n      as: row\n      steps:\n        - id: row\n          transform: { fields: { id: \"{{ row.fields.id }}\" } }\n  - id: put\n    invoke:\n      put: { connection: ouai_os, location: held/out, name: \"{{ steps.rows.count }}-rows.csv\", file: \"{{ input.file.path }}\" }\n",
    )
    .unwrap();
    let s = start(options(&ws)).await;
    let csv = "id,text\n1,one\n2,two\n3,three\n";
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(csv.as_bytes().to_vec()).file_name("in.csv"),
    );
    let (status, body) = s
        .send(
            s.http.post(s.url("/hooks/held-csv")).multipart(form),
            Some(OP),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_string();
    let run = s.wait_run(&run_id).await;
    assert_eq!(run["outcome"], json!("succeeded"), "{run:#}");
    assert_eq!(
        ws.read_file("ouai-os", "held/out", "3-rows.csv"),
        Some(csv.as_bytes().to_vec())
    );
    // held, not staged: nothing under inputs/; the reader's copy is gone with the run
    let state = ws.path().join("state");
    assert!(!state.join("inputs").join(&run_id).exists());
    assert!(!state.join("input-copies").join(&run_id).exists());
    s.stop().await;
}
