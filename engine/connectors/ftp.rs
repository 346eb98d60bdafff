//! FTP and FTPS (explicit, `AUTH TLS`) servers as a file store, on `suppaftp`'s tokio client.
//!
//! A location is a directory path on the server: `/outbound` from the server's root, or
//! `outbound` from the login directory. Every operation opens its own session — connect (with
//! a timeout), optionally `AUTH TLS` (rustls, trusting the system's roots plus `ca_file`),
//! `USER`/`PASS`, `TYPE I` — works inside the location after `CWD`, and ends with `QUIT`. Binary
//! mode is mandatory: in the protocol's default ASCII mode servers rewrite line endings, which
//! silently corrupts files.
//!
//! * **list**: `MLSD` (file type and size in one round trip), falling back to `NLST` plus
//!   `SIZE` when the server lacks `MLSD`. Names in a listing come from the server and are
//!   untrusted: an entry the caller would see that is `..`, a path, or holds control characters
//!   fails the listing with [`ConnectorError::HostileName`] naming the entry. Listings are read
//!   with a size cap, so a server cannot exhaust memory.
//! * **get**: `RETR`, streamed to the destination file in chunks.
//! * **put**: `STOR` to a hidden temporary name beside the target (`.ferry-tmp-<uuid>-<name>`),
//!   a `SIZE` check where the server supports it, then `RNFR`/`RNTO` to the final name, so the
//!   final name never holds a partial file. On failure the temporary file is deleted when the
//!   server still answers. The first put to a location also deletes temporary files there
//!   older than `temp_max_age` (`NLST`, `MDTM`, `DELE`, in a session of its own; best effort,
//!   see [`super::sweep`]); a server without `MDTM` keeps them.
//! * **rename**: `RNFR`/`RNTO`.
//!
//! Passive mode (the default) connects data channels to the control connection's address and
//! ignores the address in the server's `PASV` reply (as curl does): this works behind NAT and
//! keeps a server from pointing the client at another host. Each control command and each data
//! chunk must progress within `timeout_secs`; a transfer as a whole may take longer.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream, TransferStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::rustls;
use suppaftp::types::{FileType, Response};
use suppaftp::{FtpError, Status};
use tokio::io::AsyncReadExt;

use super::remote_fs::{RemoteFs, RemoteSession, STALE, Server, count_deleted};
use super::sweep::{Sweeper, TMP_PREFIX};
use super::{ConnectorError, Entry, Secret, check_name, expand_env, location_segments};

/// Default control port.
const DEFAULT_PORT: u16 = 21;
/// Largest directory listing read, in bytes.
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;
/// Chunk size of streamed transfers.
const CHUNK: usize = 64 * 1024;

/// How the FTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FtpSecurity {
    /// Plain FTP: the password and the files travel unencrypted (default).
    #[default]
    None,
    /// Explicit FTPS: the plain connection is upgraded with `AUTH TLS` before logging in, and
    /// data connections are encrypted too (`PROT P`).
    ExplicitTls,
}

/// An FTP or FTPS server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FtpSpec {
    /// Server host name or IP address; may use ${VAR}. With explicit_tls the server's
    /// certificate must be valid for this name.
    pub host: String,
    /// Control port (default 21).
    #[serde(default)]
    pub port: Option<u16>,
    /// User name to log in as; may use ${VAR}.
    pub username: String,
    /// Name of the environment variable holding the password.
    pub password_env: String,
    /// none (default, plain FTP) or explicit_tls (FTPS with AUTH TLS).
    #[serde(default)]
    pub security: FtpSecurity,
    /// PEM file of extra CA certificates to trust, in addition to the system's (explicit_tls
    /// only); may use ${VAR}.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Seconds to wait for the connection, for each command's reply and for each chunk of a
    /// transfer (default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Passive mode (default true): the client opens data connections, to the control
    /// connection's address. false selects active mode, where the server connects back to the
    /// client (rarely possible through firewalls).
    #[serde(default = "yes")]
    pub passive: bool,
    /// Age after which a temporary file (`.ferry-tmp-*`) that an interrupted put left at a
    /// location is deleted, by the first put there (default `1h`, at least `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_max_age: Option<String>,
}

fn yes() -> bool {
    true
}

