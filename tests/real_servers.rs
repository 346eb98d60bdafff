//! The shipped flows end to end against real protocol peers, run by the real `ferry` binary:
//! DACS files on an FTP server (libunftp), buckets on an S3 server (s3s-fs) and on the
//! signature-verifying OCI Object Storage stand-in, mail to an SMTP server (aiosmtpd), REST to
//! the in-process DACS/DERMS stand-ins. Secrets reach the connections the way they do in
//! production: environment variables of the `ferry` process.
//!
//! Each test asserts what the peers hold afterwards — bytes on the target equal to the source,
//! the source renamed `Sent-<name>` only once its target confirmed, nothing under the final
//! name after a failure — and what the SMTP server received. Without aiosmtpd (outside CI) the
//! emails are read from the `.eml` outbox instead, with a note on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ftp_server.rs"]
mod ftp_server;
#[path = "support/oci_server.rs"]
mod oci_server;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/s3_server.rs"]
mod s3_server;
#[path = "support/smtp.rs"]
mod smtp;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry::run::Event;
use ftp_server::{FakeFtp, FtpServer, Script};
use oci_server::{NAMESPACE, OciServer};
use proxy::CutProxy;
use s3_server::S3Server;
use serde_json::{Value, json};
use smtp::SmtpServer;
use support::{CliRun, Email, Workspace, dead_port, demo_data, parse_eml};

const FTP_ENROLL: &str = "OUTL-BA-DACS_OUAI_FTP_ENROLL";
const OS_ENROLL: &str = "OUTL-BA-DACS_OUAI_OS_ENROLL";
const KWH_AVOIDED: &str = "OUTL-BA-OUAI_DACS_KWHAVD_OS_TRF";
const LR_FORECAST: &str = "OUTL-BA-OUAI_OS_LR_FORECAST";
const FLOW1_NAME: &str = "OU DACS OUAI Enrollment FTP Transfer";
const FLOW2_NAME: &str = "OU DACS OUAI Enrollment OS Transfer";
const FLOW5_NAME: &str = "OU OUAI DACS KwhAvoided OS Transfer";
const FLOW6_NAME: &str = "OU OUAI DERMS LoadReductionForecast OS Transfer";

const ADMIN: &str = "admin@myCy.com";
const ERROR_DIST: &str = "errorDist@myCy.com";
const DACS_USER: &str = "dacsUser@myCy.com";
const OUAI_USER: &str = "ouaiUser@myCy.com";
const DRMS_USER: &str = "drmsUser@myCy.com";

/// Directories on the FTP server (the lookup's values, from the server's root).
const ENROLL_DIR: &str = "sploutput/DACSEnv/enroll";
const KWH_DIR: &str = "sploutput/DACSEnv/KWHAvoid";
/// Buckets: S3 wants lower-case names, so the tests set these in the lookup.
const DACS_ENROLL: &str = "dacs-enroll";
const DACS_KWH: &str = "dacs-kwh";
const OUAI_ENROLL: &str = "ouai-enroll";
const OUAI_KWH: &str = "ouai-kwh";
const OUAI_LRF: &str = "ouai-lrf";
const CONFIG: [(&str, &str); 7] = [
    ("dacs.os.namespace", NAMESPACE),
    ("ouai.os.namespace", NAMESPACE),
    ("dacs.os.enroll.bucket", DACS_ENROLL),
    ("dacs.os.kwhavoided.bucket", DACS_KWH),
    ("ouai.os.enroll.bucket", OUAI_ENROLL),
    ("ouai.os.kwhavoided.bucket", OUAI_KWH),
    ("ouai.os.loadreductionforecast.bucket", OUAI_LRF),
];

/// The environment of every `ferry` run: where the connections find their secrets.
const FTP_PW_VAR: &str = "FERRY_RS_FTP_PASSWORD";
const FTP_WRONG_PW_VAR: &str = "FERRY_RS_FTP_WRONG_PASSWORD";
const S3_KEY_VAR: &str = "FERRY_RS_S3_KEY";
const S3_SECRET_VAR: &str = "FERRY_RS_S3_SECRET";
const S3_WRONG_SECRET_VAR: &str = "FERRY_RS_S3_WRONG_SECRET";
const WRONG_FTP_PASSWORD: &str = "not-the-ftp-password-4711";
const WRONG_S3_SECRET: &str = "not-the-s3-secret-0815";
const ENV: [(&str, &str); 5] = [
    (FTP_PW_VAR, ftp_server::PASSWORD),
    (FTP_WRONG_PW_VAR, WRONG_FTP_PASSWORD),
    (S3_KEY_VAR, s3_server::ACCESS_KEY),
    (S3_SECRET_VAR, s3_server::SECRET_KEY),
    (S3_WRONG_SECRET_VAR, WRONG_S3_SECRET),
];
/// What must never appear in output or email.
const SECRETS: [&str; 4] = [
    ftp_server::PASSWORD,
    WRONG_FTP_PASSWORD,
    s3_server::SECRET_KEY,
    WRONG_S3_SECRET,
];

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// connections

fn ftp_conn(port: u16, password_var: &str) -> Value {
    json!({
        "kind": "ftp", "host": "127.0.0.1", "port": port, "username": ftp_server::USER,
        "password_env": password_var, "timeout_secs": 5,
    })
}

fn s3_conn(endpoint: &str, secret_var: &str) -> Value {
    json!({
        "kind": "s3", "endpoint": endpoint, "region": "us-east-1",
        "access_key_id_env": S3_KEY_VAR, "secret_access_key_env": secret_var,
        "allow_http": true, "timeout_secs": 5,
    })
}

fn smtp_conn(port: u16) -> Value {
    json!({
        "kind": "smtp", "host": "127.0.0.1", "port": port, "security": "none",
        "timeout_secs": 5, "attempts": 1,
    })
}

