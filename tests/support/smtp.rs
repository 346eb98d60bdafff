//! A real SMTP server for tests: `tests/support/smtp_server.py` (Python's aiosmtpd), which
//! stores every accepted message as JSON. Without aiosmtpd the tests that need it are
//! skipped (with a note on stderr) — except under CI (`CI` set), where they fail.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// Whether python3 with aiosmtpd is there. Outside CI a missing aiosmtpd prints a note and
/// answers false; under CI it fails the test.
pub fn aiosmtpd_available() -> bool {
    let has_aiosmtpd = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_aiosmtpd {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with aiosmtpd is required under CI"
        );
        eprintln!(
            "skipped: python3 -c 'import aiosmtpd' failed (pip install aiosmtpd to run the SMTP tests)"
        );
    }
    has_aiosmtpd
}

/// A running `tests/support/smtp_server.py`; killed when dropped.
pub struct SmtpServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Where it stores messages.
    pub dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpServer {
    /// Starts the server with extra arguments (see the script); None (after saying why)
    /// when aiosmtpd is missing outside CI.
    pub async fn start(args: &[&str]) -> Option<SmtpServer> {
        if !aiosmtpd_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server did not start within 20 s")
            .unwrap()
            .and_then(|line| line.strip_prefix("PORT ").map(|p| p.parse().unwrap()))
            .expect("the SMTP server did not print its port");
        Some(SmtpServer {
            port,
            dir,
            _child: child,
        })
    }

    /// How many connections the server has accepted.
    pub fn connections(&self) -> u32 {
        match std::fs::read_to_string(self.dir.path().join("connections.txt")) {
            Ok(text) => text.trim().parse().unwrap(),
            Err(_) => 0,
        }
    }

    /// The messages stored so far, in arrival order: `{mail_from, rcpt_tos, data,
    /// auth_login, tls}`. A message is stored before the server acknowledges it, so once
    /// the sender returned, it is here.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort_by_key(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            stem.trim_start_matches("msg-").parse::<u32>().unwrap()
        });
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}
