//! Connectors: the endpoints flows talk to.
//!
//! A connections file names endpoints ([`ConnectionSpec`], one closed enum of kinds); at run
//! time each becomes a [`Connector`]. Three capabilities exist, each a small closed enum:
//! [`FileStore`] (list / get / put / rename files: local directories, FTP/FTPS and SFTP servers,
//! S3-compatible and OCI-native object storage), [`http::HttpConnector`] (REST requests) and [`mail::Mailer`] (an `.eml` outbox or
//! SMTP). Files always move through spool files on disk, so memory does not grow with size.
//! Secrets come from the environment only and are held in [`Secret`], whose `Debug` is
//! redacted.

mod durable;
pub mod ftp;
pub mod http;
pub mod local;
pub mod mail;
pub mod oci;
pub mod oci_sign;
mod remote_fs;
pub mod retry;
pub mod s3;
pub mod sftp;
mod spool;
pub mod sweep;

use std::path::Path;

use remote_fs::RemoteFs as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The definition of one connection, as written in a connections file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConnectionSpec {
    /// A local directory used as a file server or as object storage.
    Local(local::LocalSpec),
    /// An FTP or FTPS (explicit TLS) server.
    Ftp(ftp::FtpSpec),
    /// An SFTP server (SSH file transfer), with the host key pinned.
    Sftp(sftp::SftpSpec),
    /// A REST endpoint.
    Http(http::HttpSpec),
    /// Email written as `.eml` files into a directory.
    Outbox(mail::OutboxSpec),
    /// Email sent over SMTP.
    Smtp(mail::SmtpSpec),
    /// OCI Object Storage through its native API, with request signing.
    Oci(oci::OciSpec),
    /// S3-compatible object storage (AWS S3, MinIO, OCI's S3 compatibility endpoint).
    S3(s3::S3Spec),
}

/// What a step needs a connection to be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// list / get / put / rename files.
    Files,
    /// HTTP requests.
    Http,
    /// Send email.
    Mail,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::Files => "file (list/fetch/put/rename)",
            Capability::Http => "HTTP",
            Capability::Mail => "mail",
        })
    }
}

impl ConnectionSpec {
    /// The capability this kind of connection offers.
    pub fn capability(&self) -> Capability {
        match self {
            ConnectionSpec::Local(_) => Capability::Files,
            ConnectionSpec::Ftp(_) => Capability::Files,
            ConnectionSpec::Sftp(_) => Capability::Files,
            ConnectionSpec::Oci(_) => Capability::Files,
            ConnectionSpec::S3(_) => Capability::Files,
            ConnectionSpec::Http(_) => Capability::Http,
            ConnectionSpec::Outbox(_) | ConnectionSpec::Smtp(_) => Capability::Mail,
        }
    }

    /// The kind's name as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectionSpec::Local(_) => "local",
            ConnectionSpec::Ftp(_) => "ftp",
            ConnectionSpec::Sftp(_) => "sftp",
            ConnectionSpec::Http(_) => "http",
            ConnectionSpec::Outbox(_) => "outbox",
            ConnectionSpec::Smtp(_) => "smtp",
            ConnectionSpec::Oci(_) => "oci",
            ConnectionSpec::S3(_) => "s3",
        }
    }

    /// Opens the connection (reads secrets from the environment; does not touch the
    /// network yet).
    pub fn connect(&self, name: &str) -> Result<Connector, ConnectorError> {
        Ok(match self {
            ConnectionSpec::Local(s) => {
                Connector::Files(FileStore::Local(local::LocalStore::new(s)?))
            }
            ConnectionSpec::Ftp(s) => Connector::Files(FileStore::Ftp(ftp::FtpStore::new(s)?)),
            ConnectionSpec::Sftp(s) => Connector::Files(FileStore::Sftp(sftp::SftpStore::new(s)?)),
            ConnectionSpec::Http(s) => Connector::Http(http::HttpConnector::new(name, s)?),
            ConnectionSpec::Outbox(s) => Connector::Mail(mail::Mailer::outbox(s)?),
            ConnectionSpec::Smtp(s) => Connector::Mail(mail::Mailer::smtp(s)?),
            ConnectionSpec::Oci(s) => {
                Connector::Files(FileStore::Oci(oci::OciStore::new(name, s)?))
            }
            ConnectionSpec::S3(s) => Connector::Files(FileStore::S3(s3::S3Store::new(s)?)),
        })
    }
}

