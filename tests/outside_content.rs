//! Diagnostics never quote content from outside the flow directory (issue 20, point 9). A
//! `.yaml` link in a flow or lookups directory, or a connections file found there, that
//! resolves to a file elsewhere (`/etc/passwd`, a file of secrets) and does not load is
//! reported by the link's name, line and column and its code, with nothing of its content:
//! no message quoting it, no source line, no path into the document, no hint listing its
//! keys. Checked through `ferry validate` (human and JSON), `ferry run`, `ferry serve` at
//! start, and a hot reload's `/api/v1/status` and monitoring page.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const OP: (&str, &str) = ("op", "op-secret");

const FLOW: &str = "id: ok\nname: OK\nversion: '1'\ntrigger: { manual: true }\nsteps:\n  - id: a\n    end: { outcome: succeeded }\n";

/// What the outside files hold: each line has a `SECRET` marker.
const OUTSIDE: &[(&str, &str)] = &[
    ("syntax.yaml", "id: [unclosed SECRET-1\n  x: y\n"),
    ("keys.yaml", "password: SECRET-2\nsteps: [SECRET-3]\n"),
    ("lookup.yaml", "id: SECRET-4\nrows: [ {a: SECRET-5} ]\n"),
    ("conns.yaml", "connections:\n  x: { kind: SECRET-6 }\n"),
];

/// The diagnostics expected, by where they are: each names its file, line and column.
const PLACES: &[&str] = &[
    "flows/syntax.yaml:1:5",
    "flows/keys.yaml:1:1",
    "flows/keys.yaml:2:9",
    "lookups/leak.yaml:1:1",
    "lookups/leak.yaml:2:9",
];

const HIDDEN: &str =
    "this file resolves outside the flow, lookup and connections directories and does not load";

struct Project {
    dir: tempfile::TempDir,
    outside: tempfile::TempDir,
}

