//! Shared helpers of ferry's end-to-end tests (`mod support;` in a test file).
//!
//! A [`Workspace`] is a throw-away project on the embedded default: a copy of the repo's
//! `flows/` and `lookups/` in a temporary directory, local directories standing in for the
//! FTP server and object storage (`data/<root>`), an `.eml` outbox (`outbox/`), and the
//! DACS/DERMS stand-ins on a free port. Tests edit lookup values, seed files, load and run
//! flows, then inspect files, emails and what the stand-ins received. Nothing is shared
//! between workspaces, so tests run in parallel.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry::compile::{Inputs, Project, load};
use ferry::diag::Diagnostic;
use ferry::run::{Engine, RunOptions, RunReport, trigger_input};
use ferry::standin::{StandIn, StandInConfig, StandInHandle};
use serde_json::{Value, json};

/// The lookup `set_config` edits.
pub const CONFIG_LOOKUP: &str = "OUTL-BRT-OUAI_DACS_DRMS_ConfigProps";

/// The repository's root directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bytes of a sample file under `examples/demo/data` (`rel` is relative to it).
pub fn demo_data(rel: &str) -> Vec<u8> {
    let path = repo().join("examples/demo/data").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The path of a sample trigger input under `examples/demo/input`.
pub fn demo_input(name: &str) -> PathBuf {
    let path = repo().join("examples/demo/input").join(name);
    assert!(path.is_file(), "no demo input {}", path.display());
    path
}

/// A URL on which nothing listens (a port that was free a moment ago).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", dead_port())
}

/// A port on 127.0.0.1 nothing listens on (it was free a moment ago).
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// A temporary ferry project with running stand-ins.
pub struct Workspace {
    dir: tempfile::TempDir,
    /// The stand-ins' shared state: inject failures, inspect what was received.
    pub standin: StandIn,
    handle: StandInHandle,
    connections: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("dir", &self.dir.path())
            .field("standin", &self.handle.base_url())
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// A workspace whose stand-ins need no authentication.
    pub async fn new() -> Workspace {
        Workspace::with_standin(StandInConfig::default()).await
    }

    /// A workspace whose stand-ins use `config`.
    pub async fn with_standin(config: StandInConfig) -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("ferry-test-")
            .tempdir()
            .unwrap();
        copy_tree(&repo().join("flows"), &dir.path().join("flows"));
        copy_tree(&repo().join("lookups"), &dir.path().join("lookups"));
        for sub in ["data", "outbox", "spool"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let standin = StandIn::new(config);
        let handle = standin.clone().spawn().await.unwrap();
        let base = handle.base_url().to_string();
        let data = dir.path().join("data");
        let local =
            |root: &str| json!({ "kind": "local", "root": data.join(root).display().to_string() });
        let http = |url: String| json!({ "kind": "http", "base_url": url, "timeout_secs": 10 });
        let mut connections = BTreeMap::new();
        connections.insert("dacs_ftp".to_string(), local("dacs-ftp"));
        connections.insert("dacs_os".to_string(), local("dacs-os"));
        connections.insert("ouai_os".to_string(), local("ouai-os"));
        connections.insert("dacs_rest".to_string(), http(base.clone()));
        connections.insert("drms_rest".to_string(), http(base.clone()));
        connections.insert(
            "drms_api".to_string(),
            http(format!("{base}/nms-drms/rest/v1")),
        );
        connections.insert(
            "mail".to_string(),
            json!({ "kind": "outbox", "dir": dir.path().join("outbox").display().to_string() }),
        );
        let ws = Workspace {
            dir,
            standin,
            handle,
            connections,
        };
        ws.write_connections();
        ws
    }

    /// The workspace directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The copied flow directory.
    pub fn flows_dir(&self) -> PathBuf {
        self.path().join("flows")
    }

    /// The copied lookups directory.
    pub fn lookups_dir(&self) -> PathBuf {
        self.path().join("lookups")
    }

    /// The connections file the workspace wrote.
    pub fn connections_path(&self) -> PathBuf {
        self.path().join("connections.yaml")
    }

    /// The outbox directory emails are written to.
    pub fn outbox_dir(&self) -> PathBuf {
        self.path().join("outbox")
    }

    /// The stand-ins' base URL.
    pub fn standin_url(&self) -> &str {
        self.handle.base_url()
    }

    /// The directory of a local root: `ouai-os` (or its connection's name, `ouai_os`).
    pub fn root(&self, root: &str) -> PathBuf {
        self.path().join("data").join(root.replace('_', "-"))
    }

    /// The directory of `location` (`namespace/bucket` or `/some/dir`) under a local root.
    pub fn dir(&self, root: &str, location: &str) -> PathBuf {
        let mut dir = self.root(root);
        for seg in location.split('/').filter(|s| !s.is_empty()) {
            dir.push(seg);
        }
        dir
    }