/// An opened FTP connection definition. Holds no connection: each operation opens a session.
pub struct FtpStore {
    server: Server,
    password: Secret,
    tls: Option<TlsConnector>,
    passive: bool,
}

impl fmt::Debug for FtpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpStore")
            .field("host", &self.server.host)
            .field("port", &self.server.port)
            .field("user", &self.server.user)
            .field("password", &self.password)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.server.timeout)
            .field("passive", &self.passive)
            .finish()
    }
}

impl FtpStore {
    /// Opens the definition: expands `${VAR}`, reads the password from the environment,
    /// loads `ca_file` and sets up TLS. Does not touch the network.
    pub fn new(spec: &FtpSpec) -> Result<Self, ConnectorError> {
        Self::with_password(spec, Secret::from_env(&spec.password_env)?)
    }

    /// Like [`FtpStore::new`], with the password given rather than read from
    /// `spec.password_env` (tests, or secrets read from elsewhere).
    pub fn with_password(spec: &FtpSpec, password: Secret) -> Result<Self, ConnectorError> {
        let config = |msg: String| ConnectorError::Config(format!("ftp: {msg}"));
        let (host, user) = super::server_login("ftp", &spec.host, &spec.username)?;
        // FTP commands are lines: a line break would end one and smuggle in another.
        if password.expose().contains(['\r', '\n']) {
            return Err(config(format!(
                "the password in {} contains a line break",
                spec.password_env
            )));
        }
        let server = Server::new(
            ("ftp", "FTP"),
            (host, user),
            spec.port.unwrap_or(DEFAULT_PORT),
            spec.timeout_secs,
            spec.temp_max_age.as_deref(),
        )?;
        let host = &server.host;
        let tls = match spec.security {
            FtpSecurity::None => {
                if spec.ca_file.is_some() {
                    return Err(config(
                        "ca_file is set but security is none (no TLS is used)".to_string(),
                    ));
                }
                tracing::warn!(host = %host, "FTP password and files are sent without encryption (security: none)");
                None
            }
            FtpSecurity::ExplicitTls => {
                let ca_file = spec.ca_file.as_deref().map(expand_env).transpose()?;
                Some(tls_connector(host, ca_file.as_deref().map(Path::new))?)
            }
        };
        Ok(FtpStore {
            server,
            password,
            tls,
            passive: spec.passive,
        })
    }

    pub(super) async fn check(&self) -> Result<String, ConnectorError> {
        let mut s = self.open().await?;
        let result = self
            .step("reading the working directory (PWD)", s.ftp.pwd())
            .await;
        s.close(&result).await;
        let dir = result?;
        let security = if self.tls.is_some() {
            "FTPS (explicit TLS)"
        } else {
            "plain FTP"
        };
        Ok(format!(
            "logged in to {} as '{}' over {security}; working directory '{}'",
            self.server.addr(),
            self.server.user,
            dir.escape_debug()
        ))
    }

    /// The server's reply, for an error message, without the password.
    fn reply_text(&self, r: &Response) -> String {
        let body = String::from_utf8_lossy(&r.body);
        self.redact(body.trim_end())
    }

    /// `s` on one line, with any occurrence of the password replaced (a server could echo
    /// it). Passwords shorter than 4 characters are left alone: masking them would garble
    /// every message.
    fn redact(&self, s: &str) -> String {
        let pw = self.password.expose();
        let s: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if pw.chars().count() < 4 {
            s
        } else {
            s.replace(pw, "***")
        }
    }

