//! SFTP servers as a file store: SSH (`russh`, aws-lc-rs crypto) carrying the SFTP protocol
//! (`russh-sftp`), the FTP family's member for servers that only speak SSH.
//!
//! A location is a directory path on the server: `/outbound` from the server's root, or
//! `outbound` from the login directory. Every operation opens its own session — TCP connect,
//! SSH key exchange, **host key check**, user authentication (password from the environment,
//! or a private key file), the `sftp` subsystem — and ends it with a disconnect, like the FTP
//! store.
//!
//! * **host key pinning**: the server's host key must match `host_key_fingerprint` (the
//!   `SHA256:…` form `ssh-keygen -lf` prints) or an entry for the host in `known_hosts_file`
//!   (OpenSSH's format, hashed host names included). An unknown or changed key ends the session
//!   before any credential is sent, with an error naming the fingerprint the server presented.
//! * **list**: `READDIR` of the location; only regular files are listed. Names come from the
//!   server and are untrusted: an entry the caller would see that is `..`, a path, or holds
//!   control characters fails the listing with [`ConnectorError::HostileName`].
//! * **get**: `OPEN`/`READ`, streamed to the destination file in chunks.
//! * **put**: written to a hidden temporary name beside the target (`.ferry-tmp-<uuid>-<name>`),
//!   flushed (`fsync@openssh.com` where offered), its size checked, then renamed to the final
//!   name, so the final name never holds a partial file. SFTP's `RENAME` refuses to replace an
//!   existing file, so a put over an existing name deletes the old file just before the rename.
//!   On failure the temporary file is deleted when the server still answers. The first put to
//!   a location also deletes temporary files there older than `temp_max_age` (`READDIR` with
//!   their modification times, `REMOVE`, in a session of its own; best effort, see
//!   [`super::sweep`]).
//! * **rename**: `RENAME`.
//!
//! The TCP connection, the SSH handshake, authentication and every SFTP request and data chunk
//! must each complete within `timeout_secs`; a transfer as a whole may take longer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::remote_fs::{RemoteFs, RemoteSession, STALE, Server, count_deleted};
use super::sweep::{Sweeper, TMP_PREFIX};
use super::{ConnectorError, Entry, Secret, check_name, expand_env, location_segments};
/// Default SSH port.
const DEFAULT_PORT: u16 = 22;

/// An SFTP server (SSH file transfer).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftpSpec {
    /// Server host name or IP address; may use ${VAR}.
    pub host: String,
    /// SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// User name to log in as; may use ${VAR}.
    pub username: String,
    /// Name of the environment variable holding the password (password authentication).
    /// Set this or key_file.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Path to the private key (OpenSSH or PEM format: Ed25519, ECDSA or RSA) for public-key
    /// authentication; may use ${VAR}. Set this or password_env.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Name of the environment variable holding key_file's passphrase, when it has one.
    #[serde(default)]
    pub key_passphrase_env: Option<String>,
    /// The server's host key fingerprint as `ssh-keygen -lf` prints it (`SHA256:…`); the
    /// session ends before logging in when the server presents another key. Set this or
    /// known_hosts_file.
    #[serde(default)]
    pub host_key_fingerprint: Option<String>,
    /// A known_hosts file (OpenSSH format, e.g. from `ssh-keyscan -p PORT HOST`) holding the
    /// server's host key; may use ${VAR}. Set this or host_key_fingerprint.
    #[serde(default)]
    pub known_hosts_file: Option<String>,
    /// Seconds to wait for the connection, the SSH handshake, the login, each request's reply
    /// and each chunk of a transfer (default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Age after which a temporary file (`.ferry-tmp-*`) that an interrupted put left at a
    /// location is deleted, by the first put there (default `1h`, at least `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_age: Option<String>,
}

/// How the user logs in.
enum Credential {
    /// Password authentication; the name of the variable it came from, for messages.
    Password { secret: Secret, var: String },
    /// Public-key authentication with this key, read from `file`.
    Key { key: Arc<PrivateKey>, file: String },
}

/// How the server's host key is trusted.
#[derive(Debug, Clone)]
enum HostKeyTrust {
    /// Exactly this SHA-256 fingerprint, `SHA256:<base64 without padding>`.
    Fingerprint(String),
    /// An entry for the host in this known_hosts file.
    KnownHosts(PathBuf),
}