    /// Replaces the definition of connection `name` (a JSON object, written as YAML flow
    /// style), e.g. to point an HTTP connection at a dead port.
    pub fn set_connection(&mut self, name: &str, spec: Value) {
        self.connections.insert(name.to_string(), spec);
        self.write_connections();
    }

    /// Replaces the definitions of several connections at once (name → spec, each a JSON
    /// object as in a connections file), e.g. to point the shipped flows at real servers.
    /// Connections not named keep their definition.
    pub fn set_connections<S: Into<String>>(
        &mut self,
        specs: impl IntoIterator<Item = (S, Value)>,
    ) {
        for (name, spec) in specs {
            self.connections.insert(name.into(), spec);
        }
        self.write_connections();
    }

    /// The definition of connection `name` as the workspace wrote it.
    pub fn connection(&self, name: &str) -> Option<&Value> {
        self.connections.get(name)
    }

    /// `--flows`, `--lookups`, `--connections` and `--data` (the history under `state/`):
    /// the arguments that point a `ferry` command at this workspace.
    pub fn project_args(&self) -> [std::ffi::OsString; 8] {
        [
            "--flows".into(),
            self.flows_dir().into(),
            "--lookups".into(),
            self.lookups_dir().into(),
            "--connections".into(),
            self.connections_path().into(),
            "--data".into(),
            self.path().join("state").into(),
        ]
    }