/// An opened connection.
#[derive(Debug)]
pub enum Connector {
    /// A file store.
    Files(FileStore),
    /// A REST endpoint.
    Http(http::HttpConnector),
    /// A mail sender.
    Mail(mail::Mailer),
}

/// A file in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The file's name (no directory part).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// The source of a copy on the server ([`FileStore::copy_from`]): an object of the service,
/// as a fetch saw it.
#[derive(Debug, Clone, Copy)]
pub struct CopySource<'a> {
    /// Its location (`[namespace/]bucket[:folder]`).
    pub location: &'a str,
    /// Its name there.
    pub name: &'a str,
    /// Its size.
    pub size: u64,
    /// Its entity tag, when known: the copy is conditional on it (a changed source fails it).
    pub etag: Option<&'a str>,
}

/// A place that holds files: list, get, put, rename.
#[derive(Debug)]
pub enum FileStore {
    /// A local directory.
    Local(local::LocalStore),
    /// An FTP or FTPS server.
    Ftp(ftp::FtpStore),
    /// An SFTP server.
    Sftp(sftp::SftpStore),
    /// An OCI Object Storage tenancy (native API).
    Oci(oci::OciStore),
    /// An S3-compatible object store.
    S3(s3::S3Store),
}

impl FileStore {
    /// Checks a file name as this kind of store takes it: object stores (local, S3, OCI)
    /// take `/` between checked segments ([`check_object_name`]), file servers a plain
    /// name ([`check_name`]).
    pub fn check_name(&self, name: &str) -> Result<(), ConnectorError> {
        match self {
            FileStore::Local(_) | FileStore::S3(_) | FileStore::Oci(_) => check_object_name(name),
            FileStore::Ftp(_) | FileStore::Sftp(_) => check_name(name),
        }
    }

    /// Files at `location` whose names start with `prefix`, sorted by name; names ferry
    /// refuses ([`check_name`]) are left out (see [`FileStore::list_checked`]).
    pub async fn list(&self, location: &str, prefix: &str) -> Result<Vec<Entry>, ConnectorError> {
        Ok(self.list_checked(location, prefix).await?.0)
    }

    /// Files at `location` whose names start with `prefix`, sorted by name, and apart from
    /// them the names ferry refuses ([`check_name`]: separators, `..`, control characters)
    /// with the reason: those are left where they are.
    pub async fn list_checked(
        &self,
        location: &str,
        prefix: &str,
    ) -> Result<(Vec<Entry>, Vec<(String, String)>), ConnectorError> {
        let entries = self.list_all(location, prefix).await?;
        let mut skipped = Vec::new();
        let mut good = Vec::with_capacity(entries.len());
        for e in entries {
            match check_name(&e.name) {
                Ok(()) => good.push(e),
                Err(ConnectorError::HostileName { reason, .. }) => {
                    skipped.push((e.name, reason.to_string()));
                }
                Err(other) => skipped.push((e.name, other.to_string())),
            }
        }
        Ok((good, skipped))
    }

