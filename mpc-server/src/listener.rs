//! Connection hygiene of both listeners (WebSocket and REST): an accept
//! loop with a cap on open connections, a header-read timeout, an idle
//! timeout and graceful shutdown, over hyper's HTTP/1 connections (with
//! upgrades, for WebSocket).
//!
//! - **Header-read timeout**: hyper's timer runs from the moment the
//!   server waits for a request head until the head is complete: a partial
//!   request line or header block, or a keep-alive connection that sends no
//!   next request, is closed when it runs out.
//! - **Idle timeout**: a connection that moves no byte in either direction
//!   for this long (a stalled body, a response nobody reads) is closed.
//!   Upgraded (WebSocket) connections are bounded by the session's own
//!   message and session timeouts instead.
//! - **Connection cap**, per listener: a connection holds a permit from
//!   accept until its socket is closed, upgraded sessions included. At the
//!   cap the listener stops accepting and new connections wait in the
//!   kernel's backlog until a permit is free, so the process never runs
//!   out of file descriptors through its listeners. The cap is clamped at
//!   start to what the open-file limit (`RLIMIT_NOFILE`) leaves after a
//!   reserve ([`per_listener_cap`]).
//! - **Per-address cap**, per listener: one client address (an IPv6 /64)
//!   holds at most `MPC_MAX_CONNECTIONS_PER_IP` of the listener's
//!   connections; a connection beyond it is closed at once, before a byte
//!   is read. Trusted proxies are exempt: their clients share their
//!   address, and the per-address limits behind them (PROTOCOL.md §18.5)
//!   use the forwarded address instead.
//! - **Accept errors** (e.g. `EMFILE` when something else used the
//!   descriptors) pause accepting for [`ACCEPT_ERROR_PAUSE`] and are logged
//!   at most once a second: no tight loop, and the listener resumes by
//!   itself.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::client_addr::{limit_key, TrustedProxies};

/// Default of `MPC_HEADER_READ_TIMEOUT`, seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT: u64 = 10;
/// Default of `MPC_IDLE_TIMEOUT`, seconds.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 60;
/// Default of `MPC_MAX_CONNECTIONS` (per listener).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of `MPC_MAX_CONNECTIONS_PER_IP` (per listener).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// File descriptors kept out of the listeners' share of the open-file
/// limit, at the least: database connections (SQLite's database, WAL and
/// shared-memory files per pooled connection, or PostgreSQL sockets),
/// outbound webhook connections, log output, the runtime's own
/// descriptors and the listening sockets.
pub const MIN_RESERVED_DESCRIPTORS: u64 = 64;
/// How long the accept loop pauses after an accept error that is not the
/// peer's (e.g. `EMFILE`).
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connection settings of both listeners (flattened into
/// [`Cli`](crate::config::Cli)).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Longest wait for a complete request line and headers, in seconds
    /// (also the longest a keep-alive connection waits for its next
    /// request).
    #[arg(long, hide_env_values = true, env = "MPC_HEADER_READ_TIMEOUT", default_value_t = DEFAULT_HEADER_READ_TIMEOUT)]
    pub header_read_timeout: u64,
    /// A connection that moves no byte for this long is closed, in seconds.
    #[arg(long, hide_env_values = true, env = "MPC_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT)]
    pub idle_timeout: u64,
    /// Most open connections per listener (WebSocket, REST); lowered at
    /// start to fit the open-file limit.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most open connections per listener from one client address (an
    /// IPv6 /64); trusted proxies (`MPC_TRUSTED_PROXIES`) are exempt.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
}

/// Connection settings of both listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest time a connection may move no byte.
    pub idle_timeout: Duration,
    /// Most open connections per listener, before the clamp to the
    /// open-file limit.
    pub max_connections: usize,
    /// Most open connections per listener from one client address.
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

