//! Writing a download into a spool file.
//!
//! Network reads are small (kilobytes); file writes from async code are a hop to a blocking
//! thread each. [`SpoolWriter`] gathers the bytes into MiB-sized buffers and hands each full
//! buffer to a blocking thread, which writes it while the next one fills. A byte is copied
//! once in user space (socket → buffer, or the chunk a client library yields → buffer), and
//! the download never waits for the disk unless the disk is slower than the network.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::task::JoinHandle;

use super::{ConnectorError, TRANSFER_CHUNK, io_error};

/// Writes the chunks of `chunks` into a new spool file at `dest` and flushes it; `check`
/// judges the length received (against one announced beforehand). Any failure removes the
/// partial file. Returns the length. (The object stores' downloads: a client library's
/// stream of chunks, where FTP and SFTP read a socket: [`SpoolWriter::download`].)
pub(crate) async fn receive<C: AsRef<[u8]>>(
    dest: &Path,
    chunks: impl futures_util::Stream<Item = Result<C, ConnectorError>>,
    check: impl FnOnce(u64) -> Result<(), ConnectorError>,
) -> Result<u64, ConnectorError> {
    use futures_util::StreamExt as _;
    let received = async {
        let mut file = SpoolWriter::create(dest).await?;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            file.write(chunk?.as_ref()).await?;
        }
        let n = file.finish().await?;
        check(n)?;
        Ok(n)
    }
    .await;
    if received.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    received
}

/// A blocking write under way: gives back the file and the emptied buffer.
type Write = JoinHandle<(std::fs::File, Vec<u8>, std::io::Result<()>)>;

/// A spool file being written; see the module documentation. Call [`finish`](Self::finish)
/// to flush it; a writer dropped unfinished leaves a partial file, which the caller removes.
pub(crate) struct SpoolWriter {
    path: PathBuf,
    /// The file, while no write is under way.
    file: Option<std::fs::File>,
    /// The buffer being filled.
    buf: Vec<u8>,
    writing: Option<Write>,
    total: u64,
}

impl SpoolWriter {
    /// Creates (or truncates) the file at `path`.
    pub(crate) async fn create(path: &Path) -> Result<Self, ConnectorError> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| io_error("create", path, e))?
            .into_std()
            .await;
        Ok(SpoolWriter {
            path: path.to_path_buf(),
            file: Some(file),
            buf: Vec::with_capacity(TRANSFER_CHUNK),
            writing: None,
            total: 0,
        })
    }

    /// Appends `data`.
    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<(), ConnectorError> {
        while !data.is_empty() {
            let n = data.len().min(TRANSFER_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == TRANSFER_CHUNK {
                self.hand_over().await?;
            }
        }
        Ok(())
    }

    /// Copies everything `from` yields into a new file at `path` (see
    /// [`read_from`](Self::read_from)) and flushes it; returns its length. A failure may
    /// leave a partial file, which the caller removes.
    pub(crate) async fn download(
        path: &Path,
        from: &mut (impl AsyncRead + Unpin),
        timeout: Duration,
        remote: impl Fn(std::io::Error) -> ConnectorError,
        timed_out: impl Fn() -> ConnectorError,
    ) -> Result<u64, ConnectorError> {
        let mut file = SpoolWriter::create(path).await?;
        file.read_from(from, timeout, remote, timed_out).await?;
        file.finish().await
    }

    /// Appends everything `from` yields until its end, reading straight into the buffer;
    /// each read must make progress within `timeout`. Errors of `from` go through `remote`,
    /// a stall is `timed_out()`. Returns the bytes read.
    async fn read_from(
        &mut self,
        from: &mut (impl AsyncRead + Unpin),
        timeout: Duration,
        remote: impl Fn(std::io::Error) -> ConnectorError,
        timed_out: impl Fn() -> ConnectorError,
    ) -> Result<u64, ConnectorError> {
        let mut read = 0;
        loop {
            let n = match tokio::time::timeout(timeout, from.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(remote(e)),
                Err(_) => return Err(timed_out()),
            };
            if n == 0 {
                return Ok(read);
            }
            read += n as u64;
            if self.buf.len() >= TRANSFER_CHUNK {
                self.hand_over().await?;
            }
        }
    }

    /// Writes what is buffered and waits for the disk; returns the file's length.
    pub(crate) async fn finish(mut self) -> Result<u64, ConnectorError> {
        if !self.buf.is_empty() {
            self.hand_over().await?;
        }
        self.settle().await?;
        Ok(self.total)
    }

    /// Starts writing the full buffer on a blocking thread, once the previous write is done.
    async fn hand_over(&mut self) -> Result<(), ConnectorError> {
        let spare = self.settle().await?;
        let full = std::mem::replace(&mut self.buf, spare);
        let mut file = self.file.take().ok_or_else(|| self.broken())?;
        self.total += full.len() as u64;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let mut full = full;
            let done = file.write_all(&full);
            full.clear();
            (file, full, done)
        }));
        Ok(())
    }

    /// Waits for the write under way, if any; returns an empty buffer to fill next.
    async fn settle(&mut self) -> Result<Vec<u8>, ConnectorError> {
        let Some(writing) = self.writing.take() else {
            return Ok(Vec::with_capacity(TRANSFER_CHUNK));
        };
        let (file, spare, done) = writing
            .await
            .map_err(|e| io_error("write", &self.path, std::io::Error::other(e.to_string())))?;
        done.map_err(|e| io_error("write", &self.path, e))?;
        self.file = Some(file);
        Ok(spare)
    }

    fn broken(&self) -> ConnectorError {
        io_error(
            "write",
            &self.path,
            std::io::Error::other("an earlier write to this file failed"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn chunks_of_any_size_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let data = pattern(3 * TRANSFER_CHUNK + 12_345);
        let mut w = SpoolWriter::create(&path).await.unwrap();
        for piece in data.chunks(70_001) {
            w.write(piece).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn a_reader_is_copied_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let data = pattern(2 * TRANSFER_CHUNK + 1);
        let mut from = std::io::Cursor::new(data.clone());
        let read = SpoolWriter::download(
            &path,
            &mut from,
            Duration::from_secs(5),
            |e| ConnectorError::Protocol(e.to_string()),
            || ConnectorError::Timeout("stalled".into()),
        )
        .await
        .unwrap();
        assert_eq!(read, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn an_empty_download_makes_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let w = SpoolWriter::create(&path).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[tokio::test]
    async fn a_write_that_fails_names_the_file() {
        // /dev/full accepts the open and refuses every write (ENOSPC).
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let mut w = SpoolWriter::create(path).await.unwrap();
        w.write(&pattern(TRANSFER_CHUNK)).await.unwrap();
        let err = w.finish().await.unwrap_err();
        assert!(err.to_string().contains("/dev/full"), "{err}");
        assert!(
            matches!(err, ConnectorError::Io { op: "write", .. }),
            "{err:?}"
        );
    }
}