    async fn list_all(&self, location: &str, prefix: &str) -> Result<Vec<Entry>, ConnectorError> {
        let mut entries = match self {
            FileStore::Local(s) => s.list(location, prefix).await.map_err(|e| s.scrub(e))?,
            FileStore::Ftp(s) => s.list(location, prefix).await?,
            FileStore::Sftp(s) => s.list(location, prefix).await?,
            FileStore::Oci(s) => s.list(location, prefix).await?,
            FileStore::S3(s) => s.list(location, prefix).await?,
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Copies `location/name` into the local file `dest`, returning the bytes copied.
    pub async fn get(
        &self,
        location: &str,
        name: &str,
        dest: &Path,
    ) -> Result<u64, ConnectorError> {
        self.check_name(name)?;
        let r = match self {
            FileStore::Local(s) => s.get(location, name, dest).await.map_err(|e| s.scrub(e)),
            FileStore::Ftp(s) => s.get(location, name, dest).await,
            FileStore::Sftp(s) => s.get(location, name, dest).await,
            FileStore::Oci(s) => s.get(location, name, dest).await,
            FileStore::S3(s) => s.get(location, name, dest).await,
        };
        // a server path says nothing to whoever reads the error (a FAILURE acknowledgement)
        r.map_err(|e| e.naming(dest, &format!("the run's copy of '{name}'")))
    }

    /// Stores the local file `src` as `location/name`. Returns only once the target holds
    /// the whole file under its final name; a failed put leaves no partial file under it.
    pub async fn put(&self, location: &str, name: &str, src: &Path) -> Result<u64, ConnectorError> {
        self.check_name(name)?;
        let r = match self {
            FileStore::Local(s) => s.put(location, name, src).await.map_err(|e| s.scrub(e)),
            FileStore::Ftp(s) => s.put(location, name, src).await,
            FileStore::Sftp(s) => s.put(location, name, src).await,
            FileStore::Oci(s) => s.put(location, name, src).await,
            FileStore::S3(s) => s.put(location, name, src).await,
        };
        // a server path says nothing to whoever reads the error (a FAILURE acknowledgement)
        r.map_err(|e| {
            let e = e
                .naming(src, &format!("the local copy of '{name}'"))
                .as_name_refusal();
            match self {
                FileStore::Ftp(_) | FileStore::Sftp(_) => e.as_overlong_name_refusal(name),
                _ => e,
            }
        })
    }

    /// Opens `location/name` for a later put instead of copying it into the spool, when
    /// this store is a local directory (`None` for other kinds): see [`local::HeldFile`].
    pub async fn open_held(
        &self,
        location: &str,
        name: &str,
    ) -> Option<Result<local::HeldFile, ConnectorError>> {
        match self {
            FileStore::Local(s) => Some(match self.check_name(name) {
                Ok(()) => s.open(location, name).await.map_err(|e| s.scrub(e)),
                Err(e) => Err(e),
            }),
            _ => None,
        }
    }

    /// Whether [`FileStore::put_held`] reads a held file itself (a local directory); other
    /// stores read the spool file [`local::HeldFile::materialize`] makes.
    pub fn reads_held(&self) -> bool {
        matches!(self, FileStore::Local(_))
    }

    /// [`FileStore::put`] of a file a fetch holds open ([`FileStore::open_held`]) to a store
    /// that [`FileStore::reads_held`]; `src` is its spool path, as the flow names it.
    pub async fn put_held(
        &self,
        location: &str,
        name: &str,
        src: &Path,
        held: std::sync::Arc<local::HeldFile>,
    ) -> Result<u64, ConnectorError> {
        self.check_name(name)?;
        let r = match self {
            FileStore::Local(s) => s
                .put_held(location, name, held)
                .await
                .map_err(|e| s.scrub(e)),
            _ => Err(ConnectorError::Config(
                "internal: a held file put to a store that does not read it".into(),
            )),
        };
        r.map_err(|e| {
            e.naming(src, &format!("the local copy of '{name}'"))
                .as_name_refusal()
        })
    }

    /// Renames `location/from` to `location/to`.
    pub async fn rename(&self, location: &str, from: &str, to: &str) -> Result<(), ConnectorError> {
        self.check_name(from)?;
        self.check_name(to)?;
        match self {
            FileStore::Local(s) => s.rename(location, from, to).await.map_err(|e| s.scrub(e)),
            FileStore::Ftp(s) => s.rename(location, from, to).await,
            FileStore::Sftp(s) => s.rename(location, from, to).await,
            FileStore::Oci(s) => s.rename(location, from, to).await,
            FileStore::S3(s) => s.rename(location, from, to).await,
        }
    }

    /// Whether files fetched from this store may stay on it until something reads them:
    /// object stores that copy on the server (S3, OCI: [`FileStore::copy_from`]).
    pub fn copies_on_server(&self) -> bool {
        matches!(self, FileStore::S3(_) | FileStore::Oci(_))
    }

    /// The size and entity tag of `location/name`, without its body (object stores that
    /// copy on the server; other stores say `None`).
    pub async fn head(
        &self,
        location: &str,
        name: &str,
    ) -> Option<Result<(u64, Option<String>), ConnectorError>> {
        if let Err(e) = self.check_name(name) {
            return Some(Err(e));
        }
        match self {
            FileStore::S3(s) => Some(s.head(location, name).await),
            FileStore::Oci(s) => Some(match s.head(location, name).await {
                Ok(Some(head)) => Ok((head.size, head.etag)),
                Ok(None) => Err(ConnectorError::NotFound(format!(
                    "object '{}' at '{}'",
                    name.escape_debug(),
                    location.escape_debug()
                ))),
                Err(e) => Err(e),
            }),
            _ => None,
        }
    }

    /// Whether this store can take files of `from` by a copy on the server: the same
    /// service with the same credentials ([`FileStore::copy_from`]).
    pub fn copies_from(&self, from: &FileStore) -> bool {
        match (self, from) {
            (FileStore::S3(to), FileStore::S3(from)) => to.same_service(from),
            (FileStore::Oci(to), FileStore::Oci(from)) => to.same_service(from),
            _ => false,
        }
    }

    /// Stores `from`'s file `source` as `location/name` by a copy on the server, which
    /// [`FileStore::copies_from`] must allow. Like [`FileStore::put`] it returns only once
    /// the target holds the whole file under its final name, and a failed copy leaves
    /// nothing under it.
    pub async fn copy_from(
        &self,
        from: &FileStore,
        source: CopySource<'_>,
        location: &str,
        name: &str,
    ) -> Result<u64, ConnectorError> {
        self.check_name(name)?;
        from.check_name(source.name)?;
        match (self, from) {
            (FileStore::S3(to), FileStore::S3(from)) if to.same_service(from) => {
                to.copy_from(source, location, name).await
            }
            (FileStore::Oci(to), FileStore::Oci(from)) if to.same_service(from) => {
                to.copy_from(source, location, name).await
            }
            _ => Err(ConnectorError::Config(
                "internal: a copy on the server between different services".into(),
            )),
        }
    }

    /// Reaches the store and says what was checked.
    pub async fn check(&self) -> Result<String, ConnectorError> {
        match self {
            FileStore::Local(s) => s.check().await,
            FileStore::Ftp(s) => s.check().await,
            FileStore::Sftp(s) => s.check().await,
            FileStore::Oci(s) => s.check().await,
            FileStore::S3(s) => s.check().await,
        }
    }
}

/// Runs blocking file system work `f` on tokio's blocking pool; `op` and `path` name it if
/// the task itself fails.
pub(crate) async fn blocking<T: Send + 'static>(
    path: &std::path::Path,
    op: &'static str,
    f: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_error(op, path, std::io::Error::other(e.to_string())))?
}

