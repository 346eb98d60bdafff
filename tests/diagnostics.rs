//! Diagnostics a person can act on: YAML syntax errors at the mistake with the line, a caret
//! and a hint; a misplaced field says where it belongs; every stray field is reported;
//! invalid UTF-8 has a position and exit code 1; one root cause gives one diagnostic; a
//! child flow run on its own needs its parameters.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::{Command, Output};

use pretty_assertions::assert_eq;

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env("FERRY_DATA", dir.join("data"))
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A project of the shipped flows plus `flows/t.yaml` holding `bytes`; `ferry validate
/// flows/t.yaml` on it.
fn validate(bytes: &[u8]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    project::shipped_project(dir.path(), "http://127.0.0.1:9");
    std::fs::write(dir.path().join("flows/t.yaml"), bytes).unwrap();
    ferry(dir.path(), &["validate", "flows/t.yaml"])
}

const HEAD: &str = "id: t\nname: T\nversion: '1'\ntrigger: { manual: true }\nsteps:\n";

#[test]
fn an_unclosed_brace_is_reported_where_it_opens() {
    let o = validate(
        format!("{HEAD}  - id: a\n    list: {{ connection: dacs_os, location: x\n  - id: b\n    end: {{ outcome: succeeded }}\n").as_bytes(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        "error[syntax]: invalid YAML: this `{` is not closed
  --> flows/t.yaml:7:11
  |
7 |     list: { connection: dacs_os, location: x
  |           ^
  = hint: close it with `}` on the same line; the parser stopped at line 8: while parsing a flow mapping, did not find expected ',' or '}'

"
    );
}

#[test]
fn a_tab_is_reported_where_it_stands() {
    let o = validate(
        format!("{HEAD}  - id: a\n    list:\n      connection: dacs_os\n\tlocation: x\n")
            .as_bytes(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        "error[syntax]: invalid YAML: while scanning a plain scalar, found a tab
  --> flows/t.yaml:9:1
  |
9 | \tlocation: x
  | ^
  = hint: indent with spaces: YAML does not allow tabs in indentation

"
    );
}

#[test]
fn a_wrongly_indented_line_says_so() {
    let o = validate(
        format!("{HEAD}  - id: a\n    list:\n      connection: dacs_os\n     location: x\n")
            .as_bytes(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        "error[syntax]: invalid YAML: while parsing a block mapping, did not find expected key
  --> flows/t.yaml:9:6
  |
9 |      location: x
  |      ^
  = hint: check this line's indentation: it is indented 5 spaces, the line above 6; fields of one map line up

"
    );
}

#[test]
fn a_misplaced_field_says_where_it_belongs_and_every_stray_field_is_reported() {
    let o = validate(
        format!("{HEAD}  - id: a\n    list:\n      connection: dacs_os\n      location: x\n    prefix: ab\n    lst: 1\n    exclude: x\n").as_bytes(),
    );
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<String> = out(&o)
        .lines()
        .filter(|l| l.starts_with("  -->") || l.starts_with("  = hint"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "  --> flows/t.yaml:10:5",
            "  = hint: 'prefix' belongs in `list`: indent it under `list:`",
            "  --> flows/t.yaml:11:5",
            "  = hint: did you mean 'list'?",
            "  --> flows/t.yaml:12:5",
            "  = hint: expected one of: description, end, fetch, for_each, id, invoke, list, needs, notify, rename, route, run_on, transform, when",
        ]
    );
}

#[test]
fn invalid_utf8_has_a_position_and_exits_1() {
    let mut bytes =
        format!("{HEAD}  - id: a\n    list: {{ connection: dacs_os, location: \"x").into_bytes();
    bytes.extend(b"\xe9t\xe9\" }\n");
    let o = validate(&bytes);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert_eq!(
        out(&o),
        "error[encoding]: not valid UTF-8: byte 0xe9 at offset 115
  --> flows/t.yaml:7:46
  |
7 |     list: { connection: dacs_os, location: \"x\u{fffd}t\u{fffd}\" }
  |                                              ^
  = hint: save the file as UTF-8 (a Latin-1 or Windows-1252 character is the usual cause)

"
    );
}

#[test]
fn a_bare_boolean_in_a_lookup_is_one_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    project::shipped_project(dir.path(), "http://127.0.0.1:9");
    let f = dir
        .path()
        .join("lookups/OUTL-BRT-OUAI_DACS_DRMS_ConfigProps.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let from = "[notification.email.error.flag, \"true\"]";
    assert!(text.contains(from));
    std::fs::write(
        &f,
        text.replace(from, "[notification.email.error.flag, true]"),
    )
    .unwrap();
    let o = ferry(dir.path(), &["validate", "flows"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o),
        "error[schema]: true is not of type \"string\"
  --> lookups/OUTL-BRT-OUAI_DACS_DRMS_ConfigProps.yaml:16:37
   |
16 |   - [notification.email.error.flag, true]
   |                                     ^
  = at: rows[8][1]
  = hint: quote it to keep it text: \"true\"

"
    );
    assert_eq!(err(&o), "1 problem(s) found\n");
}

#[test]
fn a_child_flow_run_on_its_own_needs_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    project::shipped_project(dir.path(), "http://127.0.0.1:9");
    let child = "OUTL-BA-OUAI_COMMON_OS_TRNFR";
    let o = ferry(dir.path(), &["run", child]);
    assert_eq!(o.status.code(), Some(2), "{}{}", out(&o), err(&o));
    assert_eq!(
        err(&o),
        format!(
            "error: flow '{child}' is a child flow (other flows call it; it has no trigger): run it on its own with its parameters: ferry run {child} --param bucket=… --param file=… --param namespace=… --param object_name=…\n"
        )
    );
    let o = ferry(dir.path(), &["run", child, "--param", "bukket=b"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o)
            .contains("has no parameter 'bukket' (it takes: bucket, file, namespace, object_name)"),
        "{}",
        err(&o)
    );
    // with its parameters it runs: the file lands in the bucket
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello").unwrap();
    let file_param = format!("file={}", file.display());
    let o = ferry(
        dir.path(),
        &[
            "run",
            child,
            "--param",
            "object_name=o.txt",
            "--param",
            "namespace=ns",
            "--param",
            "bucket=b",
            "--param",
            &file_param,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let put = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().path().join("ns/b/o.txt"))
        .find(|p| p.is_file())
        .expect("the put file");
    assert_eq!(std::fs::read(put).unwrap(), b"hello");
}
