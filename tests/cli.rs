//! The `ferry` binary, run for real in temporary directories: exit codes, rendered output,
//! dry runs and the demo.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::{Command, Output};

use project::repo;

/// The shipped flows under `dir`, REST pointing at a closed port.
fn project(dir: &Path) {
    project::shipped_project(dir, "http://127.0.0.1:9");
}

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
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

#[test]
fn validate_the_shipped_flows_exits_0() {
    let o = ferry(&repo(), &["validate", "flows"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "ok: 10 flows, 4 lookups, 7 connections\n");
}

#[test]
fn validate_renders_a_broken_flow_like_a_compiler_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let f = dir.path().join("flows/enrollment_ftp.yaml");
    let text = std::fs::read_to_string(&f).unwrap().replace(
        "to: \"{{ config('dacs.prefixtag.fileuploaded') }}{{ file.name }}\"",
        "to: \"{{ config('dacs.prefixtag.uploaded') }}{{ file.name }}\"",
    );
    std::fs::write(&f, text).unwrap();
    let o = ferry(dir.path(), &["validate", "flows"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "error[unknown-lookup-key]: unknown lookup key 'dacs.prefixtag.uploaded' in OUTL-BRT-OUAI_DACS_DRMS_ConfigProps
  --> flows/enrollment_ftp.yaml:68:29
   |
68 |             to: \"{{ config('dacs.prefixtag.uploaded') }}{{ file.name }}\"
   |                             ^
  = at: steps[3].for_each.steps[2].rename.to
  = hint: did you mean 'dacs.prefixtag.fileuploaded'?

"
    );
    assert_eq!(stderr(&o), "1 problem(s) found\n");

    let o = ferry(dir.path(), &["validate", "--format", "json", "flows"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["code"], "unknown-lookup-key");
    assert_eq!(v[0]["file"], "flows/enrollment_ftp.yaml");
    assert_eq!(v[0]["line"], 68);
    assert_eq!(v[0]["column"], 29);
    assert_eq!(v[0]["path"], "steps[3].for_each.steps[2].rename.to");
}

#[test]
fn validate_a_missing_path_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["validate", "nowhere"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
}

#[test]
fn an_invalid_flow_directory_is_never_run() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    std::fs::write(
        dir.path().join("flows/broken.yaml"),
        "id: x\nname: X\nversion: '1'\nsteps: [{ id: a }]\n",
    )
    .unwrap();
    let o = ferry(dir.path(), &["run", "OUTL-BA-DACS_OUAI_OS_ENROLL"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("step 'a' does nothing"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("data/outbox").exists(), "nothing ran");
}

/// A project of the shipped flows with one file in flow 2's source folder, and that folder.
fn one_enrollment_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let src = dir
        .path()
        .join("data/dacs-os/dacsnamespace/DACS_EnrollFolder");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ENROLL_SYNC_1.csv"), "a,b\n1,2\n").unwrap();
    (dir, src)
}

/// [`one_enrollment_file`]'s file is on the target with its bytes, and its source renamed.
fn assert_moved(dir: &Path, src: &Path) {
    assert_eq!(
        std::fs::read(dir.join("data/ouai-os/ouainamespace/OUAIEnrollFolder/ENROLL_SYNC_1.csv"))
            .unwrap(),
        b"a,b\n1,2\n"
    );
    assert!(src.join("Sent-ENROLL_SYNC_1.csv").exists());
    assert!(!src.join("ENROLL_SYNC_1.csv").exists());
}

#[test]
fn dry_run_changes_nothing_then_a_real_run_moves_the_file() {
    let (dir, src) = one_enrollment_file();

    let o = ferry(
        dir.path(),
        &["run", "--dry-run", "OUTL-BA-DACS_OUAI_OS_ENROLL"],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("dry run"), "{out}");
    assert!(
        out.contains(
            "put     ouai_os:ouainamespace/OUAIEnrollFolder/ENROLL_SYNC_1.csv (8 bytes) [would]"
        ),
        "{out}"
    );
    assert!(out.contains("rename  dacs_os:dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_1.csv -> Sent-ENROLL_SYNC_1.csv [would]"), "{out}");
    assert!(src.join("ENROLL_SYNC_1.csv").exists());
    assert!(!dir.path().join("data/ouai-os").exists());
    assert!(!dir.path().join("data/outbox").exists());

    let o = ferry(
        dir.path(),
        &["run", "OUTL-BA-DACS_OUAI_OS_ENROLL", "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["outcome"], "succeeded");
    assert_moved(dir.path(), &src);
}

#[test]
fn a_run_on_one_worker_thread_moves_the_file_and_zero_threads_is_a_usage_error() {
    let (dir, src) = one_enrollment_file();

    // from the environment, as the packaged service sets it
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "OUTL-BA-DACS_OUAI_OS_ENROLL"])
        .env("FERRY_WORKERS", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .starts_with("error: invalid value '0' for '--workers <N>': 0 is not in 1..=256\n"),
        "{}",
        stderr(&o)
    );
    assert!(src.join("ENROLL_SYNC_1.csv").exists(), "nothing ran");

    let o = ferry(
        dir.path(),
        &["--workers", "1", "run", "OUTL-BA-DACS_OUAI_OS_ENROLL"],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_moved(dir.path(), &src);
}

#[test]
fn a_failed_run_exits_3_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    // the DACS stand-in URL points at a closed port: the first record fails to send
    let src = dir
        .path()
        .join("data/ouai-os/ouainamespace/OUAIEnrollAckFolder");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        repo().join("examples/demo/data/ouai-os/ouainamespace/OUAIEnrollAckFolder/feedback.dacs.program_subscription.20230210.csv"),
        src.join("feedback.dacs.program_subscription.20230210.csv"),
    )
    .unwrap();
    let o = ferry(dir.path(), &["run", "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("outcome: failed"), "{out}");
    assert!(
        out.contains("error: step 'send': connection 'dacs_rest': "),
        "{out}"
    );
    assert!(
        src.join("feedback.dacs.program_subscription.20230210_ErrInRcd_1.csv")
            .exists()
    );
}

#[test]
fn run_an_unknown_flow_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let o = ferry(dir.path(), &["run", "NOPE"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: unknown flow 'NOPE' (flows: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn rest_triggered_flow_runs_from_input_files_and_rejects_unknown_parts() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let o = ferry(
        dir.path(),
        &[
            "run",
            "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR",
            "--input",
            "bogus=x.json",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("has no trigger part 'bogus' (parts: file, message)"),
        "{}",
        stderr(&o)
    );
    let o = ferry(dir.path(), &["run", "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("needs trigger part 'file'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn graph_prints_the_nested_step_graph() {
    let o = ferry(&repo(), &["graph", "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.starts_with("flowchart TD\n"), "{out}");
    assert!(out.contains("  files -->|each| fetch\n"), "{out}");
    assert!(out.contains("  records -->|each| sync_request\n"), "{out}");
    assert!(
        out.contains("mark_failed_record[\"rename: mark_failed_record (on failure) [when]\"]"),
        "{out}"
    );
    let o = ferry(
        &repo(),
        &[
            "graph",
            "--format",
            "dot",
            "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK",
        ],
    );
    assert!(stdout(&o).starts_with("digraph \"OUTL-BA-OUAI_DACS_OS_ENROLL_ACK\" {"));
}

#[test]
fn demo_runs_all_six_flows_then_finds_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let demo_dir = demo_dir.to_str().unwrap();
    let o = ferry(&repo(), &["demo", "--dir", demo_dir]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for row in [
        "OUTL-BA-DACS_OUAI_FTP_ENROLL       succeeded       2        0        2       1",
        "OUTL-BA-DACS_OUAI_OS_ENROLL        succeeded       1        0        1       1",
        "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK    succeeded       0        7        1       1",
        "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR   succeeded       1        1        0       1",
        "OUTL-BA-OUAI_DACS_KWHAVD_OS_TRF    succeeded       1        0        1       1",
        "OUTL-BA-OUAI_OS_LR_FORECAST        succeeded       0        1        1       1",
    ] {
        assert!(out.contains(row), "missing row {row:?} in\n{out}");
    }
    let o = ferry(&repo(), &["demo", "--dir", demo_dir]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains(
            "OUTL-BA-DACS_OUAI_FTP_ENROLL       no_files        0        0        0       1"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "OUTL-BA-OUAI_OS_LR_FORECAST        no_files        0        0        0       1"
        ),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(Path::new(demo_dir).join("outbox"))
            .unwrap()
            .count(),
        12
    );
}

/// A run of more than `REPORT_EVENTS` events: `ferry run`'s report ends with the run's real
/// last events (here its summary email), and says how many it leaves out in the middle.
#[test]
fn a_long_runs_report_ends_with_its_real_last_events() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::create_dir_all(root.join("data/files/empty")).unwrap();
    std::fs::write(
        root.join("flows/connections.yaml"),
        "connections:\n  files: { kind: local, root: data/files }\n  mail: { kind: outbox, dir: data/outbox }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("flows/long.yaml"),
        r#"id: LONG
name: Long
version: "1"
trigger: { manual: true }
steps:
  - id: each
    for_each:
      items: "range(10100)"
      as: n
      steps:
        - id: look
          list: { connection: files, location: empty }
  - id: done
    notify:
      connection: mail
      from: ferry@example.com
      to: ops@example.com
      subject: long run done
      body: "{{ run.id }}"
"#,
    )
    .unwrap();
    let o = ferry(root, &["run", "LONG", "--data", "state"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let email = lines
        .iter()
        .position(|l| l.contains("email   to ops@example.com \"long run done\""))
        .unwrap_or_else(|| panic!("no email in the report:\n{out}"));
    // the email is the last event, after 24 listings; the 10,101 events less 50 shown are
    // said in one line before them
    assert!(lines[email - 24].contains("list "), "{}", lines[email - 24]);
    assert_eq!(
        lines[email - 25].trim(),
        format!(
            "… 10051 more event(s) (`ferry runs show {}` pages through them)",
            run_id(&out)
        )
    );
    assert!(!lines[email + 1].starts_with("  "), "{}", lines[email + 1]);

    // the history pages every event from the command line
    let id = run_id(&out);
    let o = ferry(
        root,
        &[
            "runs",
            "show",
            &id[..13],
            "--events",
            "--status",
            "emails",
            "--data",
            "state",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert_eq!(page.lines().count(), 1, "{page}");
    assert!(page.starts_with("#10101  "), "{page}");
    assert!(
        page.contains("email   to ops@example.com \"long run done\""),
        "{page}"
    );
    let o = ferry(
        root,
        &[
            "runs", "show", &id, "--events", "--after", "10095", "--limit", "3", "--data", "state",
        ],
    );
    let page = stdout(&o);
    let numbers: Vec<&str> = page
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["#10096", "#10097", "#10098", "more:"], "{page}");
    assert!(page.ends_with(&format!(
        "more: ferry runs show {id} --events --status all --after 10098 --limit 3\n"
    )));
    let o = ferry(
        root,
        &["runs", "show", &id, "--status", "files", "--data", "state"],
    );
    assert_eq!(o.status.code(), Some(2), "--status needs --events");
}

/// The run id in a report's first line: `FLOW NAME (run ID)`.
fn run_id(report: &str) -> String {
    report
        .split("(run ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap()
        .to_string()
}

/// A CSV record over `max_record_kib` is a data error naming its line, found while it is
/// read (the reader stops inside it); a NUL byte in a field is one unless `allow_nul`.
#[test]
fn csv_records_are_bounded_and_nul_bytes_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::write(
        root.join("flows/connections.yaml"),
        "connections:\n  files: { kind: local, root: data }\n",
    )
    .unwrap();
    let flow = |id: &str, extra: &str| {
        format!(
            r#"id: {id}
name: {id}
version: "1"
trigger: {{ manual: true }}
steps:
  - id: rows
    for_each:
      csv: {{ file: "{{{{ '{}' }}}}", {extra} }}
      as: row
      steps:
        - id: shape
          transform: {{ fields: {{ a: "{{{{ row.fields.a }}}}" }} }}
"#,
            root.join("in.csv").display()
        )
    };
    std::fs::write(
        root.join("flows/bounded.yaml"),
        flow("BOUNDED", "max_record_kib: 64"),
    )
    .unwrap();
    std::fs::write(root.join("flows/nul.yaml"), flow("NUL", "allow_nul: true")).unwrap();
    // a 64 MiB record on line 3: refused after about 64 KiB plus the reader's buffer
    let mut text = b"a,b\n1,2\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 64 << 20));
    text.extend(b",3\n4,5\n");
    std::fs::write(root.join("in.csv"), &text).unwrap();
    let o = ferry(root, &["run", "BOUNDED", "--data", "state"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "CSV {}: line 3: the record is longer than 64 KiB (`max_record_kib` sets the limit)",
            root.join("in.csv").display()
        )),
        "{}",
        stdout(&o)
    );
    // a record just over the limit, read whole, is refused too
    let mut text = b"a,b\n".to_vec();
    text.extend(std::iter::repeat_n(b'y', 65 * 1024));
    text.extend(b",1\n");
    std::fs::write(root.join("in.csv"), &text).unwrap();
    let o = ferry(root, &["run", "BOUNDED", "--data", "state"]);
    assert!(
        stdout(&o).contains("line 2: the record is longer than 64 KiB"),
        "{}",
        stdout(&o)
    );
    // NUL bytes: refused by default (field 2 of line 3), accepted with allow_nul
    std::fs::write(root.join("in.csv"), b"a,b\n1,2\n3,x\0y\n").unwrap();
    let o = ferry(root, &["run", "BOUNDED", "--data", "state"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stdout(&o).contains("line 3: field 2 holds a NUL byte (`allow_nul: true` accepts it)"),
        "{}",
        stdout(&o)
    );
    let o = ferry(root, &["run", "NUL", "--data", "state"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}
