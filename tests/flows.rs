//! End-to-end tests of the six shipped flows (SPEC §4) on the embedded default: local
//! directories as the FTP server and object storage, the `.eml` outbox, and the in-process
//! DACS/DERMS stand-ins. Every test builds its own [`Workspace`] (a copy of `flows/` and
//! `lookups/`), so they run in parallel and never touch the repository.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry::run::{Event, Outcome, RunReport};
use ferry::standin::FailurePlan;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use support::{Email, Workspace, dead_url, demo_data, demo_input};

const FTP_ENROLL: &str = "OUTL-BA-DACS_OUAI_FTP_ENROLL";
const OS_ENROLL: &str = "OUTL-BA-DACS_OUAI_OS_ENROLL";
const ENROLL_ACK: &str = "OUTL-BA-OUAI_DACS_OS_ENROLL_ACK";
const EVENT_OUTCOME: &str = "OUTL-BA-DRMS_OUAI_EVT_OUTC_TRNFR";
const KWH_AVOIDED: &str = "OUTL-BA-OUAI_DACS_KWHAVD_OS_TRF";
const LR_FORECAST: &str = "OUTL-BA-OUAI_OS_LR_FORECAST";

const ADMIN: &str = "admin@myCy.com";
const ERROR_DIST: &str = "errorDist@myCy.com";
const DACS_USER: &str = "dacsUser@myCy.com";
const OUAI_USER: &str = "ouaiUser@myCy.com";
const DRMS_USER: &str = "drmsUser@myCy.com";

const NOFILE_FLAG: &str = "notification.email.process.nofile.flag";
const COMPLETE_FLAG: &str = "notification.email.process.complete.flag";
const ERROR_FLAG: &str = "notification.email.error.flag";
const DACS_PREF: &str = "dacs.file.target.transfer.pref";

const SYNC_PATH: &str = "/rest/apis/cross/syncRequests/update";
const ACK_BUCKET: &str = "ouainamespace/OUAIEnrollAckFolder";
const ACK_DEMO: &str = "feedback.dacs.program_subscription.20230210.csv";
const ACK_HEADER: &str = "SyncRequestId,ProgramId,EnrollmentId,ServicePointId,DeviceId,AckStatus,AckMessage,ProcessedDateTime";
const OUTCOME_BUCKET: &str = "ouainamespace/OUAIOutcomeFolder";
const OUTCOME_FILE: &str = "event_outcome.4011.20221213.csv";
/// Records in each generated enrollment ack file.
const ACK_RECORDS: usize = 2;

/// Where a file flow sends its files.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A location under a local root.
    Files {
        root: &'static str,
        location: &'static str,
        /// The step whose failure a blocked put reports.
        step: &'static str,
    },
    /// Each CSV record to the DACS sync request stand-in.
    SyncRequests,
    /// The file to the DERMS forecast upload stand-in.
    Forecasts,
}

/// A flow of the shared file shape (SPEC §4: list, no file, for each file, complete, errors).
#[derive(Debug, Clone, Copy)]
struct FileFlow {
    id: &'static str,
    name: &'static str,
    root: &'static str,
    location: &'static str,
    prefix: &'static str,
    /// What goes between the prefix and the date in generated names.
    sep: &'static str,
    recipients: [&'static str; 2],
    target: Target,
    /// The word of the summary: "Files transferred" / "Files processed".
    done: &'static str,
}

const FLOW1: FileFlow = FileFlow {
    id: FTP_ENROLL,
    name: "OU DACS OUAI Enrollment FTP Transfer",
    root: "dacs-ftp",
    location: "/sploutput/DACSEnv/enroll/",
    prefix: "ENROLL_SYNC",
    sep: "_",
    recipients: [DACS_USER, OUAI_USER],
    target: Target::Files {
        root: "ouai-os",
        location: "ouainamespace/OUAIEnrollFolder",
        step: "put",
    },
    done: "transferred",
};

const FLOW2: FileFlow = FileFlow {
    id: OS_ENROLL,
    name: "OU DACS OUAI Enrollment OS Transfer",
    root: "dacs-os",
    location: "dacsnamespace/DACS_EnrollFolder",
    prefix: "ENROLL_SYNC",
    sep: "_",
    recipients: [DACS_USER, OUAI_USER],
    target: Target::Files {
        root: "ouai-os",
        location: "ouainamespace/OUAIEnrollFolder",
        step: "put",
    },
    done: "transferred",
};

const FLOW3: FileFlow = FileFlow {
    id: ENROLL_ACK,
    name: "OU OUAI DACS EnrollmentAck OS Process",
    root: "ouai-os",
    location: ACK_BUCKET,
    prefix: "feedback.dacs.program_subscription",
    sep: ".",
    recipients: [DACS_USER, OUAI_USER],
    target: Target::SyncRequests,
    done: "processed",
};

const FLOW5: FileFlow = FileFlow {
    id: KWH_AVOIDED,
    name: "OU OUAI DACS KwhAvoided OS Transfer",
    root: "ouai-os",
    location: "ouainamespace/OUAIKwhAvoidFolder",
    prefix: "ouai.kwh_avoided",
    sep: ".",
    recipients: [DACS_USER, OUAI_USER],
    target: Target::Files {
        root: "dacs-os",
        location: "dacsnamespace/DACS_KWHAvdFolder",
        step: "put",
    },
    done: "transferred",
};

const FLOW6: FileFlow = FileFlow {
    id: LR_FORECAST,
    name: "OU OUAI DERMS LoadReductionForecast OS Transfer",
    root: "ouai-os",
    location: "ouainamespace/Ouai_LRFolder",
    prefix: "ouai.load_forecast",
    sep: ".",
    recipients: [OUAI_USER, DRMS_USER],
    target: Target::Forecasts,
    done: "transferred",
};

// ---------------------------------------------------------------------------------------
// helpers

/// The `i`-th generated source file of `flow` (names sort by `i`).
fn sample(flow: &FileFlow, i: usize) -> (String, Vec<u8>) {
    let name = format!("{}{}202303{:02}.csv", flow.prefix, flow.sep, i);
    let bytes = match flow.target {
        Target::SyncRequests => {
            let mut s = format!("{ACK_HEADER}\n");
            for r in 1..=ACK_RECORDS {
                s.push_str(&format!(
                    "SR-T{i}-{r},1234512345,EN-{i}{r},11223344{i}{r},DEV-{i}{r},ACCEPTED,ok {i}/{r},2023-03-0{}T01:00:0{r}Z\n",
                    i % 9 + 1
                ));
            }
            s.into_bytes()
        }
        // CRLF, non-ASCII text and bytes that are not UTF-8: the bytes must arrive as they are
        _ => {
            let mut b =
                format!("Id,Value,Note\r\n{i},42.5,caf\u{e9} r\u{e9}sum\u{e9} \u{2013} {i}\r\n")
                    .into_bytes();
            b.extend_from_slice(&[0xff, 0x00, 0xfe, b'\r', b'\n']);
            b
        }
    };
    (name, bytes)
}

fn samples(flow: &FileFlow, n: usize) -> Vec<(String, Vec<u8>)> {
    (1..=n).map(|i| sample(flow, i)).collect()
}

fn seed(ws: &Workspace, flow: &FileFlow, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        ws.put_file(flow.root, flow.location, name, bytes);
    }
}

