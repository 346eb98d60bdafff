//! The monitoring page in a real browser: the real `ferry serve` binary over a copy of the
//! shipped flows, a scheduled file flow run by hand while its source directory is missing
//! (it fails), the directory then filled, and Chromium — driven by Playwright
//! (`tests/browser/ui.mjs`), in the time zone of Auckland — finding the failed run with its
//! time said in that zone, pressing Resubmit, following the new run until it succeeds, and
//! following the dashboard's count of failures back to the failed run.
//!
//! Needs Debian's Chromium (`apt-get install -y chromium`) and the script's package
//! (`npm ci --prefix tests/browser`); `.ci/run` installs both. Without them the test fails
//! and says so.
#![allow(clippy::unwrap_used)]

#[path = "support/project.rs"]
mod project;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Offset as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A scheduled file flow of the shipped project that allows "run now".
const FLOW: &str = "OUTL-BA-DACS_OUAI_FTP_ENROLL";
const USER: &str = "operator";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The browser's time zone: never UTC, and with daylight saving time.
const BROWSER_TZ: &str = "Pacific/Auckland";

/// A running `ferry serve`, stopped when dropped, with what it logged.
struct Served {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Served {
    /// Starts `ferry serve` in `dir` (flows in `dir/flows`, local directories under
    /// `dir/data`) on a free port, with an operator whose password is `password`.
    async fn start(dir: &Path, password: &str) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["serve", "--flows", "flows", "--listen", "127.0.0.1:0"])
            .args(["--data", "state", "--no-schedules", "--no-watch"])
            .current_dir(dir)
            .env("FERRY_DATA", dir.join("data"))
            .env("FERRY_OPERATOR_USER", USER)
            .env("FERRY_OPERATOR_PASSWORD", password)
            .env("FERRY_DERMS_TRIGGER_USER", "derms")
            .env("FERRY_DERMS_TRIGGER_PASSWORD", "derms-secret")
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("ferry serve did not start:\n{}", log.lock().unwrap()))
                .unwrap()
                .unwrap_or_else(|| panic!("ferry serve exited:\n{}", log.lock().unwrap()));
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(url) = rest.split_whitespace().next()
            {
                break url.to_string();
            }
        };
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Served { child, url, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// What the test needs and how to get it, or `None` when everything is there.
fn missing_tools(script_dir: &Path) -> Option<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!(
            "{CHROMIUM} is missing: install Debian's Chromium (`apt-get update && apt-get install -y chromium`)"
        ));
    }
    if !script_dir.join("node_modules/playwright-core").is_dir() {
        missing.push(
            "playwright-core is not installed: run `npm ci --prefix tests/browser` (it downloads no browser)".into(),
        );
    }
    (!missing.is_empty()).then(|| missing.join("\n"))
}

/// Where screenshots go: `<target dir>/ui-screenshots`.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots")
}