/// An opened SFTP connection definition. Holds no connection: each operation opens a session.
pub struct SftpStore {
    server: Server,
    credential: Credential,
    trust: HostKeyTrust,
}

impl fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.credential {
            Credential::Password { var, .. } => format!("password from {var}"),
            Credential::Key { file, .. } => format!("key {file}"),
        };
        f.debug_struct("SftpStore")
            .field("host", &self.server.host)
            .field("port", &self.server.port)
            .field("user", &self.server.user)
            .field("auth", &auth)
            .field("trust", &self.trust)
            .field("timeout", &self.server.timeout)
            .finish()
    }
}

fn config_err(msg: String) -> ConnectorError {
    ConnectorError::Config(format!("sftp: {msg}"))
}

impl SftpStore {
    /// Opens the definition: expands `${VAR}`, reads the password (or the key and its
    /// passphrase) and checks the host key settings. Does not touch the network.
    pub fn new(spec: &SftpSpec) -> Result<Self, ConnectorError> {
        let password = match &spec.password_env {
            Some(var) => Some(Secret::from_env(var)?),
            None => None,
        };
        let passphrase = match &spec.key_passphrase_env {
            Some(var) => Some(Secret::from_env(var)?),
            None => None,
        };
        Self::with_secrets(spec, password, passphrase)
    }

    /// Like [`SftpStore::new`], with the password and key passphrase given rather than read
    /// from the environment (tests, or secrets read from elsewhere).
    pub fn with_secrets(
        spec: &SftpSpec,
        password: Option<Secret>,
        passphrase: Option<Secret>,
    ) -> Result<Self, ConnectorError> {
        let (host, user) = super::server_login("sftp", &spec.host, &spec.username)?;
        let credential = match (&spec.password_env, &spec.key_file) {
            (Some(var), None) => Credential::Password {
                secret: password.ok_or_else(|| {
                    config_err(format!("no password was given for password_env {var}"))
                })?,
                var: var.clone(),
            },
            (None, Some(file)) => {
                let file = expand_env(file)?;
                let key = load_key(&file, passphrase.as_ref())?;
                Credential::Key {
                    key: Arc::new(key),
                    file,
                }
            }
            (Some(_), Some(_)) => {
                return Err(config_err(
                    "set either password_env or key_file, not both".to_string(),
                ));
            }
            (None, None) => {
                return Err(config_err(
                    "set password_env (password login) or key_file (public-key login)".to_string(),
                ));
            }
        };
        let trust = match (&spec.host_key_fingerprint, &spec.known_hosts_file) {
            (Some(fp), None) => HostKeyTrust::Fingerprint(parse_fingerprint(fp)?),
            (None, Some(file)) => {
                let path = PathBuf::from(expand_env(file)?);
                if let Err(e) = std::fs::metadata(&path) {
                    return Err(config_err(format!(
                        "known_hosts_file '{}' cannot be read: {e}",
                        path.display()
                    )));
                }
                HostKeyTrust::KnownHosts(path)
            }
            (Some(_), Some(_)) => {
                return Err(config_err(
                    "set either host_key_fingerprint or known_hosts_file, not both".to_string(),
                ));
            }
            (None, None) => {
                return Err(config_err(
                    "the server's host key must be pinned: set host_key_fingerprint (as \
                     `ssh-keygen -lf` prints it, 'SHA256:…') or known_hosts_file"
                        .to_string(),
                ));
            }
        };
        Ok(SftpStore {
            server: Server::new(
                ("sftp", "SFTP"),
                (host, user),
                spec.port.unwrap_or(DEFAULT_PORT),
                spec.timeout_secs,
                spec.temp_max_age.as_deref(),
            )?,
            credential,
            trust,
        })
    }

    pub(super) async fn check(&self) -> Result<String, ConnectorError> {
        let s = self.open().await?;
        let result = s
            .sftp_step("reading the login directory", s.sftp.canonicalize("."))
            .await;
        s.close(&result).await;
        let dir = result?;
        Ok(format!(
            "logged in to {} as '{}' over SFTP (host key pinned); login directory '{}'",
            self.server.addr(),
            self.server.user,
            dir.escape_debug()
        ))
    }