fn sent(name: &str) -> String {
    format!("Sent-{name}")
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<String> {
    files.iter().map(|(n, _)| n.clone()).collect()
}

/// The `SyncRequestId` column of a CSV file.
fn sync_ids_of(csv_bytes: &[u8]) -> Vec<String> {
    let mut reader = csv::Reader::from_reader(csv_bytes);
    reader
        .records()
        .map(|r| r.unwrap().get(0).unwrap().to_string())
        .collect()
}

/// The `syncRequestId`s the DACS stand-in accepted, in order.
fn received_sync_ids(ws: &Workspace) -> Vec<String> {
    ws.standin
        .sync_requests()
        .iter()
        .map(|r| r["syncRequestId"].as_str().unwrap().to_string())
        .collect()
}

/// The statuses DACS answered to sync request updates, in order.
fn sync_statuses(ws: &Workspace) -> Vec<u16> {
    ws.standin
        .journal()
        .iter()
        .filter(|j| j.path == SYNC_PATH)
        .map(|j| j.status)
        .collect()
}

/// Makes the `index`-th (0-based) file of a run fail at its target, for real: a directory
/// standing where the put must create the file, or the stand-in failing that call.
fn break_file(ws: &Workspace, flow: &FileFlow, index: usize, name: &str) {
    match flow.target {
        Target::Files { root, location, .. } => {
            std::fs::create_dir_all(ws.dir(root, location).join(name).join("occupied")).unwrap();
        }
        Target::Forecasts => ws.standin.fail_forecast_uploads(FailurePlan {
            after: index,
            status: 500,
            times: 1,
        }),
        Target::SyncRequests => {
            ws.sequential_records();
            ws.standin.fail_sync_requests(FailurePlan {
                after: index * ACK_RECORDS,
                status: 500,
                times: 1,
            })
        }
    }
}

/// Removes what [`break_file`] put in the way.
fn unbreak_file(ws: &Workspace, flow: &FileFlow, name: &str) {
    if let Target::Files { root, location, .. } = flow.target {
        std::fs::remove_dir_all(ws.dir(root, location).join(name)).unwrap();
    }
}

/// Asserts that `files` arrived at the flow's target, byte for byte, in name order.
fn assert_delivered(ws: &Workspace, flow: &FileFlow, files: &[(String, Vec<u8>)]) {
    match flow.target {
        Target::Files { root, location, .. } => {
            assert_eq!(ws.list_files(root, location), names(files));
            for (name, bytes) in files {
                assert_eq!(
                    ws.read_file(root, location, name).as_ref(),
                    Some(bytes),
                    "{name} on the target"
                );
            }
        }
        Target::Forecasts => {
            let got = ws.standin.forecasts();
            let got_names: Vec<_> = got.iter().map(|f| f.file_name.clone()).collect();
            assert_eq!(got_names, names(files));
            for (f, (_, bytes)) in got.iter().zip(files) {
                assert_eq!(&f.bytes, bytes, "bytes of {}", f.file_name);
                assert_eq!(f.content_type.as_deref(), Some("text/csv"));
            }
        }
        Target::SyncRequests => {
            // records run 8 at once: every one received once, in any order
            let mut want: Vec<String> = files.iter().flat_map(|(_, b)| sync_ids_of(b)).collect();
            let mut got = received_sync_ids(ws);
            want.sort();
            got.sort();
            assert_eq!(got, want);
        }
    }
}

/// Asserts the source location holds exactly `expected` (name → bytes).
fn assert_source(ws: &Workspace, flow: &FileFlow, expected: &[(String, &[u8])]) {
    let mut want: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(
        ws.list_files(flow.root, flow.location),
        want,
        "source location"
    );
    for (name, bytes) in expected {
        assert_eq!(
            ws.read_file(flow.root, flow.location, name).as_deref(),
            Some(*bytes),
            "{name} at the source"
        );
    }
}

/// The names listed as `  - name` under the body line starting with `heading`.
fn listed(email: &Email, heading: &str) -> Vec<String> {
    let lines = email.lines();
    let Some(at) = lines
        .iter()
        .position(|l| l.trim_start().starts_with(heading))
    else {
        panic!("no line '{heading}' in:\n{}", email.body);
    };
    lines[at + 1..]
        .iter()
        .map_while(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .collect()
}

/// The value of a `Field:   value` body line.
fn field(email: &Email, name: &str) -> Option<String> {
    email
        .line_starting(&format!("{name}:"))
        .map(|l| l[name.len() + 1..].trim().to_string())
}

fn assert_complete_email(email: &Email, flow: &FileFlow, done: &[String], pending: &[String]) {
    assert_eq!(email.from, ADMIN);
    assert_eq!(email.to, flow.recipients);
    assert_eq!(email.subject, format!("{}: process complete", flow.name));
    let heading = format!("Files {}: {}", flow.done, done.len());
    assert!(
        email.has_line(&heading),
        "no '{heading}' in:\n{}",
        email.body
    );
    assert_eq!(listed(email, &format!("Files {}:", flow.done)), done);
    let heading = format!("Files not {}: {}", flow.done, pending.len());
    assert!(
        email.has_line(&heading),
        "no '{heading}' in:\n{}",
        email.body
    );
    assert_eq!(listed(email, &format!("Files not {}:", flow.done)), pending);
}

fn assert_error_email(email: &Email, flow_name: &str, report: &RunReport, step: &str) {
    assert_eq!(email.from, ADMIN);
    assert_eq!(email.to, [ERROR_DIST]);
    assert_eq!(
        email.subject,
        format!("ERROR: {flow_name} run {}", report.run_id)
    );
    assert_eq!(
        field(email, "Step").as_deref(),
        Some(step),
        "{}",
        email.body
    );
    assert_eq!(
        field(email, "Run").map(|r| r.starts_with(&report.run_id)),
        Some(true)
    );
    let error = report.error.as_ref().expect("the run failed");
    assert_eq!(
        field(email, "Error").as_deref(),
        Some(error.message.as_str()),
        "{}",
        email.body
    );
}

fn error_emails(ws: &Workspace) -> Vec<Email> {
    ws.emails()
        .into_iter()
        .filter(|e| e.to.iter().any(|t| t == ERROR_DIST))
        .collect()
}

fn complete_emails(ws: &Workspace) -> Vec<Email> {
    ws.emails_about(": process complete")
}

fn count(report: &RunReport, pred: impl Fn(&Event) -> bool) -> usize {
    report.events.iter().filter(|e| pred(e)).count()
}

// ---------------------------------------------------------------------------------------
// generic checks of the shared file shape

async fn happy_path(flow: &FileFlow, files: Vec<(String, Vec<u8>)>) -> Workspace {
    let ws = Workspace::new().await;
    seed(&ws, flow, &files);
    let report = ws.run(flow.id).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(report.error.is_none());
    let expected: Vec<(String, &[u8])> =
        files.iter().map(|(n, b)| (sent(n), b.as_slice())).collect();
    assert_source(&ws, flow, &expected);
    assert_delivered(&ws, flow, &files);
    assert_eq!(report.renames(), files.len());
    let emails = ws.emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_complete_email(&emails[0], flow, &names(&files), &[]);
    ws
}

async fn no_file(flow: &FileFlow) {
    for flag in [true, false] {
        let ws = Workspace::new().await;
        ws.set_config(NOFILE_FLAG, if flag { "true" } else { "false" });
        // an already-sent file and one with another prefix: neither may be picked up
        let (name, _) = sample(flow, 1);
        ws.put_file(flow.root, flow.location, &sent(&name), b"sent before");
        ws.put_file(flow.root, flow.location, "other.20230301.csv", b"not ours");
        let report = ws.run(flow.id).await;
        assert_eq!(report.outcome, Outcome::NoFiles, "{report:#?}");
        assert!(report.error.is_none());
        assert_eq!(
            report.events[0],
            Event::Listed {
                connection: flow.root.replace('-', "_"),
                location: flow.location.to_string(),
                prefix: flow.prefix.to_string(),
                count: 0,
            }
        );
        assert_eq!(
            count(&report, |e| !matches!(
                e,
                Event::Listed { .. } | Event::Emailed { .. }
            )),
            0
        );
        assert_source(
            &ws,
            flow,
            &[
                (sent(&name), b"sent before".as_slice()),
                ("other.20230301.csv".to_string(), b"not ours".as_slice()),
            ],
        );
        let emails = ws.emails();
        if flag {
            assert_eq!(emails.len(), 1, "{emails:#?}");
            let e = &emails[0];
            assert_eq!(e.from, ADMIN);
            assert_eq!(e.to, flow.recipients);
            assert_eq!(e.subject, format!("{}: no file found", flow.name));
            assert!(
                e.body
                    .contains(&format!("no file starting with '{}'", flow.prefix)),
                "{}",
                e.body
            );
        } else {
            assert!(emails.is_empty(), "{emails:#?}");
        }
    }
}

async fn complete_flag_off(flow: &FileFlow) {
    let ws = Workspace::new().await;
    ws.set_config(COMPLETE_FLAG, "false");
    let files = samples(flow, 2);
    seed(&ws, flow, &files);
    let report = ws.run(flow.id).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_delivered(&ws, flow, &files);
    assert!(ws.emails().is_empty(), "{:#?}", ws.emails());
    assert_eq!(report.emails(), 0);
}

async fn error_flag_off(flow: &FileFlow) {
    let ws = Workspace::new().await;
    ws.set_config(ERROR_FLAG, "false");
    let files = samples(flow, 1);
    seed(&ws, flow, &files);
    break_file(&ws, flow, 0, &files[0].0);
    let report = ws.run(flow.id).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert!(report.error.is_some());
    assert!(error_emails(&ws).is_empty(), "{:#?}", ws.emails());
    // the business summary still goes out
    let emails = ws.emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_complete_email(&emails[0], flow, &[], &names(&files));
}

/// Three files, the second fails at its target: the first is done, the second and third
/// stay as they were and go with the next run.
async fn stops_at_failing_file(flow: &FileFlow) {
    let ws = Workspace::new().await;
    let files = samples(flow, 3);
    seed(&ws, flow, &files);
    let [(a, a_bytes), (b, b_bytes), (c, c_bytes)] = [&files[0], &files[1], &files[2]];
    break_file(&ws, flow, 1, b);
    let report = ws.run(flow.id).await;
    assert_eq!(report.outcome, Outcome::Partial, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(error.items["file"]["name"], json!(b));
    assert_source(
        &ws,
        flow,
        &[
            (sent(a), a_bytes.as_slice()),
            (b.clone(), b_bytes.as_slice()),
            (c.clone(), c_bytes.as_slice()),
        ],
    );
    assert_delivered(&ws, flow, &files[..1]);
    let step = match flow.target {
        Target::Files { step, .. } => step,
        Target::Forecasts => "upload",
        Target::SyncRequests => "send",
    };
    assert_eq!(error.step, step);
    // one failure, one event
    assert_eq!(
        count(&report, |e| matches!(e, Event::Failed { .. })),
        1,
        "{report:#?}"
    );
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1, "{:#?}", ws.emails());
    assert_error_email(&errors[0], flow.name, &report, step);
    assert_eq!(field(&errors[0], "File").as_deref(), Some(b.as_str()));
    match flow.target {
        Target::Files { .. } => assert!(
            error.message.contains("Is a directory"),
            "{}",
            error.message
        ),
        _ => {
            assert_eq!(field(&errors[0], "Status").as_deref(), Some("HTTP 500"));
            assert!(error.message.contains("HTTP 500"), "{}", error.message);
        }
    }
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_complete_email(
        &complete[0],
        flow,
        std::slice::from_ref(a),
        &[b.clone(), c.clone()],
    );

    // the next run picks up the two files left
    unbreak_file(&ws, flow, b);
    ws.clear_outbox();
    let report = ws.run(flow.id).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let all: Vec<(String, &[u8])> = files.iter().map(|(n, b)| (sent(n), b.as_slice())).collect();
    assert_source(&ws, flow, &all);
    assert_delivered(&ws, flow, &files);
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_complete_email(&complete[0], flow, &[b.clone(), c.clone()], &[]);
    assert!(error_emails(&ws).is_empty());
}

/// Two files, the first fails: nothing was done, so the run `failed`.
async fn fails_at_first_file(flow: &FileFlow) -> (Workspace, RunReport) {
    let ws = Workspace::new().await;
    let files = samples(flow, 2);
    seed(&ws, flow, &files);
    break_file(&ws, flow, 0, &files[0].0);
    let report = ws.run(flow.id).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let untouched: Vec<(String, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    assert_source(&ws, flow, &untouched);
    assert_eq!(report.renames(), 0);
    assert_eq!(error_emails(&ws).len(), 1, "{report:#?}");
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_complete_email(&complete[0], flow, &[], &names(&files));
    (ws, report)
}

// ---------------------------------------------------------------------------------------
// flow 1: DACS FTP → OUAI object storage

#[tokio::test]
async fn flow1_moves_demo_extracts_and_marks_them_sent() {
    let files = [
        "ENROLL_SYNC_20230210_0100.csv",
        "ENROLL_SYNC_20230210_0200.csv",
    ]
    .map(|n| {
        (
            n.to_string(),
            demo_data(&format!("dacs-ftp/sploutput/DACSEnv/enroll/{n}")),
        )
    });
    let ws = happy_path(&FLOW1, files.to_vec()).await;
    // the source location is given as `/sploutput/DACSEnv/enroll/`; files land in the bucket
    assert!(ws.dir("ouai-os", "ouainamespace/OUAIEnrollFolder").is_dir());
}

#[tokio::test]
async fn flow1_no_file_email_follows_its_flag() {
    no_file(&FLOW1).await;
}

#[tokio::test]
async fn flow1_complete_flag_false_sends_no_summary() {
    complete_flag_off(&FLOW1).await;
}

#[tokio::test]
async fn flow1_error_flag_false_sends_no_error_email() {
    error_flag_off(&FLOW1).await;
}

#[tokio::test]
async fn flow1_failed_put_stops_the_run_and_leaves_later_files() {
    stops_at_failing_file(&FLOW1).await;
}

#[tokio::test]
async fn flow1_target_bucket_not_a_directory_fails_before_any_file() {
    let ws = Workspace::new().await;
    let files = samples(&FLOW1, 2);
    seed(&ws, &FLOW1, &files);
    // the bucket path is taken by a regular file: the put cannot create anything
    ws.put_file(
        "ouai-os",
        "ouainamespace",
        "OUAIEnrollFolder",
        b"not a bucket",
    );
    let report = ws.run(FTP_ENROLL).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let untouched: Vec<(String, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    assert_source(&ws, &FLOW1, &untouched);
    assert_eq!(
        ws.read_file("ouai-os", "ouainamespace", "OUAIEnrollFolder")
            .as_deref(),
        Some(b"not a bucket".as_slice())
    );
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1, "{:#?}", ws.emails());
    assert_error_email(&errors[0], FLOW1.name, &report, "put");
    assert_eq!(
        field(&errors[0], "File").as_deref(),
        Some(files[0].0.as_str())
    );
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_complete_email(&complete[0], &FLOW1, &[], &names(&files));
}

#[tokio::test]
async fn flow1_dry_run_reports_and_changes_nothing() {
    let ws = Workspace::new().await;
    ws.seed_demo("dacs-ftp");
    let before = ws.list_files("dacs-ftp", FLOW1.location);
    assert_eq!(before.len(), 2);
    let report = ws.dry_run(FTP_ENROLL).await;
    assert!(report.dry_run);
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    // nothing changed: sources, target, outbox, stand-ins
    assert_eq!(ws.list_files("dacs-ftp", FLOW1.location), before);
    assert!(!ws.root("ouai-os").exists());
    assert!(ws.emails().is_empty());
    assert!(ws.standin.journal().is_empty());
    // the events say what would have happened
    let want_puts: Vec<Event> = before
        .iter()
        .map(|n| Event::Put {
            connection: "ouai_os".into(),
            location: "ouainamespace/OUAIEnrollFolder".into(),
            name: n.clone(),
            bytes: demo_data(&format!("dacs-ftp/sploutput/DACSEnv/enroll/{n}")).len() as u64,
        })
        .collect();
    let puts: Vec<Event> = report
        .events
        .iter()
        .filter(|e| matches!(e, Event::Put { .. }))
        .cloned()
        .collect();
    assert_eq!(puts, want_puts);
    let renames: Vec<(String, String)> = report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Renamed { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        renames,
        before
            .iter()
            .map(|n| (n.clone(), sent(n)))
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&report, |e| matches!(e, Event::Fetched { .. })), 2);
    let emailed: Vec<&Event> = report
        .events
        .iter()
        .filter(|e| matches!(e, Event::Emailed { .. }))
        .collect();
    assert_eq!(
        emailed,
        [&Event::Emailed {
            to: vec![DACS_USER.into(), OUAI_USER.into()],
            subject: format!("{}: process complete", FLOW1.name),
        }]
    );
}

// ---------------------------------------------------------------------------------------
// flow 2: DACS object storage → OUAI object storage

#[tokio::test]
async fn flow2_moves_demo_extract_and_marks_it_sent() {
    let name = "ENROLL_SYNC_20230211_0100.csv";
    let bytes = demo_data(&format!("dacs-os/dacsnamespace/DACS_EnrollFolder/{name}"));
    happy_path(&FLOW2, vec![(name.to_string(), bytes)]).await;
}

#[tokio::test]
async fn flow2_no_file_email_follows_its_flag() {
    no_file(&FLOW2).await;
}

#[tokio::test]
async fn flow2_complete_flag_false_sends_no_summary() {
    complete_flag_off(&FLOW2).await;
}

#[tokio::test]
async fn flow2_error_flag_false_sends_no_error_email() {
    error_flag_off(&FLOW2).await;
}

#[tokio::test]
async fn flow2_failed_put_stops_the_run_and_leaves_later_files() {
    stops_at_failing_file(&FLOW2).await;
}

#[tokio::test]
async fn flow2_first_file_failing_is_failed_not_partial() {
    let (_ws, report) = fails_at_first_file(&FLOW2).await;
    assert_eq!(report.error.unwrap().step, "put");
}

// ---------------------------------------------------------------------------------------
// flow 3: OUAI enrollment acks → DACS sync requests, record by record

fn ack_file(rows: &[&str]) -> Vec<u8> {
    let mut s = format!("{ACK_HEADER}\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

fn demo_ack() -> Vec<u8> {
    demo_data(&format!("ouai-os/{ACK_BUCKET}/{ACK_DEMO}"))
}

fn demo_ids() -> Vec<String> {
    (1..=7).map(|i| format!("SR-20230210-000{i}")).collect()
}

#[tokio::test]
async fn flow3_sends_every_record_mapped_through_the_dvm() {
    let ws = happy_path(&FLOW3, vec![(ACK_DEMO.to_string(), demo_ack())]).await;
    let got = ws.standin.sync_requests();
    assert_eq!(got.len(), 7);
    assert_eq!(
        got[0],
        json!({
            "syncRequestId": "SR-20230210-0001",
            "externalSystem": "OUAI",
            "syncStatus": "D1AK",
            "programEnrollment": {
                "programId": "1234512345",
                "enrollmentId": "EN-000101",
                "servicePointId": "1122334455",
                "deviceId": "DEV-90001"
            },
            "message": "Subscription created",
            "processedDateTime": "2023-02-10T02:15:00Z"
        })
    );
    let statuses: Vec<&str> = got
        .iter()
        .map(|r| r["syncStatus"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["D1AK", "D1AK", "D1AK", "D1RJ", "D1AK", "D1ER", "D1AK"]
    );
    let email = &ws.emails()[0];
    assert!(
        email.has_line("Records sent in the last file: 7, not sent: 0"),
        "{}",
        email.body
    );
}

#[tokio::test]
async fn flow3_no_file_email_follows_its_flag() {
    no_file(&FLOW3).await;
}

#[tokio::test]
async fn flow3_complete_flag_false_sends_no_summary() {
    complete_flag_off(&FLOW3).await;
}

#[tokio::test]
async fn flow3_error_flag_false_sends_no_error_email() {
    error_flag_off(&FLOW3).await;
}

#[tokio::test]
async fn flow3_duplicate_sync_request_400_is_suppressed() {
    let ws = Workspace::new().await;
    ws.put_file("ouai-os", ACK_BUCKET, ACK_DEMO, demo_ack());
    // DACS already holds record 3
    let status = reqwest::Client::new()
        .post(format!("{}{SYNC_PATH}", ws.standin_url()))
        .json(&json!({ "syncRequestId": "SR-20230210-0003", "syncStatus": "D1AK" }))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(report.suppressed(), 1);
    assert_eq!(report.requests_ok(), 6);
    let mut want = vec!["SR-20230210-0003".to_string()];
    want.extend(demo_ids().into_iter().filter(|i| i != "SR-20230210-0003"));
    assert_eq!(received_sync_ids(&ws), want);
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [sent(ACK_DEMO)]);
    assert!(error_emails(&ws).is_empty());
    assert_eq!(complete_emails(&ws).len(), 1);
}

/// DACS answers `status` at record 6 of the demo file: the file is marked
/// `_ErrInRcd_6`, the second file is left, and the next run resumes at record 6.
async fn flow3_stop_and_resume(status: u16) {
    let ws = Workspace::new().await;
    let second = "feedback.dacs.program_subscription.20230211.csv";
    let second_bytes = ack_file(&[
        "SR-20230211-0001,1234512345,EN-000301,1122334470,DEV-93001,ACCEPTED,ok,2023-02-11T02:15:00Z",
        "SR-20230211-0002,1234512345,EN-000302,1122334471,DEV-93002,REJECTED,no,2023-02-11T02:15:01Z",
    ]);
    ws.put_file("ouai-os", ACK_BUCKET, ACK_DEMO, demo_ack());
    ws.put_file("ouai-os", ACK_BUCKET, second, &second_bytes);
    ws.sequential_records();
    ws.standin.fail_sync_requests(FailurePlan {
        after: 5,
        status,
        times: 1,
    });
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Partial, "{report:#?}");
    let marked = "feedback.dacs.program_subscription.20230210_ErrInRcd_6.csv";
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [marked, second]);
    assert_eq!(
        ws.read_file("ouai-os", ACK_BUCKET, marked),
        Some(demo_ack())
    );
    assert_eq!(
        ws.read_file("ouai-os", ACK_BUCKET, second),
        Some(second_bytes.clone())
    );
    assert_eq!(received_sync_ids(&ws), demo_ids()[..5]);
    assert_eq!(sync_statuses(&ws), [200, 200, 200, 200, 200, status]);
    let error = report.error.clone().unwrap();
    assert_eq!(error.step, "send");
    assert_eq!(error.items["record"]["number"], json!(6));
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1, "{:#?}", ws.emails());
    assert_error_email(&errors[0], FLOW3.name, &report, "send");
    assert_eq!(field(&errors[0], "File").as_deref(), Some(ACK_DEMO));
    assert_eq!(field(&errors[0], "Record").as_deref(), Some("6"));
    assert_eq!(field(&errors[0], "Status"), Some(format!("HTTP {status}")));
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_complete_email(
        &complete[0],
        &FLOW3,
        &[],
        &[ACK_DEMO.to_string(), second.to_string()],
    );
    assert!(
        complete[0].has_line("Records sent in the last file: 5, not sent: 2"),
        "{}",
        complete[0].body
    );

    // the next run starts at record 6, then does the second file
    ws.clear_outbox();
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(report.requests_ok(), 2 + 2);
    // records 1-5 are not sent again (no duplicate 400s): the run started at record 6
    assert_eq!(report.suppressed(), 0);
    assert_eq!(sync_statuses(&ws)[6..], [200, 200, 200, 200]);
    let mut want = demo_ids();
    want.extend(sync_ids_of(&second_bytes));
    assert_eq!(received_sync_ids(&ws), want);
    assert_eq!(
        ws.list_files("ouai-os", ACK_BUCKET),
        [sent(marked), sent(second)]
    );
    assert!(error_emails(&ws).is_empty());
    assert_complete_email(
        &complete_emails(&ws)[0],
        &FLOW3,
        &[marked.to_string(), second.to_string()],
        &[],
    );
}

#[tokio::test]
async fn flow3_stops_on_500_at_record_6_and_resumes_there() {
    flow3_stop_and_resume(500).await;
}

#[tokio::test]
async fn flow3_stops_on_401_at_record_6_and_resumes_there() {
    flow3_stop_and_resume(401).await;
}

#[tokio::test]
async fn flow3_second_failure_replaces_the_record_marker() {
    let ws = Workspace::new().await;
    ws.sequential_records();
    ws.put_file("ouai-os", ACK_BUCKET, ACK_DEMO, demo_ack());
    let fail_after = |after| {
        ws.standin.fail_sync_requests(FailurePlan {
            after,
            status: 503,
            times: 1,
        })
    };
    fail_after(2);
    assert_eq!(ws.run(ENROLL_ACK).await.outcome, Outcome::Partial);
    let at3 = "feedback.dacs.program_subscription.20230210_ErrInRcd_3.csv";
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [at3]);
    // records 3 and 4 go through, 5 fails
    ws.clear_outbox();
    fail_after(2);
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Partial, "{report:#?}");
    let at5 = "feedback.dacs.program_subscription.20230210_ErrInRcd_5.csv";
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [at5]);
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1, "{:#?}", ws.emails());
    assert_eq!(field(&errors[0], "File").as_deref(), Some(at3));
    assert_eq!(field(&errors[0], "Record").as_deref(), Some("5"));
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(ws.list_files("ouai-os", ACK_BUCKET), [sent(at5)]);
    assert_eq!(
        ws.read_file("ouai-os", ACK_BUCKET, &sent(at5)),
        Some(demo_ack())
    );
    // every record accepted exactly once, in order; no record resent
    assert_eq!(received_sync_ids(&ws), demo_ids());
    assert_eq!(
        sync_statuses(&ws),
        [200, 200, 503, 200, 200, 503, 200, 200, 200]
    );
}

