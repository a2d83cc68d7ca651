//! Connection handling: our own accept loop around hyper's HTTP/1.1 server, so that every connection
//! is bounded in time and in number.
//!
//! - **Header timeout** ([`ConnLimits::header_timeout`]): a new connection must deliver a complete request
//!   head within this time; on a kept-alive connection the time runs from the first byte of the next head.
//!   Idle, header-less and trickled-header connections are closed.
//! - **Keep-alive timeout** ([`ConnLimits::keep_alive_timeout`]): a connection with nothing in flight and
//!   no bytes of a next request is closed this long after its last response.
//! - **Request timeout** ([`ConnLimits::request_timeout`], applied by a middleware in `lib.rs`): a request
//!   (its body included) must be answered within this time (`408`), except `/events` (a stream) and
//!   `/call/pending` (its long-poll wait is added).
//! - **Connection cap** ([`ConnLimits::max_connections`], lowered to what the process's open-file limit
//!   allows): when a new connection arrives at the cap, the connection that has been idle longest (no
//!   request in flight) is closed to make room; if every connection is busy, the new one gets a `503
//!   overloaded` JSON answer and is closed. Accepting therefore never fails for lack of file descriptors,
//!   and a flood of idle connections cannot lock out a client that sends its request promptly.
//! - **Shutdown deadline** ([`ConnLimits::shutdown_grace`]): on shutdown, idle connections (and those
//!   still sending a head) close at once, in-flight requests get this long to finish, then the rest are
//!   dropped.
//!
//! Only HTTP/1.1 is spoken (clients and TLS terminators use it; h2c was never used by a client).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// File descriptors kept free for everything but client connections (database, WAL, listeners, runtime).
pub const FD_RESERVE: usize = 32;
/// The cap when none is configured and the open-file limit allows more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Largest request head hyper buffers (hyper's minimum is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Time and number limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct ConnLimits {
    /// Most open client connections; 0 means [`DEFAULT_MAX_CONNECTIONS`]. Always lowered to the open-file
    /// limit minus [`FD_RESERVE`].
    pub max_connections: usize,
    /// Time to deliver a complete request head.
    #[serde(with = "secs")]
    pub header_timeout: Duration,
    /// Idle time after a response before the connection is closed.
    #[serde(with = "secs")]
    pub keep_alive_timeout: Duration,
    /// Time to answer a request (body upload included).
    #[serde(with = "secs")]
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    #[serde(with = "secs")]
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 0,
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
    }
}

/// The process's soft limit on open files, if it can be read.
pub fn open_file_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap in force: the configured one (or the default), lowered to the open-file limit
/// minus [`FD_RESERVE`], at least 8.
pub fn effective_max_connections(configured: usize) -> usize {
    let wanted = if configured == 0 { DEFAULT_MAX_CONNECTIONS } else { configured };
    let allowed = open_file_limit().map_or(usize::MAX, |n| n.saturating_sub(FD_RESERVE));
    wanted.min(allowed).max(8)
}

/// Counters of what the connection layer did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Open client connections.
    pub open: AtomicUsize,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Closed for not delivering a request head in time.
    pub header_timeouts: AtomicU64,
    /// Closed after the keep-alive idle time.
    pub idle_timeouts: AtomicU64,
    /// Closed to make room at the cap.
    pub evicted: AtomicU64,
    /// Refused with 503 at the cap.
    pub refused: AtomicU64,
    /// Dropped at the end of the shutdown grace period.
    pub cut_at_shutdown: AtomicU64,
}

/// Milliseconds since the server started (for the atomics below).
#[derive(Debug, Clone, Copy)]
struct Epoch(Instant);

impl Epoch {
    fn ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

/// One connection's activity, shared by its task, its service and its I/O wrapper.
#[derive(Debug)]
struct ConnState {
    epoch: Epoch,
    in_flight: AtomicUsize,
    /// When the connection last became idle (accept or end of a response), ms since epoch.
    idle_since: AtomicU64,
    /// First byte of a next request head while idle, ms since epoch + 1 (0 = none).
    head_started: AtomicU64,
    served: AtomicU64,
    /// Wakes the connection task: state changed, or it should close.
    changed: Notify,
    kill: Notify,
}

enum Expiry {
    Head,
    Idle,
}

impl ConnState {
    fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(epoch.ms()),
            head_started: AtomicU64::new(0),
            served: AtomicU64::new(0),
            changed: Notify::new(),
            kill: Notify::new(),
        }
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When this connection must be closed if nothing changes, and why; None while a request is in flight.
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, Expiry)> {
        if !self.idle() {
            return None;
        }
        let head = self.head_started.load(Ordering::Acquire);
        let idle_since = self.idle_since.load(Ordering::Acquire);
        let (start, limit, why) = if self.served.load(Ordering::Acquire) == 0 {
            (idle_since, limits.header_timeout, Expiry::Head)
        } else if head != 0 {
            (head - 1, limits.header_timeout, Expiry::Head)
        } else {
            (idle_since, limits.keep_alive_timeout, Expiry::Idle)
        };
        Some((self.epoch.at(start) + limit, why))
    }
}

