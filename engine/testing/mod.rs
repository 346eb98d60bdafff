//! `ferry test`: flow tests as data, run by the real engine without any server.
//!
//! A test file (`flows/tests/*.test.yaml`, schema `schemas/test.schema.json`) lists tests;
//! each runs its flow once on a fresh temporary copy of the project whose connections are
//! rewritten: every file connection (local, FTP, SFTP, S3, OCI) becomes a local directory
//! seeded with the test's fixture files, every REST connection points at an in-process stub
//! server ([`stub`]) that answers from the test's stubs and records each request, and every
//! mail connection becomes an `.eml` outbox. Lookups may be overridden and the clock frozen
//! (`now()`). Then the test's expectations are compared with what happened: the outcome, the
//! files at the targets, the renames, the requests, the emails and the report's counts. The
//! engine, compiler and connectors are the production ones; only the far ends are local.

pub mod model;
pub mod stub;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::compile::{Inputs, load};
use crate::run::{Engine, Event, RunOptions, RunReport, trigger_input};
use crate::yaml::SourceDoc;
use model::{Content, Expect, TestCase, TestFile};

/// Whether `path` is a test file (`*.test.yaml`), which the flow loader skips.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// The generated JSON Schema of test files.
pub fn test_schema() -> Value {
    schemars::schema_for!(TestFile).to_value()
}

/// Whether `got` contains `want`: maps by key (recursively), lists element by element,
/// other values equal.
pub fn contains_json(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains_json(gv, wv))),
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(a, b)| contains_json(a, b))
        }
        _ => got == want,
    }
}

/// One expectation that did not hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mismatch {
    /// What was compared (`outcome`, `emails[1].to`, `files.ouai_os.b/x.csv`).
    pub what: String,
    /// What the test expects.
    pub expected: String,
    /// What happened.
    pub actual: String,
}

/// The result of one test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    /// The test file.
    pub file: String,
    /// The test's name.
    pub name: String,
    /// The flow it ran.
    pub flow: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// The expectations that did not hold (or why the test could not run).
    pub mismatches: Vec<Mismatch>,
    /// Seconds it took.
    pub seconds: f64,
    /// The steps the run reached, for `--coverage`.
    #[serde(skip)]
    pub seen: coverage::Seen,
}

/// Finds test files under `paths` (files, or directories searched recursively).
pub fn find_test_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if is_test_file(&p) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Runs every test of `file`.
pub async fn run_file(file: &Path) -> Vec<CaseResult> {
    let shown = file.display().to_string();
    let fail = |name: &str, what: &str, msg: String| CaseResult {
        file: shown.clone(),
        name: name.to_string(),
        flow: String::new(),
        passed: false,
        mismatches: vec![Mismatch {
            what: what.to_string(),
            expected: String::new(),
            actual: msg,
        }],
        seconds: 0.0,
        seen: coverage::Seen::default(),
    };
    let doc = match SourceDoc::load(file) {
        Ok(d) => d,
        Err(d) => return vec![fail("(file)", "test file", d.one_line())],
    };
    let validator = match jsonschema::validator_for(&test_schema()) {
        Ok(v) => v,
        Err(e) => return vec![fail("(file)", "schema", e.to_string())],
    };
    let problems: Vec<String> = validator
        .iter_errors(&doc.value)
        .map(|e| {
            let pos = doc.locate(e.instance_path().as_str());
            format!(
                "{}:{}:{}: {}: {e}",
                file.display(),
                pos.line,
                pos.column,
                crate::diag::pointer_to_path(e.instance_path().as_str())
            )
        })
        .collect();
    if !problems.is_empty() {
        return vec![fail("(file)", "test file", problems.join("\n"))];
    }
    let tf: TestFile = match serde_json::from_value(doc.value.clone()) {
        Ok(t) => t,
        Err(e) => return vec![fail("(file)", "test file", e.to_string())],
    };
    let Some(flows_dir) = flows_dir_of(file) else {
        return vec![fail(
            "(file)",
            "flow directory",
            "no connections.yaml in the test file's directory or above it".into(),
        )];
    };
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out = Vec::new();
    for case in &tf.tests {
        let started = std::time::Instant::now();
        let flow = case.flow.clone().or_else(|| tf.flow.clone());
        let mut r = match flow {
            None => fail(&case.name, "flow", "the test names no flow".into()),
            Some(flow) => match run_case(&flows_dir, &base, &flow, case).await {
                Ok((mismatches, seen)) => CaseResult {
                    file: shown.clone(),
                    name: case.name.clone(),
                    flow,
                    passed: mismatches.is_empty(),
                    mismatches,
                    seconds: 0.0,
                    seen,
                },
                Err(msg) => {
                    let mut r = fail(&case.name, "setup", msg);
                    r.flow = flow;
                    r
                }
            },
        };
        r.seconds = started.elapsed().as_secs_f64();
        out.push(r);
    }
    out
}