/// `GET {path}` of the JSON API, as the operator.
async fn api(served: &Served, password: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", served.url))
        .basic_auth(USER, Some(password))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until run `id` has ended; returns its JSON.
async fn finished(served: &Served, password: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = api(served, password, &format!("/api/v1/runs/{id}")).await;
        if run["outcome"] != "running" {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not end:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_resubmits_a_failed_run_from_the_monitoring_page() {
    let script_dir = project::repo().join("tests/browser");
    if let Some(what) = missing_tools(&script_dir) {
        panic!("the browser test cannot run:\n{what}\n(.ci/run installs both)");
    }
    let dir = tempfile::Builder::new()
        .prefix("ferry-browser-")
        .tempdir()
        .unwrap();
    project::copy_dir(&project::repo().join("flows"), &dir.path().join("flows"));
    project::copy_dir(
        &project::repo().join("lookups"),
        &dir.path().join("lookups"),
    );
    // the embedded connections read local directories under $FERRY_DATA: none exists yet
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let password = format!("pw-{}", std::process::id());
    let served = Served::start(dir.path(), &password).await;

    // a run that fails: the flow's source directory is missing
    let started: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/flows/{FLOW}/runs", served.url))
        .basic_auth(USER, Some(&password))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed_id = started["run_id"].as_str().unwrap().to_string();
    let failed = finished(&served, &password, &failed_id).await;
    assert_eq!(failed["outcome"], "failed", "{failed:#}");

    // the cause goes away: the directory appears, with a file to move
    let source = data.join("dacs-ftp/sploutput/DACSEnv/enroll");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(
        source.join("ENROLL_SYNC_20261129.csv"),
        "id,program\n1,peak\n",
    )
    .unwrap();

    let shots = screenshot_dir();
    let began = Instant::now();
    let mut node = Command::new("node");
    node.arg(script_dir.join("ui.mjs"))
        .current_dir(&script_dir)
        .env("FERRY_URL", &served.url)
        .env("FERRY_USER", USER)
        .env("FERRY_PASSWORD", &password)
        .env("FAILED_RUN", &failed_id)
        .env("SCREENSHOT_DIR", &shots)
        .env("BROWSER_TZ", BROWSER_TZ)
        .env("PAUSE_FLOW", FLOW)
        .env("SEARCH_TEXT", "enroll_sync_2026")
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), node.output())
        .await
        .expect("the browser script did not finish in 3 minutes")
        .expect("node runs (Node.js is on the machine)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("browser script: {:.1}s", began.elapsed().as_secs_f64());
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the script printed no result:\n{stdout}\n{stderr}"));
    assert!(
        out.status.success(),
        "the browser script failed: {}\n{stderr}\nserver log:\n{}",
        report["error"].as_str().unwrap_or(""),
        served.log()
    );

    // what the browser saw
    assert!(
        report["listed_error"]
            .as_str()
            .unwrap()
            .contains("not found: directory"),
        "{report:#}"
    );
    assert!(
        report["error_message"]
            .as_str()
            .unwrap()
            .contains("not found: directory"),
        "{report:#}"
    );
    assert_eq!(report["resubmit_of"], failed_id.as_str());
    assert_eq!(
        report["resubmit_of_label"], "Resubmitted from",
        "{report:#}"
    );
    assert_eq!(
        report["resubmitted_as_label"], "Resubmitted as",
        "{report:#}"
    );
    let took = report["took"].as_str().unwrap();
    assert!(
        took.ends_with(" ms") || took.ends_with(" s") || took.ends_with(" min"),
        "a duration in human units: {took}"
    );

    // the failed run's start, said by the script in the browser's zone
    let started = &report["started"];
    let at = chrono::DateTime::parse_from_rfc3339(started["datetime"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(started["datetime"], failed["started_at"], "{report:#}");
    let local = at.with_timezone(&chrono_tz::Pacific::Auckland);
    let offset = local.offset().fix().local_minus_utc() / 3600;
    assert!(offset == 12 || offset == 13, "{offset}");
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    assert_eq!(
        started["title"],
        format!("{} GMT+{offset} · {utc}", local.format("%Y-%m-%d %H:%M:%S")),
        "{report:#}"
    );
    assert_eq!(started["zone_label"], format!("times in {BROWSER_TZ}"));
    let text = started["text"].as_str().unwrap();
    assert!(text == "just now" || text.ends_with(" ago"), "{text}");
    // with the browser's clock 26 hours on: the browser's calendar days, in its zone
    let later = (at + chrono::Duration::hours(26)).with_timezone(&chrono_tz::Pacific::Auckland);
    let expected = match (later.date_naive() - local.date_naive()).num_days() {
        1 => format!("yesterday {}", local.format("%H:%M")),
        _ => local.format("%a %H:%M").to_string(),
    };
    assert_eq!(report["started_a_day_later"], expected, "{report:#}");
    // without the script, the server's text: UTC, relative
    let bare = &report["started_without_script"];
    assert_eq!(bare["title"], utc.as_str(), "{report:#}");
    assert_eq!(bare["zone_label"], "times in UTC");
    let text = bare["text"].as_str().unwrap();
    assert!(text == "just now" || text.ends_with(" ago"), "{text}");

    // the dashboard's failures of the last 24 hours lead to the failed run
    assert_eq!(
        report["failures_glance"],
        serde_json::json!([[FLOW, "1"]]),
        "{report:#}"
    );
    assert_eq!(
        report["failures_link"],
        format!("/ui/runs?flow={FLOW}&outcome=failed&since=24h")
    );
    assert_eq!(report["failures_listed"], serde_json::json!([failed_id]));
    assert_eq!(report["runs_listed"], 2, "{report:#}");
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert_eq!(report["external_requests"], serde_json::json!([]));
    assert_eq!(report["console_errors"], serde_json::json!([]));
    let flows = api(&served, &password, "/api/v1/flows").await;
    let flows = flows["flows"].as_array().unwrap();
    // a flow without a trigger is a child flow, in its own section
    let children = flows
        .iter()
        .filter(|f| f["manual"] == false && f["schedule"].is_null() && f["rest"].is_null())
        .count();
    assert!(children > 0, "the shipped flows have child flows");
    assert_eq!(report["child_flows_listed"], children, "{report:#}");
    assert_eq!(
        report["flows_listed"].as_u64().unwrap() as usize,
        flows.len() - children,
        "the dashboard lists every other flow as top-level"
    );
    for shot in report["screenshots"].as_array().unwrap() {
        let path = Path::new(shot.as_str().unwrap());
        assert!(
            path.metadata().unwrap().len() > 10_000,
            "{}",
            path.display()
        );
    }

    // pause with a reason, then resume, by the dashboard's buttons
    assert_eq!(
        report["paused_row"],
        serde_json::json!({
            "badge": "paused",
            "reason": "DACS maintenance window",
            "run_now_buttons": 0,
            "class": "bad flow-paused",
        }),
        "{report:#}"
    );
    let paused = &report["paused_api"];
    assert_eq!(
        (&paused["paused"], &paused["paused_by"], &paused["reason"]),
        (
            &Value::Bool(true),
            &Value::from(USER),
            &Value::from("DACS maintenance window")
        ),
        "{report:#}"
    );
    assert_eq!(report["run_now_while_paused"]["status"], 409);
    assert_eq!(
        report["run_now_while_paused"]["body"]["error"]["code"],
        "paused"
    );
    assert_eq!(
        report["resumed_row"],
        serde_json::json!({ "paused": 0, "run_now_buttons": 1 }),
        "{report:#}"
    );
    assert_eq!(report["resumed_api"]["paused"], false, "{report:#}");
    assert!(report["resumed_api"].get("paused_by").is_none());
    // the search box finds the run that moved the file (and only it)
    let new_id = report["resubmitted"].as_str().unwrap();
    assert_eq!(
        report["search_found"],
        serde_json::json!([new_id]),
        "{report:#}"
    );
    assert_eq!(report["search_box"], "enroll_sync_2026");
    assert!(
        report["search_url"]
            .as_str()
            .unwrap()
            .contains("search=enroll_sync_2026"),
        "{report:#}"
    );

    // and what the server recorded
    let run = finished(&served, &password, new_id).await;
    assert_eq!(run["resubmit_of"], failed_id.as_str(), "{run:#}");
    assert_eq!(run["trigger"], "resubmit");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let original = api(&served, &password, &format!("/api/v1/runs/{failed_id}")).await;
    assert_eq!(original["resubmitted_as"], serde_json::json!([new_id]));
    // the file really moved, and the source was marked sent
    assert!(
        data.join("ouai-os/ouainamespace/OUAIEnrollFolder/ENROLL_SYNC_20261129.csv")
            .is_file()
    );
    assert!(source.join("Sent-ENROLL_SYNC_20261129.csv").is_file());
}
