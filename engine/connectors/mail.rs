//! The mail connectors: an `.eml` outbox directory, or SMTP.
//!
//! Both send an [`Email`] (plain UTF-8 text) built with lettre's message builder. The
//! [`Mailer::Outbox`] writes each message atomically as `<dir>/<timestamp>-<uuid>.eml` — handy
//! for rehearsals and for mail picked up by another system. [`Mailer::Smtp`] hands it to an
//! SMTP server (STARTTLS, implicit TLS, or plain for local relays), retrying transient failures
//! (refused connections, timeouts, `4xx` replies) a few times but never permanent ones (`5xx`,
//! refused credentials). Passwords come from the environment and are never shown.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConnectorError, Secret, expand_env};

/// SMTP timeout when the spec gives none, in seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// SMTP attempts per message when the spec gives none.
const DEFAULT_ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled for each further one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An email to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email {
    /// Sender address, e.g. `ferry@example.com` or `Ferry <ferry@example.com>`.
    pub from: String,
    /// Recipient addresses (at least one).
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Email written as `.eml` files into a directory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxSpec {
    /// Directory the .eml files are written to (created if missing); may use ${VAR}.
    pub dir: String,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (default port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (default port 465).
    Tls,
    /// No encryption at all, for local relays (default port 25).
    None,
}

/// Email sent over SMTP.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpSpec {
    /// Server host name or IP address; may use ${VAR}.
    pub host: String,
    /// Server port (default 587 for starttls, 465 for tls, 25 for none).
    #[serde(default)]
    pub port: Option<u16>,
    /// starttls (default), tls (implicit), none (plain, for local relays).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name to authenticate as (needs `password_env`); may use ${VAR}.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (needs `username`).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Seconds one attempt (connecting, the exchange, handing over the message) may take
    /// before it is abandoned (default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Attempts per message (default 3), with a short backoff between; only transient failures
    /// (refused connection, timeout, 4xx reply) are retried.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// PEM file of extra CA certificates to trust, in addition to the system's; may use ${VAR}.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// An opened mail connection.
#[derive(Debug)]
pub enum Mailer {
    /// Writes `.eml` files into a directory.
    Outbox(Outbox),
    /// Sends over SMTP.
    Smtp(SmtpSender),
}

/// A directory receiving one `.eml` file per message.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
}

/// An SMTP server messages are handed to.
pub struct SmtpSender {
    host: String,
    port: u16,
    security: SmtpSecurity,
    user: Option<String>,
    attempts: u32,
    timeout: Duration,
    /// Boxed: the transport is large, and `Mailer` holds this inline.
    transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("attempts", &self.attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Opens an outbox (expands `${VAR}` in the directory; creates nothing yet).
    pub fn outbox(spec: &OutboxSpec) -> Result<Self, ConnectorError> {
        let dir = expand_env(&spec.dir)?;
        if dir.trim().is_empty() {
            return Err(ConnectorError::Config("outbox: dir is empty".to_string()));
        }
        Ok(Mailer::Outbox(Outbox {
            dir: PathBuf::from(dir),
        }))
    }

    /// Opens an SMTP connection definition: expands `${VAR}`, reads the password from the
    /// environment, loads `ca_file`. Does not touch the network.
    pub fn smtp(spec: &SmtpSpec) -> Result<Self, ConnectorError> {
        let config = |msg: String| ConnectorError::Config(format!("smtp: {msg}"));
        let host = expand_env(&spec.host)?;
        let host = host.trim().to_string();
        if host.is_empty() {
            return Err(config("host is empty".to_string()));
        }
        let port = spec.port.unwrap_or(match spec.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });
        let secs = spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if secs == 0 {
            return Err(config("timeout_secs must be at least 1".to_string()));
        }
        let timeout = Duration::from_secs(secs);
        let attempts = spec.attempts.unwrap_or(DEFAULT_ATTEMPTS);
        if attempts == 0 {
            return Err(config("attempts must be at least 1".to_string()));
        }

        let credentials = match (&spec.username, &spec.password_env) {
            (Some(user), Some(var)) => {
                let user = expand_env(user)?;
                let password = Secret::from_env(var)?;
                Some((user, password))
            }
            (Some(_), None) => {
                return Err(config(
                    "username is set but password_env is not".to_string(),
                ));
            }
            (None, Some(_)) => {
                return Err(config(
                    "password_env is set but username is not".to_string(),
                ));
            }
            (None, None) => None,
        };

        let tls = match spec.security {
            SmtpSecurity::None => {
                if spec.ca_file.is_some() {
                    return Err(config(
                        "ca_file is set but security is none (no TLS is used)".to_string(),
                    ));
                }
                Tls::None
            }
            security => {
                let mut params = TlsParameters::builder(host.clone());
                if let Some(ca_file) = &spec.ca_file {
                    let path = PathBuf::from(expand_env(ca_file)?);
                    // Validates the file with a clear error; lettre accepts a PEM without
                    // certificates silently.
                    super::http::load_ca_certificates(&path)?;
                    let pem = std::fs::read(&path).map_err(|e| {
                        config(format!("ca_file '{}' cannot be read: {e}", path.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        config(format!("ca_file '{}' is not valid: {e}", path.display()))
                    })?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| config(format!("cannot set up TLS for {host}: {e}")))?;
                if security == SmtpSecurity::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .timeout(Some(timeout))
            .tls(tls);
        let mut user = None;
        if let Some((name, password)) = credentials {
            if spec.security == SmtpSecurity::None {
                tracing::warn!(host = %host, "SMTP credentials are sent without encryption (security: none)");
            }
            builder = builder.credentials(Credentials::new(
                name.clone(),
                password.expose().to_string(),
            ));
            user = Some(name);
        }
        Ok(Mailer::Smtp(SmtpSender {
            host,
            port,
            security: spec.security,
            user,
            attempts,
            timeout,
            transport: Box::new(builder.build()),
        }))
    }

    /// Sends one message; returns where it went (the .eml path, or "smtp://host:port").
    /// Addresses that do not parse → [`ConnectorError::Config`] naming the address. SMTP:
    /// retries up to `attempts` on transient failures (connection refused, timeouts, 4xx), not
    /// on permanent 5xx/auth; the final error says how many attempts were made.
    pub async fn send(&self, email: &Email) -> Result<String, ConnectorError> {
        let message = build_message(email)?;
        match self {
            Mailer::Outbox(o) => o.write(message.formatted()).await,
            Mailer::Smtp(s) => s.send(&message).await,
        }
    }

    /// Checks the connection: for an outbox, that the directory can be written (it is created
    /// if missing); for SMTP, that a session can be opened (and authenticated, when
    /// credentials are set). Says what was checked.
    pub async fn check(&self) -> Result<String, ConnectorError> {
        match self {
            Mailer::Outbox(o) => o.check().await,
            Mailer::Smtp(s) => s.check().await,
        }
    }
}

/// Splits a comma/semicolon separated address list, trimming blanks and dropping empties
/// ("a@x.com, b@y.com,").
pub fn split_addresses(list: &str) -> Vec<String> {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses one address, naming it (and its role) when it does not parse.
fn parse_mailbox(role: &str, address: &str) -> Result<Mailbox, ConnectorError> {
    let trimmed = address.trim();
    let bad = |why: &str| {
        ConnectorError::Config(format!(
            "{role} address '{}' is not a valid email address{why}",
            address.escape_debug()
        ))
    };
    let mailbox: Mailbox = trimmed.parse().map_err(|_| bad(""))?;
    // lettre's parser stops after the first mailbox; refuse input it would silently cut.
    let addr = mailbox.email.to_string();
    let consumed = trimmed.ends_with(&addr) || trimmed.ends_with(&format!("<{addr}>"));
    if !consumed {
        return Err(bad(
            " (one address per entry; split lists with split_addresses)",
        ));
    }
    Ok(mailbox)
}

/// Builds the message: plain UTF-8 text, with Date and Message-ID.
fn build_message(email: &Email) -> Result<Message, ConnectorError> {
    let from = parse_mailbox("sender", &email.from)?;
    if email.to.iter().all(|a| a.trim().is_empty()) {
        return Err(ConnectorError::Config(
            "the email has no recipient".to_string(),
        ));
    }
    let message_id = format!("<{}@{}>", uuid::Uuid::now_v7(), from.email.domain());
    let mut builder = Message::builder()
        .from(from)
        .subject(email.subject.clone())
        .message_id(Some(message_id))
        .header(ContentType::TEXT_PLAIN);
    for address in email.to.iter().filter(|a| !a.trim().is_empty()) {
        builder = builder.to(parse_mailbox("recipient", address)?);
    }
    builder
        .body(email.body.clone())
        .map_err(|e| ConnectorError::Config(format!("cannot build the email: {e}")))
}

impl Outbox {
    /// Writes `bytes` as `<dir>/<timestamp>-<uuid>.eml`: first under a hidden temporary name
    /// in the same directory, synced, then renamed and the directory synced, so readers never
    /// see a partial file and the email is on disk once this returns. The file system work
    /// is one blocking task; its syncs are shared with puts waiting at once
    /// ([`super::durable`]).
    async fn write(&self, bytes: Vec<u8>) -> Result<String, ConnectorError> {
        let name = format!(
            "{}-{}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            uuid::Uuid::now_v7()
        );
        let dir = self.dir.clone();
        super::blocking(&self.dir, "write", move || {
            let path = dir.join(&name);
            let temp = dir.join(format!(".{name}.part"));
            let written = write_new_file(&dir, &temp, &bytes).and_then(|()| {
                std::fs::rename(&temp, &path).map_err(io_error("rename", &temp))?;
                super::durable::sync(&dir, || std::fs::File::open(&dir)?.sync_all())
                    .map_err(io_error("sync", &dir))
            });
            if written.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            written?;
            tracing::debug!(path = %path.display(), "email written to the outbox");
            Ok(path.display().to_string())
        })
        .await
    }

    async fn check(&self) -> Result<String, ConnectorError> {
        self.ensure_dir().await?;
        let probe = self
            .dir
            .join(format!(".ferry-check-{}", uuid::Uuid::now_v7()));
        let (dir, p) = (self.dir.clone(), probe.clone());
        super::blocking(&probe, "write", move || {
            write_new_file(&dir, &p, b"ferry check\n")
        })
        .await?;
        tokio::fs::remove_file(&probe)
            .await
            .map_err(|source| ConnectorError::Io {
                op: "remove",
                target: probe.display().to_string(),
                source,
            })?;
        Ok(format!("outbox {} is writable", self.dir.display()))
    }

    async fn ensure_dir(&self) -> Result<(), ConnectorError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|source| ConnectorError::Io {
                op: "create directory",
                target: self.dir.display().to_string(),
                source,
            })
    }
}

/// Creates `path` (which must not exist) in `dir`, making `dir` when it is missing, writes
/// `bytes` and flushes them to disk.
fn write_new_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), ConnectorError> {
    use std::io::Write as _;
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
            create()
        }
        other => other,
    }
    .map_err(io_error("create", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    super::durable::sync(dir, || file.sync_all()).map_err(io_error("sync", path))
}

/// A file system error: `op` on `path`.
fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |source| super::io_error(op, path, source)
}

/// How a failed SMTP exchange is reported, and whether it is worth another attempt.
struct Failure {
    retry: bool,
    error: fn(String) -> ConnectorError,
}

/// Sorts a lettre error: timeouts, refused or dropped connections and 4xx replies are
/// transient; 5xx replies, refused credentials, TLS/certificate and client errors are not.
fn classify(e: &lettre::transport::smtp::Error) -> Failure {
    if let Some(code) = e.status() {
        let code = code.to_string();
        if e.is_permanent() {
            // 530 authentication required, 534 mechanism too weak, 535 credentials invalid,
            // 538 encryption required for the mechanism.
            let auth = matches!(code.as_str(), "530" | "534" | "535" | "538");
            return Failure {
                retry: false,
                error: if auth {
                    ConnectorError::Auth
                } else {
                    ConnectorError::Protocol
                },
            };
        }
        return Failure {
            retry: true,
            error: ConnectorError::Protocol,
        };
    }
    if e.is_timeout() {
        return Failure {
            retry: true,
            error: ConnectorError::Timeout,
        };
    }
    if e.is_tls() {
        return Failure {
            retry: false,
            error: ConnectorError::Connect,
        };
    }
    if e.is_client() || e.is_response() {
        return Failure {
            retry: false,
            error: ConnectorError::Protocol,
        };
    }
    // Connection and network errors. TLS handshake failures arrive here too, as an I/O error
    // of kind InvalidData (a bad certificate, or TLS spoken to a plain server): not transient.
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return Failure {
                retry: false,
                error: ConnectorError::Connect,
            };
        }
        source = err.source();
    }
    let text = e.to_string().to_ascii_lowercase();
    let tls_problem = text.contains("certificate") || text.contains("handshake");
    Failure {
        retry: !tls_problem,
        error: ConnectorError::Connect,
    }
}