#[tokio::test]
async fn flow3_connection_failure_stops_at_record_1() {
    let mut ws = Workspace::new().await;
    ws.set_connection(
        "dacs_rest",
        json!({ "kind": "http", "base_url": dead_url(), "timeout_secs": 5 }),
    );
    ws.put_file("ouai-os", ACK_BUCKET, ACK_DEMO, demo_ack());
    let later = "feedback.dacs.program_subscription.20230211.csv";
    ws.put_file("ouai-os", ACK_BUCKET, later, demo_ack());
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert!(
        error.message.contains("connection 'dacs_rest'"),
        "{}",
        error.message
    );
    assert_eq!(
        ws.list_files("ouai-os", ACK_BUCKET),
        [
            "feedback.dacs.program_subscription.20230210_ErrInRcd_1.csv",
            later
        ]
    );
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1);
    assert_error_email(&errors[0], FLOW3.name, &report, "send");
    assert_eq!(field(&errors[0], "Record").as_deref(), Some("1"));
    assert!(ws.standin.journal().is_empty());
}

#[tokio::test]
async fn flow3_malformed_csv_row_is_an_error_naming_the_line() {
    let ws = Workspace::new().await;
    let bytes = ack_file(&[
        "SR-M-1,1234512345,EN-1,1,DEV-1,ACCEPTED,ok,2023-02-10T02:15:00Z",
        "SR-M-2,1234512345,EN-2,2,DEV-2,ACCEPTED,ok,2023-02-10T02:15:01Z",
        "SR-M-3,1234512345,EN-3,3,DEV-3,ACCEPTED",
        "SR-M-4,1234512345,EN-4,4,DEV-4,ACCEPTED,ok,2023-02-10T02:15:03Z",
    ]);
    let name = "feedback.dacs.program_subscription.20230212.csv";
    ws.put_file("ouai-os", ACK_BUCKET, name, &bytes);
    let report = ws.run(ENROLL_ACK).await;
    assert_eq!(report.outcome, Outcome::Partial, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert!(error.message.contains("line 4"), "{}", error.message);
    assert!(error.message.contains("6 fields"), "{}", error.message);
    assert_eq!(received_sync_ids(&ws), ["SR-M-1", "SR-M-2"]);
    assert_eq!(
        ws.list_files("ouai-os", ACK_BUCKET),
        ["feedback.dacs.program_subscription.20230212_ErrInRcd_3.csv"]
    );
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1);
    assert_error_email(&errors[0], FLOW3.name, &report, "records");
    assert!(field(&errors[0], "Error").unwrap().contains("line 4"));
}

