//! What a run tells an author about `error` and about templates that fail (issue 22, item
//! 2): `error` is undefined where no step failed, a template failing at run time is named by
//! file:line:column and expression in `ferry run`'s report, in `ferry runs show` and in
//! `ferry test`, and a file the run itself renamed before fetching it fails the run.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env_remove("FERRY_DATA")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const FLOW: &str = "flows/hello_transfer.yaml";

/// A project from `ferry init` whose flow has `edit` applied (`from` → `to`, which must be in
/// the scaffold).
fn project(edits: &[(&str, &str)]) -> tempfile::TempDir {
    project_with(edits, "")
}

/// [`project`], with `connections` appended to the connections file.
fn project_with(edits: &[(&str, &str)], connections: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = ferry(dir.path(), &["init"]);
    assert!(o.status.success(), "{}", out(&o));
    let conns = dir.path().join("flows/connections.yaml");
    let text = std::fs::read_to_string(&conns).unwrap();
    std::fs::write(&conns, format!("{text}{connections}")).unwrap();
    let path = dir.path().join(FLOW);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "{from:?} is not in the scaffold:\n{text}"
        );
        text = text.replacen(from, to, 1);
    }
    std::fs::write(&path, text).unwrap();
    let o = ferry(dir.path(), &["validate"]);
    assert!(o.status.success(), "{}", out(&o));
    dir
}

/// The line and column of `needle` in the flow file (1-based).
fn at(dir: &Path, needle: &str) -> String {
    let text = std::fs::read_to_string(dir.join(FLOW)).unwrap();
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap();
    let col = line[..line.find(needle).unwrap()].chars().count() + 1;
    format!("{FLOW}:{}:{col}", n + 1)
}

/// The run id `ferry run` printed.
fn run_id(report: &str) -> String {
    let start = report.find("(run ").unwrap() + 5;
    report[start..start + 36].to_string()
}

const SUMMARY: &str = "Files transferred: {{ steps.files.done | length }}\n";

/// On a run where nothing failed, `{% if error is defined %}` was true (`error` was defined
/// and empty) and `error.message` failed the email: `error` is undefined there, so both
/// tests are false and the summary is sent.
#[test]
fn error_is_undefined_where_nothing_failed() {
    let dir = project(&[(
        "Files not transferred: {{ steps.files.pending | length }}\n",
        "Files not transferred: {{ steps.files.pending | length }}\n        \
         [{% if error is defined %}failed at {{ error.step }}: {{ error.message }}{% endif %}]\
         [{% if error %}{{ error.message }}{% endif %}]\n",
    )]);
    let o = ferry(dir.path(), &["run", "hello-transfer"]);
    let report = out(&o);
    assert_eq!(o.status.code(), Some(0), "{report}");
    assert!(
        report.contains("email   to ops@example.com \"Hello transfer: process complete\" [did]"),
        "{report}"
    );
    let outbox = dir.path().join("ferry-data/outbox");
    let eml: Vec<_> = std::fs::read_dir(&outbox).unwrap().collect();
    assert_eq!(eml.len(), 1);
    let body = std::fs::read_to_string(eml[0].as_ref().unwrap().path()).unwrap();
    assert!(body.contains("Files transferred: 1"), "{body}");
    assert!(body.contains("[][]"), "{body}");
    let o = ferry(dir.path(), &["test"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

/// A notify body failing at run time said "undefined value" with no place: the report, the
/// history and `ferry test` name the file, line, column and the failing expression.
#[test]
fn a_notify_template_failing_at_run_time_is_named_everywhere() {
    let dir = project(&[(
        SUMMARY,
        "Files transferred: {{ steps.files.done | length }}\n        \
         first: {{ email(steps.files.done[0].name) }}\n",
    )]);
    let place = at(dir.path(), "email(steps.files.done[0].name)");
    let want = format!(
        "{place}: `email(steps.files.done[0].name)`: invalid operation: lookup emails has no key 'data_1.csv'"
    );
    let o = ferry(dir.path(), &["run", "hello-transfer"]);
    let report = out(&o);
    assert!(
        report.contains(&format!(
            "WARNING email to ops@example.com \"Hello transfer: process complete\" was not sent: {want}"
        )),
        "{report}"
    );
    let o = ferry(dir.path(), &["runs", "show", &run_id(&report)]);
    assert!(out(&o).contains(&want), "{}", out(&o));
    let o = ferry(dir.path(), &["test"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains(&want), "{}", out(&o));
}

/// A step's template failing at run time fails the run with the place and expression.
#[test]
fn a_step_template_failing_at_run_time_is_named_everywhere() {
    let dir = project(&[(
        "to: \"Sent-{{ file.name }}\"",
        "to: \"Sent-{{ email(file.name) }}\"",
    )]);
    let place = at(dir.path(), "email(file.name)");
    let want = format!(
        "{place}: `email(file.name)`: invalid operation: lookup emails has no key 'data_1.csv'"
    );
    let o = ferry(dir.path(), &["run", "hello-transfer"]);
    let report = out(&o);
    assert_ne!(o.status.code(), Some(0), "{report}");
    assert!(
        report.contains(&format!("error: step 'mark_sent': {want}")),
        "{report}"
    );
    let o = ferry(dir.path(), &["runs", "show", &run_id(&report)]);
    assert!(out(&o).contains(&want), "{}", out(&o));
    let o = ferry(dir.path(), &["test"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains(&want), "{}", out(&o));
}

/// A `needs:` that renamed each file before fetching it ended `succeeded`, exit 0, nothing
/// moved, and blamed "names ferry refuses": the run fails, and the closing warning says why
/// the file was left where it is.
#[test]
fn a_file_the_run_renamed_before_fetching_it_fails_the_run() {
    let dir = project(&[(
        "fetch: { connection: files, location: inbox, name: \"{{ file.name }}\" }",
        "needs: [mark_sent]\n          \
         fetch: { connection: files, location: inbox, name: \"{{ file.name }}\" }",
    )]);
    let o = ferry(dir.path(), &["run", "hello-transfer"]);
    let report = out(&o);
    assert_ne!(o.status.code(), Some(0), "{report}");
    assert!(!report.contains("outcome: succeeded"), "{report}");
    assert!(!report.contains("names"), "{report}");
    assert!(
        report.contains(
            "files:inbox/data_1.csv was renamed to Sent-data_1.csv by this run (step 'mark_sent') before step 'fetch' fetched it"
        ),
        "{report}"
    );
}

/// A file gone since it was listed (here another connection on the same directory renamed
/// it) is left where it is, and the closing warning gives that reason, not "names ferry
/// refuses".
#[test]
fn the_closing_warning_states_why_files_were_left() {
    let dir = project_with(
        &[
            (
                "fetch: { connection: files, location: inbox, name: \"{{ file.name }}\" }",
                "needs: [mark_sent]\n          \
                 fetch: { connection: files, location: inbox, name: \"{{ file.name }}\" }",
            ),
            (
                "rename: { connection: files,",
                "rename: { connection: same_files,",
            ),
        ],
        "  same_files:\n    kind: local\n    root: \"${FERRY_DATA:-./ferry-data}/files\"\n",
    );
    let o = ferry(dir.path(), &["run", "hello-transfer"]);
    let report = out(&o);
    assert!(
        report
            .contains("skip    files:inbox/data_1.csv left where it is: gone since it was listed"),
        "{report}"
    );
    assert!(
        report.contains(
            "warning: 1 file(s) left where they are (see above): 1 gone since it was listed\n"
        ),
        "{report}"
    );
    assert!(!report.contains("refuses"), "{report}");
}
