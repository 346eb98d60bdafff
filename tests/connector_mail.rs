//! Tests for the mail connectors (`ferry::connectors::mail`): the `.eml` outbox, and SMTP
//! against a real SMTP server — `tests/support/smtp_server.py`, built on Python's aiosmtpd,
//! which stores every accepted message as JSON. Without aiosmtpd the SMTP tests are skipped
//! (with a note on stderr), except under CI, where they fail.
#![allow(clippy::unwrap_used)]

#[path = "support/process.rs"]
mod process;
#[path = "support/smtp.rs"]
mod smtp;
#[path = "support/tls.rs"]
mod tls;

use process::rerun_with_env;
use tls::{make_certificates, openssl_available};

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::connectors::ConnectorError;
use ferry::connectors::mail::{Email, Mailer, OutboxSpec, SmtpSecurity, SmtpSpec, split_addresses};
use smtp::SmtpServer;

fn email(to: &[&str]) -> Email {
    Email {
        from: "Ferry Bot <ferry@example.com>".into(),
        to: to.iter().map(|s| s.to_string()).collect(),
        subject: "Weekly report".into(),
        body: "Hello,\n\nthe weekly report ran: 3 files sent.\n-- \nferry\n".into(),
    }
}

/// Splits a message into its (unfolded) headers and its body, with `\n` line ends.
fn parse_message(raw: &str) -> (Vec<(String, String)>, String) {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            headers.last_mut().unwrap().1.push_str(line.trim_start());
        } else {
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    (headers, body.to_string())
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn smtp_spec(port: u16, security: SmtpSecurity) -> SmtpSpec {
    SmtpSpec {
        host: "127.0.0.1".into(),
        port: Some(port),
        security,
        username: None,
        password_env: None,
        timeout_secs: Some(5),
        attempts: Some(1),
        ca_file: None,
    }
}

// ---------------------------------------------------------------------------------------
// Outbox

#[tokio::test]
async fn outbox_writes_one_eml_per_message_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mail").join("out");
    let spec = OutboxSpec {
        dir: format!("${{FERRY_TEST_MAIL_UNSET_DIR:-{}}}", dir.display()),
    };
    let mailer = Mailer::outbox(&spec).unwrap();

    let first = email(&["ops@example.com", "Bo Lindqvist <bo@example.org>"]);
    let where1 = mailer.send(&first).await.unwrap();
    let mut second = email(&["ops@example.com"]);
    second.subject = "Rapport hebdomadaire".into();
    let where2 = mailer.send(&second).await.unwrap();
    assert_ne!(where1, where2);

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        2,
        "only the two messages, no temporary files: {names:?}"
    );
    let pattern = regex::Regex::new(
        r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}\.eml$",
    )
    .unwrap();
    for name in &names {
        assert!(pattern.is_match(name), "unexpected file name {name}");
    }
    assert_eq!(Path::new(&where1), dir.join(&names[0]));
    assert_eq!(Path::new(&where2), dir.join(&names[1]));

    let (headers, body) = parse_message(&std::fs::read_to_string(&where1).unwrap());
    assert_eq!(get(&headers, "from"), "\"Ferry Bot\" <ferry@example.com>");
    assert_eq!(
        get(&headers, "to"),
        "ops@example.com, \"Bo Lindqvist\" <bo@example.org>"
    );
    assert_eq!(get(&headers, "subject"), "Weekly report");
    assert_eq!(get(&headers, "content-type"), "text/plain; charset=utf-8");
    assert!(get(&headers, "message-id").ends_with("@example.com>"));
    assert!(!get(&headers, "date").is_empty());
    assert_eq!(body, first.body);

    let (headers, _) = parse_message(&std::fs::read_to_string(&where2).unwrap());
    assert_eq!(get(&headers, "to"), "ops@example.com");
    assert_eq!(get(&headers, "subject"), "Rapport hebdomadaire");
}

#[tokio::test]
async fn outbox_check_creates_the_directory_and_leaves_it_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let mailer = Mailer::outbox(&OutboxSpec {
        dir: dir.display().to_string(),
    })
    .unwrap();
    let said = mailer.check().await.unwrap();
    assert_eq!(said, format!("outbox {} is writable", dir.display()));
    assert!(dir.is_dir());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

/// An outbox that cannot be written (its directory is a file) fails the send with an error
/// naming the path, and leaves nothing behind.
#[tokio::test]
async fn an_unwritable_outbox_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("outbox");
    std::fs::write(&dir, b"a file, not a directory").unwrap();
    let mailer = Mailer::outbox(&OutboxSpec {
        dir: dir.display().to_string(),
    })
    .unwrap();
    let err = mailer.send(&email(&["ops@example.com"])).await.unwrap_err();
    let said = err.to_string();
    assert!(
        matches!(&err, ConnectorError::Io { .. }) && said.contains(&dir.display().to_string()),
        "{said}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the file that stood in the way");
    assert_eq!(std::fs::read(&dir).unwrap(), b"a file, not a directory");
}