/// The flow directory of a test file: the nearest directory at or above it holding
/// `connections.yaml`.
fn flows_dir_of(file: &Path) -> Option<PathBuf> {
    let start = file.parent()?;
    start
        .ancestors()
        .take(4)
        .find(|a| a.join("connections.yaml").is_file())
        .map(Path::to_path_buf)
}

fn copy_tree(from: &Path, to: &Path, skip: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            if e.file_name() != skip {
                copy_tree(&p, &to.join(e.file_name()), skip)?;
            }
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

fn content_bytes(base: &Path, c: &Content) -> Result<Vec<u8>, String> {
    match (&c.text, &c.json, &c.from) {
        (Some(t), None, None) => Ok(t.clone().into_bytes()),
        (None, Some(j), None) => serde_json::to_vec(j).map_err(|e| e.to_string()),
        (None, None, Some(f)) => {
            let p = base.join(f);
            std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
        _ => Err("a file's content is exactly one of `text`, `json`, `from`".into()),
    }
}

/// A connection's location as a directory under its local root.
fn location_dir(data: &Path, connection: &str, location: &str) -> PathBuf {
    let mut p = data.join(connection);
    for seg in location
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
    {
        p.push(seg);
    }
    p
}

/// Rewrites the connections: files → local directories under `data`, REST → the stub
/// server, mail → the outbox.
fn rewrite_connections(
    original: &Path,
    data: &Path,
    outbox: &Path,
    stub_url: &str,
) -> Result<Value, String> {
    let doc = SourceDoc::load(original).map_err(|d| d.one_line())?;
    let conns = doc
        .value
        .get("connections")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{}: no connections", original.display()))?;
    let mut out = Map::new();
    for (name, spec) in conns {
        let kind = spec.get("kind").and_then(Value::as_str).unwrap_or("");
        let rewritten = match kind {
            "http" => {
                json!({ "kind": "http", "base_url": format!("{stub_url}/_c/{name}"), "timeout_secs": 30 })
            }
            "outbox" | "smtp" => json!({ "kind": "outbox", "dir": outbox.display().to_string() }),
            _ => {
                json!({ "kind": "local", "root": data.join(name).display().to_string(), "create_dirs": true })
            }
        };
        out.insert(name.clone(), rewritten);
    }
    Ok(json!({ "connections": out }))
}

/// Applies lookup overrides to the lookup files under `dir`.
fn override_lookups(
    dir: &Path,
    overrides: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, Value>>,
) -> Result<(), String> {
    let mut left: BTreeSet<&String> = overrides.keys().collect();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return if overrides.is_empty() {
            Ok(())
        } else {
            Err(format!("no lookups directory at {}", dir.display()))
        };
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        let Ok(doc) = SourceDoc::load(&p) else {
            continue;
        };
        let Some(name) = doc.value.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(table) = overrides.get(name) else {
            continue;
        };
        left.remove(&name.to_string());
        let mut v = doc.value.clone();
        let columns: Vec<String> = v
            .get("columns")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let rows = v
            .get_mut("rows")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| format!("lookup {name} has no rows"))?;
        for (key, value) in table {
            let idx = match rows
                .iter()
                .position(|r| r.get(0).and_then(Value::as_str) == Some(key))
            {
                Some(i) => i,
                None => {
                    let mut row = vec![Value::String(key.clone())];
                    row.resize(columns.len().max(2), Value::String(String::new()));
                    rows.push(Value::Array(row));
                    rows.len() - 1
                }
            };
            let Some(row) = rows[idx].as_array_mut() else {
                continue;
            };
            match value {
                Value::Object(m) => {
                    for (col, cv) in m {
                        let ci = columns
                            .iter()
                            .position(|c| c == col)
                            .ok_or_else(|| format!("lookup {name} has no column '{col}'"))?;
                        if let Some(cell) = row.get_mut(ci) {
                            *cell = Value::String(scalar_text(cv));
                        }
                    }
                }
                other => {
                    if let Some(cell) = row.get_mut(1) {
                        *cell = Value::String(scalar_text(other));
                    }
                }
            }
        }
        std::fs::write(&p, v.to_string()).map_err(|e| e.to_string())?;
    }
    match left.into_iter().next() {
        Some(name) => Err(format!("no lookup named '{name}' to override")),
        None => Ok(()),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs one test; returns its mismatches and the steps it reached.
async fn run_case(
    flows_dir: &Path,
    base: &Path,
    flow: &str,
    case: &TestCase,
) -> Result<(Vec<Mismatch>, coverage::Seen), String> {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = tmp.path();
    let (flows, lookups, data, outbox, spool, input_dir) = (
        root.join("flows"),
        root.join("lookups"),
        root.join("data"),
        root.join("outbox"),
        root.join("spool"),
        root.join("input"),
    );
    for d in [&data, &outbox, &spool, &input_dir] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    copy_tree(flows_dir, &flows, "tests").map_err(|e| e.to_string())?;
    let lookups_src = flows_dir
        .parent()
        .map(|p| p.join("lookups"))
        .filter(|p| p.is_dir());
    if let Some(src) = &lookups_src {
        copy_tree(src, &lookups, "").map_err(|e| e.to_string())?;
    }
    override_lookups(&lookups, &case.lookups)?;
    let stubs = stub::StubServer::start(case.stubs.clone())
        .await
        .map_err(|e| format!("stub server: {e}"))?;
    let conns = rewrite_connections(
        &flows_dir.join("connections.yaml"),
        &data,
        &outbox,
        &stubs.base_url,
    )?;
    std::fs::write(flows.join("connections.yaml"), conns.to_string()).map_err(|e| e.to_string())?;
    for (conn, locations) in &case.files {
        for (loc, files) in locations {
            let dir = location_dir(&data, conn, loc);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for (name, content) in files {
                if content.directory {
                    std::fs::create_dir_all(dir.join(name).join("in-the-way"))
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                std::fs::write(dir.join(name), content_bytes(base, content)?)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let (project, diags) = load(&Inputs {
        paths: vec![flows.clone()],
        lookups: Some(lookups.clone()),
        connections: Some(flows.join("connections.yaml")),
    });
    let Some(mut project) = project else {
        let text: Vec<String> = diags
            .iter()
            .map(|d| d.one_line().replace(&format!("{}/", root.display()), ""))
            .collect();
        return Err(format!(
            "the project does not validate:\n{}",
            text.join("\n")
        ));
    };
    if let Some(now) = &case.now {
        let at = chrono::DateTime::parse_from_rfc3339(now)
            .map_err(|e| format!("now '{now}': {e}"))?
            .with_timezone(&chrono::Utc);
        for plan in project.flows.values_mut() {
            if let Some(p) = Arc::get_mut(plan) {
                p.templates.freeze_clock(at);
            }
        }
    }
    let plan = project
        .flows
        .get(flow)
        .ok_or_else(|| format!("unknown flow '{flow}'"))?;
    let mut parts = Vec::new();
    for (name, part) in &case.input {
        let content = Content {
            text: part.text.clone(),
            json: part.json.clone(),
            from: part.from.clone(),
            directory: false,
        };
        let path = input_dir.join(name);
        std::fs::write(&path, content_bytes(base, &content)?).map_err(|e| e.to_string())?;
        let file_name = part.name.clone().or_else(|| {
            part.from.as_ref().and_then(|f| {
                Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
        });
        parts.push((name.clone(), path, file_name));
    }
    let input = trigger_input(plan, &parts).map_err(|e| e.to_string())?;
    let engine = Engine::new(
        Arc::new(project),
        RunOptions {
            spool_dir: Some(spool),
            params: case.params.clone(),
            // one item at a time: stub answer sequences and request order are deterministic
            sequential: true,
            ..RunOptions::default()
        },
    );
    let collector = coverage::Collector::default();
    let report = {
        use tracing::instrument::WithSubscriber;
        engine
            .run(flow, input)
            .with_subscriber(collector.subscriber())
            .await
            .map_err(|e| e.to_string())?
    };
    let requests = stubs.received();
    let emails = read_outbox(&outbox);
    let mismatches = compare(&case.expect, base, &report, &data, &requests, &emails);
    Ok((mismatches, collector.seen()))
}

/// An email of the outbox.
#[derive(Debug, Clone)]
struct Email {
    from: String,
    to: Vec<String>,
    subject: String,
    body: String,
}

fn read_outbox(dir: &Path) -> Vec<Email> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_eml(&t))
        .collect()
}

/// Parses a single-part message as ferry's mailer writes it: unfolded headers, a
/// quoted-printable, base64 or plain body.
fn parse_eml(text: &str) -> Email {
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
    let bytes = match get("Content-Transfer-Encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "quoted-printable" => decode_qp(body),
        "base64" => {
            use base64::Engine as _;
            let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .unwrap_or_default()
        }
        _ => body.as_bytes().to_vec(),
    };
    Email {
        from: get("From"),
        to: get("To")
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        subject: decode_words(&get("Subject")),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) of a header.
fn decode_words(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("=?") {
        out.push_str(&rest[..start]);
        let word = &rest[start + 2..];
        let parts: Vec<&str> = word.splitn(3, '?').collect();
        let Some(end) = parts.get(2).and_then(|p| p.find("?=")) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let (enc, data) = (parts[1], &parts[2][..end]);
        let bytes = if enc.eq_ignore_ascii_case("b") {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_default()
        } else {
            decode_qp(&data.replace('_', " "))
        };
        out.push_str(&String::from_utf8_lossy(&bytes));
        rest = &parts[2][end + 2..];
        rest = rest
            .strip_prefix(' ')
            .filter(|r| r.starts_with("=?"))
            .unwrap_or(rest);
    }
    out.push_str(rest);
    out
}

fn decode_qp(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'=' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        if b.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn show<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Compares what happened with what the test expects.
fn compare(
    expect: &Expect,
    base: &Path,
    report: &RunReport,
    data: &Path,
    requests: &[stub::Received],
    emails: &[Email],
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut check = |what: String, expected: String, actual: String| {
        if expected != actual {
            out.push(Mismatch {
                what,
                expected,
                actual,
            });
        }
    };
    let error_text = report
        .error
        .as_ref()
        .map(|e| format!(" (step {}: {})", e.step, e.message))
        .unwrap_or_default();
    if let Some(o) = &expect.outcome
        && *o != report.outcome.to_string()
    {
        check(
            "outcome".into(),
            o.clone(),
            format!("{}{error_text}", report.outcome),
        );
    }
    if let Some(e) = &expect.error {
        match &report.error {
            None => check("error".into(), show(e), "no error".into()),
            Some(got) => {
                if let Some(step) = &e.step {
                    check("error.step".into(), step.clone(), got.step.clone());
                }
                if let Some(m) = &e.message_contains
                    && !got.message.contains(m.as_str())
                {
                    check(
                        "error.message".into(),
                        format!("contains {m:?}"),
                        got.message.clone(),
                    );
                }
            }
        }
    }
    for (conn, locs) in &expect.files {
        for (loc, files) in locs {
            for (name, fe) in files {
                let what = format!("files.{conn}.{loc}/{name}");
                let path = location_dir(data, conn, loc).join(name);
                let bytes = std::fs::read(&path).ok();
                match (&bytes, fe.absent) {
                    (Some(_), true) => check(what, "absent".into(), "present".into()),
                    (None, false) => check(what, "present".into(), "absent".into()),
                    (None, true) => {}
                    (Some(b), false) => {
                        let text = String::from_utf8_lossy(b).into_owned();
                        if let Some(t) = &fe.text {
                            check(what.clone(), t.clone(), text.clone());
                        }
                        if let Some(f) = &fe.same_as {
                            match std::fs::read(base.join(f)) {
                                Ok(want) => check(
                                    what.clone(),
                                    format!("the bytes of {f} (sha256 {})", sha256_hex(&want)),
                                    if *b == want {
                                        format!("the bytes of {f} (sha256 {})", sha256_hex(&want))
                                    } else {
                                        format!("{} bytes, sha256 {}", b.len(), sha256_hex(b))
                                    },
                                ),
                                Err(e) => {
                                    check(what.clone(), f.clone(), format!("unreadable: {e}"))
                                }
                            }
                        }
                        if let Some(h) = &fe.sha256 {
                            check(what.clone(), h.to_lowercase(), sha256_hex(b));
                        }
                        for c in &fe.contains {
                            if !text.contains(c.as_str()) {
                                check(what.clone(), format!("contains {c:?}"), text.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    for (conn, locs) in &expect.listing {
        for (loc, names) in locs {
            let dir = location_dir(data, conn, loc);
            let mut got: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| e.path().is_file())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            got.sort();
            let mut want = names.clone();
            want.sort();
            check(format!("listing.{conn}.{loc}"), show(&want), show(&got));
        }
    }
    if let Some(renames) = &expect.renames {
        let got: Vec<Value> = report
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Renamed {
                    connection,
                    from,
                    to,
                    ..
                } => Some(json!({ "connection": connection, "from": from, "to": to })),
                _ => None,
            })
            .collect();
        let shown: Vec<Value> = got
            .iter()
            .zip(renames.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(g, w)| match w {
                Some(w) if w.connection.is_none() => json!({ "from": g["from"], "to": g["to"] }),
                _ => g.clone(),
            })
            .collect();
        let want: Vec<Value> = renames
            .iter()
            .map(|r| match &r.connection {
                Some(c) => json!({ "connection": c, "from": r.from, "to": r.to }),
                None => json!({ "from": r.from, "to": r.to }),
            })
            .collect();
        check("renames".into(), pretty(&want), pretty(&shown));
    }
    if let Some(reqs) = &expect.requests {
        let summary = |r: &stub::Received| json!({ "connection": r.connection, "method": r.method, "path": r.path, "json": r.json, "status": r.status });
        if reqs.len() != requests.len() {
            check(
                "requests".into(),
                format!("{} request(s)", reqs.len()),
                format!(
                    "{} request(s): {}",
                    requests.len(),
                    pretty(&requests.iter().map(summary).collect::<Vec<_>>())
                ),
            );
        }
        for (i, (w, g)) in reqs.iter().zip(requests).enumerate() {
            let ok = w.connection.as_ref().is_none_or(|c| *c == g.connection)
                && w.method
                    .as_ref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&g.method))
                && w.path.as_ref().is_none_or(|p| *p == g.path)
                && w.json
                    .as_ref()
                    .is_none_or(|j| g.json.as_ref().is_some_and(|gj| contains_json(gj, j)))
                && w.body_contains.iter().all(|c| g.body.contains(c.as_str()))
                && w.headers
                    .iter()
                    .all(|(k, v)| g.headers.get(&k.to_ascii_lowercase()) == Some(v));
            if !ok {
                let mut got = summary(g);
                got["headers"] = json!(g.headers);
                check(format!("requests[{i}]"), pretty(w), pretty(&got));
            }
        }
    }
    if let Some(want) = &expect.emails {
        let summary =
            |e: &Email| json!({ "from": e.from, "to": e.to, "subject": e.subject, "body": e.body });
        if want.len() != emails.len() {
            // an email the run could not send says why (a template failing names its place)
            let unsent: String = report
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::EmailFailed {
                        subject, message, ..
                    } => Some(format!("\n  not sent: {subject:?}: {message}")),
                    _ => None,
                })
                .collect();
            check(
                "emails".into(),
                format!("{} email(s)", want.len()),
                format!(
                    "{} email(s): {}{unsent}",
                    emails.len(),
                    pretty(&emails.iter().map(summary).collect::<Vec<_>>())
                ),
            );
        }
        for (i, (w, g)) in want.iter().zip(emails).enumerate() {
            let ok = w.to.as_ref().is_none_or(|t| *t == g.to)
                && w.from.as_ref().is_none_or(|f| *f == g.from)
                && w.subject.as_ref().is_none_or(|s| *s == g.subject)
                && w.subject_contains
                    .iter()
                    .all(|c| g.subject.contains(c.as_str()))
                && w.body_contains.iter().all(|c| g.body.contains(c.as_str()));
            if !ok {
                check(format!("emails[{i}]"), pretty(w), pretty(&summary(g)));
            }
        }
    }
    if let Some(r) = &expect.report {
        let counts = [
            ("files_moved", r.files_moved, report.files_moved()),
            ("renames", r.renames, report.renames()),
            ("requests_ok", r.requests_ok, report.requests_ok()),
            ("suppressed", r.suppressed, report.suppressed()),
            ("emails", r.emails, report.emails()),
        ];
        for (name, want, got) in counts {
            if let Some(w) = want {
                check(format!("report.{name}"), w.to_string(), got.to_string());
            }
        }
    }
    out
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `ferry test PATHS`: runs every test file found, prints the results (and the coverage
/// gaps), and gives the exit code: 0 all passed, 1 a test failed, 2 no test file found.
pub async fn cli(
    paths: &[PathBuf],
    format: output::TestFormat,
    with_coverage: bool,
) -> anyhow::Result<u8> {
    let files = find_test_files(paths);
    if files.is_empty() {
        anyhow::bail!(
            "no test files (*.test.yaml) under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut results = Vec::new();
    for f in &files {
        results.extend(run_file(f).await);
    }
    print!("{}", output::render(&results, format));
    if with_coverage {
        let mut seen = coverage::Seen::default();
        for r in &results {
            seen.merge(&r.seen);
        }
        let dirs: BTreeSet<PathBuf> = files.iter().filter_map(|f| flows_dir_of(f)).collect();
        let mut lines = Vec::new();
        for d in dirs {
            let (project, _) = load(&Inputs {
                paths: vec![d.clone()],
                ..Default::default()
            });
            for plan in project.iter().flat_map(|p| p.flows.values()) {
                let gaps = coverage::gaps(plan, &seen);
                if !gaps.is_empty() {
                    lines.push(format!("{} ({}):", plan.id, plan.path.display()));
                    lines.extend(gaps.into_iter().map(|g| format!("  {g}")));
                }
            }
        }
        // coverage goes to stderr when stdout is machine-readable
        let text = if lines.is_empty() {
            "coverage: every step, branch, case and failure step was reached\n".to_string()
        } else {
            format!("coverage: not reached by any test:\n{}\n", lines.join("\n"))
        };
        match format {
            output::TestFormat::Human => print!("\n{text}"),
            _ => eprint!("{text}"),
        }
    }
    Ok(if results.iter().all(|r| r.passed) {
        0
    } else {
        1
    })
}

pub mod coverage;
pub mod output;