    /// Runs `flow` with the real `ferry` binary (`ferry run FLOW --format json`) on the
    /// workspace's flows, lookups and connections, with `env` added to the environment (the
    /// way secrets reach a connection), the run history under `state/` and `TMPDIR` (so the
    /// run's spool) under `spool/`. Waits at most 60 s.
    pub async fn run_cli(&self, flow: &str, env: &[(&str, &str)]) -> CliRun {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .arg("run")
            .arg(flow)
            .args(self.project_args())
            .args(["--format", "json"])
            .current_dir(self.path())
            .env("TMPDIR", self.spool_dir())
            .env_remove("FERRY_LOG")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("ferry run {flow} did not finish within 60 s"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "ferry run {flow} printed no JSON report ({e}; exit {:?}):\n{stdout}\n{stderr}",
                output.status.code()
            )
        });
        CliRun {
            code: output.status.code(),
            stdout,
            stderr,
            report,
        }
    }

    /// The directory runs spool into (empty between runs: a run removes its spool).
    pub fn spool_dir(&self) -> PathBuf {
        self.path().join("spool")
    }

    /// What is left in the spool directory, sorted.
    pub fn spool_leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.spool_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn write_connections(&self) {
        let mut text = String::from("# written by tests/support\nconnections:\n");
        for (name, spec) in &self.connections {
            text.push_str(&format!("  {name}: {spec}\n"));
        }
        std::fs::write(self.connections_path(), text).unwrap();
    }

    /// Makes the record loops of the copied flows run one record at a time (the shipped
    /// flow 3 runs 8 at once): for tests whose failure plans count requests in the order
    /// they arrive.
    pub fn sequential_records(&self) {
        for entry in std::fs::read_dir(self.flows_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("concurrency: 8") {
                    std::fs::write(&path, text.replace("concurrency: 8", "concurrency: 1"))
                        .unwrap();
                }
            }
        }
    }

    /// Sets a property of the configuration lookup, rewriting its row in the copied file.
    pub fn set_config(&self, key: &str, value: &str) {
        self.set_lookup(CONFIG_LOOKUP, key, value);
    }

    /// Sets the second column of the row keyed `key` in lookup `table` (found by its
    /// `name:` among the copied lookup files); other columns are kept. Panics when the table
    /// or the row does not exist.
    pub fn set_lookup(&self, table: &str, key: &str, value: &str) {
        let file = self.lookup_file(table);
        let text = std::fs::read_to_string(&file).unwrap();
        let mut found = false;
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.lines() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let row = trimmed
                .strip_prefix("- [")
                .and_then(|r| r.trim_end().strip_suffix(']'));
            if let Some(row) = row {
                let mut cells = split_flow_row(row);
                if cells.first().map(|c| unquote(c)) == Some(key.to_string()) && cells.len() >= 2 {
                    cells[1] = serde_json::to_string(value).unwrap();
                    out.push_str(&format!("{indent}- [{}]\n", cells.join(", ")));
                    found = true;
                    continue;
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        assert!(
            found,
            "lookup {table} has no row '{key}' ({})",
            file.display()
        );
        std::fs::write(&file, out).unwrap();
    }

    fn lookup_file(&self, table: &str) -> PathBuf {
        let mut entries: Vec<_> = std::fs::read_dir(self.lookups_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        entries
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(p).is_ok_and(|t| {
                    t.lines().any(|l| {
                        l.trim() == format!("name: {table}")
                            || l.trim() == format!("name: \"{table}\"")
                    })
                })
            })
            .unwrap_or_else(|| panic!("no lookup named {table} in the workspace"))
    }

    /// Writes `bytes` as `location/name` under a local root; returns its path.
    pub fn put_file(
        &self,
        root: &str,
        location: &str,
        name: &str,
        bytes: impl AsRef<[u8]>,
    ) -> PathBuf {
        let dir = self.dir(root, location);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Creates the directory of `location` under a local root (an empty bucket).
    pub fn make_location(&self, root: &str, location: &str) -> PathBuf {
        let dir = self.dir(root, location);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The bytes of `location/name` under a local root, if it is a file.
    pub fn read_file(&self, root: &str, location: &str, name: &str) -> Option<Vec<u8>> {
        let path = self.dir(root, location).join(name);
        path.is_file().then(|| std::fs::read(&path).unwrap())
    }

    /// Names of the regular files at `location` under a local root, sorted (empty when the
    /// directory does not exist).
    pub fn list_files(&self, root: &str, location: &str) -> Vec<String> {
        let dir = self.dir(root, location);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Copies `examples/demo/data/<rel>` (a file or a tree) to `data/<rel>`.
    pub fn seed_demo(&self, rel: &str) {
        let from = repo().join("examples/demo/data").join(rel);
        let to = self.path().join("data").join(rel);
        if from.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        }
    }

    /// Loads the workspace project, returning it (if it validates) and every diagnostic.
    pub fn try_load(&self) -> (Option<Project>, Vec<Diagnostic>) {
        load(&Inputs {
            paths: vec![self.flows_dir()],
            lookups: Some(self.lookups_dir()),
            connections: Some(self.connections_path()),
        })
    }

    /// Loads the workspace project, asserting there is no diagnostic at all.
    pub fn load(&self) -> Arc<Project> {
        let (project, diags) = self.try_load();
        let rendered: Vec<String> = diags.iter().map(Diagnostic::one_line).collect();
        assert!(
            diags.is_empty(),
            "unexpected diagnostics:\n{}",
            rendered.join("\n")
        );
        Arc::new(project.expect("a project without diagnostics"))
    }

    /// Run options with the spool inside the workspace.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            dry_run: false,
            spool_dir: Some(self.path().join("spool")),
            ..RunOptions::default()
        }
    }

    /// Loads the project (reading the lookups as they are now) and runs `flow`.
    pub async fn run(&self, flow: &str) -> RunReport {
        self.run_with(flow, &[], self.options()).await
    }

    /// Like [`Workspace::run`], in a dry run.
    pub async fn dry_run(&self, flow: &str) -> RunReport {
        let options = RunOptions {
            dry_run: true,
            ..self.options()
        };
        self.run_with(flow, &[], options).await
    }

    /// Runs `flow` with trigger input parts `(part, file)` and `options`.
    pub async fn run_with(
        &self,
        flow: &str,
        parts: &[(&str, &Path)],
        options: RunOptions,
    ) -> RunReport {
        let project = self.load();
        let plan = project
            .flows
            .get(flow)
            .unwrap_or_else(|| panic!("no flow {flow} in the workspace"));
        let parts: Vec<(String, PathBuf, Option<String>)> = parts
            .iter()
            .map(|(name, path)| (name.to_string(), path.to_path_buf(), None))
            .collect();
        let input = trigger_input(plan, &parts).unwrap();
        let engine = Engine::new(project.clone(), options);
        engine.run(flow, input).await.unwrap()
    }

    /// The emails in the outbox, oldest first.
    pub fn emails(&self) -> Vec<Email> {
        let Ok(rd) = std::fs::read_dir(self.outbox_dir()) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let mut email = parse_eml(&text);
                email.file = p;
                email
            })
            .collect()
    }

    /// The emails whose subject contains `part`.
    pub fn emails_about(&self, part: &str) -> Vec<Email> {
        self.emails()
            .into_iter()
            .filter(|e| e.subject.contains(part))
            .collect()
    }

    /// Removes every email from the outbox.
    pub fn clear_outbox(&self) {
        for email in self.emails() {
            std::fs::remove_file(email.file).unwrap();
        }
    }
}

/// What `ferry run --format json` did: its exit code, its output and the report it printed.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output (the JSON report).
    pub stdout: String,
    /// Standard error (logs, warnings).
    pub stderr: String,
    /// The report.
    pub report: Value,
}

impl CliRun {
    /// The outcome: `succeeded`, `partial`, `failed` or `no_files`.
    pub fn outcome(&self) -> &str {
        self.report["outcome"]
            .as_str()
            .expect("a report has an outcome")
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        self.report["run_id"]
            .as_str()
            .expect("a report has a run id")
    }