    /// Awaits one FTP step under the timeout, mapping its error.
    async fn step<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, FtpError>>,
    ) -> Result<T, ConnectorError> {
        match tokio::time::timeout(self.server.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(what, e)),
            Err(_) => Err(self.server.timed_out(what)),
        }
    }

    /// Like [`Self::step`], but a `550` reply becomes [`ConnectorError::NotFound`] for the
    /// thing `missing` names.
    async fn step_or_missing<T>(
        &self,
        what: &str,
        missing: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, FtpError>>,
    ) -> Result<T, ConnectorError> {
        match tokio::time::timeout(self.server.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(FtpError::UnexpectedResponse(r))) if r.status == Status::FileUnavailable => {
                Err(ConnectorError::NotFound(format!(
                    "{} on FTP server {} ({})",
                    missing(),
                    self.server.addr(),
                    self.reply_text(&r)
                )))
            }
            Ok(Err(e)) => Err(self.map_err(what, e)),
            Err(_) => Err(self.server.timed_out(what)),
        }
    }

    /// Maps a suppaftp error; a refusal becomes [`ConnectorError::Protocol`] with the reply.
    fn map_err(&self, what: &str, e: FtpError) -> ConnectorError {
        let addr = self.server.addr();
        match e {
            FtpError::ConnectionError(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ConnectorError::Timeout(format!("FTP server {addr} timed out while {what}: {io}"))
            }
            FtpError::ConnectionError(io) => ConnectorError::Connect(format!(
                "connection to FTP server {addr} failed while {what}: {io}"
            )),
            FtpError::SecureError(msg) => {
                // suppaftp nests its own "Secure error: " prefix.
                let mut msg = msg.as_str();
                while let Some(rest) = msg.strip_prefix("Secure error: ") {
                    msg = rest;
                }
                let hint = if msg.contains("certificate") {
                    " (the server's certificate must be valid for the host and signed by a \
                     trusted CA: the system's, or the one in ca_file)"
                } else {
                    ""
                };
                ConnectorError::Connect(format!(
                    "TLS with FTP server {addr} failed while {what}: {}{hint}",
                    self.redact(msg)
                ))
            }
            // 421: the server is shutting down or has too many sessions; try again later.
            FtpError::UnexpectedResponse(r) if r.status == Status::NotAvailable => {
                ConnectorError::Connect(format!(
                    "FTP server {addr} is not available ({}) while {what}",
                    self.reply_text(&r)
                ))
            }
            FtpError::UnexpectedResponse(r) => ConnectorError::Protocol(format!(
                "FTP server {addr} answered '{}' while {what}",
                self.reply_text(&r)
            )),
            other => ConnectorError::Protocol(format!(
                "FTP server {addr} answered badly while {what}: {other}"
            )),
        }
    }

    /// Reads a listing's data connection into lines (CRLF or LF), at most
    /// [`MAX_LISTING_BYTES`], each read within the timeout; then reads the transfer's reply.
    async fn read_listing(
        &self,
        mut stream: Transfer,
        command: &str,
    ) -> Result<Vec<String>, ConnectorError> {
        let what = format!("sending the listing ({command})");
        let mut data = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match tokio::time::timeout(self.server.timeout, stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(self.map_err(&what, FtpError::ConnectionError(e))),
                Err(_) => return Err(self.server.timed_out(&what)),
            };
            if n == 0 {
                break;
            }
            if data.len() + n > MAX_LISTING_BYTES {
                return Err(ConnectorError::Protocol(format!(
                    "FTP server {} sent a listing larger than {} MiB",
                    self.server.addr(),
                    MAX_LISTING_BYTES / (1024 * 1024)
                )));
            }
            data.extend_from_slice(&buf[..n]);
        }
        self.step(&what, stream.finish()).await?;
        Ok(data
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect())
    }
}

impl RemoteFs for FtpStore {
    type Session<'a> = Session<'a>;

    fn server(&self) -> &Server {
        &self.server
    }

    /// The location itself: a session changes into it (`CWD`), which checks it.
    fn dir(location: &str) -> Result<String, ConnectorError> {
        Ok(location.to_string())
    }