/// An I/O error on a local path, as a [`ConnectorError`].
pub(crate) fn io_error(
    op: &'static str,
    path: &std::path::Path,
    source: std::io::Error,
) -> ConnectorError {
    ConnectorError::Io {
        op,
        target: path.display().to_string(),
        source,
    }
}

/// Like [`io_error`], but a missing file is [`ConnectorError::NotFound`] (a local source
/// file a request or put should read).
pub(crate) fn source_error(
    op: &'static str,
    path: &std::path::Path,
    source: std::io::Error,
) -> ConnectorError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ConnectorError::NotFound(path.display().to_string())
    } else {
        io_error(op, path, source)
    }
}

/// Size of one local file write of a download (every kind, through [`spool::SpoolWriter`])
/// and of one read of an FTP or SFTP upload. Large enough that the spawn-blocking round
/// trip of each local file operation is paid once a MiB, not once per network read.
pub(crate) const TRANSFER_CHUNK: usize = 1024 * 1024;

/// Uploads the local file `from` (at `local`, named in its read errors) to `to` in
/// [`TRANSFER_CHUNK`]s, each read and each write within `timeout`; returns the bytes copied.
/// Errors of `to` go through `remote`, and a stall on either side is `timed_out()`.
/// (Downloads go through [`spool::SpoolWriter`].)
pub(crate) async fn pump(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    timeout: std::time::Duration,
    local: &Path,
    remote: impl Fn(std::io::Error) -> ConnectorError,
    timed_out: impl Fn() -> ConnectorError,
) -> Result<u64, ConnectorError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; TRANSFER_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match tokio::time::timeout(timeout, from.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(io_error("read", local, e)),
            Err(_) => return Err(timed_out()),
        };
        if n == 0 {
            return Ok(total);
        }
        match tokio::time::timeout(timeout, to.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(remote(e)),
            Err(_) => return Err(timed_out()),
        }
        total += n as u64;
    }
}

