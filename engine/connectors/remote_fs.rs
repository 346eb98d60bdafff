//! What the FTP and SFTP stores share: a server's address, login, timeout and sweeper
//! ([`Server`]), and the shape of every operation over a session of its own ([`RemoteFs`]):
//! open a session, go to the location, do the one thing, close. A put writes a hidden
//! temporary name, checks its size, renames it into place, and deletes the temporary file
//! when it fails part way (over a new session when the first one broke); its first visit to a
//! location sweeps the stale temporary files there first. Each protocol says how it does each
//! step ([`RemoteSession`]); the order of the steps is written once, here.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::spool::SpoolWriter;
use super::sweep::{self, Sweeper, TMP_PREFIX};
use super::{ConnectorError, Entry, check_name};

/// Timeout when the spec gives none, in seconds.
pub(super) const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The part of a file server's definition that every remote kind has.
pub(super) struct Server {
    /// The connection kind, in configuration errors and logs: `ftp`, `sftp`.
    pub(super) kind: &'static str,
    /// The protocol, in messages: `FTP`, `SFTP`.
    pub(super) protocol: &'static str,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) timeout: Duration,
    pub(super) sweeper: Sweeper,
}

impl Server {
    /// The server of a connection whose `host` and `user` are already checked; checks its
    /// `timeout_secs` (default [`DEFAULT_TIMEOUT_SECS`]) and `temp_max_age`.
    pub(super) fn new(
        (kind, protocol): (&'static str, &'static str),
        (host, user): (String, String),
        port: u16,
        timeout_secs: Option<u64>,
        temp_max_age: Option<&str>,
    ) -> Result<Self, ConnectorError> {
        let config = |msg: String| ConnectorError::Config(format!("{kind}: {msg}"));
        let secs = timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if secs == 0 {
            return Err(config("timeout_secs must be at least 1".to_string()));
        }
        let sweeper = Sweeper::new(temp_max_age).map_err(|e| match e {
            ConnectorError::Config(msg) => config(msg),
            other => other,
        })?;
        Ok(Server {
            kind,
            protocol,
            host,
            port,
            user,
            timeout: Duration::from_secs(secs),
            sweeper,
        })
    }

    /// `host:port` for messages (IPv6 addresses in brackets).
    pub(super) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The server did not answer in time while doing `what`.
    pub(super) fn timed_out(&self, what: &str) -> ConnectorError {
        ConnectorError::Timeout(format!(
            "{} server {} did not answer within {}s while {what}",
            self.protocol,
            self.addr(),
            self.timeout.as_secs()
        ))
    }

    /// Awaits `fut` under the timeout; a timeout becomes [`ConnectorError::Timeout`].
    pub(super) async fn within<T>(
        &self,
        what: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, ConnectorError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| self.timed_out(what))
    }

    /// Filters a name from a listing: `None` for names the caller does not want (another
    /// prefix, our temporaries, and with `lossy` a name that was not UTF-8). A hostile name is
    /// logged and kept: the caller asks the server nothing about it, and
    /// [`super::FileStore::list_checked`] leaves it where it is.
    pub(super) fn accept_name(
        &self,
        name: String,
        prefix: &str,
        location: &str,
        lossy: bool,
    ) -> Option<String> {
        if name.starts_with(TMP_PREFIX) || !name.starts_with(prefix) {
            return None;
        }
        if lossy && name.contains(char::REPLACEMENT_CHARACTER) {
            tracing::warn!(server = %self.addr(), location, "skipping a file whose name is not UTF-8");
            return None;
        }
        if let Err(e) = check_name(&name) {
            // listed, and left where it is by FileStore::list_checked
            tracing::warn!(server = %self.addr(), location, "{} listing holds a hostile name: {e}", self.protocol);
        }
        Some(name)
    }

    /// Uploads `from` to `to` (see [`super::pump`]); errors of `to` go through `remote`.
    pub(super) async fn pump(
        &self,
        from: &mut (impl AsyncRead + Unpin),
        local: &Path,
        to: &mut (impl AsyncWrite + Unpin),
        what: &str,
        remote: impl Fn(std::io::Error) -> ConnectorError,
    ) -> Result<u64, ConnectorError> {
        super::pump(from, to, self.timeout, local, remote, || {
            self.timed_out(what)
        })
        .await
    }

    /// Downloads `from` into `dest` (see [`SpoolWriter::download`]); errors of `from` go
    /// through `remote`.
    pub(super) async fn download(
        &self,
        from: &mut (impl AsyncRead + Unpin),
        dest: &Path,
        what: &str,
        remote: impl Fn(std::io::Error) -> ConnectorError,
    ) -> Result<u64, ConnectorError> {
        SpoolWriter::download(dest, from, self.timeout, remote, || self.timed_out(what)).await
    }

    /// The server holds `size` bytes of the upload of `name` after receiving `sent`.
    pub(super) fn check_size(
        &self,
        name: &str,
        size: u64,
        sent: u64,
    ) -> Result<(), ConnectorError> {
        if size == sent {
            return Ok(());
        }
        Err(ConnectorError::Protocol(format!(
            "{} server {} holds {size} bytes of '{name}' after receiving {sent}",
            self.protocol,
            self.addr()
        )))
    }
}

/// What a sweep does when it deletes a stale temporary file, in messages.
pub(super) const STALE: &str = "deleting a stale temporary file";