    /// Connects, secures, logs in and selects binary mode.
    async fn open(&self) -> Result<Session<'_>, ConnectorError> {
        let addr = self.server.addr();
        let tcp = super::connect_tcp(
            "FTP",
            &self.server.host,
            self.server.port,
            &addr,
            self.server.timeout,
        )
        .await?;
        let ftp = self
            .step(
                "opening the session (greeting)",
                AsyncRustlsFtpStream::connect_with_stream(tcp),
            )
            .await?;
        let mut ftp = if self.passive {
            ftp
        } else {
            ftp.active_mode(self.server.timeout)
        };
        // Data connections go to the control connection's address, whatever PASV says.
        ftp.set_passive_nat_workaround(true);
        let mut ftp = match &self.tls {
            None => ftp,
            Some(connector) => {
                let secured = tokio::time::timeout(
                    self.server.timeout,
                    ftp.into_secure(
                        AsyncRustlsConnector::from(connector.clone()),
                        &self.server.host,
                    ),
                )
                .await;
                match secured {
                    Ok(Ok(ftp)) => ftp,
                    Ok(Err(FtpError::UnexpectedResponse(r))) => {
                        return Err(ConnectorError::Protocol(format!(
                            "FTP server {addr} refused explicit TLS (AUTH TLS / PBSZ / PROT): {}",
                            self.reply_text(&r)
                        )));
                    }
                    Ok(Err(e)) => return Err(self.map_err("setting up TLS", e)),
                    Err(_) => {
                        return Err(ConnectorError::Timeout(format!(
                            "TLS with FTP server {addr} did not complete within {}s",
                            self.server.timeout.as_secs()
                        )));
                    }
                }
            }
        };
        let login = ftp.login(self.server.user.as_str(), self.password.expose());
        match tokio::time::timeout(self.server.timeout, login).await {
            Ok(Ok(())) => {}
            Ok(Err(FtpError::UnexpectedResponse(r))) => {
                let reply = self.reply_text(&r);
                return Err(match r.status {
                    Status::NotLoggedIn
                    | Status::InvalidCredentials
                    | Status::LoginNeedAccount
                    | Status::NeedPassword => ConnectorError::Auth(format!(
                        "FTP server {addr} refused the login of user '{}' (check the user name and the password variable): {reply}",
                        self.server.user
                    )),
                    _ => self.map_err("logging in", FtpError::UnexpectedResponse(r)),
                });
            }
            Ok(Err(e)) => return Err(self.map_err("logging in", e)),
            Err(_) => return Err(self.server.timed_out("logging in")),
        }
        self.step(
            "selecting binary mode (TYPE I)",
            ftp.transfer_type(FileType::Binary),
        )
        .await?;
        Ok(Session {
            store: self,
            ftp,
            location: String::new(),
        })
    }
}

/// Whether the control connection can still carry commands after `result`.
fn usable<T>(result: &Result<T, ConnectorError>) -> bool {
    !matches!(
        result,
        Err(ConnectorError::Connect(_) | ConnectorError::Timeout(_))
    )
}

/// One logged-in FTP session, bound to the store it came from.
pub(super) struct Session<'a> {
    store: &'a FtpStore,
    ftp: AsyncRustlsFtpStream,
    /// The location the session changed into, for messages.
    location: String,
}

/// A data-channel transfer of this client.
type Transfer = TransferStream<suppaftp::tokio::AsyncRustlsStream>;

/// The status codes of a server that does not know a command.
fn unsupported(status: Status) -> bool {
    matches!(
        status,
        Status::BadCommand
            | Status::NotImplemented
            | Status::BadArguments
            | Status::NotImplementedParameter
            | Status::CommandNotImplemented
    )
}