#[tokio::test]
async fn bad_addresses_are_config_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mailer = Mailer::outbox(&OutboxSpec {
        dir: tmp.path().display().to_string(),
    })
    .unwrap();

    let err = mailer
        .send(&email(&["ops@example.com", "not-an-address"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Config(m) if m.contains("'not-an-address'")),
        "{err}"
    );
    let mut bad_from = email(&["ops@example.com"]);
    bad_from.from = "ferry at example dot com".into();
    let err = mailer.send(&bad_from).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Config(m) if m.contains("'ferry at example dot com'")),
        "{err}"
    );
    let err = mailer.send(&email(&[])).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Config(m) if m.contains("no recipient")),
        "{err}"
    );

    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing may be written"
    );
    assert_eq!(
        split_addresses("a@x.com, b@y.com;c@z.com ,"),
        vec!["a@x.com", "b@y.com", "c@z.com"]
    );
}

// ---------------------------------------------------------------------------------------
// SMTP

#[tokio::test]
async fn smtp_delivers_to_a_real_server() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let mailer = Mailer::smtp(&smtp_spec(server.port, SmtpSecurity::None)).unwrap();

    let said = mailer.check().await.unwrap();
    assert_eq!(
        said,
        format!(
            "SMTP server smtp://127.0.0.1:{} answered (no encryption)",
            server.port
        )
    );

    let message = email(&["ops@example.com", "Bo <bo@example.org>"]);
    let went = mailer.send(&message).await.unwrap();
    assert_eq!(went, format!("smtp://127.0.0.1:{}", server.port));

    let stored = server.messages();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m["mail_from"], "ferry@example.com");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@example.com", "bo@example.org"])
    );
    assert_eq!(m["tls"], false);
    assert_eq!(m["auth_login"], serde_json::Value::Null);
    let (headers, body) = parse_message(m["data"].as_str().unwrap());
    assert_eq!(get(&headers, "to"), "ops@example.com, Bo <bo@example.org>");
    assert_eq!(get(&headers, "subject"), "Weekly report");
    // The DATA terminator adds a line end; everything before it arrives exactly.
    assert_eq!(body.trim_end(), message.body.trim_end());
    assert!(body.starts_with(&message.body));
}

const GOOD_PW_VAR: &str = "FERRY_TEST_SMTP_GOOD_PW_81F3";
const BAD_PW_VAR: &str = "FERRY_TEST_SMTP_BAD_PW_81F3";