// ---------------------------------------------------------------------------------------
// flow 4: REST-triggered event outcome

async fn deliver(ws: &Workspace, file: &std::path::Path) -> RunReport {
    let message = demo_input("event_outcome_message.json");
    ws.run_with(
        EVENT_OUTCOME,
        &[("message", message.as_path()), ("file", file)],
        ws.options(),
    )
    .await
}

const FLOW4_NAME: &str = "OU DERMS OUAI Event Outcome Transfer";

#[tokio::test]
async fn flow4_puts_the_attachment_then_acks_success() {
    let ws = Workspace::new().await;
    let file = demo_input(OUTCOME_FILE);
    let bytes = std::fs::read(&file).unwrap();
    let report = deliver(&ws, &file).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(ws.list_files("ouai-os", OUTCOME_BUCKET), [OUTCOME_FILE]);
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE),
        Some(bytes.clone())
    );
    let acks = ws.standin.outcome_acks();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["eventId"], json!("4011"));
    assert_eq!(acks[0]["fileName"], json!(OUTCOME_FILE));
    assert_eq!(acks[0]["ackType"], json!("SUCCESS"));
    // the ack follows the put
    let kinds: Vec<&str> = report
        .events
        .iter()
        .map(|e| match e {
            Event::Put { .. } => "put",
            Event::Request { .. } => "request",
            Event::Emailed { .. } => "email",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["put", "request", "email"]);
    let emails = ws.emails();
    assert_eq!(emails.len(), 1);
    let e = &emails[0];
    assert_eq!(e.from, ADMIN);
    assert_eq!(e.to, [DRMS_USER, OUAI_USER]);
    assert_eq!(e.subject, format!("{FLOW4_NAME}: process complete"));
    assert_eq!(field(e, "Event").as_deref(), Some("4011"));
    assert_eq!(
        field(e, "File"),
        Some(format!("{OUTCOME_FILE} ({} bytes)", bytes.len()))
    );
    assert_eq!(
        field(e, "Result").as_deref(),
        Some("transferred to bucket OUAIOutcomeFolder")
    );
}