impl Session<'_> {
    /// Lists with `NLST` (names only) and asks each matching file's size with `SIZE`; entries
    /// without a size (directories on most servers) are skipped.
    async fn list_nlst(
        &mut self,
        location: &str,
        prefix: &str,
    ) -> Result<Vec<Entry>, ConnectorError> {
        let store = self.store;
        let (_, stream) = store
            .step(
                "listing the directory (NLST)",
                self.ftp
                    .custom_data_command("NLST", &[Status::AboutToSend, Status::AlreadyOpen]),
            )
            .await?;
        let lines = store.read_listing(stream, "NLST").await?;
        let mut out = Vec::new();
        for line in lines {
            if line == "." || line == ".." {
                continue; // the directory itself and its parent, listed by some servers
            }
            let Some(name) = store.server.accept_name(line, prefix, location, true) else {
                continue;
            };
            if check_name(&name).is_err() {
                out.push(Entry { name, size: 0 }); // never asked about: left where it is
                continue;
            }
            if let Some(size) = self.size(&name).await? {
                out.push(Entry { name, size });
            }
        }
        Ok(out)
    }

    /// `SIZE` of a file; `None` when the server says it has none (a directory, or gone).
    async fn size(&mut self, name: &str) -> Result<Option<u64>, ConnectorError> {
        let store = self.store;
        let what = format!("asking the size of '{name}'");
        match tokio::time::timeout(store.server.timeout, self.ftp.size(name)).await {
            Ok(Ok(n)) => Ok(Some(n as u64)),
            Ok(Err(FtpError::UnexpectedResponse(r))) if r.status == Status::FileUnavailable => {
                Ok(None)
            }
            Ok(Err(e)) => Err(store.map_err(&what, e)),
            Err(_) => Err(store.server.timed_out(&what)),
        }
    }

    /// `SIZE`, or `None` when the server does not implement it.
    async fn size_if_supported(&mut self, name: &str) -> Result<Option<u64>, ConnectorError> {
        let store = self.store;
        let what = format!("checking the size of '{name}'");
        match tokio::time::timeout(store.server.timeout, self.ftp.size(name)).await {
            Ok(Ok(n)) => Ok(Some(n as u64)),
            Ok(Err(FtpError::UnexpectedResponse(r))) if unsupported(r.status) => Ok(None),
            Ok(Err(e)) => Err(store.map_err(&what, e)),
            Err(_) => Err(store.server.timed_out(&what)),
        }
    }

    /// `DELE name`; a missing file is [`ConnectorError::NotFound`].
    async fn remove(&mut self, name: &str, what: &str) -> Result<(), ConnectorError> {
        self.store
            .step_or_missing(what, || name.to_string(), self.ftp.rm(name))
            .await
    }

    /// Renames the uploaded temporary file to its final name. Servers that refuse to rename
    /// over an existing file (Windows-based ones) get the old file deleted first.
    async fn rename_into_place(&mut self, tmp: &str, name: &str) -> Result<(), ConnectorError> {
        let store = self.store;
        let what = format!("renaming the upload into place as '{name}' (RNFR/RNTO)");
        let refused =
            match tokio::time::timeout(store.server.timeout, self.ftp.rename(tmp, name)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(FtpError::UnexpectedResponse(r)))
                    if matches!(r.status, Status::FileUnavailable | Status::BadFilename) =>
                {
                    r
                }
                Ok(Err(e)) => return Err(store.map_err(&what, e)),
                Err(_) => return Err(store.server.timed_out(&what)),
            };
        if self.size(name).await?.is_none() {
            return Err(store.map_err(&what, FtpError::UnexpectedResponse(refused)));
        }
        tracing::debug!(server = %store.server.addr(), name, "replacing an existing file: {}", store.reply_text(&refused));
        store.step(&what, self.ftp.rm(name)).await?;
        store.step(&what, self.ftp.rename(tmp, name)).await
    }
}

