//! A TCP proxy that cuts the line: it forwards connections to an upstream address until a
//! given number of bytes went from clients to the upstream, then cuts every connection and
//! stops listening, so retries are refused too — a connection dropped mid-transfer, decided
//! by bytes rather than by timing.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// A running proxy; stopped when dropped.
pub struct CutProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    cut: CancellationToken,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Forwards to `upstream` until `limit` client bytes went up, then cuts.
    pub async fn start(upstream: SocketAddr, limit: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forwarded = Arc::new(AtomicU64::new(0));
        let cut = CancellationToken::new();
        let (count, stop) = (Arc::clone(&forwarded), cut.clone());
        let task = tokio::spawn(async move {
            // Dropping the set (when the loop ends or the task is aborted) closes every
            // connection; leaving the loop drops the listener.
            let mut connections = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (count, stop) = (Arc::clone(&count), stop.clone());
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = pipe(client, server, count, limit, stop.clone()) => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        CutProxy {
            addr,
            forwarded,
            cut,
            task,
        }
    }

    /// `http://` and the proxy's address.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the line was cut.
    pub fn was_cut(&self) -> bool {
        self.cut.is_cancelled()
    }

    /// Bytes forwarded from clients to the upstream.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Waits (at most `within`) for the cut; false when it did not come.
    pub async fn cut_within(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.cut.cancelled())
            .await
            .is_ok()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut.cancel();
        self.task.abort();
    }
}

/// Copies both ways; client bytes count against `limit`, and reaching it cancels `stop`.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    count: Arc<AtomicU64>,
    limit: u64,
    stop: CancellationToken,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n as u64,
            };
            let before = count.fetch_add(n, Ordering::SeqCst);
            let allowed = limit.saturating_sub(before).min(n);
            if allowed > 0 && server_tx.write_all(&buf[..allowed as usize]).await.is_err() {
                return;
            }
            if before + n >= limit {
                stop.cancel();
                return;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
    };
    // Either direction ending ends the connection (both halves are dropped).
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