    /// Maps an SSH-level error.
    fn ssh_err(&self, what: &str, e: russh::Error) -> ConnectorError {
        let addr = self.server.addr();
        match e {
            russh::Error::IO(io) => ConnectorError::Connect(format!(
                "connection to SFTP server {addr} failed during {what}: {io}"
            )),
            russh::Error::Disconnect | russh::Error::HUP => ConnectorError::Connect(format!(
                "SFTP server {addr} closed the connection during {what}"
            )),
            russh::Error::ConnectionTimeout | russh::Error::InactivityTimeout => {
                self.server.timed_out(what)
            }
            other => ConnectorError::Protocol(format!(
                "SFTP server {addr} failed during {what}: {other}"
            )),
        }
    }

    /// Maps an SFTP-level error; a missing file is not mapped here (see `missing`).
    fn sftp_err(&self, what: &str, e: SftpError) -> ConnectorError {
        let addr = self.server.addr();
        match e {
            SftpError::Timeout => self.server.timed_out(what),
            SftpError::IO(msg) => ConnectorError::Connect(format!(
                "connection to SFTP server {addr} failed while {what}: {msg}"
            )),
            gone if session_gone(&gone) => ConnectorError::Connect(format!(
                "connection to SFTP server {addr} broke while {what}"
            )),
            SftpError::Status(status) => ConnectorError::Protocol(format!(
                "SFTP server {addr} answered '{}' ({:?}) while {what}",
                one_line(&status.error_message),
                status.status_code
            )),
            other => ConnectorError::Protocol(format!(
                "SFTP server {addr} answered badly while {what}: {}",
                one_line(&other.to_string())
            )),
        }
    }

    /// Like [`Self::sftp_err`], but "no such file" is [`ConnectorError::NotFound`] for the
    /// thing `missing` names.
    fn sftp_err_or_missing(
        &self,
        what: &str,
        missing: impl FnOnce() -> String,
        e: SftpError,
    ) -> ConnectorError {
        match e {
            SftpError::Status(status) if status.status_code == StatusCode::NoSuchFile => {
                ConnectorError::NotFound(format!(
                    "{} on SFTP server {}",
                    missing(),
                    self.server.addr()
                ))
            }
            other => self.sftp_err(what, other),
        }
    }

    /// An I/O error of a remote file (a refused write, a broken session).
    fn remote_io(&self, what: &str, e: std::io::Error) -> ConnectorError {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return self.server.timed_out(what);
        }
        // A remote file's reads and writes carry the SFTP error inside.
        if let Some(inner) = e.get_ref().and_then(|e| e.downcast_ref::<SftpError>()) {
            return self.sftp_err(what, inner.clone());
        }
        ConnectorError::Protocol(format!(
            "SFTP server {} failed while {what}: {}",
            self.server.addr(),
            one_line(&e.to_string())
        ))
    }
}

impl RemoteFs for SftpStore {
    type Session<'a> = Session<'a>;

    fn server(&self) -> &Server {
        &self.server
    }

    fn dir(location: &str) -> Result<String, ConnectorError> {
        dir_path(location)
    }

