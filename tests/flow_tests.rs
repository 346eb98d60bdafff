//! `ferry test` on the shipped flow tests (`flows/tests/*.test.yaml`): they pass, and each
//! behaviour change the tests are meant to guard (a dropped tolerance, a changed rename, an
//! inverted check or flag, the wrong recipient, …) made to a copy of the flows makes at
//! least one of them fail. This is how CI runs `ferry test` (`.ci/run` runs `cargo test`).

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::{Command, Output};

use project::{copy_dir, repo};

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of the repository's flows, lookups and demo samples (the tests read them).
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("flows"), &dir.path().join("flows"));
    copy_dir(&repo().join("lookups"), &dir.path().join("lookups"));
    copy_dir(
        &repo().join("examples/demo"),
        &dir.path().join("examples/demo"),
    );
    dir
}

#[test]
fn the_shipped_flow_tests_pass() {
    let o = ferry(&repo(), &["test", "flows"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let summary = out.lines().last().unwrap();
    assert!(summary.ends_with(" passed, 0 failed"), "{summary}");
    let n: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(n >= 25, "{summary}");
    // every shipped flow and the error handler has tests
    for f in [
        "enrollment_ftp",
        "enrollment_os",
        "enrollment_ack",
        "event_outcome",
        "kwh_avoided",
        "load_forecast",
        "error_handler",
    ] {
        assert!(
            out.contains(&format!("ok   flows/tests/{f}.test.yaml: ")),
            "{f}: {out}"
        );
    }
}

/// Behaviour changes, each in one flow file: (file, what, replacement).
const MUTATIONS: &[(&str, &str, &str)] = &[
    // flow 3 no longer tolerates DACS's 400 for a duplicate sync request
    ("enrollment_ack.yaml", "tolerate: [400]", "tolerate: []"),
    // flow 3 names the failing record one off
    (
        "enrollment_ack.yaml",
        "'_ErrInRcd_' ~ error.items.record.number ~",
        "'_ErrInRcd_' ~ (error.items.record.number + 1) ~",
    ),
    // flow 3 no longer resumes at the marked record
    (
        "enrollment_ack.yaml",
        "start_at: \"{{ file.name | regex_capture('_ErrInRcd_([0-9]+)') | default('1') }}\"",
        "start_at: \"1\"",
    ),
    // flow 1 renames sources with another prefix
    (
        "enrollment_ftp.yaml",
        "to: \"{{ config('dacs.prefixtag.fileuploaded') }}{{ file.name }}\"",
        "to: \"Done-{{ file.name }}\"",
    ),
    // flow 1 goes on after a failing file
    (
        "enrollment_ftp.yaml",
        "      as: file\n",
        "      as: file\n      on_failure: continue\n",
    ),
    // flow 2's no-file flag inverted
    (
        "enrollment_os.yaml",
        "nofile.flag') == 'true'",
        "nofile.flag') == 'false'",
    ),
    // flow 4 mails the wrong business recipients
    (
        "event_outcome.yaml",
        "to: \"{{ email('drms.to.process.notification') }},",
        "to: \"{{ email('dacs.to.process.notification') }},",
    ),
    // flow 4 acknowledges a success as a failure
    (
        "event_outcome.yaml",
        "          ackType: SUCCESS",
        "          ackType: FAILURE",
    ),
    // flow 5 puts into the wrong DACS bucket
    (
        "kwh_avoided.yaml",
        "bucket: \"{{ config('dacs.os.kwhavoided.bucket') }}\"",
        "bucket: \"{{ config('ouai.os.kwhavoided.bucket') }}\"",
    ),
    // flow 5's FTP route writes to the wrong directory
    (
        "kwh_avoided.yaml",
        "directory: \"{{ config('dacs.ftp.kwhavoid.input.directory') }}\"",
        "directory: \"/elsewhere\"",
    ),
    // flow 6's ackType check inverted
    (
        "load_forecast.yaml",
        "ackType == 'SUCCESS'",
        "ackType != 'SUCCESS'",
    ),
    // the error handler mails the sender instead of the error recipients
    (
        "common/error_handler.yaml",
        "to: \"{{ email('to') }}\"",
        "to: \"{{ email('from') }}\"",
    ),
];

#[test]
fn every_behaviour_change_makes_a_shipped_test_fail() {
    for (file, from, to) in MUTATIONS {
        let dir = copy();
        let path = dir.path().join("flows").join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert_eq!(original.matches(from).count(), 1, "{from} in {file}");
        std::fs::write(&path, original.replace(from, to)).unwrap();
        let v = ferry(dir.path(), &["validate", "flows"]);
        assert_eq!(v.status.code(), Some(0), "{file}: {to}: {}", text(&v));
        let o = ferry(dir.path(), &["test", "flows"]);
        let out = text(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{file}: `{to}` went unnoticed:\n{out}"
        );
        assert!(out.contains("FAIL flows/tests/"), "{out}");
    }
}

#[test]
fn a_failure_shows_expected_and_actual_in_every_format() {
    let dir = copy();
    let path = dir.path().join("flows/enrollment_ack.yaml");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("tolerate: [400]", "tolerate: []")).unwrap();
    let test = "flows/tests/enrollment_ack.test.yaml";

    let o = ferry(dir.path(), &["test", test]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(
        out.contains("FAIL flows/tests/enrollment_ack.test.yaml: a 400 (sync request already held) is suppressed and the next records go on\n     outcome:\n       - succeeded\n       + partial (step send: POST "),
        "{out}"
    );

    let o = ferry(dir.path(), &["test", test, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let results: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed: Vec<&serde_json::Value> = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{results:#}");
    assert_eq!(failed[0]["flow"], "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK");
    assert_eq!(failed[0]["mismatches"][0]["what"], "outcome");
    assert_eq!(failed[0]["mismatches"][0]["expected"], "succeeded");

    let o = ferry(dir.path(), &["test", test, "--format", "junit"]);
    assert_eq!(o.status.code(), Some(1));
    let xml = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"ferry test\" tests=\"8\" failures=\"1\">\n  <testsuite name=\"flows/tests/enrollment_ack.test.yaml\" tests=\"8\" failures=\"1\""), "{xml}");
    assert!(xml.contains("<testcase classname=\"OUTL-BA-OUAI_DACS_OS_ENROLL_ACK\" name=\"a 400 (sync request already held) is suppressed and the next records go on\""), "{xml}");
    assert!(
        xml.contains(
            " expectation(s) failed, first: outcome\">outcome:\n- succeeded\n+ partial (step send"
        ),
        "{xml}"
    );
    assert_eq!(xml.matches("<failure").count(), 1);
}

#[test]
fn coverage_lists_what_no_test_reached() {
    let dir = copy();
    // only flow 1's no-file test
    let only = dir.path().join("flows/tests/only.test.yaml");
    std::fs::write(
        &only,
        "flow: OUTL-BA-DACS_OUAI_FTP_ENROLL
tests:
  - name: no file
    files: { dacs_ftp: { /sploutput/DACSEnv/enroll/: {} } }
    expect: { outcome: no_files }
",
    )
    .unwrap();
    let o = ferry(
        dir.path(),
        &["test", "flows/tests/only.test.yaml", "--coverage"],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let section = out.split("OUTL-BA-DACS_OUAI_FTP_ENROLL (").nth(1).unwrap();
    let lines: Vec<&str> = section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(
        lines,
        [
            "  step 'no_file_email': `when` never false",
            "  step 'nothing_to_do': `when` never false",
            "  step 'files' never reached",
            "  step 'complete_email': `when` never true",
        ]
    );
}