/// Object storage: an S3 server or an OCI-native one.
enum Os {
    S3(S3Server),
    Oci(OciServer),
}

impl Os {
    async fn s3(buckets: &[&str]) -> Os {
        Os::S3(S3Server::start(buckets).await)
    }

    async fn oci(buckets: &[&str]) -> Os {
        let server = OciServer::start_with_test_key(100).await;
        for bucket in buckets {
            server.bucket(bucket);
        }
        Os::Oci(server)
    }

    /// A connection with the right credentials.
    fn conn(&self) -> Value {
        match self {
            Os::S3(s) => s3_conn(&s.endpoint(), S3_SECRET_VAR),
            Os::Oci(s) => oci_server::connection_spec(&s.endpoint(), "test_key_pkcs1.pem"),
        }
    }

    /// The directory holding a bucket's objects (not created).
    fn bucket(&self, bucket: &str) -> PathBuf {
        match self {
            Os::S3(s) => s.bucket_dir(bucket),
            Os::Oci(s) => s.bucket_path(bucket),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Os::S3(s) => s.addr(),
            Os::Oci(s) => s.addr,
        }
    }
}

// ---------------------------------------------------------------------------------------
// the rig: a workspace, its mail, and runs of the binary

/// An email as the SMTP server received it.
#[derive(Debug)]
struct Received {
    email: Email,
    /// The envelope's recipients (`RCPT TO`).
    rcpt_tos: Vec<String>,
}

struct Rig {
    ws: Workspace,
    smtp: Option<SmtpServer>,
}

impl Rig {
    /// A workspace whose lookups name buckets S3 accepts and whose mail goes to a real SMTP
    /// server (the outbox without aiosmtpd, outside CI).
    async fn new() -> Rig {
        let mut rig = Rig::bare().await;
        rig.smtp = SmtpServer::start(&[]).await;
        match &rig.smtp {
            Some(server) => rig.ws.set_connection("mail", smtp_conn(server.port)),
            None => eprintln!("note: the emails of this test are read from the outbox instead"),
        }
        rig
    }

    /// Like [`Rig::new`], with the mail relay down: nothing listens on its port.
    async fn with_dead_relay() -> Rig {
        let mut rig = Rig::bare().await;
        rig.ws.set_connection("mail", smtp_conn(dead_port()));
        rig
    }

    async fn bare() -> Rig {
        let ws = Workspace::new().await;
        for (key, value) in CONFIG {
            ws.set_config(key, value);
        }
        Rig { ws, smtp: None }
    }

    /// Starts an FTP server and an S3 server holding the OUAI enroll bucket, connected as
    /// `dacs_ftp` (its password from `ftp_password_var`) and `ouai_os` (its secret from
    /// `s3_secret_var`).
    async fn ftp_to_s3(
        mut self,
        ftp_password_var: &str,
        s3_secret_var: &str,
    ) -> (Rig, FtpServer, S3Server) {
        let ftp = FtpServer::start(None).await;
        let s3 = S3Server::start(&[OUAI_ENROLL]).await;
        self.connect([
            ("dacs_ftp", ftp_conn(ftp.port, ftp_password_var)),
            ("ouai_os", s3_conn(&s3.endpoint(), s3_secret_var)),
        ]);
        (self, ftp, s3)
    }

    /// Connects `dacs` as `dacs_os` and `ouai` as `ouai_os`.
    fn connect_os(&mut self, dacs: &Os, ouai: &Os) {
        self.connect([("dacs_os", dacs.conn()), ("ouai_os", ouai.conn())]);
    }