    /// Connects, checks the host key, logs in and starts the SFTP subsystem.
    async fn open(&self) -> Result<Session<'_>, ConnectorError> {
        let addr = self.server.addr();
        let secs = self.server.timeout.as_secs();
        let tcp = super::connect_tcp(
            "SFTP",
            &self.server.host,
            self.server.port,
            &addr,
            self.server.timeout,
        )
        .await?;
        let _ = tcp.set_nodelay(true);
        let config = Arc::new(client::Config {
            // Large windows keep a fast link busy; russh's defaults suit interactive use.
            window_size: 16 * 1024 * 1024,
            ..client::Config::default()
        });
        let verifier = HostKeyCheck {
            trust: self.trust.clone(),
            host: self.server.host.clone(),
            port: self.server.port,
        };
        let mut ssh = match tokio::time::timeout(
            self.server.timeout,
            client::connect_stream(config, tcp, verifier),
        )
        .await
        {
            Ok(Ok(ssh)) => ssh,
            Ok(Err(HandshakeError::Untrusted { presented, reason })) => {
                return Err(ConnectorError::Auth(format!(
                    "SFTP server {addr} presented host key {presented}, which {reason}; \
                     nothing was sent to it (if the server's key changed on purpose, update \
                     the connection's host key setting)"
                )));
            }
            Ok(Err(HandshakeError::Ssh(e))) => {
                return Err(self.ssh_err("the SSH handshake", e));
            }
            Err(_) => {
                return Err(ConnectorError::Timeout(format!(
                    "SFTP server {addr} did not complete the SSH handshake within {secs}s"
                )));
            }
        };
        let (method, login) = match &self.credential {
            Credential::Password { secret, var } => (
                format!("password (from {var})"),
                tokio::time::timeout(
                    self.server.timeout,
                    ssh.authenticate_password(self.server.user.as_str(), secret.expose()),
                )
                .await,
            ),
            Credential::Key { key, file } => {
                let hash = match self
                    .server
                    .within(
                        "asking the RSA signature hashes",
                        ssh.best_supported_rsa_hash(),
                    )
                    .await?
                {
                    Ok(hash) => hash.flatten(),
                    Err(e) => return Err(self.ssh_err("asking the RSA signature hashes", e)),
                };
                let key = PrivateKeyWithHashAlg::new(key.clone(), hash);
                (
                    format!("key '{file}'"),
                    tokio::time::timeout(
                        self.server.timeout,
                        ssh.authenticate_publickey(self.server.user.as_str(), key),
                    )
                    .await,
                )
            }
        };
        match login {
            Ok(Ok(result)) if result.success() => {}
            Ok(Ok(_)) => {
                return Err(ConnectorError::Auth(format!(
                    "SFTP server {addr} refused the login of user '{}' with {method} (check the \
                     user name and the credential)",
                    self.server.user
                )));
            }
            Ok(Err(e)) => return Err(self.ssh_err("logging in", e)),
            Err(_) => return Err(self.server.timed_out("logging in")),
        }
        let channel = match self
            .server
            .within("opening a channel", ssh.channel_open_session())
            .await?
        {
            Ok(channel) => channel,
            Err(e) => return Err(self.ssh_err("opening a channel", e)),
        };
        if let Err(e) = self
            .server
            .within(
                "starting the sftp subsystem",
                channel.request_subsystem(true, "sftp"),
            )
            .await?
        {
            return Err(self.ssh_err("starting the sftp subsystem", e));
        }
        let sftp_config = russh_sftp::client::Config {
            request_timeout_secs: secs,
            max_concurrent_reads: 64,
            max_concurrent_writes: 64,
            ..russh_sftp::client::Config::default()
        };
        let sftp = match self
            .server
            .within(
                "starting the sftp subsystem",
                SftpSession::new_with_config(channel.into_stream(), sftp_config),
            )
            .await?
        {
            Ok(sftp) => sftp,
            Err(e) => return Err(self.sftp_err("starting the sftp subsystem", e)),
        };
        Ok(Session {
            store: self,
            ssh,
            sftp,
            location: String::new(),
            dir: String::new(),
        })
    }
}

/// Whether an SFTP error means the session under it is gone (the SSH connection broke):
/// russh-sftp then fails each request whose answer can no longer come with one of these.
fn session_gone(e: &SftpError) -> bool {
    // russh-sftp says "session closed" when the channel ended under a request (the line was
    // cut), "sender dropped" and Send/RecvError when its tasks went with the connection
    matches!(e, SftpError::UnexpectedBehavior(m)
        if m == "sender dropped"
            || m == "session closed"
            || m.starts_with("SendError")
            || m.starts_with("RecvError"))
}

/// `s` on one line: control characters (a server's message is untrusted) become spaces.
fn one_line(s: &str) -> String {
    s.trim_end()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The directory path of a location: `/a/b` (from the root), `a/b` (from the login
/// directory), or `.` (the login directory itself).
fn dir_path(location: &str) -> Result<String, ConnectorError> {
    let segments = location_segments(location)?;
    let joined = segments.join("/");
    Ok(if location.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    })
}

/// `dir/name` (`/name` in the root).
fn file_path(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Reads and decodes a private key file; errors never quote the key.
fn load_key(file: &str, passphrase: Option<&Secret>) -> Result<PrivateKey, ConnectorError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| config_err(format!("key_file '{file}' cannot be read: {e}")))?;
    russh::keys::decode_secret_key(&text, passphrase.map(Secret::expose)).map_err(|e| {
        let hint = match e {
            russh::keys::Error::KeyIsEncrypted => {
                " (it is passphrase-protected: set key_passphrase_env)"
            }
            _ => "",
        };
        config_err(format!(
            "key_file '{file}' holds no usable private key: {e}{hint}"
        ))
    })
}