impl SmtpSender {
    fn url(&self) -> String {
        format!("smtp://{}:{}", self.host, self.port)
    }

    async fn send(&self, message: &Message) -> Result<String, ConnectorError> {
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // lettre's own timeout covers connecting only: bound the whole attempt.
            let outcome =
                tokio::time::timeout(self.timeout, self.transport.send_raw(&envelope, &bytes))
                    .await;
            let (failure, detail) = match outcome {
                Ok(Ok(_)) => {
                    tracing::debug!(server = %self.url(), attempt, "email sent");
                    return Ok(self.url());
                }
                Ok(Err(e)) => (classify(&e), e.to_string()),
                Err(_) => (
                    Failure {
                        retry: true,
                        error: ConnectorError::Timeout,
                    },
                    format!("no answer within {} s", self.timeout.as_secs()),
                ),
            };
            if failure.retry && attempt < self.attempts {
                let wait = backoff(attempt);
                tracing::warn!(
                    server = %self.url(),
                    attempt,
                    error = %detail,
                    "sending email failed; retrying in {} ms",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let plural = if attempt == 1 { "" } else { "s" };
            return Err((failure.error)(format!(
                "sending email via {} failed after {attempt} attempt{plural}: {detail}",
                self.url()
            )));
        }
    }

    async fn check(&self) -> Result<String, ConnectorError> {
        let outcome = tokio::time::timeout(self.timeout, self.transport.test_connection()).await;
        match outcome {
            Ok(Ok(true)) => {
                let how = match self.security {
                    SmtpSecurity::Starttls => "STARTTLS",
                    SmtpSecurity::Tls => "TLS",
                    SmtpSecurity::None => "no encryption",
                };
                let auth = match &self.user {
                    Some(user) => format!(", authenticated as {user}"),
                    None => String::new(),
                };
                Ok(format!("SMTP server {} answered ({how}{auth})", self.url()))
            }
            Ok(Ok(false)) => Err(ConnectorError::Protocol(format!(
                "SMTP server {} did not answer NOOP",
                self.url()
            ))),
            Ok(Err(e)) => Err((classify(&e).error)(format!(
                "SMTP server {}: {e}",
                self.url()
            ))),
            Err(_) => Err(ConnectorError::Timeout(format!(
                "SMTP server {}: no answer within {} s",
                self.url(),
                self.timeout.as_secs()
            ))),
        }
    }
}

/// The wait before attempt `attempt + 1`.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_addresses_trims_and_drops_empties() {
        assert_eq!(
            split_addresses(" a@x.com, b@y.com;;c@z.com ,"),
            vec!["a@x.com", "b@y.com", "c@z.com"]
        );
        assert!(split_addresses(" , ;").is_empty());
    }

    #[test]
    fn bad_addresses_are_named() {
        let email = Email {
            from: "ferry@example.com".into(),
            to: vec!["ok@example.com".into(), "not an address".into()],
            subject: "s".into(),
            body: "b".into(),
        };
        let err = build_message(&email).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Config(m) if m.contains("'not an address'")),
            "{err}"
        );

        let two_in_one = Email {
            to: vec!["a@x.com, b@y.com".into()],
            ..email.clone()
        };
        let err = build_message(&two_in_one).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Config(m) if m.contains("a@x.com, b@y.com")),
            "{err}"
        );

        let none = Email {
            to: vec![" ".into()],
            ..email.clone()
        };
        assert!(matches!(
            build_message(&none),
            Err(ConnectorError::Config(_))
        ));

        let named = Email {
            from: "Ferry Bot <ferry@example.com>".into(),
            to: vec!["ok@example.com".into()],
            ..email
        };
        let text = String::from_utf8(build_message(&named).unwrap().formatted()).unwrap();
        assert!(
            text.contains("From: \"Ferry Bot\" <ferry@example.com>")
                || text.contains("From: Ferry Bot <ferry@example.com>"),
            "{text}"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn smtp_spec_checks() {
        let spec = |json: &str| serde_json::from_str::<SmtpSpec>(json).unwrap();
        let Mailer::Smtp(s) =
            Mailer::smtp(&spec(r#"{"host":"mail.example.com","security":"tls"}"#)).unwrap()
        else {
            panic!("not smtp")
        };
        assert_eq!((s.port, s.attempts), (465, DEFAULT_ATTEMPTS));
        let err = Mailer::smtp(&spec(r#"{"host":"h","username":"u"}"#)).unwrap_err();
        assert!(err.to_string().contains("password_env"), "{err}");
        let err = Mailer::smtp(&spec(
            r#"{"host":"h","username":"u","password_env":"FERRY_TEST_MAIL_UNSET_PW"}"#,
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("FERRY_TEST_MAIL_UNSET_PW"),
            "{err}"
        );
        assert!(serde_json::from_str::<SmtpSpec>(r#"{"host":"h","tls":true}"#).is_err());
        assert!(serde_json::from_str::<SmtpSpec>(r#"{"host":"h","security":"ssl"}"#).is_err());
    }
}