/// Counts a stale temporary file a sweep deleted: one that is gone already counts for
/// nothing, any other failure ends the sweep.
pub(super) fn count_deleted(
    deleted: Result<(), ConnectorError>,
    count: &mut usize,
) -> Result<(), ConnectorError> {
    match deleted {
        Ok(()) => *count += 1,
        Err(ConnectorError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// One logged-in session of a remote file store. It works in one location at a time, the
/// one it [entered](RemoteSession::enter).
pub(super) trait RemoteSession {
    /// Goes to `location`, whose path is `dir` ([`RemoteFs::dir`]): the operations that
    /// follow work there.
    async fn enter(&mut self, location: &str, dir: String) -> Result<(), ConnectorError>;

    /// The path of `name` in the location, as this session's operations take it.
    fn path(&self, name: &str) -> String;

    /// The files of the location whose names start with `prefix`.
    async fn list(&mut self, prefix: &str) -> Result<Vec<Entry>, ConnectorError>;

    /// Downloads `name` into `dest`, streamed (the caller removes `dest` when it fails).
    async fn retrieve(&mut self, name: &str, dest: &Path) -> Result<u64, ConnectorError>;

    /// Uploads `from` (the local file and its path) to the temporary path of `upload` (from
    /// [`RemoteSession::path`]), checks its size, then renames it into place under the name
    /// of `upload`.
    async fn store(
        &mut self,
        upload: (&str, &str),
        from: (&mut tokio::fs::File, &Path),
    ) -> Result<u64, ConnectorError>;

    /// Renames `from` to `to`; a missing `from` is [`ConnectorError::NotFound`].
    async fn rename(&mut self, from: &str, to: &str) -> Result<(), ConnectorError>;

    /// Deletes the location's temporary files that `sweeper` finds stale; returns how many.
    async fn sweep(&mut self, sweeper: &Sweeper) -> Result<usize, ConnectorError>;

    /// Deletes the temporary upload `tmp` after a put ended with `after`, logging a failure;
    /// false when this session is broken, so that a new one must do it.
    async fn delete_quietly(&mut self, tmp: &str, after: &Result<u64, ConnectorError>) -> bool;

    /// Ends the session after an operation ended with `result`.
    async fn close<T>(self, result: &Result<T, ConnectorError>);
}

/// A remote file store that opens a session of its own for each operation.
pub(super) trait RemoteFs {
    /// A logged-in session, bound to the store it came from.
    type Session<'a>: RemoteSession
    where
        Self: 'a;

    /// The server's address, login, timeout and sweeper.
    fn server(&self) -> &Server;

    /// A location as the protocol addresses it, checked before any session is opened.
    fn dir(location: &str) -> Result<String, ConnectorError>;

    /// Connects, logs in and makes the session ready for file operations.
    async fn open(&self) -> Result<Self::Session<'_>, ConnectorError>;

    /// A session in `location`; `Err` after closing it when it cannot go there.
    async fn open_in(&self, location: &str) -> Result<Self::Session<'_>, ConnectorError> {
        let dir = Self::dir(location)?;
        let mut s = self.open().await?;
        if let Err(e) = s.enter(location, dir).await {
            let result = Err(e);
            s.close(&result).await;
            return result;
        }
        Ok(s)
    }

    async fn list(&self, location: &str, prefix: &str) -> Result<Vec<Entry>, ConnectorError> {
        let mut s = self.open_in(location).await?;
        let result = s.list(prefix).await;
        s.close(&result).await;
        result
    }

    async fn get(&self, location: &str, name: &str, dest: &Path) -> Result<u64, ConnectorError> {
        let mut s = self.open_in(location).await?;
        let result = s.retrieve(name, dest).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        s.close(&result).await;
        result
    }

    async fn rename(&self, location: &str, from: &str, to: &str) -> Result<(), ConnectorError> {
        let mut s = self.open_in(location).await?;
        let result = s.rename(from, to).await;
        s.close(&result).await;
        result
    }

    /// Deletes the stale temporary files at `location`, in a session of its own; returns how
    /// many.
    async fn sweep(&self, location: &str) -> Result<usize, ConnectorError> {
        let mut s = self.open_in(location).await?;
        let result = s.sweep(&self.server().sweeper).await;
        s.close(&result).await;
        result
    }

    /// Uploads `src` as `name` through a temporary name renamed into place (see
    /// [`RemoteSession::store`]), sweeping the location first on its first visit.
    async fn put(&self, location: &str, name: &str, src: &Path) -> Result<u64, ConnectorError> {
        Self::dir(location)?;
        let mut file = tokio::fs::File::open(src)
            .await
            .map_err(|e| super::io_error("open", src, e))?;
        let server = self.server();
        if server.sweeper.first_visit(location) {
            sweep::report(server.kind, location, self.sweep(location).await);
        }
        let mut s = self.open_in(location).await?;
        let tmp = s.path(&sweep::tmp_name(name));
        let result = s.store((&tmp, name), (&mut file, src)).await;
        if result.is_err() && !s.delete_quietly(&tmp, &result).await {
            // The session broke: remove the temporary file over a new one.
            if let Ok(mut fresh) = self.open_in(location).await {
                fresh.delete_quietly(&tmp, &Ok(0)).await;
                fresh.close(&Ok(())).await;
            }
        }
        s.close(&result).await;
        result
    }
}