/// Length of an error message taken from an answer a service did not structure (object
/// stores: not S3's XML, not OCI's JSON).
const MESSAGE_CHARS: usize = 300;

/// `text` trimmed and cut to [`MESSAGE_CHARS`] characters (with `…` when cut), for a message.
pub(crate) fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The `host` and `username` of a server login (FTP, SFTP), `${VAR}`s expanded and checked:
/// the host must be a name (not empty, no spaces or control characters) and the user name
/// must hold no control character (a line break would end a protocol line and smuggle in
/// another). Errors name the connection `kind`.
pub(crate) fn server_login(
    kind: &str,
    host: &str,
    username: &str,
) -> Result<(String, String), ConnectorError> {
    let config = |msg: String| ConnectorError::Config(format!("{kind}: {msg}"));
    let host = expand_env(host)?.trim().to_string();
    if host.is_empty() {
        return Err(config("host is empty".to_string()));
    }
    if host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(config(format!(
            "host '{}' is not a host name",
            host.escape_debug()
        )));
    }
    let user = expand_env(username)?;
    if user.is_empty() {
        return Err(config("username is empty".to_string()));
    }
    if user.chars().any(char::is_control) {
        return Err(config(format!(
            "username '{}' contains a control character",
            user.escape_debug()
        )));
    }
    Ok((host, user))
}

/// Opens a TCP connection to the `kind` server at `host:port` (shown as `addr`), within
/// `timeout`.
pub(crate) async fn connect_tcp(
    kind: &str,
    host: &str,
    port: u16,
    addr: &str,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, ConnectorError> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => Err(ConnectorError::Connect(format!(
            "cannot reach {kind} server {addr}: {e}"
        ))),
        Err(_) => Err(ConnectorError::Timeout(format!(
            "{kind} server {addr} did not accept a connection within {}s",
            timeout.as_secs()
        ))),
    }
}

/// Rejects file names that could escape their location or confuse a server: empty names,
/// `.`/`..`, path separators, and control characters. Names from listings and templates
/// alike pass through here.
pub fn check_name(name: &str) -> Result<(), ConnectorError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a directory")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConnectorError::HostileName {
            name: name.escape_debug().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks the name of an object in object storage (local, S3, OCI): like [`check_name`],
/// but a name may hold `/` between segments (`2024/06/report.csv`); each segment is checked
/// (not empty, not `.` or `..`, no backslash or control character).
pub fn check_object_name(name: &str) -> Result<(), ConnectorError> {
    if !name.contains('/') {
        return check_name(name);
    }
    for seg in name.split('/') {
        if seg.is_empty() {
            return Err(ConnectorError::HostileName {
                name: name.escape_debug().to_string(),
                reason: "it has an empty segment (a leading, trailing or double '/')",
            });
        }
        check_name(seg).map_err(|_| ConnectorError::HostileName {
            name: name.escape_debug().to_string(),
            reason: "a segment is '.' or '..' or holds a backslash or control character",
        })?;
    }
    Ok(())
}

/// Splits an object storage location, `[namespace/]bucket[:folder]`, into the bucket part
/// and the folder (`None` without `:`): `ns/bucket:in/2024` is folder `in/2024` of bucket
/// `bucket` in namespace `ns`. The folder is checked as an object name ([`check_object_name`];
/// surrounding `/` are dropped); objects of the location are the objects named
/// `folder/…`, and listings give names relative to the folder.
pub fn split_folder(location: &str) -> Result<(&str, Option<&str>), ConnectorError> {
    let Some((bucket, folder)) = location.split_once(':') else {
        return Ok((location, None));
    };
    let folder = folder.trim_matches('/');
    if folder.is_empty() {
        return Ok((bucket, None));
    }
    check_object_name(folder).map_err(|e| {
        ConnectorError::Config(format!(
            "location '{}': the folder after ':' is refused: {e}",
            location.escape_debug()
        ))
    })?;
    Ok((bucket, Some(folder)))
}