/// Checks a `SHA256:…` fingerprint's form and returns it normalised (no `=` padding).
fn parse_fingerprint(fp: &str) -> Result<String, ConnectorError> {
    let fp = fp.trim();
    let bad = || {
        config_err(format!(
            "host_key_fingerprint '{}' is not a SHA-256 fingerprint; copy it as `ssh-keygen -lf` \
             or `ssh-keyscan HOST | ssh-keygen -lf -` prints it: 'SHA256:' and 43 base64 \
             characters",
            fp.escape_debug()
        ))
    };
    let Some(b64) = fp.strip_prefix("SHA256:") else {
        return Err(bad());
    };
    let b64 = b64.trim_end_matches('=');
    let valid = b64.len() == 43
        && b64
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
    if !valid {
        return Err(bad());
    }
    Ok(format!("SHA256:{b64}"))
}

/// What ends a handshake: the host key is not trusted, or SSH failed.
#[derive(Debug)]
enum HandshakeError {
    /// The server's host key is not the pinned one.
    Untrusted {
        /// `SHA256:… (algorithm)` of the key the server presented.
        presented: String,
        /// Why it is refused, e.g. "does not match host_key_fingerprint SHA256:…".
        reason: String,
    },
    Ssh(russh::Error),
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Ssh(e)
    }
}

/// The SSH client handler: checks the host key against the pin.
struct HostKeyCheck {
    trust: HostKeyTrust,
    host: String,
    port: u16,
}

impl client::Handler for HostKeyCheck {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: russh::keys::PublicKey = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let presented = format!("{fingerprint} ({})", key.algorithm());
        let refused = |reason: String| HandshakeError::Untrusted {
            presented: presented.clone(),
            reason,
        };
        match &self.trust {
            HostKeyTrust::Fingerprint(pinned) if *pinned == fingerprint => Ok(true),
            HostKeyTrust::Fingerprint(pinned) => Err(refused(format!(
                "does not match host_key_fingerprint {pinned}"
            ))),
            HostKeyTrust::KnownHosts(path) => {
                let shown = path.display();
                match russh::keys::check_known_hosts_path(&self.host, self.port, &key, path) {
                    Ok(true) => Ok(true),
                    Ok(false) => Err(refused(format!(
                        "is not listed for this host in known_hosts_file '{shown}'"
                    ))),
                    Err(russh::keys::Error::KeyChanged { line }) => Err(refused(format!(
                        "differs from the key on line {line} of known_hosts_file '{shown}' \
                         (the server's key changed, or someone is in between)"
                    ))),
                    Err(e) => Err(refused(format!(
                        "cannot be checked: known_hosts_file '{shown}' cannot be read ({e})"
                    ))),
                }
            }
        }
    }
}

/// One logged-in SFTP session, bound to the store it came from.
pub(super) struct Session<'a> {
    store: &'a SftpStore,
    ssh: client::Handle<HostKeyCheck>,
    sftp: SftpSession,
    /// The location the session works in, for messages, and its directory's path.
    location: String,
    dir: String,
}

impl Session<'_> {
    /// Awaits one SFTP request under the timeout, mapping its error.
    async fn sftp_step<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, SftpError>>,
    ) -> Result<T, ConnectorError> {
        match self.store.server.within(what, fut).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(self.store.sftp_err(what, e)),
        }
    }

    /// `REMOVE path`; a missing file is [`ConnectorError::NotFound`].
    async fn remove(&self, path: &str, what: &str) -> Result<(), ConnectorError> {
        self.sftp_step_or_missing(what, || path.to_string(), self.sftp.remove_file(path))
            .await
    }

    /// Like [`Self::sftp_step`], with "no such file" as [`ConnectorError::NotFound`].
    async fn sftp_step_or_missing<T>(
        &self,
        what: &str,
        missing: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, SftpError>>,
    ) -> Result<T, ConnectorError> {
        match self.store.server.within(what, fut).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(self.store.sftp_err_or_missing(what, missing, e)),
        }
    }
}