    /// The report's events.
    pub fn events(&self) -> Vec<ferry::run::Event> {
        serde_json::from_value(self.report["events"].clone()).expect("events as ferry writes them")
    }

    /// The failing step and its message, when the run failed.
    pub fn error(&self) -> Option<(String, String)> {
        let e = self.report.get("error").filter(|e| !e.is_null())?;
        Some((
            e["step"].as_str().unwrap_or_default().to_string(),
            e["message"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// Everything the run printed, for assertions that something never appears.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// An email read back from an `.eml` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    /// The file it came from.
    pub file: PathBuf,
    /// `From`.
    pub from: String,
    /// `To`, split at commas.
    pub to: Vec<String>,
    /// `Subject`.
    pub subject: String,
    /// The decoded body, with `\n` line ends.
    pub body: String,
    /// Every header, unfolded, in order.
    pub headers: Vec<(String, String)>,
}

impl Email {
    /// The body's lines, right-trimmed.
    pub fn lines(&self) -> Vec<&str> {
        self.body.lines().map(str::trim_end).collect()
    }

    /// Whether some body line, trimmed, equals `line` trimmed.
    pub fn has_line(&self, line: &str) -> bool {
        self.body.lines().any(|l| l.trim() == line.trim())
    }

    /// The first body line that starts (after trimming) with `prefix`.
    pub fn line_starting(&self, prefix: &str) -> Option<&str> {
        self.body
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an RFC 5322 message with a single text part (as lettre writes them): unfolds the
/// headers and decodes a quoted-printable or base64 body.
pub fn parse_eml(text: &str) -> Email {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((text.as_str(), ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let encoding = get("Content-Transfer-Encoding").to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => decode_base64(body),
        _ => body.as_bytes().to_vec(),
    };
    Email {
        file: PathBuf::new(),
        from: get("From"),
        to: get("To")
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        subject: get("Subject"),
        body: String::from_utf8(bytes).expect("a UTF-8 body"),
        headers,
    }
}

/// Decodes quoted-printable text: `=XX` is a byte, `=` before a line end is a soft break.
/// Line ends may be `\n` or `\r\n`; a malformed escape is kept as it is.
pub fn decode_qp(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'=' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
            i += 3;
        } else if let (Some(h), Some(l)) = (
            b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
            b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
        ) {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

/// Decodes base64 (standard alphabet), ignoring whitespace and padding.
pub fn decode_base64(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Splits the inside of a YAML flow sequence (`a, "b, c", d`) into its raw cells.
fn split_flow_row(row: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in row.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c == ',' => cells.push(std::mem::take(&mut cur).trim().to_string()),
            None => cur.push(c),
        }
    }
    cells.push(cur.trim().to_string());
    cells
}

fn unquote(cell: &str) -> String {
    let c = cell.trim();
    if c.len() >= 2
        && ((c.starts_with('"') && c.ends_with('"')) || (c.starts_with('\'') && c.ends_with('\'')))
    {
        c[1..c.len() - 1].to_string()
    } else {
        c.to_string()
    }
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()))
    {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_decodes_escapes_and_soft_breaks() {
        assert_eq!(decode_qp("run 01a2=\nbc) is done"), b"run 01a2bc) is done");
        assert_eq!(decode_qp("a=\r\nb"), b"ab");
        assert_eq!(decode_qp("caf=C3=A9 =3D x=3d"), "café = x=".as_bytes());
        assert_eq!(decode_qp("line one\nline two\n"), b"line one\nline two\n");
        assert_eq!(decode_qp("tail=\n"), b"tail");
        assert_eq!(decode_qp("bad =ZZ and ="), b"bad =ZZ and =");
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8g\r\nd29ybGQ="), b"hello world");
        assert_eq!(decode_base64("w6k="), "é".as_bytes());
    }

    #[test]
    fn eml_headers_unfold_and_body_decodes() {
        let eml = "From: admin@myCy.com\r\nSubject: Flow: process complete\r\nTo: a@x.com,\r\n b@y.com\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nFiles: 2 (run 12=\r\n34)\r\n  - A.csv\r\n";
        let e = parse_eml(eml);
        assert_eq!(e.from, "admin@myCy.com");
        assert_eq!(e.to, ["a@x.com", "b@y.com"]);
        assert_eq!(e.subject, "Flow: process complete");
        assert_eq!(e.body, "Files: 2 (run 1234)\n  - A.csv\n");
        assert!(e.has_line("- A.csv"));
        assert_eq!(e.line_starting("Files:"), Some("Files: 2 (run 1234)"));
    }

    #[test]
    fn flow_rows_split_respecting_quotes() {
        assert_eq!(
            split_flow_row("a.b, \"x, y\", 'z'"),
            ["a.b", "\"x, y\"", "'z'"]
        );
        assert_eq!(unquote("\"true\""), "true");
    }
}