impl From<&ConnectionArgs> for ConnectionLimits {
    fn from(args: &ConnectionArgs) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            max_connections: args.max_connections.max(1),
            max_connections_per_ip: args.max_connections_per_ip.max(1),
        }
    }
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`), `None` if
/// unlimited or unknown.
#[must_use]
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft open-file limit towards `wanted`, within the hard
/// limit (never lowers it); returns the soft limit in force afterwards.
/// The binary calls it at start so that the default connection cap fits
/// under a distribution's low default soft limit (often 1024).
pub fn raise_open_file_limit(wanted: u64) -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let limit = getrlimit(Resource::Nofile);
        let current = limit.current?;
        let target = limit.maximum.map_or(wanted, |hard| wanted.min(hard));
        if target > current {
            let raised = rustix::process::Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                debug!(error = %e, "open-file limit not raised");
            }
        }
        open_file_limit()
    }
    #[cfg(not(unix))]
    {
        let _ = wanted;
        None
    }
}

/// Descriptors reserved out of an open-file limit of `limit`: an eighth,
/// and at least [`MIN_RESERVED_DESCRIPTORS`].
#[must_use]
pub fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 8).max(MIN_RESERVED_DESCRIPTORS)
}

/// Descriptors the process wants for `listeners` listeners of
/// `max_connections` each, with the reserve.
#[must_use]
pub fn wanted_descriptors(max_connections: usize, listeners: usize) -> u64 {
    let connections = u64::try_from(max_connections.saturating_mul(listeners)).unwrap_or(u64::MAX);
    // Solve limit - max(limit / 8, 64) >= connections, rounded up.
    let with_eighth = connections.saturating_mul(8).div_ceil(7);
    with_eighth.max(connections.saturating_add(MIN_RESERVED_DESCRIPTORS))
}

/// The cap of each of `listeners` listeners: `configured`, lowered so that
/// all listeners' connections together stay below the open-file `limit`
/// minus [`reserved_descriptors`]; at least 1.
#[must_use]
pub fn per_listener_cap(configured: usize, listeners: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return configured.max(1);
    };
    let available = limit.saturating_sub(reserved_descriptors(limit));
    let share = available / u64::try_from(listeners.max(1)).unwrap_or(u64::MAX);
    let share = usize::try_from(share).unwrap_or(usize::MAX);
    configured.min(share).max(1)
}

/// One listener's settings after the clamp.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSettings {
    pub(crate) name: &'static str,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    /// Peers exempt from the per-address cap: every client behind them
    /// shares their address.
    pub(crate) trusted_proxies: TrustedProxies,
}

/// Open connections per client address ([`limit_key`]), of one listener.
#[derive(Default)]
struct PerAddress {
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address until dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `key`, or `None` at `cap`.
    fn take(table: &Arc<Self>, key: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut open = table.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: Arc::clone(table),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true; then stops
/// accepting, asks every open connection to finish its request and close,
/// and returns once all have closed (upgraded connections are not waited
/// for: they belong to their sessions).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let per_address = Arc::new(PerAddress::default());
    // Each connection task holds a sender; `recv` returns `None` once the
    // last has finished.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let mut last_warning: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    warn!(listener = settings.name, error = %e, "accept failed; pausing");
                    last_warning = Some(Instant::now());
                }
                drop(permit);
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        // One address may not hold the whole cap: beyond its share the
        // connection is closed at once, before a byte is read.
        let address_slot = if settings.trusted_proxies.contains(peer.ip()) {
            None
        } else {
            let key = limit_key(peer.ip());
            match PerAddress::take(&per_address, key, settings.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    debug!(
                        listener = settings.name,
                        "connection refused: address at its cap"
                    );
                    continue;
                }
            }
        };
        // Protocol rounds are small messages answered at once: without
        // TCP_NODELAY, Nagle and delayed ACKs add ~40 ms per round trip.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let connection = Connection {
            http: http.clone(),
            app: app.clone(),
            peer,
            idle_timeout: settings.idle_timeout,
            stop: stop.clone(),
            _alive: alive.clone(),
        };
        tokio::spawn(connection.run(stream, (permit, address_slot)));
    }
    drop(listener);
    drop(alive);
    let _ = all_closed.recv().await;
}

/// Accept errors about one incoming connection (the peer gave up first):
/// the next accept may succeed at once.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// One accepted connection's task.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    app: Router,
    peer: SocketAddr,
    idle_timeout: Duration,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, permit: (OwnedSemaphorePermit, Option<AddressSlot>)) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(TrackedStream {
            inner: stream,
            activity: Arc::clone(&activity),
            _permit: permit,
        });
        let app = self.app;
        let peer = self.peer;
        let service = tower::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = self
            .http
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(connection);
        let mut stopping = false;
        loop {
            let idle_deadline = activity.deadline(self.idle_timeout);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stop.wait_for(|stop| *stop), if !stopping => {
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    if activity.idle_for() >= self.idle_timeout {
                        debug!("idle connection closed");
                        return;
                    }
                }
            }
        }
    }
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn idle_for(&self) -> Duration {
        self.last().elapsed()
    }

    fn deadline(&self, idle: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.last() + idle)
    }
}

/// The TCP stream, recording activity and holding the connection's
/// permit until the socket is closed (also after a WebSocket upgrade,
/// which takes the stream with it).
struct TrackedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// The listener's permit and the address's count, held until the
    /// socket closes (an upgraded session's included).
    _permit: (OwnedSemaphorePermit, Option<AddressSlot>),
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_open_file_limit() {
        // 256 descriptors: 64 reserved, 96 per listener.
        assert_eq!(per_listener_cap(4096, 2, Some(256)), 96);
        assert_eq!(per_listener_cap(50, 2, Some(256)), 50);
        // An eighth reserved from large limits.
        assert_eq!(per_listener_cap(4096, 2, Some(20_000)), 4096);
        assert_eq!(per_listener_cap(4096, 2, Some(8192)), 3584);
        // Never zero, never more than configured.
        assert_eq!(per_listener_cap(4096, 2, Some(10)), 1);
        assert_eq!(per_listener_cap(4096, 2, None), 4096);
        for limit in [100, 256, 1024, 4096, 65_536, 1 << 20] {
            let cap = per_listener_cap(usize::MAX, 2, Some(limit));
            let used = u64::try_from(cap * 2).unwrap();
            assert!(used + reserved_descriptors(limit) <= limit, "{limit}");
        }
    }

    #[test]
    fn the_wanted_limit_fits_the_configured_cap() {
        for max in [1, 96, 448, 4096, 100_000] {
            let wanted = wanted_descriptors(max, 2);
            assert_eq!(per_listener_cap(max, 2, Some(wanted)), max, "{max}");
        }
    }
}