/// Marks a request in flight from the moment hyper hands it over until its response body is dropped.
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(cs: Arc<ConnState>) -> Self {
        cs.in_flight.fetch_add(1, Ordering::AcqRel);
        cs.head_started.store(0, Ordering::Release);
        cs.changed.notify_one();
        Self(cs)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let cs = &self.0;
        cs.served.fetch_add(1, Ordering::AcqRel);
        cs.idle_since.store(cs.epoch.ms(), Ordering::Release);
        cs.in_flight.fetch_sub(1, Ordering::AcqRel);
        cs.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting the first byte of a request head that arrives while the connection is idle.
struct Watched {
    io: TcpStream,
    cs: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before
            && this.cs.idle()
            && this
                .cs
                .head_started
                .compare_exchange(0, this.cs.epoch.ms() + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            this.cs.changed.notify_one();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The answer to a connection over the cap (no request is read).
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\nretry-after: 5\r\ncontent-length: 101\r\n\r\n\
{\"error\":\"overloaded\",\"message\":\"the registry has too many open connections; retry in a few seconds\"}";

/// Serves `app` on `listener` with the limits of `limits` until `shutdown` turns true, then drains
/// connections within the grace period. `stats` receives the counters.
///
/// Fails only when the listener fails permanently.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let max = effective_max_connections(limits.max_connections);
    let epoch = Epoch(Instant::now());
    let table: Arc<Mutex<HashMap<u64, Arc<ConnState>>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    let mut last_accept_error = Instant::now() - Duration::from_secs(60);
    tracing::debug!(max_connections = max, "serving");
    loop {
        let accepted = tokio::select! {
            r = shutdown.wait_for(|&s| s) => { let _ = r; break; }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors (something besides connections used them) or a transient
                // network error: free an idle connection and go on, never spin or stall for long.
                if last_accept_error.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, "accept failed");
                    last_accept_error = Instant::now();
                }
                evict_oldest_idle(&table, &stats);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let at_cap = table.lock().map_or(true, |t| t.len() >= max);
        if at_cap && !evict_oldest_idle(&table, &stats) {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            refuse(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let cs = Arc::new(ConnState::new(epoch));
        if let Ok(mut t) = table.lock() {
            t.insert(id, cs.clone());
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (app, table, stats, shutdown) = (app.clone(), table.clone(), stats.clone(), shutdown.clone());
        tasks.spawn(async move {
            run_connection(stream, peer, app, cs, limits, &stats, shutdown).await;
            if let Ok(mut t) = table.lock() {
                t.remove(&id);
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    // Connection tasks saw the shutdown signal too: idle ones are closing, busy ones finishing.
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        let left = tasks.len();
        stats.cut_at_shutdown.fetch_add(left as u64, Ordering::Relaxed);
        tracing::warn!(connections = left, "shutdown grace period over; closing the remaining connections");
        tasks.shutdown().await;
        stats.open.store(0, Ordering::Relaxed);
    }
    Ok(())
}

/// Closes the connection idle the longest. Returns whether there was one.
fn evict_oldest_idle(table: &Mutex<HashMap<u64, Arc<ConnState>>>, stats: &ConnStats) -> bool {
    let Ok(mut t) = table.lock() else { return false };
    let victim = t
        .iter()
        .filter(|(_, cs)| cs.idle())
        .min_by_key(|(_, cs)| cs.idle_since.load(Ordering::Acquire))
        .map(|(&id, _)| id);
    let Some(id) = victim else { return false };
    if let Some(cs) = t.remove(&id) {
        cs.kill.notify_one();
        stats.evicted.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Answers 503 without reading a request and closes.
fn refuse(stream: TcpStream) {
    // Read what already arrived so that closing sends FIN, not RST (which could discard our answer).
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    let _ = stream.try_write(OVERLOADED);
    if let Ok(std) = stream.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
}

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    cs: Arc<ConnState>,
    limits: ConnLimits,
    stats: &ConnStats,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc_state = cs.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = InFlight::begin(svc_state.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let resp = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<Response<Tracked>, Infallible>(resp.map(|inner| Tracked { inner, _in_flight: in_flight }))
        }
    });
    let io = TokioIo::new(Watched { io: stream, cs: cs.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_HEAD_BYTES).header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = cs.deadline(&limits);
        let wake_at = deadline.as_ref().map(|(at, _)| *at);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = cs.changed.notified() => {}
            () = cs.kill.notified() => return,
            () = sleep_until(wake_at) => {
                // Re-check: a request may have started just now.
                if let Some((at, why)) = cs.deadline(&limits)
                    && Instant::now() >= at
                {
                    let counter = match why {
                        Expiry::Head => &stats.header_timeouts,
                        Expiry::Idle => &stats.idle_timeouts,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            r = shutdown.wait_for(|&s| s), if !draining => {
                let _ = r;
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
        if draining && cs.idle() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_connection_phase() {
        let limits = ConnLimits {
            header_timeout: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(30),
            ..ConnLimits::default()
        };
        let epoch = Epoch(Instant::now());
        let cs = Arc::new(ConnState::new(epoch));
        let (at, why) = cs.deadline(&limits).unwrap();
        assert!(matches!(why, Expiry::Head));
        assert!(at <= epoch.0 + Duration::from_millis(2_100));
        let req = InFlight::begin(cs.clone());
        assert!(cs.deadline(&limits).is_none(), "no deadline while a request is in flight");
        drop(req);
        let (at, why) = cs.deadline(&limits).unwrap();
        assert!(matches!(why, Expiry::Idle));
        assert!(at >= epoch.0 + Duration::from_secs(29));
        cs.head_started.store(epoch.ms() + 1, Ordering::Release);
        let (_, why) = cs.deadline(&limits).unwrap();
        assert!(matches!(why, Expiry::Head));
    }

    #[test]
    fn the_cap_respects_the_open_file_limit() {
        let limit = open_file_limit().unwrap();
        assert!(effective_max_connections(usize::MAX) <= limit.saturating_sub(FD_RESERVE).max(8));
        assert_eq!(effective_max_connections(10), 10.min(limit.saturating_sub(FD_RESERVE)).max(8));
        assert_eq!(OVERLOADED.len() - OVERLOADED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4, 101);
    }
}
