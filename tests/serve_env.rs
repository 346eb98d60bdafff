//! `ferry serve` configured the way the packaged service is: from the environment alone
//! (`/etc/ferry/ferry.env`). The real binary started with no option but `serve`; its
//! `--help` and man page naming every variable; the refusal to start without trigger
//! credentials naming the file to edit; and `packaging/ferry.env` naming every variable the
//! shipped flows and connections read, so it cannot drift from them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::CommandFactory as _;
use serde_json::Value;
use support::{Workspace, dead_port, repo};

const OP: (&str, &str) = ("op", "op-secret");
const EVENT_OUTCOME: &str = "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR";

/// The names of the environment variables of `ferry serve`'s options, as clap declares them
/// (the global options among them).
fn serve_env_names() -> Vec<String> {
    let mut cli = ferry::cli::Cli::command();
    cli.build();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    serve
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `ferry serve` with every FERRY_* and OTEL_* variable of the test process removed, then
/// `env`, in `dir`.
fn serve_cmd(dir: &Path, env: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("FERRY_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn sources_env(ws: &Workspace) -> Vec<(&'static str, String)> {
    vec![
        ("FERRY_FLOWS", ws.flows_dir().display().to_string()),
        ("FERRY_LOOKUPS", ws.lookups_dir().display().to_string()),
        (
            "FERRY_CONNECTIONS",
            ws.connections_path().display().to_string(),
        ),
        (
            "FERRY_STATE_DIR",
            ws.path().join("state").display().to_string(),
        ),
    ]
}

#[tokio::test]
async fn serve_runs_from_environment_variables_alone() {
    let ws = Workspace::new().await;
    let port = dead_port();
    let mut env = sources_env(&ws);
    env.extend([
        ("FERRY_LISTEN", format!("127.0.0.1:{port}")),
        ("FERRY_ALLOWED_HOSTS", "ferry.test,other.test:8443".into()),
        ("FERRY_INSTANCE", "from-env".into()),
        ("FERRY_WORKERS", "3".into()),
        ("FERRY_RETENTION", "30d".into()),
        ("FERRY_GRACE", "5s".into()),
        ("FERRY_LEASE", "20s".into()),
        ("FERRY_NO_SCHEDULES", "1".into()),
        ("FERRY_NO_WATCH", "yes".into()),
        ("FERRY_HEADER_TIMEOUT", "10".into()),
        ("FERRY_BODY_IDLE_TIMEOUT", "30".into()),
        ("FERRY_KEEPALIVE_TIMEOUT", "5".into()),
        ("FERRY_MAX_CONNECTIONS", "64".into()),
        ("FERRY_MAX_CONNECTIONS_PER_ADDRESS", "16".into()),
        ("FERRY_REQUEST_TIMEOUT", "300".into()),
        ("FERRY_MAX_JSON_KIB", "1".into()),
        ("FERRY_MAX_FILE_KIB", "4096".into()),
        ("FERRY_OPERATOR_USER", OP.0.into()),
        ("FERRY_OPERATOR_PASSWORD", OP.1.into()),
        ("FERRY_DERMS_TRIGGER_USER", "derms".into()),
        ("FERRY_DERMS_TRIGGER_PASSWORD", "derms-secret".into()),
    ]);
    // the working directory holds no flows: everything comes from the environment
    let cwd = tempfile::tempdir().unwrap();
    let log = ws.path().join("serve.log");
    let mut child = serve_cmd(cwd.path(), &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "ok\n");
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "ferry serve exited ({status}) before answering /healthz on port {port}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz on port {port}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // FERRY_ALLOWED_HOSTS, split at commas: both names pass, another gets 421
    let status = |host: &'static str| {
        http.get(format!("{base}/api/v1/status"))
            .basic_auth(OP.0, Some(OP.1))
            .header("host", host)
            .send()
    };
    let r = status("ferry.test").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    // FERRY_INSTANCE
    assert_eq!(body["instance"], "from-env", "{body:#}");
    // FERRY_WORKERS: the runtime's threads
    assert_eq!(body["workers"], 3, "{body:#}");
    assert_eq!(status("other.test:8443").await.unwrap().status(), 200);
    assert_eq!(status("evil.test").await.unwrap().status(), 421);
    // FERRY_MAX_JSON_KIB=1: a 2 KiB JSON body is refused
    let ids: Vec<String> = (0..100).map(|i| format!("run-{i:016}")).collect();
    let r = http
        .post(format!(
            "{base}/ic/api/integration/v1/monitoring/errors/resubmit"
        ))
        .basic_auth(OP.0, Some(OP.1))
        .header("host", "ferry.test")
        .json(&serde_json::json!({ "ids": ids }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // FERRY_STATE_DIR: the run history is there
    let state: Vec<_> = std::fs::read_dir(ws.path().join("state"))
        .unwrap()
        .collect();
    assert!(!state.is_empty(), "nothing in FERRY_STATE_DIR");
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "serve wrote into its working directory"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn serve_help_and_man_page_name_every_environment_variable() {
    let names = serve_env_names();
    for expected in [
        "FERRY_FLOWS",
        "FERRY_LOOKUPS",
        "FERRY_CONNECTIONS",
        "FERRY_LISTEN",
        "FERRY_STATE_DIR",
        "FERRY_DATABASE_URL",
        "FERRY_INSTANCE",
        "FERRY_GRACE",
        "FERRY_LEASE",
        "FERRY_RETENTION",
        "FERRY_NO_SCHEDULES",
        "FERRY_NO_WATCH",
        "FERRY_ALLOWED_HOSTS",
        "FERRY_HEADER_TIMEOUT",
        "FERRY_BODY_IDLE_TIMEOUT",
        "FERRY_KEEPALIVE_TIMEOUT",
        "FERRY_MAX_CONNECTIONS",
        "FERRY_MAX_CONNECTIONS_PER_ADDRESS",
        "FERRY_REQUEST_TIMEOUT",
        "FERRY_MAX_JSON_KIB",
        "FERRY_MAX_FILE_KIB",
        "FERRY_WORKERS",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    // every visible option of serve has one (the hidden --heartbeat is for tests)
    let cli = ferry::cli::Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let without: Vec<String> = serve
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_long().is_some() && a.get_env().is_none())
        .map(|a| a.get_id().to_string())
        .collect();
    assert!(
        without.is_empty(),
        "options of serve without a variable: {without:?}"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--help"])
        .env_remove("FERRY_DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for n in &names {
        // `[env: NAME=value]`, or `[env: NAME]` for a secret (hide_env_values)
        assert!(
            help.contains(&format!("[env: {n}=")) || help.contains(&format!("[env: {n}]")),
            "{n} not in:\n{help}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = std::fs::read_to_string(dir.path().join("ferry-serve.1")).unwrap();
    for n in &names {
        // "May also be specified with the \fBFERRY_LISTEN\fR environment variable."
        assert!(
            man.contains(&format!("\\fB{n}\\fR environment variable")),
            "{n} not in ferry-serve.1:\n{man}"
        );
    }
}

/// The refusal message of a serve whose flow's trigger credentials are unset, and its exit
/// code.
async fn refusal(ws: &Workspace, extra: &[(&str, String)]) -> (Option<i32>, String) {
    let mut env = sources_env(ws);
    env.push(("FERRY_LISTEN", "127.0.0.1:0".into()));
    env.push(("FERRY_NO_SCHEDULES", "true".into()));
    env.push(("FERRY_NO_WATCH", "true".into()));
    env.extend(extra.iter().cloned());
    let out = tokio::time::timeout(Duration::from_secs(60), serve_cmd(ws.path(), &env).output())
        .await
        .expect("serve exits")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn refusal_without_trigger_credentials_says_where_to_set_them() {
    let ws = Workspace::new().await;
    let path = ws.flows_dir().join("event_outcome.yaml");
    let head = format!(
        "error: flow '{EVENT_OUTCOME}' ({}) takes its trigger's credentials from FERRY_DERMS_TRIGGER_USER and FERRY_DERMS_TRIGGER_PASSWORD, but",
        path.display()
    );
    let tail = "(or remove `basic_auth` to use the operator's)\n";

    // as the packaged service runs it: the unit names its environment file
    let (code, stderr) = refusal(&ws, &[("FERRY_ENV_FILE", "/etc/ferry/ferry.env".into())]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{head} FERRY_DERMS_TRIGGER_USER and FERRY_DERMS_TRIGGER_PASSWORD are not set or empty: set FERRY_DERMS_TRIGGER_USER and FERRY_DERMS_TRIGGER_PASSWORD in /etc/ferry/ferry.env {tail}"
        )
    );

    // by hand: the environment, one variable missing
    let (code, stderr) = refusal(
        &ws,
        &[
            ("FERRY_DERMS_TRIGGER_USER", "derms".into()),
            ("FERRY_DERMS_TRIGGER_PASSWORD", String::new()),
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{head} FERRY_DERMS_TRIGGER_PASSWORD is not set or empty: set FERRY_DERMS_TRIGGER_PASSWORD in the environment of `ferry serve` {tail}"
        )
    );
}

/// Every variable a file reads: `${NAME…}` anywhere but in comment lines, and the values of
/// keys ending in `_env`.
fn variables_read(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for (i, _) in line.match_indices("${") {
            let name: String = line[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                out.insert(name);
            }
        }
        // `key_env: NAME` and `{ …, key_env: NAME }`
        for part in line.split(['{', ',', '}']) {
            let Some((key, value)) = part.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_start_matches("- ");
            if key.ends_with("_env") {
                out.insert(value.trim().trim_matches(['"', '\'']).to_string());
            }
        }
    }
    out
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

#[test]
fn packaged_env_file_names_every_variable_ferry_and_the_shipped_files_read() {
    let env_text = std::fs::read_to_string(repo().join("packaging/ferry.env")).unwrap();
    // `NAME=` and `#NAME=`: named, set or shown commented out
    let named: BTreeSet<String> = env_text
        .lines()
        .filter_map(|l| l.trim_start_matches('#').split_once('='))
        .map(|(k, _)| k.to_string())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let set: BTreeSet<&str> = env_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();

    let mut files = Vec::new();
    for dir in ["flows", "lookups", "examples/connections"] {
        yaml_files(&repo().join(dir), &mut files);
    }
    let mut missing = Vec::new();
    let mut trigger_credentials = BTreeSet::new();
    let mut found = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for v in variables_read(&text) {
            found.insert(v.clone());
            if !named.contains(&v) {
                missing.push(format!("{v} ({})", f.display()));
            }
        }
        // a flow's trigger credentials (`basic_auth` under `trigger.rest`): serve refuses to
        // start without them, so the file sets them (empty), for the operator to fill in
        if text.contains("\ntrigger:") {
            for line in text.lines() {
                for key in ["username_env:", "password_env:"] {
                    if let Some(v) = line.trim().strip_prefix(key) {
                        trigger_credentials.insert(v.trim().to_string());
                    }
                }
            }
        }
    }
    // the scan finds each kind of reference: `${VAR:-default}`, `${VAR}` in a string,
    // `password_env:` in an inline map, `*_env:` on its own line; not `${2}` in a regex
    for v in [
        "FERRY_DATA",
        "DACS_FTP_HOST",
        "DRMS_PASSWORD",
        "DACS_S3_SECRET_ACCESS_KEY",
        "FERRY_DERMS_TRIGGER_PASSWORD",
    ] {
        assert!(found.contains(v), "{v} not found in {found:?}");
    }
    assert!(
        !found
            .iter()
            .any(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    );
    assert!(trigger_credentials.contains("FERRY_DERMS_TRIGGER_USER"));
    for v in &trigger_credentials {
        assert!(
            set.contains(v.as_str()),
            "{v} is not set (uncommented) in packaging/ferry.env"
        );
    }
    // every option of serve, the API users, logs and traces
    let mut ferry_own = serve_env_names();
    ferry_own.extend(
        [
            "FERRY_OPERATOR_USER",
            "FERRY_OPERATOR_PASSWORD",
            "FERRY_VIEWER_USER",
            "FERRY_VIEWER_PASSWORD",
            "FERRY_LOG",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .map(String::from),
    );
    for v in ferry_own {
        if !named.contains(&v) {
            missing.push(format!("{v} (ferry serve)"));
        }
    }
    assert!(
        missing.is_empty(),
        "packaging/ferry.env does not name: {missing:#?}"
    );
}
