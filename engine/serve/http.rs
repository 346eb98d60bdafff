//! The HTTP connections of `ferry serve`, served with hyper directly (not `axum::serve`,
//! which sets no timer and so no timeout):
//!
//! - hyper's header read timeout ([`Limits::header_timeout`]): a connection that sends
//!   nothing, or half a request head, is closed; it runs again while a keep-alive connection
//!   waits for its next request;
//! - an idle timeout of keep-alive connections ([`Limits::keepalive_timeout`]): no byte
//!   either way for that long and the connection is closed once no request is under way;
//! - request bodies that stay silent between chunks ([`Limits::body_idle_timeout`],
//!   tower-http's `TimeoutBody`, see [`super::router_with`]);
//! - at most [`Limits::max_connections_per_address`] connections at once from one client
//!   address (an IPv6 address counts by its /64 network): one over is closed as soon as it
//!   is accepted, so one client cannot take the places of the others;
//! - at most [`Limits::max_connections`] connections at once; over it, [`PROBE_CONNECTIONS`]
//!   more are served for `GET /healthz` and `GET /readyz` only (anything else gets a `503`
//!   and the connection closes after one answer; its head must come within
//!   [`PROBE_HEADER_TIMEOUT`]), so a liveness probe is answered while the
//!   server is full; beyond those a connection is closed as soon as it is accepted (each
//!   kind of refusal logged at most once a minute);
//! - every request carries its client's address (`ConnectInfo<SocketAddr>`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{Limits, PROBE_CONNECTIONS};

/// Time a connection over [`Limits::max_connections`] has to send its request's head: a
/// probe sends it at once, so one held silent gives its place back soon.
pub const PROBE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Marks a request that came on a connection over [`Limits::max_connections`]: only probes
/// are answered on it (see [`super::limits::guard`]).
#[derive(Debug, Clone, Copy)]
pub struct ProbeOnly;

/// Serves `router` on `listener` until `stopping` fires, then lets requests under way end
/// (at most `grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    stopping: CancellationToken,
    grace: Duration,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let probe_permits = Arc::new(tokio::sync::Semaphore::new(PROBE_CONNECTIONS));
    let per_address = Arc::new(PerAddress::new(limits.max_connections_per_address));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    // a probe's connection over the limit: one answer, then closed
    let mut probe_builder = builder.clone();
    probe_builder
        .keep_alive(false)
        .header_read_timeout(limits.header_timeout.min(PROBE_HEADER_TIMEOUT));
    let keepalive = limits.keepalive_timeout;
    let (mut last_refusal, mut last_address_refusal) = (None, None);
    loop {
        let accepted = tokio::select! {
            () = stopping.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of file descriptors and the like: wait a little rather than spin
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = per_address.take(peer.ip()) else {
            if once_a_minute(&mut last_address_refusal) {
                tracing::warn!(
                    %peer,
                    max = limits.max_connections_per_address,
                    "too many connections from one address: its new ones are closed (logged once a minute)"
                );
            }
            drop(stream);
            continue;
        };
        let (permit, probe_only) = match permits.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match probe_permits.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    if once_a_minute(&mut last_refusal) {
                        tracing::warn!(
                            %peer,
                            max = limits.max_connections,
                            "too many connections: new ones are closed (logged once a minute)"
                        );
                    }
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let router = TowerToHyperService::new(router.clone());
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                if probe_only {
                    req.extensions_mut().insert(ProbeOnly);
                }
                hyper::service::Service::call(&router, req)
            });
        let conn = if probe_only {
            probe_builder.serve_connection(io, service)
        } else {
            builder.serve_connection(io, service)
        };
        let stopping = stopping.clone();
        connections.spawn(async move {
            let _permit = (permit, slot);
            tokio::pin!(conn);
            let mut closing = false;
            let mut tick = tokio::time::interval(keepalive.max(Duration::from_millis(100)) / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    () = stopping.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = tick.tick(), if !closing => {
                        if activity.idle() >= keepalive {
                            // closes the connection if it is idle; else after the
                            // request under way
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace time are dropped");
    }
}

/// Whether a minute has passed since `last` (then `last` is now).
fn once_a_minute(last: &mut Option<Instant>) -> bool {
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        *last = Some(Instant::now());
        return true;
    }
    false
}

/// Connections open per client address.
#[derive(Debug)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PerAddress {
    fn new(max: usize) -> PerAddress {
        PerAddress {
            open: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// A place for one more connection from `ip`, or `None` when it has its share.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.get(&address_key(ip)).copied().unwrap_or(0)
    }
}

/// The address a connection counts against: an IPv4 address (also when mapped into IPv6),
/// an IPv6 address's /64 network (one host holds a whole /64).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One open connection of an address; given back when dropped.
#[derive(Debug)]
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// When a connection last moved a byte.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that records when it last read or wrote.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One address has its share of places; another still gets one; a closed connection
    /// gives its place back; an IPv6 /64 counts as one address.
    #[test]
    fn places_per_address() {
        let table = Arc::new(PerAddress::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = table.take(a).unwrap();
        let _two = table.take(a).unwrap();
        assert!(table.take(a).is_none());
        assert!(table.take(b).is_some());
        drop(one);
        assert!(table.take(a).is_some());
        let x: IpAddr = "2001:db8::1".parse().unwrap();
        let y: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _x = table.take(x).unwrap();
        let _y = table.take(y).unwrap();
        assert!(table.take("2001:db8::3".parse().unwrap()).is_none());
        assert_eq!(table.count(x), 2);
        assert!(table.take("2001:db8:0:1::1".parse().unwrap()).is_some());
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let _m = table.take(mapped).unwrap();
        assert_eq!(table.count("10.0.0.9".parse().unwrap()), 1);
    }
}
