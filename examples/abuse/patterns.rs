//! The abuse patterns of the `abuse` example: each runs until the end of
//! the abuse window (or its count), from the abuse source address, and
//! tallies what the server answered.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mpc_core::wire::Role;
use mpc_core::{Dkg, Protocol};
use mpc_transport_ws::opening::{encode_frame, FrameKind};
use mpc_transport_ws::{Client, Frames, Incoming, Opening, Operation, TransportError};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

/// How long a connect or an upgrade may take before it counts as refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent requests of the unique-method pattern.
const REQUEST_WORKERS: usize = 8;

/// What the server answered one pattern: outcome label → count, and how
/// long the server took to end the connections it ended (seconds).
#[derive(Default)]
pub(crate) struct Tally {
    outcomes: Mutex<BTreeMap<String, u64>>,
    ended_after: Mutex<Vec<f64>>,
    /// Sessions in which the server sent a protocol message (did protocol
    /// work) before the end.
    pub(crate) server_worked: AtomicU64,
    /// Most connections of this pattern the server held open at once.
    pub(crate) most_open: AtomicU64,
    open: AtomicU64,
}

impl Tally {
    pub(crate) fn count(&self, outcome: impl Into<String>) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(outcome.into())
            .or_insert(0) += 1;
    }

    fn ended(&self, after: Duration) {
        self.ended_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(after.as_secs_f64());
    }

    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.most_open.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn outcomes(&self) -> BTreeMap<String, u64> {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Seconds after which the server ended connections, ascending.
    pub(crate) fn ended_after(&self) -> Vec<f64> {
        let mut times = self
            .ended_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        times.sort_by(f64::total_cmp);
        times
    }
}

/// The label of a refused or failed WebSocket operation: `http <status>`
/// for a refused upgrade, `close <code>` for a session the server ended
/// with a code, else a short kind.
pub(crate) fn error_label(error: &TransportError) -> String {
    match error {
        TransportError::UpgradeRefused { status } => format!("http {status}"),
        TransportError::Closed => "dropped without close".into(),
        TransportError::Transport { .. } => "transport error".into(),
        TransportError::Timeout { .. } => "client timeout".into(),
        other => match other.close_code() {
            Some(code) => format!("close {}", code.0),
            None => "other error".into(),
        },
    }
}

/// Where the abusive sockets go, and who they claim to be.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) ws_url: String,
    pub(crate) ws_addr: SocketAddr,
    pub(crate) rest_url: String,
    pub(crate) rest_addr: SocketAddr,
    /// The loopback address the abusive sockets are bound to, so that the
    /// server's per-IP limits see them apart from the honest clients.
    pub(crate) source: IpAddr,
    pub(crate) until: Instant,
}

async fn tcp_from(source: IpAddr, target: SocketAddr) -> Result<TcpStream, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    match timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(_)) => Err("connect refused".into()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// A WebSocket upgrade from `target.source` with `token`; `Err` is the
/// outcome label of a refusal.
async fn upgrade(target: &Target, token: &str) -> Result<WebSocketStream<TcpStream>, String> {
    let mut request = target
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(|_| "bad URL".to_owned())?;
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "bad token".to_owned())?;
    value.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, value);
    let stream = tcp_from(target.source, target.ws_addr).await?;
    let config = mpc_transport_ws::TransportConfig::default().websocket_config();
    let upgrading = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    match timeout(CONNECT_TIMEOUT, upgrading).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(format!("http {}", response.status().as_u16()))
        }
        Ok(Err(_)) => Err("upgrade failed".into()),
        Err(_) => Err("upgrade timed out".into()),
    }
}