impl Project {
    /// A flow directory with a valid flow, a lookups directory and a connections file in
    /// the project directory; the files of secrets in another directory.
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for (name, text) in OUTSIDE {
            std::fs::write(outside.path().join(name), text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("flows")).unwrap();
        std::fs::create_dir_all(dir.path().join("lookups")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("flows/ok.yaml"), FLOW).unwrap();
        std::fs::write(
            dir.path().join("connections.yaml"),
            format!(
                "connections:\n  files: {{ kind: local, root: {} }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        Project { dir, outside }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Links the outside files in: two flows, a lookup table.
    fn link(&self) {
        let o = |n: &str| self.outside.path().join(n);
        symlink(o("syntax.yaml"), self.path().join("flows/syntax.yaml")).unwrap();
        symlink(o("keys.yaml"), self.path().join("flows/keys.yaml")).unwrap();
        symlink(o("lookup.yaml"), self.path().join("lookups/leak.yaml")).unwrap();
    }

    /// Links the outside connections file in as the flow directory's own.
    fn link_connections(&self) {
        symlink(
            self.outside.path().join("conns.yaml"),
            self.path().join("flows/connections.yaml"),
        )
        .unwrap();
    }

    fn ferry(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(self.path())
            .env("FERRY_DATA", self.path().join("state"))
            .env_remove("FERRY_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn serve_cmd(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--no-schedules"])
            .args(["--flows", "flows", "--lookups", "lookups"])
            .args(["--connections", "connections.yaml"])
            .arg("--data")
            .arg(self.path().join("state"))
            .current_dir(self.path())
            .env("FERRY_OPERATOR_USER", OP.0)
            .env("FERRY_OPERATOR_PASSWORD", OP.1)
            .env("FERRY_LOG", "ferry=info")
            .stdin(Stdio::null());
        cmd
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains("SECRET"),
        "{what} quotes an outside file:\n{text}"
    );
}

#[test]
fn ferry_validate_names_outside_files_and_places_without_their_content() {
    let p = Project::new();
    p.link();
    p.link_connections();
    let o = p.ferry(&["validate", "flows", "--lookups", "lookups"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_no_secret("ferry validate", &out);
    for place in PLACES.iter().chain(&["flows/connections.yaml:2:14"]) {
        assert!(out.contains(&format!("  --> {place}\n")), "{place}:\n{out}");
    }
    assert!(
        out.contains(&format!("error[syntax]: {HIDDEN} (syntax); its content is not shown\n  --> flows/syntax.yaml:1:5\n\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("error[unknown-kind]: {HIDDEN} (unknown-kind); its content is not shown\n  --> flows/connections.yaml:2:14\n")),
        "{out}"
    );

    // the same as JSON: file, line and column kept
    let o = p.ferry(&[
        "validate",
        "flows",
        "--lookups",
        "lookups",
        "--format",
        "json",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_no_secret("ferry validate --format json", &out);
    let diags: Vec<Value> = serde_json::from_str(&out).unwrap();
    let places: Vec<String> = diags
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}",
                d["file"].as_str().unwrap(),
                d["line"],
                d["column"]
            )
        })
        .collect();
    for place in PLACES {
        assert!(places.iter().any(|p| p == place), "{place}: {places:?}");
    }

    // a flow file given alone, and the file itself
    let o = p.ferry(&["validate", "flows/keys.yaml", "--lookups", "lookups"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_no_secret("ferry validate FILE", &out);
    assert!(out.contains("  --> flows/keys.yaml:2:9\n"), "{out}");

    // what lies inside the flow directory is still quoted, source line and all
    std::fs::write(
        p.path().join("flows/inside.yaml"),
        "id: [unclosed INSIDE\n  x: y\n",
    )
    .unwrap();
    let o = p.ferry(&["validate", "flows/inside.yaml", "--lookups", "lookups"]);
    let out = text(&o);
    assert!(out.contains("1 | id: [unclosed INSIDE\n"), "{out}");
}

#[test]
fn ferry_run_names_outside_files_and_places_without_their_content() {
    let p = Project::new();
    p.link();
    let o = p.ferry(&[
        "run",
        "ok",
        "--flows",
        "flows",
        "--lookups",
        "lookups",
        "--connections",
        "connections.yaml",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_no_secret("ferry run", &out);
    for place in PLACES {
        assert!(out.contains(place), "{place}:\n{out}");
    }
    assert!(out.contains(HIDDEN), "{out}");
}

#[tokio::test]
async fn ferry_serve_names_outside_files_and_places_without_their_content() {
    // at start: refused, naming the places
    let p = Project::new();
    p.link();
    let o = tokio::time::timeout(Duration::from_secs(60), p.serve_cmd().output())
        .await
        .expect("serve exits")
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_no_secret("ferry serve at start", &out);
    for place in PLACES {
        assert!(out.contains(place), "{place}:\n{out}");
    }

    // on a hot reload: /api/v1/status, the page and the log
    let p = Project::new();
    let log_path = p.path().join("serve.log");
    let mut cmd = p.serve_cmd();
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(rest) = log.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(child.try_wait().unwrap().is_none(), "serve exited:\n{log}");
        assert!(Instant::now() < deadline, "serve did not listen:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    p.link();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("http://{addr}{path}"))
            .basic_auth(OP.0, Some(OP.1))
            .send()
    };
    // the links land in two directories: wait for a reload that saw them all
    let mut status = Value::Null;
    for _ in 0..600 {
        status = get("/api/v1/status").await.unwrap().json().await.unwrap();
        let text = status["reload_failure"].to_string();
        if PLACES.iter().all(|p| text.contains(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<String> = status["reload_failure"]["diagnostics"]
        .as_array()
        .unwrap_or_else(|| panic!("no reload failure: {status:#}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_no_secret("/api/v1/status", &status.to_string());
    // serve was given relative paths: the diagnostics name files as it was told
    for place in PLACES {
        let at = format!("{place}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&at) && l.contains(HIDDEN)),
            "{place}: {lines:#?}"
        );
    }
    let page = get("/").await.unwrap().text().await.unwrap();
    // the page escapes `/`
    assert!(
        page.contains("flows&#x2f;syntax.yaml:1:5: this file resolves outside"),
        "{page}"
    );
    assert_no_secret("the monitoring page", &page);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_no_secret("serve's log", &std::fs::read_to_string(&log_path).unwrap());
    child.kill().await.unwrap();
}
