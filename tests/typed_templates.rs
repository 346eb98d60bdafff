//! Typed templates: a typo in a shipped flow's template is a diagnostic at its exact
//! file:line:column with a suggestion, and a CSV loop's declared `columns` are checked both
//! in templates and against the file's header before any record is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry::run::Outcome;
use pretty_assertions::assert_eq;
use support::Workspace;

const ENROLL_ACK: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const ACK_BUCKET: &str = "ouainamespace/OUAIEnrollAckFolder";
const ACK_DEMO: &str = "feedback.dacs.program_subscription.20230210.csv";

/// Replaces `from` (which must occur exactly `times` times) in a workspace flow file.
fn plant(ws: &Workspace, file: &str, from: &str, to: &str, times: usize) {
    let path = ws.flows_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(from).count(), times, "{from} in {file}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// The diagnostics of the workspace, one line each, paths relative to the workspace.
fn diagnostics(ws: &Workspace) -> Vec<String> {
    let (project, diags) = ws.try_load();
    assert_eq!(project.is_some(), diags.is_empty());
    let prefix = format!("{}/", ws.path().display());
    diags
        .iter()
        .map(|d| d.one_line().replace(&prefix, ""))
        .collect()
}

#[tokio::test]
async fn an_unknown_attribute_of_a_loop_variable() {
    let ws = Workspace::new().await;
    // the fetch step's name in flow 1 (the route's `object_name` stays right)
    plant(
        &ws,
        "enrollment_ftp.yaml",
        "            name: \"{{ file.name }}\"",
        "            name: \"{{ file.nme }}\"",
        1,
    );
    assert_eq!(
        diagnostics(&ws),
        [
            "flows/enrollment_ftp.yaml:49:28: steps[3].for_each.steps[0].fetch.name: `file` has no attribute 'nme' (did you mean 'name'?)"
        ]
    );
}

#[tokio::test]
async fn an_unknown_filter_in_an_email_body() {
    let ws = Workspace::new().await;
    plant(
        &ws,
        "enrollment_ftp.yaml",
        "Files transferred: {{ steps.files.done | length }}",
        "Files transferred: {{ steps.files.done | lenght }}",
        1,
    );
    assert_eq!(
        diagnostics(&ws),
        [
            "flows/enrollment_ftp.yaml:80:50: steps[4].notify.body: unknown filter 'lenght' (did you mean 'length'?)"
        ]
    );
}

#[tokio::test]
async fn an_unknown_step_output_in_a_when_expression() {
    let ws = Workspace::new().await;
    plant(
        &ws,
        "enrollment_os.yaml",
        "    when: \"steps.list.count == 0\"",
        "    when: \"steps.list.cont == 0\"",
        1,
    );
    assert_eq!(
        diagnostics(&ws),
        [
            "flows/enrollment_os.yaml:38:23: steps[2].when: `steps.list` has no attribute 'cont' (did you mean 'count'?)"
        ]
    );
}

#[tokio::test]
async fn an_undeclared_csv_column() {
    let ws = Workspace::new().await;
    plant(
        &ws,
        "enrollment_ack.yaml",
        "{{ record.fields.AckMessage }}",
        "{{ record.fields.AckMesage }}",
        1,
    );
    assert_eq!(
        diagnostics(&ws),
        [
            "flows/enrollment_ack.yaml:79:48: steps[3].for_each.steps[1].for_each.steps[0].transform.fields.message: `record.fields` has no attribute 'AckMesage' (did you mean 'AckMessage'?)"
        ]
    );
}

#[tokio::test]
async fn an_unknown_test_and_an_entry_of_a_loop_output() {
    let ws = Workspace::new().await;
    // CSV loop outputs list record numbers only
    plant(
        &ws,
        "enrollment_ack.yaml",
        "{% for f in steps.files.pending %}  - {{ f.name }}",
        "{% for f in steps.records.pending %}  - {{ f.fields }}",
        1,
    );
    plant(
        &ws,
        "enrollment_ack.yaml",
        "when: \"error.items.record is defined\"",
        "when: \"error.items.record is defned\"",
        1,
    );
    assert_eq!(
        diagnostics(&ws),
        [
            "flows/enrollment_ack.yaml:98:40: steps[3].for_each.steps[3].when: unknown test 'defned' (did you mean 'defined'?)",
            "flows/enrollment_ack.yaml:120:54: steps[4].notify.body: `f` has no attribute 'fields' (a CSV record has: number)",
        ]
    );
}

#[tokio::test]
async fn a_feedback_file_with_another_header_fails_at_line_1_before_any_record() {
    let ws = Workspace::new().await;
    // one long line without a newline: garbage, not a feedback file
    let garbage = "x".repeat(100_000);
    ws.put_file("ouai-os", ACK_BUCKET, ACK_DEMO, &garbage);
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(error.step, "records");
    assert!(
        error.message.contains(ACK_DEMO) && error.message.contains(": line 1: the header is 'xxx"),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with("…', expected 'SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime'"),
        "{}",
        error.message
    );
    assert!(ws.standin.sync_requests().is_empty());
    // nothing is lost: the file stays, unrenamed, and the error email goes out
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [ACK_DEMO]);
    assert_eq!(ws.emails_about("ERROR").len(), 1, "{:#?}", ws.emails());
}

#[tokio::test]
async fn an_empty_feedback_file_is_a_data_error_unless_allowed() {
    let ws = Workspace::new().await;
    ws.put_file("ouai-os", ACK_BUCKET, ACK_DEMO, b"");
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert!(
        error.message.contains(ACK_DEMO)
            && error
                .message
                .contains(": line 1: the file is empty (no header)"),
        "{}",
        error.message
    );
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [ACK_DEMO]);

    plant(
        &ws,
        "enrollment_ack.yaml",
        "              columns: [",
        "              allow_empty: true\n              columns: [",
        1,
    );
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(ws.standin.sync_requests().is_empty());
    assert_eq!(
        ws.list_files("ouai-os", ACK_BUCKET),
        [format!("Sent-{ACK_DEMO}")]
    );
}

#[tokio::test]
async fn a_header_only_file_is_a_loop_over_nothing() {
    let ws = Workspace::new().await;
    ws.put_file(
        "ouai-os",
        ACK_BUCKET,
        ACK_DEMO,
        "SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime\n",
    );
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(ws.standin.sync_requests().is_empty());
}