/// The object key of `name` in `folder`.
pub fn folder_key(folder: Option<&str>, name: &str) -> String {
    match folder {
        Some(f) => format!("{f}/{name}"),
        None => name.to_string(),
    }
}

/// Splits a location into its non-empty segments, rejecting `..` and `.`.
pub fn location_segments(location: &str) -> Result<Vec<&str>, ConnectorError> {
    let mut out = Vec::new();
    for seg in location.split('/').filter(|s| !s.is_empty()) {
        if seg == ".." || seg == "." || seg.chars().any(char::is_control) || seg.contains('\\') {
            return Err(ConnectorError::Config(format!(
                "location '{}' has a forbidden segment '{}'",
                location.escape_debug(),
                seg.escape_debug()
            )));
        }
        out.push(seg);
    }
    Ok(out)
}

/// A secret read from the environment. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads the secret from environment variable `var`.
    pub fn from_env(var: &str) -> Result<Secret, ConnectorError> {
        match std::env::var(var) {
            Ok(v) => Ok(Secret(v)),
            Err(_) => Err(ConnectorError::Config(format!(
                "environment variable {var} is not set (it should hold a secret)"
            ))),
        }
    }

    /// Wraps a value (tests and secrets read from files).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself; call only where it is handed to a protocol.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in `s` with the environment's values.