/// Holds `socket` until the server ends it or the window closes; the
/// outcome label. Counts a protocol message from the server as work.
async fn hold_ws(socket: &mut WebSocketStream<TcpStream>, tally: &Tally, until: Instant) -> String {
    let started = Instant::now();
    let mut worked = false;
    let label = loop {
        tokio::select! {
            () = sleep_until(until) => break "held until end".to_owned(),
            frame = socket.recv() => match frame {
                Some(Ok(Incoming::Close(code))) => {
                    break match code {
                        Some((code, _)) => format!("close {code}"),
                        None => "close (no code)".into(),
                    };
                }
                Some(Ok(Incoming::Binary(frame))) => {
                    worked |= frame.first() == Some(&FrameKind::Message.as_u8());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break "dropped without close".to_owned(),
            },
        }
    };
    if label != "held until end" {
        tally.ended(started.elapsed());
    }
    if worked {
        tally.server_worked.fetch_add(1, Ordering::Relaxed);
    }
    label
}

/// Holds a raw TCP connection until the server closes it, answers, or the
/// window closes; the outcome label.
async fn hold_tcp(mut stream: TcpStream, tally: &Tally, until: Instant) -> String {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let label = tokio::select! {
        () = sleep_until(until) => return "held until end".into(),
        read = stream.read(&mut buf) => match read {
            Ok(0) => "closed by server".to_owned(),
            // "HTTP/1.1 408 Request Timeout": the status is the second word.
            Ok(n) => match std::str::from_utf8(&buf[..n]).ok().and_then(|t| t.split(' ').nth(1)) {
                Some(status) if status.len() == 3 => format!("http {status}"),
                _ => "answered".to_owned(),
            },
            Err(_) => "reset by server".to_owned(),
        },
    };
    tally.ended(started.elapsed());
    label
}

/// Slow-loris (`partial` = true: a partial request line, then nothing) or
/// idle sockets (nothing at all): `count` connections, alternately to the
/// WebSocket and the REST port, each held until the server ends it.
pub(crate) async fn raw_sockets(target: Target, count: usize, partial: bool, tally: Arc<Tally>) {
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let target = target.clone();
        let tally = Arc::clone(&tally);
        tasks.push(tokio::spawn(async move {
            let addr = if i % 2 == 0 {
                target.ws_addr
            } else {
                target.rest_addr
            };
            let mut stream = match tcp_from(target.source, addr).await {
                Ok(stream) => stream,
                Err(label) => return tally.count(label),
            };
            if partial && stream.write_all(b"GET /v1/ses").await.is_err() {
                return tally.count("reset by server");
            }
            tally.opened();
            let label = hold_tcp(stream, &tally, target.until).await;
            tally.closed();
            tally.count(label);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// `count` REST requests, half with a unique 200-character method and half
/// with a unique path, each carrying `marker` so that a metric series made
/// from one can be found.
pub(crate) async fn unique_requests(
    target: Target,
    count: usize,
    marker: String,
    tally: Arc<Tally>,
) {
    let client = match reqwest::Client::builder()
        .local_address(target.source)
        .timeout(CONNECT_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(_) => return tally.count("client error"),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(REQUEST_WORKERS);
    for _ in 0..REQUEST_WORKERS {
        let (client, next, tally, target, marker) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&tally),
            target.clone(),
            marker.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= target.until {
                    break;
                }
                let unique = format!("{marker}{i:x}");
                let request = if i % 2 == 0 {
                    let name = format!("{unique:X<200}");
                    match reqwest::Method::from_bytes(name.as_bytes()) {
                        Ok(method) => {
                            client.request(method, format!("{}/v1/keys", target.rest_url))
                        }
                        Err(_) => return tally.count("bad method"),
                    }
                } else {
                    client.get(format!("{}/{unique}", target.rest_url))
                };
                match request.send().await {
                    Ok(response) => tally.count(format!("http {}", response.status().as_u16())),
                    Err(e) if e.is_timeout() => tally.count("client timeout"),
                    Err(_) => tally.count("transport error"),
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
}

/// `count` keygen sessions spread over `tokens` (one user each), all held
/// open at once: each sends its opening and only the client's first
/// protocol message, then waits until the server ends it.
pub(crate) async fn half_open_keygens(
    target: Target,
    count: usize,
    tokens: Vec<String>,
    tally: Arc<Tally>,
) {
    if tokens.is_empty() {
        return;
    }
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let target = target.clone();
        let tally = Arc::clone(&tally);
        let token = tokens[i % tokens.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut socket = match upgrade(&target, &token).await {
                Ok(socket) => socket,
                Err(label) => return tally.count(label),
            };
            let opening = Opening::new(Operation::Keygen, &mut OsRng);
            let mut dkg = Dkg::new(Role::A, opening.context());
            let Ok(first) = dkg.start(&mut OsRng) else {
                return tally.count("client protocol error");
            };
            let sent = async {
                socket
                    .send_binary(encode_frame(FrameKind::Opening, &opening.encode()))
                    .await?;
                socket
                    .send_binary(encode_frame(FrameKind::Message, &first))
                    .await
            };
            if sent.await.is_err() {
                return tally.count("dropped without close");
            }
            tally.opened();
            let label = hold_ws(&mut socket, &tally, target.until).await;
            tally.closed();
            tally.count(label);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// One user runs keygens back to back, at most `count`, until the window
/// closes. Returns nothing; `tally` counts `ok` and each refusal.
pub(crate) async fn keygen_spam(client: Client, count: usize, until: Instant, tally: Arc<Tally>) {
    for _ in 0..count {
        if Instant::now() >= until {
            break;
        }
        match client.keygen().await {
            Ok(_) => tally.count("ok"),
            Err(e) => {
                tally.count(error_label(&e));
                // A refused client backs off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// `count` WebSocket upgrades by the users of `tokens` in turn, one after
/// the other; each accepted one is held (sending nothing) until the server
/// ends it or the window closes.
pub(crate) async fn slot_hog(target: Target, count: usize, tokens: Vec<String>, tally: Arc<Tally>) {
    if tokens.is_empty() {
        return;
    }
    let mut holders = Vec::new();
    for i in 0..count {
        if Instant::now() >= target.until {
            break;
        }
        match upgrade(&target, &tokens[i % tokens.len()]).await {
            Ok(mut socket) => {
                let tally = Arc::clone(&tally);
                let until = target.until;
                tally.opened();
                holders.push(tokio::spawn(async move {
                    let label = hold_ws(&mut socket, &tally, until).await;
                    tally.closed();
                    tally.count(format!("accepted, {label}"));
                }));
            }
            Err(label) => {
                tally.count(label);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    for holder in holders {
        let _ = holder.await;
    }
}

/// A marker no other request carries: `abuse` and 8 random hex digits.
pub(crate) fn fresh_marker() -> String {
    format!("abuse{:08x}", OsRng.next_u32())
}