#[tokio::test]
async fn smtp_authenticates_with_the_password_from_the_environment() {
    if std::env::var_os(GOOD_PW_VAR).is_none() {
        rerun_with_env(
            "smtp_authenticates_with_the_password_from_the_environment",
            &[(GOOD_PW_VAR, "s3cret pässword"), (BAD_PW_VAR, "wrong")],
        )
        .await;
        return;
    }
    let Some(server) =
        SmtpServer::start(&["--user", "alice", "--password", "s3cret pässword"]).await
    else {
        return;
    };
    let mut spec = smtp_spec(server.port, SmtpSecurity::None);
    spec.username = Some("${FERRY_TEST_SMTP_UNSET_USER:-alice}".into());
    spec.password_env = Some(GOOD_PW_VAR.into());
    spec.attempts = Some(3);
    let mailer = Mailer::smtp(&spec).unwrap();
    assert!(!format!("{mailer:?}").contains("pässword"));
    assert!(
        mailer
            .check()
            .await
            .unwrap()
            .ends_with("(no encryption, authenticated as alice)")
    );
    mailer.send(&email(&["ops@example.com"])).await.unwrap();
    let stored = server.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["auth_login"], "alice");
    assert_eq!(
        stored[0]["rcpt_tos"],
        serde_json::json!(["ops@example.com"])
    );

    // Refused credentials are an Auth error, and not retried.
    spec.password_env = Some(BAD_PW_VAR.into());
    let mailer = Mailer::smtp(&spec).unwrap();
    match mailer.send(&email(&["ops@example.com"])).await.unwrap_err() {
        ConnectorError::Auth(msg) => {
            assert!(
                msg.contains("after 1 attempt:") && msg.contains("535"),
                "{msg}"
            );
            assert!(!msg.contains("wrong"), "{msg}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert_eq!(server.connections(), 3, "refused credentials were retried");
    assert!(matches!(mailer.check().await, Err(ConnectorError::Auth(_))));
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn smtp_dead_port_fails_after_the_configured_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut spec = smtp_spec(port, SmtpSecurity::None);
    spec.attempts = Some(2);
    let mailer = Mailer::smtp(&spec).unwrap();

    let started = Instant::now();
    let err = mailer.send(&email(&["ops@example.com"])).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(400),
        "no backoff between attempts: {elapsed:?}"
    );
    match err {
        ConnectorError::Connect(msg) => {
            assert!(msg.contains(&format!("smtp://127.0.0.1:{port}")), "{msg}");
            assert!(msg.contains("after 2 attempts"), "{msg}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test]
async fn smtp_silent_server_times_out() {
    // Accepts connections but never sends a greeting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut spec = smtp_spec(port, SmtpSecurity::None);
    spec.timeout_secs = Some(1);
    let mailer = Mailer::smtp(&spec).unwrap();

    let started = Instant::now();
    let err = mailer.send(&email(&["ops@example.com"])).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    match err {
        ConnectorError::Timeout(msg) => {
            assert!(
                msg.contains("after 1 attempt: no answer within 1 s"),
                "{msg}"
            );
            assert!(msg.contains(&format!("smtp://127.0.0.1:{port}")), "{msg}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(matches!(
        mailer.check().await,
        Err(ConnectorError::Timeout(_))
    ));
}

#[tokio::test]
async fn smtp_retries_4xx_but_not_5xx() {
    let Some(server) = SmtpServer::start(&[]).await else {
        return;
    };
    let mut spec = smtp_spec(server.port, SmtpSecurity::None);
    spec.attempts = Some(3);
    let mailer = Mailer::smtp(&spec).unwrap();

    match mailer
        .send(&email(&["ops@example.com", "reject-me@example.com"]))
        .await
        .unwrap_err()
    {
        ConnectorError::Protocol(msg) => {
            assert!(
                msg.contains("after 1 attempt:") && msg.contains("550"),
                "{msg}"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert_eq!(server.connections(), 1, "a permanent failure was retried");

    spec.attempts = Some(2);
    let mailer = Mailer::smtp(&spec).unwrap();
    match mailer
        .send(&email(&["defer-me@example.com"]))
        .await
        .unwrap_err()
    {
        ConnectorError::Protocol(msg) => {
            assert!(
                msg.contains("after 2 attempts:") && msg.contains("451"),
                "{msg}"
            );
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert_eq!(
        server.connections(),
        3,
        "a transient failure was not retried"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn smtp_starttls_and_implicit_tls_trust_the_ca_file() {
    if !openssl_available() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = make_certificates(certs.path());
    let (leaf, key) = (leaf.display().to_string(), key.display().to_string());

    for (security, extra) in [
        (SmtpSecurity::Starttls, None),
        (SmtpSecurity::Tls, Some("--implicit-tls")),
    ] {
        let mut args = vec!["--cert", leaf.as_str(), "--key", key.as_str()];
        args.extend(extra);
        let Some(server) = SmtpServer::start(&args).await else {
            return;
        };

        // Without the CA, the server's certificate is refused, and that is not retried.
        let mut spec = smtp_spec(server.port, security);
        spec.attempts = Some(3);
        match Mailer::smtp(&spec)
            .unwrap()
            .send(&email(&["ops@example.com"]))
            .await
            .unwrap_err()
        {
            ConnectorError::Connect(msg) => {
                assert!(msg.contains("after 1 attempt:"), "{security:?}: {msg}");
                assert!(
                    msg.to_lowercase().contains("certificate"),
                    "{security:?}: {msg}"
                );
            }
            other => panic!("{security:?}: expected Connect, got {other:?}"),
        }
        assert_eq!(
            server.connections(),
            1,
            "{security:?}: a certificate failure was retried"
        );

        spec.ca_file = Some(ca.display().to_string());
        let mailer = Mailer::smtp(&spec).unwrap();
        let expected = if security == SmtpSecurity::Tls {
            "(TLS)"
        } else {
            "(STARTTLS)"
        };
        assert!(mailer.check().await.unwrap().ends_with(expected));
        mailer
            .send(&email(&["ops@example.com", "bo@example.org"]))
            .await
            .unwrap();
        let stored = server.messages();
        assert_eq!(stored.len(), 1, "{security:?}");
        assert_eq!(stored[0]["tls"], true, "{security:?}");
        assert_eq!(
            stored[0]["rcpt_tos"],
            serde_json::json!(["ops@example.com", "bo@example.org"])
        );
        let (_, body) = parse_message(stored[0]["data"].as_str().unwrap());
        assert!(body.starts_with(&email(&[]).body), "{body}");
    }
}

#[test]
fn smtp_unusable_ca_file_is_a_config_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for path in [garbage, tmp.path().join("missing.pem")] {
        let mut spec = smtp_spec(25, SmtpSecurity::Starttls);
        spec.ca_file = Some(path.display().to_string());
        match Mailer::smtp(&spec).unwrap_err() {
            ConnectorError::Config(msg) => {
                assert!(msg.contains(&path.display().to_string()), "{msg}")
            }
            other => panic!("expected Config, got {other:?}"),
        }
    }
}