    fn connect(&mut self, specs: impl IntoIterator<Item = (&'static str, Value)>) {
        self.ws.set_connections(specs);
    }

    /// Runs `flow` with the binary; checks that no secret was printed or emailed and that
    /// the run left nothing in its spool.
    async fn run(&self, flow: &str) -> CliRun {
        let run = self.ws.run_cli(flow, &ENV).await;
        let emails = self.emails();
        for secret in SECRETS {
            assert!(
                !run.all_output().contains(secret),
                "a secret was printed by ferry run {flow}:\n{}",
                run.all_output()
            );
            for r in &emails {
                assert!(
                    !r.email.body.contains(secret),
                    "a secret was emailed: {r:#?}"
                );
            }
        }
        assert_eq!(
            self.ws.spool_leftovers(),
            Vec::<String>::new(),
            "the run left files in its spool"
        );
        run
    }

    /// Every email received so far, in order.
    fn emails(&self) -> Vec<Received> {
        match &self.smtp {
            Some(server) => server
                .messages()
                .into_iter()
                .map(|m| Received {
                    email: parse_eml(m["data"].as_str().unwrap()),
                    rcpt_tos: serde_json::from_value(m["rcpt_tos"].clone()).unwrap(),
                })
                .collect(),
            None => self
                .ws
                .emails()
                .into_iter()
                .map(|email| Received {
                    rcpt_tos: email.to.clone(),
                    email,
                })
                .collect(),
        }
    }

    /// The emails of one run (their subject or body names its run id).
    fn emails_of(&self, run: &CliRun) -> Vec<Received> {
        let id = run.run_id();
        self.emails()
            .into_iter()
            .filter(|r| r.email.subject.contains(id) || r.email.body.contains(id))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// files

type Files = Vec<(String, Vec<u8>)>;

/// Writes `files` into `dir` (created).
fn seed(dir: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The regular files in `dir` (none when it does not exist), hidden ones included.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Asserts that `dir` holds exactly `expected`, byte for byte.
fn assert_files(dir: &Path, expected: &[(String, Vec<u8>)]) {
    let got = files_in(dir);
    let names: Vec<&String> = got.keys().collect();
    let mut want: Vec<&String> = expected.iter().map(|(n, _)| n).collect();
    want.sort();
    assert_eq!(names, want, "files in {}", dir.display());
    for (name, bytes) in expected {
        let held = &got[name];
        assert!(
            held == bytes,
            "{name} in {}: {} bytes differ from the {} expected",
            dir.display(),
            held.len(),
            bytes.len()
        );
    }
}

/// Asserts that `files` moved from `src` to `dst`, byte for byte, and that `src` holds them
/// renamed `Sent-<name>`, nothing else.
fn assert_moved(src: &Path, dst: &Path, files: &[(String, Vec<u8>)]) {
    assert_files(dst, files);
    assert_files(src, &sent(files));
}

/// Asserts that none of `files` moved: `src` holds them as they were, `dst` nothing.
fn assert_unmoved(src: &Path, dst: &Path, files: &[(String, Vec<u8>)]) {
    assert_files(src, files);
    assert_files(dst, &[]);
}

/// The files as they are after a successful run: renamed `Sent-<name>`.
fn sent(files: &[(String, Vec<u8>)]) -> Files {
    files
        .iter()
        .map(|(n, b)| (format!("Sent-{n}"), b.clone()))
        .collect()
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<String> {
    files.iter().map(|(n, _)| n.clone()).collect()
}

fn demo(rel: &str) -> (String, Vec<u8>) {
    let name = rel.rsplit('/').next().unwrap().to_string();
    (name, demo_data(rel))
}

/// `len` reproducible bytes holding every byte value, CR/LF pairs and lone CRs and LFs
/// (what an ASCII-mode transfer would corrupt).
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| match i % 1000 {
            0 => b'\r',
            1 => b'\n',
            500 => b'\n',
            700 => b'\r',
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// run and email checks

fn assert_succeeded(run: &CliRun) {
    assert_eq!(
        (run.code, run.outcome()),
        (Some(0), "succeeded"),
        "{}",
        run.all_output()
    );
    assert_eq!(run.error(), None);
}

/// Asserts the run failed (exit code 3) at `step` with a message containing `needle`;
/// returns the message.
fn assert_failed(run: &CliRun, step: &str, needle: &str) -> String {
    assert_eq!(
        (run.code, run.outcome()),
        (Some(3), "failed"),
        "{}",
        run.all_output()
    );
    let (at, message) = run.error().expect("a failed run reports its error");
    assert_eq!(at, step, "{message}");
    assert!(message.contains(needle), "'{needle}' not in: {message}");
    assert!(
        !run.events()
            .iter()
            .any(|e| matches!(e, Event::Renamed { .. })),
        "a failed run renamed a file: {:#?}",
        run.events()
    );
    message
}

/// The names a list of `- name` lines under `heading` holds.
fn listed(email: &Email, heading: &str) -> Vec<String> {
    let lines = email.lines();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(heading))
        .unwrap_or_else(|| panic!("no line '{heading}' in:\n{}", email.body));
    lines[at + 1..]
        .iter()
        .map_while(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The run's "process complete" email: from the admin to `to`, listing `done` and `pending`.
fn assert_complete_email(
    emails: &[Received],
    run: &CliRun,
    flow_name: &str,
    to: [&str; 2],
    done: &[String],
    pending: &[String],
) {
    let subject = format!("{flow_name}: process complete");
    let found: Vec<&Received> = emails
        .iter()
        .filter(|r| r.email.subject == subject)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one '{subject}' email expected: {emails:#?}"
    );
    let r = found[0];
    assert_eq!(r.email.from, ADMIN);
    assert_eq!(r.email.to, to);
    assert_eq!(
        sorted(r.rcpt_tos.clone()),
        sorted(to.map(String::from).to_vec())
    );
    assert!(
        r.email.body.contains(&format!("(run {})", run.run_id())),
        "{}",
        r.email.body
    );
    assert_eq!(listed(&r.email, "Files transferred:"), done);
    assert_eq!(listed(&r.email, "Files not transferred:"), pending);
}

/// The run's error email: to the error list, naming the step, the file (if any) and the
/// run's error message.
fn assert_error_email(
    emails: &[Received],
    run: &CliRun,
    flow_name: &str,
    file: Option<&str>,
) -> String {
    let subject = format!("ERROR: {flow_name} run {}", run.run_id());
    let found: Vec<&Received> = emails
        .iter()
        .filter(|r| r.email.subject == subject)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one '{subject}' email expected: {emails:#?}"
    );
    let r = found[0];
    let (step, message) = run.error().unwrap();
    assert_eq!(r.email.from, ADMIN);
    assert_eq!(r.email.to, [ERROR_DIST]);
    assert_eq!(r.rcpt_tos, [ERROR_DIST]);
    let field = |name: &str| {
        r.email
            .line_starting(&format!("{name}:"))
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    assert_eq!(
        field("Step").as_deref(),
        Some(step.as_str()),
        "{}",
        r.email.body
    );
    assert_eq!(field("File").as_deref(), file, "{}", r.email.body);
    assert!(
        r.email.body.contains(&message),
        "the error email does not carry the error '{message}':\n{}",
        r.email.body
    );
    r.email.body.clone()
}

/// The "process complete" email of a run that moved every one of `files`.
fn assert_moved_email(
    emails: &[Received],
    run: &CliRun,
    flow_name: &str,
    to: [&str; 2],
    files: &[(String, Vec<u8>)],
) {
    assert_complete_email(emails, run, flow_name, to, &names(files), &[]);
}

/// The "process complete" email of a run that moved none of `files`.
fn assert_unmoved_email(
    emails: &[Received],
    run: &CliRun,
    flow_name: &str,
    to: [&str; 2],
    files: &[(String, Vec<u8>)],
) {
    assert_complete_email(emails, run, flow_name, to, &[], &names(files));
}

/// What `pick` takes from each of the run's events, in order.
fn events_of<T>(run: &CliRun, pick: impl FnMut(Event) -> Option<T>) -> Vec<T> {
    run.events().into_iter().filter_map(pick).collect()
}

fn put_names(run: &CliRun, connection: &str) -> Vec<String> {
    events_of(run, |e| match e {
        Event::Put {
            connection: c,
            name,
            ..
        } if c == connection => Some(name),
        _ => None,
    })
}

fn renamed(run: &CliRun) -> Vec<(String, String)> {
    events_of(run, |e| match e {
        Event::Renamed { from, to, .. } => Some((from, to)),
        _ => None,
    })
}

fn emails_failed(run: &CliRun) -> Vec<(Vec<String>, String, String)> {
    events_of(run, |e| match e {
        Event::EmailFailed {
            to,
            subject,
            message,
        } => Some((to, subject, message)),
        _ => None,
    })
}

fn flow1_demo_files() -> Files {
    vec![
        demo("dacs-ftp/sploutput/DACSEnv/enroll/ENROLL_SYNC_20230210_0100.csv"),
        demo("dacs-ftp/sploutput/DACSEnv/enroll/ENROLL_SYNC_20230210_0200.csv"),
    ]
}

// ---------------------------------------------------------------------------------------
// flow 1: DACS FTP → OUAI S3

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow1_ftp_to_s3_moves_the_bytes_renames_the_sources_and_emails() {
    let (rig, ftp, s3) = Rig::new().await.ftp_to_s3(FTP_PW_VAR, S3_SECRET_VAR).await;
    let src = ftp.path(ENROLL_DIR);
    let mut files = flow1_demo_files();
    // Binary content: an ASCII-mode transfer would rewrite its line ends.
    files.push(("ENROLL_SYNC_20230301_0000.csv".into(), binary(300_000, 1)));
    seed(&src, &files);
    let others: Files = vec![
        (
            "Sent-ENROLL_SYNC_20230101_0000.csv".into(),
            b"sent before".to_vec(),
        ),
        ("README.txt".into(), b"not an extract".to_vec()),
    ];
    seed(&src, &others);

    let run = rig.run(FTP_ENROLL).await;
    assert_succeeded(&run);
    assert_files(&s3.bucket_dir(OUAI_ENROLL), &files);
    assert_files(&src, &[sent(&files), others.clone()].concat());
    assert_eq!(put_names(&run, "ouai_os"), names(&files));
    assert_eq!(renamed(&run).len(), files.len());
    let emails = rig.emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_moved_email(&emails, &run, FLOW1_NAME, [DACS_USER, OUAI_USER], &files);

    // Run again: every extract is marked sent, so nothing moves and the no-file email goes.
    let again = rig.run(FTP_ENROLL).await;
    assert_eq!((again.code, again.outcome()), (Some(0), "no_files"));
    assert_files(&s3.bucket_dir(OUAI_ENROLL), &files);
    let emails = rig.emails_of(&again);
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_eq!(
        emails[0].email.subject,
        format!("{FLOW1_NAME}: no file found")
    );
    assert_eq!(emails[0].email.to, [DACS_USER, OUAI_USER]);
}

// ---------------------------------------------------------------------------------------
// flow 2: DACS bucket → OUAI bucket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow2_s3_to_s3_moves_a_multipart_file_and_renames_the_source() {
    let mut rig = Rig::new().await;
    let dacs = S3Server::start(&[DACS_ENROLL]).await;
    let ouai = S3Server::start(&[OUAI_ENROLL]).await;
    rig.connect([
        ("dacs_os", s3_conn(&dacs.endpoint(), S3_SECRET_VAR)),
        ("ouai_os", s3_conn(&ouai.endpoint(), S3_SECRET_VAR)),
    ]);
    let files = vec![
        demo("dacs-os/dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_20230211_0100.csv"),
        // Over one part (8 MiB): a multipart upload.
        (
            "ENROLL_SYNC_20230302_0000.csv".into(),
            binary(9 * MIB + 5, 2),
        ),
    ];
    seed(&dacs.bucket_dir(DACS_ENROLL), &files);

    let run = rig.run(OS_ENROLL).await;
    assert_succeeded(&run);
    assert_moved(
        &dacs.bucket_dir(DACS_ENROLL),
        &ouai.bucket_dir(OUAI_ENROLL),
        &files,
    );
    assert!(
        ouai.pending_parts().is_empty(),
        "{:?}",
        ouai.pending_parts()
    );
    assert_moved_email(
        &rig.emails(),
        &run,
        FLOW2_NAME,
        [DACS_USER, OUAI_USER],
        &files,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow2_oci_to_oci_moves_the_bytes_with_signed_requests() {
    let mut rig = Rig::new().await;
    let os = Os::oci(&[DACS_ENROLL, OUAI_ENROLL]).await;
    rig.connect_os(&os, &os);
    let files = vec![
        demo("dacs-os/dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_20230211_0100.csv"),
        ("ENROLL_SYNC_20230302_0000.csv".into(), binary(MIB + 3, 3)),
    ];
    seed(&os.bucket(DACS_ENROLL), &files);

    let run = rig.run(OS_ENROLL).await;
    assert_succeeded(&run);
    assert_moved(&os.bucket(DACS_ENROLL), &os.bucket(OUAI_ENROLL), &files);
    let Os::Oci(server) = &os else { unreachable!() };
    let log = server.log();
    assert!(
        log.iter().all(|l| l.status < 300 && !l.signed.is_empty()),
        "every request signed and accepted: {log:#?}"
    );
    assert_moved_email(
        &rig.emails(),
        &run,
        FLOW2_NAME,
        [DACS_USER, OUAI_USER],
        &files,
    );
}

/// Issue 9: with one OCI request in three answering 503, 8 files needed 4 runs and 3 error
/// emails; the connector's retries now move them all in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow2_oci_moves_eight_files_in_one_run_with_every_third_request_failing() {
    let mut rig = Rig::new().await;
    let os = Os::oci(&[DACS_ENROLL, OUAI_ENROLL]).await;
    rig.connect_os(&os, &os);
    let files: Files = (0..8u64)
        .map(|i| {
            (
                format!("ENROLL_SYNC_2023031{i}_0000.csv"),
                binary(200 * 1024 + i as usize, i + 20),
            )
        })
        .collect();
    seed(&os.bucket(DACS_ENROLL), &files);
    let Os::Oci(server) = &os else { unreachable!() };
    server.inject(oci_server::Failures::EveryKth {
        k: 3,
        status: 503,
        seen: 0,
    });

    let run = rig.run(OS_ENROLL).await;
    assert_succeeded(&run);
    assert_moved(&os.bucket(DACS_ENROLL), &os.bucket(OUAI_ENROLL), &files);
    let log = server.log();
    let failed = log.iter().filter(|l| l.status == 503).count();
    assert!(failed >= 8, "only {failed} requests failed");
    eprintln!(
        "figure: 8 files moved in 1 run; {failed} of {} OCI requests answered 503",
        log.len()
    );
    assert_moved_email(
        &rig.emails(),
        &run,
        FLOW2_NAME,
        [DACS_USER, OUAI_USER],
        &files,
    );
}

// ---------------------------------------------------------------------------------------
// flow 5: OUAI bucket → DACS FTP or DACS bucket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow5_ftp_preference_moves_s3_files_to_the_ftp_server() {
    let mut rig = Rig::new().await;
    rig.ws.set_config("dacs.file.target.transfer.pref", "ftp");
    let s3 = S3Server::start(&[OUAI_KWH]).await;
    let ftp = FtpServer::start(None).await;
    std::fs::create_dir_all(ftp.path(KWH_DIR)).unwrap();
    rig.connect([
        ("ouai_os", s3_conn(&s3.endpoint(), S3_SECRET_VAR)),
        ("dacs_ftp", ftp_conn(ftp.port, FTP_PW_VAR)),
    ]);
    let files = vec![
        demo("ouai-os/ouainamespace/OUAIKwhAvoidFolder/ouai.kwh_avoided.20221213.csv"),
        ("ouai.kwh_avoided.20221214.csv".into(), binary(200_000, 5)),
    ];
    seed(&s3.bucket_dir(OUAI_KWH), &files);

    let run = rig.run(KWH_AVOIDED).await;
    assert_succeeded(&run);
    // Exactly the files: no temporary upload left beside them.
    assert_moved(&s3.bucket_dir(OUAI_KWH), &ftp.path(KWH_DIR), &files);
    assert_eq!(put_names(&run, "dacs_ftp"), names(&files));
    let emails = rig.emails();
    assert_moved_email(&emails, &run, FLOW5_NAME, [DACS_USER, OUAI_USER], &files);
    assert!(emails[0].email.has_line("ftp."), "{}", emails[0].email.body);
}

async fn flow5_os_preference_moves_files_between_buckets(ouai: Os, dacs: Os) {
    let mut rig = Rig::new().await;
    rig.connect([("ouai_os", ouai.conn()), ("dacs_os", dacs.conn())]);
    let files = vec![
        demo("ouai-os/ouainamespace/OUAIKwhAvoidFolder/ouai.kwh_avoided.20221213.csv"),
        ("ouai.kwh_avoided.20221214.csv".into(), binary(100_000, 6)),
    ];
    seed(&ouai.bucket(OUAI_KWH), &files);

    let run = rig.run(KWH_AVOIDED).await;
    assert_succeeded(&run);
    assert_moved(&ouai.bucket(OUAI_KWH), &dacs.bucket(DACS_KWH), &files);
    assert_eq!(put_names(&run, "dacs_os"), names(&files));
    let emails = rig.emails();
    assert_moved_email(&emails, &run, FLOW5_NAME, [DACS_USER, OUAI_USER], &files);
    assert!(emails[0].email.has_line("os."), "{}", emails[0].email.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow5_os_preference_moves_oci_files_to_an_s3_bucket() {
    flow5_os_preference_moves_files_between_buckets(
        Os::oci(&[OUAI_KWH]).await,
        Os::s3(&[DACS_KWH]).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow5_os_preference_moves_s3_files_to_an_oci_bucket() {
    flow5_os_preference_moves_files_between_buckets(
        Os::s3(&[OUAI_KWH]).await,
        Os::oci(&[DACS_KWH]).await,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// flow 6: OUAI bucket → DERMS (stand-in)

async fn flow6_uploads_to_the_derms_standin(os: Os) {
    let mut rig = Rig::new().await;
    rig.connect([("ouai_os", os.conn())]);
    let files = vec![
        demo("ouai-os/ouainamespace/Ouai_LRFolder/ouai.load_forecast.20230210.csv"),
        (
            "ouai.load_forecast.20230211.csv".into(),
            b"ProgramId,FeederId,ForecastStart,ForecastEnd,IntervalMinutes,ForecastKw\r\nP1,F9,2023-02-11T00:00:00Z,2023-02-11T01:00:00Z,60,12.5\r\n".to_vec(),
        ),
    ];
    seed(&os.bucket(OUAI_LRF), &files);

    let run = rig.run(LR_FORECAST).await;
    assert_succeeded(&run);
    let received: Files = rig
        .ws
        .standin
        .forecasts()
        .into_iter()
        .map(|f| (f.file_name, f.bytes))
        .collect();
    assert_eq!(names(&received), names(&files));
    assert!(
        received == files,
        "DERMS received other bytes than the source's"
    );
    assert_files(&os.bucket(OUAI_LRF), &sent(&files));
    assert_moved_email(
        &rig.emails(),
        &run,
        FLOW6_NAME,
        [OUAI_USER, DRMS_USER],
        &files,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow6_s3_forecasts_reach_the_derms_standin() {
    flow6_uploads_to_the_derms_standin(Os::s3(&[OUAI_LRF]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow6_oci_forecasts_reach_the_derms_standin() {
    flow6_uploads_to_the_derms_standin(Os::oci(&[OUAI_LRF]).await).await;
}

// ---------------------------------------------------------------------------------------
// failures: nothing renamed, nothing under the final name, an error email

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ftp_password_fails_the_listing_and_nothing_moves() {
    let (rig, ftp, s3) = Rig::new()
        .await
        .ftp_to_s3(FTP_WRONG_PW_VAR, S3_SECRET_VAR)
        .await;
    let files = flow1_demo_files();
    seed(&ftp.path(ENROLL_DIR), &files);

    let run = rig.run(FTP_ENROLL).await;
    assert_failed(&run, "list", "refused the login of user 'ferry'");
    assert_unmoved(&ftp.path(ENROLL_DIR), &s3.bucket_dir(OUAI_ENROLL), &files);
    let emails = rig.emails();
    assert_eq!(emails.len(), 1, "only the error email: {emails:#?}");
    let body = assert_error_email(&emails, &run, FLOW1_NAME, None);
    assert!(body.contains("authentication failed"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_s3_secret_fails_the_put_and_leaves_the_source() {
    let (rig, ftp, s3) = Rig::new()
        .await
        .ftp_to_s3(FTP_PW_VAR, S3_WRONG_SECRET_VAR)
        .await;
    let files = flow1_demo_files();
    seed(&ftp.path(ENROLL_DIR), &files);

    let run = rig.run(FTP_ENROLL).await;
    assert_failed(&run, "put", "SignatureDoesNotMatch");
    assert_unmoved(&ftp.path(ENROLL_DIR), &s3.bucket_dir(OUAI_ENROLL), &files);
    let emails = rig.emails();
    assert_eq!(emails.len(), 2, "{emails:#?}");
    assert_error_email(&emails, &run, FLOW1_NAME, Some(&files[0].0));
    assert_unmoved_email(&emails, &run, FLOW1_NAME, [DACS_USER, OUAI_USER], &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_oci_key_fails_the_put_and_leaves_the_source() {
    let mut rig = Rig::new().await;
    let os = Os::oci(&[DACS_ENROLL, OUAI_ENROLL]).await;
    let Os::Oci(server) = &os else { unreachable!() };
    rig.connect([
        ("dacs_os", os.conn()),
        (
            "ouai_os",
            oci_server::connection_spec(&server.endpoint(), "wrong_key.pem"),
        ),
    ]);
    let files = vec![demo(
        "dacs-os/dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_20230211_0100.csv",
    )];
    seed(&os.bucket(DACS_ENROLL), &files);

    let run = rig.run(OS_ENROLL).await;
    assert_failed(&run, "put", "NotAuthenticated");
    assert_unmoved(&os.bucket(DACS_ENROLL), &os.bucket(OUAI_ENROLL), &files);
    let emails = rig.emails();
    assert_error_email(&emails, &run, FLOW2_NAME, Some(&files[0].0));
    assert_unmoved_email(&emails, &run, FLOW2_NAME, [DACS_USER, OUAI_USER], &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_the_run_and_nothing_moves() {
    let mut rig = Rig::new().await;
    let ftp = FtpServer::start(None).await;
    let s3 = S3Server::start(&[OUAI_ENROLL]).await;
    let files = flow1_demo_files();
    seed(&ftp.path(ENROLL_DIR), &files);

    // The FTP source is down: the listing fails.
    rig.connect([
        ("dacs_ftp", ftp_conn(dead_port(), FTP_PW_VAR)),
        ("ouai_os", s3_conn(&s3.endpoint(), S3_SECRET_VAR)),
    ]);
    let run = rig.run(FTP_ENROLL).await;
    assert_failed(&run, "list", "cannot reach FTP server");
    assert_error_email(&rig.emails_of(&run), &run, FLOW1_NAME, None);

    // The S3 target is down: the put fails after its retries, the source stays.
    let down = format!("http://127.0.0.1:{}", dead_port());
    rig.connect([
        ("dacs_ftp", ftp_conn(ftp.port, FTP_PW_VAR)),
        ("ouai_os", s3_conn(&down, S3_SECRET_VAR)),
    ]);
    let run = rig.run(FTP_ENROLL).await;
    let message = assert_failed(&run, "put", "connection failed");
    assert!(message.contains(&down), "{message}");
    assert_unmoved(&ftp.path(ENROLL_DIR), &s3.bucket_dir(OUAI_ENROLL), &files);
    let emails = rig.emails_of(&run);
    assert_error_email(&emails, &run, FLOW1_NAME, Some(&files[0].0));
    assert_unmoved_email(&emails, &run, FLOW1_NAME, [DACS_USER, OUAI_USER], &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_upload_cut_mid_transfer_leaves_no_object_and_the_source() {
    let mut rig = Rig::new().await;
    let ftp = FtpServer::start(None).await;
    let s3 = S3Server::start(&[OUAI_ENROLL]).await;
    // 10 MiB go up as a multipart upload; the line is cut after 4 MiB.
    let proxy = CutProxy::start(s3.addr(), 4 * MIB as u64).await;
    rig.connect([
        ("dacs_ftp", ftp_conn(ftp.port, FTP_PW_VAR)),
        ("ouai_os", s3_conn(&proxy.endpoint(), S3_SECRET_VAR)),
    ]);
    let files: Files = vec![("ENROLL_SYNC_20230303_0000.csv".into(), binary(10 * MIB, 7))];
    seed(&ftp.path(ENROLL_DIR), &files);

    let run = rig.run(FTP_ENROLL).await;
    assert!(proxy.was_cut(), "the upload never reached 4 MiB");
    assert_failed(&run, "put", "ouai_os");
    assert_unmoved(&ftp.path(ENROLL_DIR), &s3.bucket_dir(OUAI_ENROLL), &files);
    let emails = rig.emails();
    assert_error_email(&emails, &run, FLOW1_NAME, Some(&files[0].0));
    assert_unmoved_email(&emails, &run, FLOW1_NAME, [DACS_USER, OUAI_USER], &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_upload_cut_mid_transfer_leaves_no_object_and_the_source() {
    let mut rig = Rig::new().await;
    let os = Os::oci(&[DACS_ENROLL, OUAI_ENROLL]).await;
    let proxy = CutProxy::start(os.addr(), MIB as u64).await;
    rig.connect([
        ("dacs_os", os.conn()),
        (
            "ouai_os",
            oci_server::connection_spec(&proxy.endpoint(), "test_key_pkcs1.pem"),
        ),
    ]);
    let files: Files = vec![("ENROLL_SYNC_20230303_0000.csv".into(), binary(3 * MIB, 8))];
    seed(&os.bucket(DACS_ENROLL), &files);

    let run = rig.run(OS_ENROLL).await;
    assert!(proxy.was_cut(), "the upload never reached 1 MiB");
    assert_failed(&run, "put", "ouai_os");
    assert_files(&os.bucket(DACS_ENROLL), &files);
    // The server drops what arrived of a broken upload; nothing is under the name.
    let held: Vec<String> = files_in(&os.bucket(OUAI_ENROLL))
        .into_keys()
        .filter(|n| !n.starts_with(".upload-"))
        .collect();
    assert!(held.is_empty(), "{held:?}");
    assert_error_email(&rig.emails(), &run, FLOW2_NAME, Some(&files[0].0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_oci_target_bucket_fails_the_put_naming_it() {
    let mut rig = Rig::new().await;
    let os = Os::oci(&[DACS_ENROLL]).await;
    rig.connect_os(&os, &os);
    let files = vec![demo(
        "dacs-os/dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_20230211_0100.csv",
    )];
    seed(&os.bucket(DACS_ENROLL), &files);

    let run = rig.run(OS_ENROLL).await;
    let message = assert_failed(&run, "put", "BucketNotFound");
    assert!(message.contains(OUAI_ENROLL), "{message}");
    assert_files(&os.bucket(DACS_ENROLL), &files);
    assert!(!os.bucket(OUAI_ENROLL).exists());
    assert_error_email(&rig.emails(), &run, FLOW2_NAME, Some(&files[0].0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_s3_source_bucket_fails_the_listing_naming_it() {
    let mut rig = Rig::new().await;
    let dacs = Os::s3(&[]).await;
    let ouai = Os::s3(&[OUAI_ENROLL]).await;
    rig.connect_os(&dacs, &ouai);

    let run = rig.run(OS_ENROLL).await;
    assert_failed(&run, "list", &format!("'{DACS_ENROLL}'"));
    assert_files(&ouai.bucket(OUAI_ENROLL), &[]);
    let emails = rig.emails();
    assert_eq!(emails.len(), 1, "only the error email: {emails:#?}");
    assert_error_email(&emails, &run, FLOW2_NAME, None);
}

/// The `skipped` events of a run: (connection, name, reason).
fn skipped(run: &CliRun) -> Vec<(String, String, String)> {
    events_of(run, |e| match e {
        Event::Skipped {
            connection,
            name,
            reason,
            ..
        } => Some((connection, name, reason)),
        _ => None,
    })
}

/// A file name ferry refuses, beside good files on a real FTP server: the good files move
/// and are marked sent, the odd one is left where it is, recorded as skipped and listed in
/// the process-complete email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_name_on_an_ftp_server_is_left_and_the_good_files_move() {
    let (rig, ftp, s3) = Rig::new().await.ftp_to_s3(FTP_PW_VAR, S3_SECRET_VAR).await;
    let src = ftp.path(ENROLL_DIR);
    let files = flow1_demo_files();
    seed(&src, &files);
    let bad: Files = vec![("ENROLL_SYNC_bad\\name.csv".into(), b"odd".to_vec())];
    seed(&src, &bad);

    let run = rig.run(FTP_ENROLL).await;
    assert_succeeded(&run);
    assert_files(&s3.bucket_dir(OUAI_ENROLL), &files);
    assert_files(&src, &[sent(&files), bad.clone()].concat());
    assert_eq!(
        skipped(&run),
        [(
            "dacs_ftp".to_string(),
            "ENROLL_SYNC_bad\\name.csv".to_string(),
            "ferry refuses its name: it contains a path separator".to_string()
        )]
    );
    let emails = rig.emails();
    assert_moved_email(&emails, &run, FLOW1_NAME, [DACS_USER, OUAI_USER], &files);
    let complete = &emails[0].email;
    assert_eq!(
        listed(
            complete,
            "Files left where they are (names ferry refuses): 1"
        ),
        [r#""ENROLL_SYNC_bad\\name.csv": ferry refuses its name: it contains a path separator"#]
    );
}

/// Names that would climb out of the directory, from a scripted FTP server: nothing is asked
/// about them (no SIZE, no RETR), the run finds no file to move, and the no-file email lists
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_in_an_ftp_listing_are_never_followed_and_are_reported() {
    let mut rig = Rig::new().await;
    let hostile = "ENROLL_SYNC_../../../etc/passwd";
    let ftp = FakeFtp::start(Script {
        mlsd: Some(format!("type=file;size=9; {hostile}\r\n").into_bytes()),
        ..Script::default()
    })
    .await;
    let s3 = S3Server::start(&[OUAI_ENROLL]).await;
    rig.connect([
        ("dacs_ftp", ftp_conn(ftp.addr.port(), FTP_PW_VAR)),
        ("ouai_os", s3_conn(&s3.endpoint(), S3_SECRET_VAR)),
    ]);

    let run = rig.run(FTP_ENROLL).await;
    assert_eq!(
        (run.code, run.outcome()),
        (Some(0), "no_files"),
        "{}",
        run.all_output()
    );
    let commands = ftp.commands();
    assert!(
        !commands
            .iter()
            .any(|c| ["RETR", "STOR", "RNFR", "RNTO", "DELE", "SIZE"]
                .iter()
                .any(|verb| c.starts_with(verb))),
        "nothing but the listing may happen: {commands:?}"
    );
    assert_files(&s3.bucket_dir(OUAI_ENROLL), &[]);
    assert_eq!(skipped(&run).len(), 1, "{:#?}", run.events());
    let emails = rig.emails();
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_eq!(
        emails[0].email.subject,
        format!("{FLOW1_NAME}: no file found")
    );
    assert_eq!(
        listed(
            &emails[0].email,
            "Files left where they are (names ferry refuses): 1"
        ),
        [format!(
            "\"{hostile}\": ferry refuses its name: it contains a path separator"
        )]
    );
}

/// A key with a backslash beside a good extract in an S3 bucket: the extract moves, the key
/// stays and is listed in the email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_key_in_an_s3_listing_is_left_and_the_good_file_moves() {
    let mut rig = Rig::new().await;
    let dacs = Os::s3(&[DACS_ENROLL]).await;
    let ouai = Os::s3(&[OUAI_ENROLL]).await;
    rig.connect_os(&dacs, &ouai);
    let files = vec![demo(
        "dacs-os/dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_20230211_0100.csv",
    )];
    let bad: Files = vec![("ENROLL_SYNC_..\\evil.csv".to_string(), b"hostile".to_vec())];
    seed(&dacs.bucket(DACS_ENROLL), &files);
    seed(&dacs.bucket(DACS_ENROLL), &bad);

    let run = rig.run(OS_ENROLL).await;
    assert_succeeded(&run);
    assert_files(&ouai.bucket(OUAI_ENROLL), &files);
    assert_files(
        &dacs.bucket(DACS_ENROLL),
        &[sent(&files), bad.clone()].concat(),
    );
    assert_eq!(
        skipped(&run),
        [(
            "dacs_os".to_string(),
            "ENROLL_SYNC_..\\evil.csv".to_string(),
            "ferry refuses its name: it contains a path separator".to_string()
        )]
    );
    let emails = rig.emails();
    assert_moved_email(&emails, &run, FLOW2_NAME, [DACS_USER, OUAI_USER], &files);
    assert_eq!(
        listed(
            &emails[0].email,
            "Files left where they are (names ferry refuses): 1"
        ),
        [r#""ENROLL_SYNC_..\\evil.csv": ferry refuses its name: it contains a path separator"#]
    );
}

/// A key with a line break: the S3 client refuses the whole listing page, so the listing
/// fails naming the key (escaped) and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_character_key_in_an_s3_listing_fails_naming_it_and_nothing_moves() {
    let mut rig = Rig::new().await;
    let dacs = Os::s3(&[DACS_ENROLL]).await;
    let ouai = Os::s3(&[OUAI_ENROLL]).await;
    rig.connect_os(&dacs, &ouai);
    let files = vec![
        demo("dacs-os/dacsnamespace/DACS_EnrollFolder/ENROLL_SYNC_20230211_0100.csv"),
        ("ENROLL_SYNC_x\nSent-y.csv".to_string(), b"hostile".to_vec()),
    ];
    seed(&dacs.bucket(DACS_ENROLL), &files);

    let run = rig.run(OS_ENROLL).await;
    let message = assert_failed(&run, "list", "'ENROLL_SYNC_x\\nSent-y.csv'");
    assert!(message.contains("control character"), "{message}");
    assert_unmoved(&dacs.bucket(DACS_ENROLL), &ouai.bucket(OUAI_ENROLL), &files);
    assert_error_email(&rig.emails(), &run, FLOW2_NAME, None);
}

// ---------------------------------------------------------------------------------------
// the mail relay down: the outcome is the transfer's, the report says the email failed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mail_relay_does_not_fail_a_successful_transfer() {
    let (rig, ftp, s3) = Rig::with_dead_relay()
        .await
        .ftp_to_s3(FTP_PW_VAR, S3_SECRET_VAR)
        .await;
    let files = flow1_demo_files();
    seed(&ftp.path(ENROLL_DIR), &files);

    let run = rig.run(FTP_ENROLL).await;
    assert_succeeded(&run);
    assert_moved(&ftp.path(ENROLL_DIR), &s3.bucket_dir(OUAI_ENROLL), &files);
    let unsent = emails_failed(&run);
    assert_eq!(unsent.len(), 1, "{:#?}", run.events());
    let (to, subject, message) = &unsent[0];
    assert_eq!(to, &[DACS_USER, OUAI_USER]);
    assert_eq!(subject, &format!("{FLOW1_NAME}: process complete"));
    assert!(message.contains("connection 'mail'"), "{message}");
    assert!(
        !run.events()
            .iter()
            .any(|e| matches!(e, Event::Emailed { .. } | Event::Failed { .. })),
        "{:#?}",
        run.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mail_relay_does_not_hide_a_failed_transfer() {
    let (rig, ftp, s3) = Rig::with_dead_relay()
        .await
        .ftp_to_s3(FTP_PW_VAR, S3_WRONG_SECRET_VAR)
        .await;
    let files = flow1_demo_files();
    seed(&ftp.path(ENROLL_DIR), &files);

    let run = rig.run(FTP_ENROLL).await;
    assert_failed(&run, "put", "SignatureDoesNotMatch");
    assert_unmoved(&ftp.path(ENROLL_DIR), &s3.bucket_dir(OUAI_ENROLL), &files);
    // Neither the summary nor the error email went out, and the report says so.
    let subjects: Vec<String> = emails_failed(&run).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(
        subjects,
        [
            format!("{FLOW1_NAME}: process complete"),
            format!("ERROR: {FLOW1_NAME} run {}", run.run_id()),
        ]
    );
}