impl RemoteSession for Session<'_> {
    /// Remembers the location: every request names its path in full.
    async fn enter(&mut self, location: &str, dir: String) -> Result<(), ConnectorError> {
        self.location = location.to_string();
        self.dir = dir;
        Ok(())
    }

    fn path(&self, name: &str) -> String {
        file_path(&self.dir, name)
    }

    /// The regular files of the directory whose names start with `prefix`.
    async fn list(&mut self, prefix: &str) -> Result<Vec<Entry>, ConnectorError> {
        let (store, dir, location) = (self.store, &self.dir, self.location.as_str());
        let entries = self
            .sftp_step_or_missing(
                &format!("listing directory '{dir}'"),
                || format!("directory '{location}'"),
                self.sftp.read_dir(dir),
            )
            .await?;
        let mut out = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue; // the directory itself and its parent, listed by most servers
            }
            let meta = entry.metadata();
            if !meta.is_regular() {
                continue;
            }
            let Some(name) = store.server.accept_name(name, prefix, location, false) else {
                continue;
            };
            if check_name(&name).is_err() {
                out.push(Entry {
                    name,
                    size: meta.size.unwrap_or(0),
                }); // left where it is
                continue;
            }
            let Some(size) = meta.size else {
                return Err(ConnectorError::Protocol(format!(
                    "SFTP server {} listed '{}' without its size",
                    store.server.addr(),
                    name
                )));
            };
            out.push(Entry { name, size });
        }
        Ok(out)
    }

    /// Deletes the temporary files of the directory that `sweeper` finds stale; returns how
    /// many.
    async fn sweep(&mut self, sweeper: &Sweeper) -> Result<usize, ConnectorError> {
        let (dir, location) = (&self.dir, &self.location);
        let entries = self
            .sftp_step_or_missing(
                &format!("listing directory '{dir}'"),
                || format!("directory '{location}'"),
                self.sftp.read_dir(dir),
            )
            .await?;
        let mut deleted = 0;
        for entry in entries {
            let name = entry.file_name();
            let meta = entry.metadata();
            if !name.starts_with(TMP_PREFIX) || !meta.is_regular() || check_name(&name).is_err() {
                continue;
            }
            let Some(mtime) = meta.mtime else { continue };
            let modified = std::time::UNIX_EPOCH + Duration::from_secs(u64::from(mtime));
            if !sweeper.is_stale(&name, modified) {
                continue;
            }
            count_deleted(
                self.remove(&file_path(dir, &name), STALE).await,
                &mut deleted,
            )?;
        }
        Ok(deleted)
    }

    /// Reads the remote file into `dest`, streamed.
    async fn retrieve(&mut self, name: &str, dest: &Path) -> Result<u64, ConnectorError> {
        let (store, location) = (self.store, &self.location);
        let path = self.path(name);
        let what = format!("sending '{name}'");
        let mut remote = self
            .sftp_step_or_missing(
                &what,
                || format!("file '{name}' in '{location}'"),
                self.sftp.open(path.as_str()),
            )
            .await?;
        let result = store
            .server
            .download(&mut remote, dest, &what, |e| store.remote_io(&what, e))
            .await;
        if let Err(e) = store.server.within(&what, remote.shutdown()).await {
            tracing::debug!("closing the SFTP file handle: {e}");
        }
        result
    }

    /// Writes `tmp`, checks its size, then renames it to `name`.
    async fn store(
        &mut self,
        (tmp, name): (&str, &str),
        (file, src): (&mut tokio::fs::File, &Path),
    ) -> Result<u64, ConnectorError> {
        let (store, location) = (self.store, &self.location);
        let what = format!("receiving '{name}'");
        let mut remote = self
            .sftp_step_or_missing(
                &what,
                || format!("directory '{location}'"),
                self.sftp.create(tmp),
            )
            .await?;
        let n = store
            .server
            .pump(file, src, &mut remote, &what, |e| store.remote_io(&what, e))
            .await?;
        // Flush waits for every write's acknowledgement (and fsyncs where offered); shutdown
        // closes the handle.
        match store.server.within(&what, remote.flush()).await? {
            Ok(()) => {}
            Err(e) => return Err(store.remote_io(&what, e)),
        }
        match store.server.within(&what, remote.shutdown()).await? {
            Ok(()) => {}
            Err(e) => return Err(store.remote_io(&what, e)),
        }
        let size = self.sftp_step(&what, self.sftp.metadata(tmp)).await?.size;
        if let Some(size) = size {
            store.server.check_size(name, size, n)?;
        }
        let target = self.path(name);
        let what = format!("renaming the upload into place as '{name}'");
        match self.sftp.rename(tmp, target.as_str()).await {
            Ok(()) => return Ok(n),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Failure => {}
            Err(e) => return Err(store.sftp_err(&what, e)),
        }
        // SFTP v3 RENAME does not replace: delete the old file, then rename.
        let exists = self
            .sftp_step(&what, self.sftp.try_exists(target.as_str()))
            .await?;
        if !exists {
            return Err(ConnectorError::Protocol(format!(
                "SFTP server {} refused {what}",
                store.server.addr()
            )));
        }
        self.sftp_step(&what, self.sftp.remove_file(target.as_str()))
            .await?;
        self.sftp_step(&what, self.sftp.rename(tmp, target.as_str()))
            .await?;
        Ok(n)
    }

    /// Renames `from` to `to`; a missing `from` is [`ConnectorError::NotFound`].
    async fn rename(&mut self, from: &str, to: &str) -> Result<(), ConnectorError> {
        let location = &self.location;
        self.sftp_step_or_missing(
            &format!("renaming '{from}' to '{to}'"),
            || format!("file '{from}' in '{location}'"),
            self.sftp.rename(self.path(from), self.path(to)),
        )
        .await
    }

    /// Deletes the temporary upload, logging a failure; false when the session is broken.
    async fn delete_quietly(&mut self, path: &str, _after: &Result<u64, ConnectorError>) -> bool {
        match self.remove(path, "deleting the temporary upload").await {
            Ok(()) | Err(ConnectorError::NotFound(_)) => true,
            Err(e @ (ConnectorError::Connect(_) | ConnectorError::Timeout(_))) => {
                tracing::debug!(server = %self.store.server.addr(), path, "session broken while deleting the temporary upload: {e}");
                false
            }
            Err(e) => {
                tracing::warn!(server = %self.store.server.addr(), path, "could not delete the temporary upload: {e}");
                true
            }
        }
    }

    /// Ends the session: closes the SFTP channel and disconnects.
    async fn close<T>(self, _result: &Result<T, ConnectorError>) {
        let store = self.store;
        if let Ok(Err(e)) = tokio::time::timeout(store.server.timeout, self.sftp.close()).await {
            tracing::debug!("closing the SFTP session: {e}");
        }
        let bye = self
            .ssh
            .disconnect(russh::Disconnect::ByApplication, "", "en");
        if let Ok(Err(e)) = tokio::time::timeout(store.server.timeout, bye).await {
            tracing::debug!("SSH disconnect: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(dir_path("/in/").unwrap(), "/in");
        assert_eq!(dir_path("/").unwrap(), "/");
        assert_eq!(dir_path("a//b").unwrap(), "a/b");
        assert_eq!(dir_path("").unwrap(), ".");
        assert!(dir_path("a/../b").is_err());
        assert_eq!(file_path("/", "x"), "/x");
        assert_eq!(file_path("/in", "x"), "/in/x");
        assert_eq!(file_path(".", "x"), "./x");
    }

    #[test]
    fn fingerprints_are_checked_and_normalised() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(parse_fingerprint(&format!(" {fp}= ")).unwrap(), fp);
        for bad in [
            "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
            "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48",
            "SHA256:short",
        ] {
            let err = parse_fingerprint(bad).unwrap_err().to_string();
            assert!(err.contains("is not a SHA-256 fingerprint"), "{err}");
        }
    }

    #[test]
    fn spec_requires_one_credential_and_one_pin() {
        let spec = |json: &str| serde_json::from_str::<SftpSpec>(json).unwrap();
        let err = |spec: SftpSpec| {
            SftpStore::with_secrets(&spec, Some(Secret::new("pw".into())), None)
                .unwrap_err()
                .to_string()
        };
        let no_pin = spec(r#"{"host":"h","username":"u","password_env":"P"}"#);
        assert!(err(no_pin).contains("host key must be pinned"));
        let both = spec(
            r#"{"host":"h","username":"u","password_env":"P","key_file":"k","host_key_fingerprint":"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"}"#,
        );
        assert!(err(both).contains("not both"));
        let none = spec(
            r#"{"host":"h","username":"u","host_key_fingerprint":"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"}"#,
        );
        assert!(err(none).contains("set password_env"));
        assert!(
            serde_json::from_str::<SftpSpec>(
                r#"{"host":"h","username":"u","password_env":"P","pasword":"x"}"#
            )
            .is_err()
        );
        let ok = spec(
            r#"{"host":"h","username":"u","password_env":"P","host_key_fingerprint":"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"}"#,
        );
        let store =
            SftpStore::with_secrets(&ok, Some(Secret::new("hunter22".into())), None).unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("password from P"), "{shown}");
    }
}