impl RemoteSession for Session<'_> {
    /// Changes into the location's directory; a missing one is [`ConnectorError::NotFound`].
    async fn enter(&mut self, location: &str, _dir: String) -> Result<(), ConnectorError> {
        self.location = location.to_string();
        let segments = location_segments(location)?;
        let mut path = segments.join("/");
        if location.starts_with('/') {
            path.insert(0, '/');
        }
        if path.is_empty() {
            return Ok(()); // the login directory
        }
        let shown = path.clone();
        self.store
            .step_or_missing(
                &format!("changing to directory '{shown}'"),
                || format!("directory '{shown}'"),
                self.ftp.cwd(path),
            )
            .await
    }

    /// `name` itself: the session works inside the directory.
    fn path(&self, name: &str) -> String {
        name.to_string()
    }

    /// Lists the current directory: `MLSD`, or `NLST` and `SIZE` where it is unsupported.
    async fn list(&mut self, prefix: &str) -> Result<Vec<Entry>, ConnectorError> {
        let store = self.store;
        let location = self.location.clone();
        let location = location.as_str();
        let what = "listing the directory (MLSD)";
        let opened = tokio::time::timeout(
            store.server.timeout,
            self.ftp
                .custom_data_command("MLSD", &[Status::AboutToSend, Status::AlreadyOpen]),
        )
        .await;
        let stream = match opened {
            Ok(Ok((_, stream))) => stream,
            Ok(Err(FtpError::UnexpectedResponse(r))) if unsupported(r.status) => {
                tracing::debug!(server = %store.server.addr(), "MLSD unsupported; listing with NLST and SIZE");
                return self.list_nlst(location, prefix).await;
            }
            Ok(Err(e)) => return Err(store.map_err(what, e)),
            Err(_) => return Err(store.server.timed_out(what)),
        };
        let lines = store.read_listing(stream, "MLSD").await?;
        let mut out = Vec::new();
        for line in &lines {
            let entry = parse_mlsd_line(line).map_err(|why| {
                ConnectorError::Protocol(format!(
                    "FTP server {} sent an MLSD line that cannot be read ({why}): '{}'",
                    store.server.addr(),
                    line.escape_debug()
                ))
            })?;
            let Some(entry) = entry else { continue };
            let Some(name) = store.server.accept_name(entry.name, prefix, location, true) else {
                continue;
            };
            if check_name(&name).is_err() {
                out.push(Entry { name, size: 0 }); // never asked about: left where it is
                continue;
            }
            let size = match entry.size {
                Some(size) => size,
                None => match self.size(&name).await? {
                    Some(size) => size,
                    None => continue,
                },
            };
            out.push(Entry { name, size });
        }
        Ok(out)
    }

    /// `RETR name` into `dest`, streamed.
    async fn retrieve(&mut self, name: &str, dest: &Path) -> Result<u64, ConnectorError> {
        let (store, location) = (self.store, self.location.clone());
        let what = format!("sending '{name}' (RETR)");
        let mut stream = store
            .step_or_missing(
                &what,
                || format!("file '{name}' in '{location}'"),
                self.ftp.retr_as_stream(name),
            )
            .await?;
        let n = store
            .server
            .download(&mut stream, dest, &what, |e| {
                store.map_err(&what, FtpError::ConnectionError(e))
            })
            .await?;
        // Some servers open the data connection before looking for the file, and say 550 only
        // at the end.
        store
            .step_or_missing(
                &what,
                || format!("file '{name}' in '{location}'"),
                stream.finish(),
            )
            .await?;
        Ok(n)
    }

    /// `STOR tmp`, a size check, then `RNFR tmp` / `RNTO name`.
    async fn store(
        &mut self,
        (tmp, name): (&str, &str),
        (file, src): (&mut tokio::fs::File, &Path),
    ) -> Result<u64, ConnectorError> {
        let store = self.store;
        let what = format!("receiving '{name}' (STOR)");
        let mut stream = store.step(&what, self.ftp.put_with_stream(tmp)).await?;
        let n = store
            .server
            .pump(file, src, &mut stream, &what, |e| {
                store.map_err(&what, FtpError::ConnectionError(e))
            })
            .await?;
        store.step(&what, stream.finish()).await?;
        if let Some(size) = self.size_if_supported(tmp).await? {
            store.server.check_size(name, size, n)?;
        }
        self.rename_into_place(tmp, name).await?;
        Ok(n)
    }

    /// `RNFR from` / `RNTO to`; a missing `from` is [`ConnectorError::NotFound`].
    async fn rename(&mut self, from: &str, to: &str) -> Result<(), ConnectorError> {
        let location = &self.location;
        self.store
            .step_or_missing(
                &format!("renaming '{from}' to '{to}'"),
                || format!("file '{from}' in '{location}'"),
                self.ftp.rename(from, to),
            )
            .await
    }

    /// Deletes the temporary files of the current directory that `sweeper` finds stale
    /// (`NLST`, then `MDTM` and `DELE` for each of ferry's temporary names); a file whose age
    /// the server does not tell is kept.
    async fn sweep(&mut self, sweeper: &Sweeper) -> Result<usize, ConnectorError> {
        let store = self.store;
        let (_, stream) = store
            .step(
                "listing the directory (NLST)",
                self.ftp
                    .custom_data_command("NLST", &[Status::AboutToSend, Status::AlreadyOpen]),
            )
            .await?;
        let lines = store.read_listing(stream, "NLST").await?;
        let mut deleted = 0;
        for name in lines {
            if !name.starts_with(TMP_PREFIX) || check_name(&name).is_err() {
                continue;
            }
            let modified = match tokio::time::timeout(
                store.server.timeout,
                self.ftp.mdtm(name.as_str()),
            )
            .await
            {
                Ok(Ok(at)) => std::time::SystemTime::from(at.and_utc()),
                Ok(Err(e)) => {
                    tracing::debug!(server = %store.server.addr(), name, "MDTM failed, keeping the file: {e}");
                    continue;
                }
                Err(_) => return Err(store.server.timed_out("asking a modification time (MDTM)")),
            };
            if !sweeper.is_stale(&name, modified) {
                continue;
            }
            count_deleted(self.remove(&name, STALE).await, &mut deleted)?;
        }
        Ok(deleted)
    }

    /// `DELE`, logging a failure (cleanup); nothing when the put broke the control
    /// connection.
    async fn delete_quietly(&mut self, name: &str, after: &Result<u64, ConnectorError>) -> bool {
        if !usable(after) {
            return false;
        }
        match self.remove(name, "deleting the temporary upload").await {
            Ok(()) | Err(ConnectorError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(server = %self.store.server.addr(), name, "could not delete the temporary upload: {e}");
            }
        }
        true
    }

    /// Ends the session: `QUIT` when the connection is healthy, else just drops it.
    async fn close<T>(mut self, result: &Result<T, ConnectorError>) {
        if !usable(result) {
            return;
        }
        match tokio::time::timeout(self.store.server.timeout, self.ftp.quit()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("FTP QUIT failed: {e}"),
            Err(_) => tracing::debug!("FTP QUIT timed out"),
        }
    }
}