pub fn expand_env(s: &str) -> Result<String, ConnectorError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConnectorError::Config(format!("unclosed '${{' in '{s}'")));
        };
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(var), default) {
            (Ok(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (Ok(v), None) => out.push_str(&v),
            (Err(_), None) => {
                return Err(ConnectorError::Config(format!(
                    "environment variable {var} is not set (used in '{s}')"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every environment variable a connection needs that is not set, in the order written:
/// the values of `…_env` fields (secrets) and the `${VAR}` without a default in its strings.
pub fn missing_env(spec: &ConnectionSpec) -> Vec<String> {
    fn walk(key: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => {
                if key.ends_with("_env") && std::env::var_os(s).is_none() {
                    out.push(s.clone());
                }
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${") {
                    let after = &rest[start + 2..];
                    let Some(end) = after.find('}') else { break };
                    let inner = &after[..end];
                    if !inner.contains(":-") && std::env::var_os(inner).is_none() {
                        out.push(inner.to_string());
                    }
                    rest = &after[end + 1..];
                }
            }
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(k, v, out)),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(key, v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(spec) {
        walk("", &v, &mut out);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(v.clone()));
    out
}

/// What went wrong talking to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A local or remote I/O operation failed.
    #[error("{op} {target}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        target: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file or location does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A file name that could escape its location.
    #[error("refusing file name '{name}': {reason}")]
    HostileName {
        /// The name, escaped for display.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The connection's definition or environment is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The peer refused the credentials.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The peer did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The peer could not be reached or the connection broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The peer answered with an error.
    #[error("{0}")]
    Protocol(String),
    /// The target refuses the file's name (too long for its file system, a key its object
    /// store does not take): nothing was stored, and the same name will never be taken.
    #[error("the target refuses the name: {reason}")]
    NameRefused {
        /// The target's own reason (`File name too long (os error 36)`,
        /// `KeyTooLongError: Your key is too long`).
        reason: String,
    },
}

impl ConnectorError {
    /// The same error with `path` (a path on this server) written as `name` in its text:
    /// errors reach flows, and from there emails and acknowledgements sent outside, which
    /// should name connections, locations and files, not the server's directories.
    pub(crate) fn naming(self, path: &Path, name: &str) -> ConnectorError {
        let p = path.display().to_string();
        if p.is_empty() {
            return self;
        }
        let fix = |s: String| s.replace(&p, name);
        match self {
            ConnectorError::Io { op, target, source } => ConnectorError::Io {
                op,
                target: fix(target),
                source,
            },
            ConnectorError::NotFound(s) => ConnectorError::NotFound(fix(s)),
            ConnectorError::Config(s) => ConnectorError::Config(fix(s)),
            ConnectorError::Auth(s) => ConnectorError::Auth(fix(s)),
            ConnectorError::Timeout(s) => ConnectorError::Timeout(fix(s)),
            ConnectorError::Connect(s) => ConnectorError::Connect(fix(s)),
            ConnectorError::Protocol(s) => ConnectorError::Protocol(fix(s)),
            ConnectorError::NameRefused { reason } => ConnectorError::NameRefused {
                reason: fix(reason),
            },
            e @ ConnectorError::HostileName { .. } => e,
        }
    }

    /// This error as [`ConnectorError::NameRefused`] when it says that the target refuses
    /// the name it was given, whatever the kind of target: a local file system's
    /// `ENAMETOOLONG` or `EILSEQ`, an FTP server's `553` (file name not allowed), an object
    /// store's `KeyTooLongError`. Other errors are returned as they are.
    pub fn as_name_refusal(self) -> ConnectorError {
        let refused = match &self {
            ConnectorError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::InvalidFilename
                    || matches!(
                        source.raw_os_error(),
                        Some(libc_errno::ENAMETOOLONG | libc_errno::EILSEQ)
                    )
            }
            ConnectorError::Protocol(text) => {
                text.contains("answered '553") || text.contains("KeyTooLongError")
            }
            _ => false,
        };
        if !refused {
            return self;
        }
        let reason = match self {
            ConnectorError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        ConnectorError::NameRefused { reason }
    }

    /// On a file server (FTP, SFTP): this error as [`ConnectorError::NameRefused`] when
    /// `name` is longer than any POSIX file system takes ([`NAME_MAX`] bytes) and the server
    /// answered with a failure that does not say why — FTP `550`, SFTP `Failure` or
    /// `BadMessage` (OpenSSH's answer for `ENAMETOOLONG`, libunftp's is `550`). Such a name can
    /// never be stored on a POSIX file system, so retrying it is pointless; a shorter name
    /// keeps its error, which may be anything.
    pub fn as_overlong_name_refusal(self, name: &str) -> ConnectorError {
        if name.len() <= NAME_MAX {
            return self;
        }
        match self {
            ConnectorError::Protocol(text)
                if text.contains("answered '550")
                    || text.contains("(Failure)")
                    || text.contains("(BadMessage)") =>
            {
                ConnectorError::NameRefused {
                    reason: format!(
                        "{text} (a name of {} bytes: a file system takes at most {NAME_MAX})",
                        name.len()
                    ),
                }
            }
            other => other,
        }
    }
}

/// The longest file name, in bytes, that a POSIX file system takes (Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The `errno` values that mean a file system refuses a name (Linux numbering).
mod libc_errno {
    /// File name too long.
    pub const ENAMETOOLONG: i32 = 36;
    /// Illegal byte sequence (a name the file system cannot encode).
    pub const EILSEQ: i32 = 84;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "a\nb",
            "x\u{0}",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        check_name("Sent-report 2023.csv").unwrap();
    }

    #[test]
    fn env_expansion() {
        // SAFETY-free: tests use unique variable names.
        assert_eq!(
            expand_env("a-${FERRY_TEST_UNSET_X:-def}-b").unwrap(),
            "a-def-b"
        );
        assert!(expand_env("${FERRY_TEST_UNSET_Y}").is_err());
        assert_eq!(expand_env("plain").unwrap(), "plain");
        assert!(expand_env("${oops").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }

    #[test]
    fn object_names_take_checked_segments() {
        check_object_name("2024/06/report.csv").unwrap();
        check_object_name("report.csv").unwrap();
        for bad in [
            "a//b", "/a", "a/", "a/../b", "./a", "a/\u{1}b", "a\\b/c", "..",
        ] {
            assert!(check_object_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn folders_follow_a_colon() {
        assert_eq!(split_folder("ns/bk").unwrap(), ("ns/bk", None));
        assert_eq!(
            split_folder("ns/bk:in/2024/").unwrap(),
            ("ns/bk", Some("in/2024"))
        );
        assert_eq!(split_folder("bk:/").unwrap(), ("bk", None));
        assert!(split_folder("bk:a/../b").is_err());
        assert!(split_folder("bk:a//b").is_err());
        assert_eq!(folder_key(Some("in"), "a.csv"), "in/a.csv");
        assert_eq!(folder_key(None, "a.csv"), "a.csv");
    }

    #[test]
    fn locations_reject_dot_dot() {
        assert_eq!(location_segments("/a//b/").unwrap(), vec!["a", "b"]);
        assert!(location_segments("a/../b").is_err());
    }
}