#[tokio::test]
async fn flow4_failed_put_acks_failure_and_emails_the_error() {
    let ws = Workspace::new().await;
    // the OUAI object storage root is a regular file: no bucket can be created under it
    std::fs::write(ws.root("ouai-os"), b"not a directory").unwrap();
    let report = deliver(&ws, &demo_input(OUTCOME_FILE)).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(error.step, "put");
    let acks = ws.standin.outcome_acks();
    assert_eq!(acks.len(), 1, "{acks:#?}");
    assert_eq!(acks[0]["eventId"], json!("4011"));
    assert_eq!(acks[0]["fileName"], json!(OUTCOME_FILE));
    assert_eq!(acks[0]["ackType"], json!("FAILURE"));
    assert_eq!(acks[0]["message"], json!(error.message));
    // the error sent outside names the location, not the server's directories
    assert_eq!(
        error.message,
        "child flow 'OUTL-BA-OUAI_COMMON_OS_TRNFR' failed at step 'put': connection 'ouai_os': create directory ouainamespace/OUAIOutcomeFolder: Not a directory (os error 20)"
    );
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1, "{:#?}", ws.emails());
    assert_error_email(&errors[0], FLOW4_NAME, &report, "put");
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].to, [DRMS_USER, OUAI_USER]);
    assert_eq!(
        field(&complete[0], "Result"),
        Some(format!("not transferred: {}", error.message))
    );
}