/// One entry of an `MLSD` listing that is a file.
#[derive(Debug, PartialEq, Eq)]
struct MlsdEntry {
    name: String,
    size: Option<u64>,
}

/// Parses `fact=value;fact=value; name` (RFC 3659). `Ok(None)` for entries that are not
/// plain files (directories, links, the directory itself).
fn parse_mlsd_line(line: &str) -> Result<Option<MlsdEntry>, &'static str> {
    let Some((facts, name)) = line.split_once(' ') else {
        return Err("no space between the facts and the name");
    };
    let mut kind = None;
    let mut size = None;
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let Some((key, value)) = fact.split_once('=') else {
            return Err("a fact without '='");
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => kind = Some(value.to_ascii_lowercase()),
            "size" => {
                size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| "a size that is not a number")?,
                )
            }
            _ => {}
        }
    }
    match kind.as_deref() {
        None | Some("file") => Ok(Some(MlsdEntry {
            name: name.to_string(),
            size,
        })),
        Some(_) => Ok(None),
    }
}

/// Builds the rustls connector: the system's roots plus those of `ca_file`.
fn tls_connector(host: &str, ca_file: Option<&Path>) -> Result<TlsConnector, ConnectorError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let config = |msg: String| ConnectorError::Config(format!("ftp: {msg}"));
    ServerName::try_from(host.to_string())
        .map_err(|e| config(format!("host '{host}' cannot be used for TLS: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| config(format!("ca_file '{shown}' cannot be read: {e}")))?;
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| config(format!("ca_file '{shown}' is not a valid PEM file: {e}")))?;
            roots.add(cert).map_err(|e| {
                config(format!(
                    "ca_file '{shown}' holds a certificate that cannot be used: {e}"
                ))
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(config(format!(
                "ca_file '{shown}' holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks)"
            )));
        }
    } else if added == 0 {
        return Err(config(
            "no system CA certificates were found; set ca_file to the CA that signed the server's certificate".to_string(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlsd_lines_parse() {
        assert_eq!(
            parse_mlsd_line("type=file;size=12;modify=20240101000000; A 1;x.csv").unwrap(),
            Some(MlsdEntry {
                name: "A 1;x.csv".into(),
                size: Some(12)
            })
        );
        assert_eq!(parse_mlsd_line("Type=dir;Size=0; sub").unwrap(), None);
        assert_eq!(parse_mlsd_line("type=cdir; /in").unwrap(), None);
        assert_eq!(
            parse_mlsd_line("; bare").unwrap(),
            Some(MlsdEntry {
                name: "bare".into(),
                size: None
            })
        );
        assert!(parse_mlsd_line("type=file;size=1;nospace").is_err());
        assert!(parse_mlsd_line("type=file;size=-1; x").is_err());
    }

    #[test]
    fn spec_defaults_and_unknown_fields() {
        let spec: FtpSpec =
            serde_json::from_str(r#"{"host":"h","username":"u","password_env":"P"}"#).unwrap();
        assert!(spec.passive);
        assert_eq!(spec.security, FtpSecurity::None);
        let spec: FtpSpec = serde_json::from_str(
            r#"{"host":"h","username":"u","password_env":"P","security":"explicit_tls"}"#,
        )
        .unwrap();
        assert_eq!(spec.security, FtpSecurity::ExplicitTls);
        assert!(
            serde_json::from_str::<FtpSpec>(
                r#"{"host":"h","username":"u","password_env":"P","pasive":false}"#
            )
            .is_err()
        );
    }
}