#[tokio::test]
async fn flow4_repeated_delivery_overwrites_and_acks_success_again() {
    let ws = Workspace::new().await;
    let first = deliver(&ws, &demo_input(OUTCOME_FILE)).await;
    assert_eq!(first.outcome, Outcome::Succeeded);
    // DERMS sends the same file name again, with corrected content
    let again = ws.path().join("redelivery").join(OUTCOME_FILE);
    std::fs::create_dir_all(again.parent().unwrap()).unwrap();
    std::fs::write(&again, b"EventId,Outcome\n4011,corrected\n").unwrap();
    let second = deliver(&ws, &again).await;
    assert_eq!(second.outcome, Outcome::Succeeded, "{second:#?}");
    assert_eq!(ws.list_files("ouai-os", OUTCOME_BUCKET), [OUTCOME_FILE]);
    assert_eq!(
        ws.read_file("ouai-os", OUTCOME_BUCKET, OUTCOME_FILE)
            .as_deref(),
        Some(b"EventId,Outcome\n4011,corrected\n".as_slice())
    );
    let acks: Vec<Value> = ws
        .standin
        .outcome_acks()
        .iter()
        .map(|a| json!([a["eventId"], a["fileName"], a["ackType"]]))
        .collect();
    assert_eq!(
        acks,
        [
            json!(["4011", OUTCOME_FILE, "SUCCESS"]),
            json!(["4011", OUTCOME_FILE, "SUCCESS"])
        ]
    );
}

#[tokio::test]
async fn flow4_complete_flag_false_sends_no_summary() {
    let ws = Workspace::new().await;
    ws.set_config(COMPLETE_FLAG, "false");
    let report = deliver(&ws, &demo_input(OUTCOME_FILE)).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(ws.list_files("ouai-os", OUTCOME_BUCKET), [OUTCOME_FILE]);
    assert_eq!(ws.standin.outcome_acks().len(), 1);
    assert!(ws.emails().is_empty());
}

#[tokio::test]
async fn flow4_error_flag_false_sends_no_error_email() {
    let ws = Workspace::new().await;
    ws.set_config(ERROR_FLAG, "false");
    std::fs::write(ws.root("ouai-os"), b"not a directory").unwrap();
    let report = deliver(&ws, &demo_input(OUTCOME_FILE)).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(ws.standin.outcome_acks()[0]["ackType"], json!("FAILURE"));
    assert!(error_emails(&ws).is_empty());
    assert_eq!(complete_emails(&ws).len(), 1);
}

// ---------------------------------------------------------------------------------------
// flow 5: OUAI kWh avoided → DACS, by object storage or FTP

#[tokio::test]
async fn flow5_os_preference_moves_demo_file_to_dacs_bucket() {
    let name = "ouai.kwh_avoided.20221213.csv";
    let bytes = demo_data(&format!("ouai-os/ouainamespace/OUAIKwhAvoidFolder/{name}"));
    let ws = happy_path(&FLOW5, vec![(name.to_string(), bytes)]).await;
    assert!(
        ws.list_files("dacs-ftp", "/sploutput/DACSEnv/KWHAvoid")
            .is_empty()
    );
    assert!(ws.emails()[0].has_line("os."), "{}", ws.emails()[0].body);
}

#[tokio::test]
async fn flow5_ftp_preference_puts_into_dacs_ftp_directory() {
    let ws = Workspace::new().await;
    ws.set_config(DACS_PREF, "ftp");
    let files = samples(&FLOW5, 2);
    seed(&ws, &FLOW5, &files);
    let report = ws.run(KWH_AVOIDED).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert_eq!(
        ws.list_files("dacs-ftp", "/sploutput/DACSEnv/KWHAvoid"),
        names(&files)
    );
    for (name, bytes) in &files {
        assert_eq!(
            ws.read_file("dacs-ftp", "/sploutput/DACSEnv/KWHAvoid", name)
                .as_ref(),
            Some(bytes)
        );
    }
    assert!(
        !ws.dir("dacs-os", "dacsnamespace/DACS_KWHAvdFolder")
            .exists()
    );
    let sent_files: Vec<(String, &[u8])> =
        files.iter().map(|(n, b)| (sent(n), b.as_slice())).collect();
    assert_source(&ws, &FLOW5, &sent_files);
    let emails = ws.emails();
    assert_eq!(emails.len(), 1);
    assert_complete_email(&emails[0], &FLOW5, &names(&files), &[]);
    assert!(emails[0].has_line("ftp."), "{}", emails[0].body);
}

#[tokio::test]
async fn flow5_unknown_preference_is_a_load_diagnostic_and_nothing_moves() {
    let ws = Workspace::new().await;
    ws.set_config(DACS_PREF, "sftp");
    let files = samples(&FLOW5, 1);
    seed(&ws, &FLOW5, &files);
    let (project, diags) = ws.try_load();
    assert!(
        project.is_none(),
        "an unknown preference must stop the load"
    );
    let flow_file = ws.flows_dir().join("kwh_avoided.yaml");
    let hits: Vec<_> = diags
        .iter()
        .filter(|d| d.code == "unknown-route-value")
        .collect();
    assert_eq!(hits.len(), 1, "{diags:#?}");
    let d = hits[0];
    assert_eq!(d.file.as_deref(), Some(flow_file.as_path()));
    let text = std::fs::read_to_string(&flow_file).unwrap();
    let (line_no, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("by: \"config('dacs.file.target.transfer.pref')\""))
        .unwrap();
    assert_eq!(d.line, Some(line_no + 1));
    assert_eq!(d.column, Some(line.find('"').unwrap() + 1));
    assert!(d.message.contains("'sftp'"), "{}", d.message);
    assert!(
        d.hint.as_deref().unwrap_or_default().contains("ftp, os"),
        "{d:#?}"
    );
    // the other flows are fine: only this diagnostic
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let untouched: Vec<(String, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    assert_source(&ws, &FLOW5, &untouched);
    assert!(!ws.root("dacs-os").exists() && !ws.root("dacs-ftp").exists());
    assert!(ws.emails().is_empty());
}

#[tokio::test]
async fn flow5_no_file_email_follows_its_flag() {
    no_file(&FLOW5).await;
}

#[tokio::test]
async fn flow5_complete_flag_false_sends_no_summary() {
    complete_flag_off(&FLOW5).await;
}

#[tokio::test]
async fn flow5_error_flag_false_sends_no_error_email() {
    error_flag_off(&FLOW5).await;
}

#[tokio::test]
async fn flow5_failed_put_stops_the_run_and_leaves_later_files() {
    stops_at_failing_file(&FLOW5).await;
}

// ---------------------------------------------------------------------------------------
// flow 6: OUAI load reduction forecasts → DERMS upload

#[tokio::test]
async fn flow6_uploads_demo_forecast_and_marks_it_sent() {
    let name = "ouai.load_forecast.20230210.csv";
    let bytes = demo_data(&format!("ouai-os/ouainamespace/Ouai_LRFolder/{name}"));
    let ws = happy_path(&FLOW6, vec![(name.to_string(), bytes)]).await;
    assert_eq!(ws.standin.forecasts()[0].forecast_id, "LRF-1");
}

#[tokio::test]
async fn flow6_ack_type_failure_stops_without_renaming() {
    let ws = Workspace::new().await;
    let files = samples(&FLOW6, 2);
    seed(&ws, &FLOW6, &files);
    ws.standin.set_forecast_ack("FAILURE");
    let report = ws.run(LR_FORECAST).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(error.step, "upload");
    assert!(error.message.contains("ackType"), "{}", error.message);
    // DERMS saw the first file only; neither file is marked sent
    let got: Vec<String> = ws
        .standin
        .forecasts()
        .iter()
        .map(|f| f.file_name.clone())
        .collect();
    assert_eq!(got, [files[0].0.clone()]);
    let untouched: Vec<(String, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    assert_source(&ws, &FLOW6, &untouched);
    let errors = error_emails(&ws);
    assert_eq!(errors.len(), 1, "{:#?}", ws.emails());
    assert_error_email(&errors[0], FLOW6.name, &report, "upload");
    assert!(field(&errors[0], "Error").unwrap().contains("ackType"));
    assert_eq!(
        field(&errors[0], "File").as_deref(),
        Some(files[0].0.as_str())
    );
    let complete = complete_emails(&ws);
    assert_eq!(complete.len(), 1);
    assert_complete_email(&complete[0], &FLOW6, &[], &names(&files));
}

#[tokio::test]
async fn flow6_upload_failure_stops_the_run_and_leaves_later_files() {
    stops_at_failing_file(&FLOW6).await;
}

#[tokio::test]
async fn flow6_first_upload_failing_is_failed_not_partial() {
    let (ws, report) = fails_at_first_file(&FLOW6).await;
    assert_eq!(report.error.unwrap().step, "upload");
    assert!(ws.standin.forecasts().is_empty());
}

#[tokio::test]
async fn flow6_no_file_email_follows_its_flag() {
    no_file(&FLOW6).await;
}

#[tokio::test]
async fn flow6_complete_flag_false_sends_no_summary() {
    complete_flag_off(&FLOW6).await;
}

#[tokio::test]
async fn flow6_error_flag_false_sends_no_error_email() {
    error_flag_off(&FLOW6).await;
}

// ---------------------------------------------------------------------------------------
// notifications never decide an outcome

/// Points the mail connection at an outbox that cannot be written (its directory would be
/// below a regular file).
fn break_mail(ws: &mut Workspace) {
    let blocker = ws.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    ws.set_connection(
        "mail",
        json!({ "kind": "outbox", "dir": blocker.join("outbox").display().to_string() }),
    );
}

fn unsent_subjects(report: &RunReport) -> Vec<String> {
    report
        .events
        .iter()
        .filter_map(|e| match e {
            Event::EmailFailed { subject, .. } => Some(subject.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_email_that_cannot_be_sent_never_changes_an_outcome() {
    // Succeeded stays succeeded: the files moved, the summary is reported as not sent.
    let mut ws = Workspace::new().await;
    break_mail(&mut ws);
    let files = samples(&FLOW2, 2);
    seed(&ws, &FLOW2, &files);
    let report = ws.run(OS_ENROLL).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(report.error.is_none());
    assert_delivered(&ws, &FLOW2, &files);
    assert_eq!(report.emails(), 0);
    assert_eq!(report.emails_failed(), 1);
    assert_eq!(
        unsent_subjects(&report),
        [format!("{}: process complete", FLOW2.name)]
    );
    let Some(Event::EmailFailed { to, message, .. }) = report
        .events
        .iter()
        .find(|e| matches!(e, Event::EmailFailed { .. }))
    else {
        unreachable!()
    };
    assert_eq!(to, &FLOW2.recipients);
    assert!(message.contains("connection 'mail'"), "{message}");
    let printed = ferry::cli::render_report(&report);
    assert!(
        printed.contains("WARNING email to dacsUser@myCy.com, ouaiUser@myCy.com")
            && printed.contains("warning: 1 email(s) could not be sent"),
        "{printed}"
    );

    // No files stays no_files.
    let mut ws = Workspace::new().await;
    break_mail(&mut ws);
    ws.make_location(FLOW6.root, FLOW6.location);
    let report = ws.run(LR_FORECAST).await;
    assert_eq!(report.outcome, Outcome::NoFiles, "{report:#?}");
    assert_eq!(
        unsent_subjects(&report),
        [format!("{}: no file found", FLOW6.name)]
    );

    // Failed stays failed, with its error, though neither the summary nor the error email
    // went out.
    let mut ws = Workspace::new().await;
    break_mail(&mut ws);
    let files = samples(&FLOW6, 2);
    seed(&ws, &FLOW6, &files);
    ws.standin.set_forecast_ack("FAILURE");
    let report = ws.run(LR_FORECAST).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert_eq!(report.error.as_ref().unwrap().step, "upload");
    assert_eq!(
        unsent_subjects(&report),
        [
            format!("{}: process complete", FLOW6.name),
            format!("ERROR: {} run {}", FLOW6.name, report.run_id),
        ]
    );
    assert_eq!(count(&report, |e| matches!(e, Event::Failed { .. })), 1);
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_shipped_flow_loads_without_diagnostics() {
    let ws = Workspace::new().await;
    let project = ws.load();
    for id in [
        FTP_ENROLL,
        OS_ENROLL,
        ENROLL_ACK,
        EVENT_OUTCOME,
        KWH_AVOIDED,
        LR_FORECAST,
    ] {
        assert!(project.flows.contains_key(id), "{id} missing");
    }
}
