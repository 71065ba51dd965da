//! Shared test harness: an in-memory server party on 127.0.0.1 built on the
//! crate's server API, a fault-injecting `Frames` wrapper, a raw client, and
//! signature checks against libsecp256k1.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mpc_core::sign::ClaimSet;
use mpc_core::wire::Role;
use mpc_core::SignatureOutput;
use mpc_core::{Dkg, KeyId, KeyShare, OnlineSign, Prehash, Presign, Presignature, Sign};
use mpc_transport_ws::frames::{FrameError, Frames, Incoming};
use mpc_transport_ws::opening::{decode_frame, encode_frame, FrameKind};
use mpc_transport_ws::server::{accept, bearer_token, HttpRejection};
use mpc_transport_ws::{
    serve, Opening, Operation, Outcome, Rejection, ServerSession, TransportConfig, TransportError,
};
use rand_core::OsRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TOKEN: &str = "test-token";

/// Every test body runs under this bound, so that nothing can hang CI.
pub const TEST_BOUND: Duration = Duration::from_secs(30);

pub async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, future)
        .await
        .expect("test exceeded its time bound")
}

/// Small limits so that failures show up fast.
pub fn test_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.message_timeout = Duration::from_millis(1500);
    config.session_timeout = Duration::from_secs(5);
    config.ping_interval = Some(Duration::from_millis(200));
    config.close_timeout = Duration::from_millis(500);
    config
}

// ---------------------------------------------------------------------------
// Fault injection

/// What a [`Faulty`] socket does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing.
    None,
    /// After `n` binary frames, the connection vanishes (TCP closed, no
    /// close frame).
    CutAfterSends(usize),
    /// After `n` binary frames, a polite close with 1001.
    CloseAfterSends(usize),
    /// Never sends anything (frames and pings are swallowed).
    Silent,
    /// Sends everything after `n` binary frames late by this much.
    DelaySends(Duration),
}

/// A `Frames` wrapper that misbehaves as told.
pub struct Faulty<F> {
    inner: Option<F>,
    fault: Fault,
    sends: usize,
    inject: Option<(usize, Vec<u8>)>,
}

impl<F: Frames> Faulty<F> {
    pub fn new(inner: F, fault: Fault) -> Self {
        Self {
            inner: Some(inner),
            fault,
            sends: 0,
            inject: None,
        }
    }

    /// Sends `frame` right after the `after`-th genuine frame.
    pub fn inject_after(mut self, after: usize, frame: Vec<u8>) -> Self {
        self.inject = Some((after, frame));
        self
    }

    fn inner(&mut self) -> Result<&mut F, FrameError> {
        self.inner.as_mut().ok_or(FrameError::Closed)
    }
}

impl<F: Frames> Frames for Faulty<F> {
    async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), FrameError> {
        match self.fault {
            Fault::CutAfterSends(n) if self.sends >= n => {
                // Dropping the socket closes TCP without a close frame.
                self.inner = None;
                return Ok(());
            }
            Fault::CloseAfterSends(n) if self.sends == n => {
                self.inner()?.close(1001, "going away").await?;
                self.sends += 1;
                return Ok(());
            }
            // Closed: later frames go nowhere.
            Fault::CloseAfterSends(n) if self.sends > n => return Ok(()),
            Fault::Silent => return Ok(()),
            Fault::DelaySends(delay) => tokio::time::sleep(delay).await,
            _ => {}
        }
        self.inner()?.send_binary(data).await?;
        self.sends += 1;
        if let Some((after, _)) = &self.inject {
            if *after == self.sends {
                let (_, frame) = self.inject.take().unwrap();
                self.inner()?.send_binary(frame).await?;
            }
        }
        Ok(())
    }

    async fn send_ping(&mut self) -> Result<(), FrameError> {
        if self.fault == Fault::Silent {
            return Ok(());
        }
        self.inner()?.send_ping().await
    }

    async fn recv(&mut self) -> Option<Result<Incoming, FrameError>> {
        match self.inner.as_mut() {
            Some(inner) => inner.recv().await,
            None => None,
        }
    }

    async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner()?.flush().await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), FrameError> {
        if self.fault == Fault::Silent {
            return Ok(());
        }
        self.inner()?.close(code, reason).await
    }
}

// ---------------------------------------------------------------------------
// The in-memory server party

/// Key shares and presignatures of the server party (role B).
#[derive(Default)]
pub struct Store {
    pub shares: Mutex<HashMap<KeyId, Arc<KeyShare>>>,
    pub presignatures: Mutex<HashMap<[u8; 32], Presignature>>,
}

impl Store {
    pub fn share(&self, key_id: &KeyId) -> Option<Arc<KeyShare>> {
        self.shares.lock().unwrap().get(key_id).cloned()
    }

    /// Removes the presignature: it is used at most once, whatever happens.
    pub fn take_presignature(&self, key_id: &KeyId, sid: &[u8; 32]) -> Option<Presignature> {
        let mut presignatures = self.presignatures.lock().unwrap();
        match presignatures.get(sid) {
            Some(p) if p.key_id() == key_id => presignatures.remove(sid),
            _ => None,
        }
    }
}

/// The handler: looks the operation up, runs the server side, stores the
/// result, finishes. Returns the operation's name.
pub async fn handle<F: Frames>(
    mut session: ServerSession<F>,
    store: Arc<Store>,
) -> Result<&'static str, TransportError> {
    let opening = session.opening().clone();
    let name = opening.operation.name();
    let mut rng = OsRng;
    match opening.operation {
        Operation::Keygen => {
            let mut dkg = Dkg::new(Role::B, opening.context());
            let share = session.run(&mut dkg, &mut rng).await?;
            store
                .shares
                .lock()
                .unwrap()
                .insert(*share.key_id(), Arc::new(share));
        }
        Operation::Sign {
            key_id,
            prehash,
            path,
            ..
        } => {
            let Some(share) = store.share(&key_id) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let Ok(mut sign) = Sign::with_path(&share, prehash, &path) else {
                return Err(session.reject(Rejection::INTERNAL).await);
            };
            session.run(&mut sign, &mut rng).await?;
        }
        Operation::Presign { key_id, path, .. } => {
            let Some(share) = store.share(&key_id) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let Ok(mut presign) = Presign::with_path(&share, &path) else {
                return Err(session.reject(Rejection::INTERNAL).await);
            };
            let presignature = session.run(&mut presign, &mut rng).await?;
            store
                .presignatures
                .lock()
                .unwrap()
                .insert(presignature.session_id().0, presignature);
        }
        Operation::OnlineSign {
            key_id,
            presignature,
            prehash,
        } => {
            let Some(presignature) = store.take_presignature(&key_id, &presignature.0) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            // The presignature left the store above: the test store's
            // take is the durable claim; a fresh set confirms it.
            let Ok(mut online) = OnlineSign::new(
                &store.share(&key_id).expect("the key's share"),
                presignature,
                prehash,
                &mut ClaimSet::new(),
            ) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            session.run(&mut online, &mut rng).await?;
        }
        _ => return Err(session.reject(Rejection::UNSUPPORTED_OPERATION).await),
    }
    session.finish().await?;
    Ok(name)
}

pub type ServerResult = Result<&'static str, TransportError>;

/// A server party listening on 127.0.0.1 (port chosen by the OS).
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    results: mpsc::UnboundedReceiver<ServerResult>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(config: TransportConfig, fault: Fault) -> Self {
        Self::start_with_store(config, fault, Arc::new(Store::default())).await
    }

    pub async fn start_with_store(
        config: TransportConfig,
        fault: Fault,
        store: Arc<Store>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, results) = mpsc::unbounded_channel();
        let server_store = store.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let config = config.clone();
                let store = server_store.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = serve_connection(stream, config, fault, store).await;
                    let _ = tx.send(result);
                });
            }
        });
        Self {
            url: format!("ws://{addr}/v1/session"),
            addr,
            store,
            results,
            task,
        }
    }

    /// The result of the next finished server session.
    pub async fn next_result(&mut self) -> ServerResult {
        tokio::time::timeout(Duration::from_secs(20), self.results.recv())
            .await
            .expect("no server result in time")
            .expect("server task ended")
    }

    pub fn client(&self, config: TransportConfig) -> mpc_transport_ws::Client {
        mpc_transport_ws::Client::new(self.url.clone())
            .with_bearer_token(TOKEN)
            .with_config(config)
    }
}

async fn serve_connection(
    stream: TcpStream,
    config: TransportConfig,
    fault: Fault,
    store: Arc<Store>,
) -> ServerResult {
    let (socket, ()) = accept(stream, &config, |request| {
        if bearer_token(request.headers()) == Some(TOKEN) {
            Ok(())
        } else {
            Err(HttpRejection::UNAUTHORIZED)
        }
    })
    .await?;
    let frames = Faulty::new(socket, fault);
    serve(frames, config, |session| handle(session, store)).await
}

// ---------------------------------------------------------------------------
// A raw client, for sending what the crate's client never sends

pub type RawSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn raw_connect(url: &str) -> RawSocket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

pub fn opening_frame(operation: Operation) -> Vec<u8> {
    encode_frame(
        FrameKind::Opening,
        &Opening::new(operation, &mut OsRng).encode(),
    )
}

pub async fn send_binary(socket: &mut RawSocket, frame: Vec<u8>) {
    socket.send(Message::Binary(frame.into())).await.unwrap();
}

/// What a raw client saw until the connection ended.
#[derive(Debug, Default)]
pub struct Ending {
    pub outcomes: Vec<Outcome>,
    pub messages: usize,
    pub pings: usize,
    pub pongs: usize,
    pub close: Option<(u16, String)>,
}

pub async fn read_to_end(socket: &mut RawSocket) -> Ending {
    let mut ending = Ending::default();
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(data) => match decode_frame(&data) {
                    Some((FrameKind::Outcome, body)) => {
                        ending.outcomes.push(Outcome::decode(body).unwrap());
                    }
                    Some((FrameKind::Message, _)) => ending.messages += 1,
                    _ => panic!("unexpected frame from the server"),
                },
                Message::Ping(_) => ending.pings += 1,
                Message::Pong(_) => ending.pongs += 1,
                Message::Close(frame) => {
                    ending.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the server did not close");
    ending
}

/// Asserts that the server ended the raw session with `code`: a failed
/// outcome with that code, then a close frame with it.
pub fn assert_closed_with(ending: &Ending, code: u16) {
    let close = ending.close.as_ref().expect("no close frame");
    assert_eq!(close.0, code, "close frame {close:?}");
    match ending.outcomes.last() {
        Some(Outcome::Failed { code: c, .. }) => assert_eq!(c.0, code),
        other => panic!("expected a failed outcome, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Checks

/// Verifies with libsecp256k1 (an independent implementation), and checks
/// that ecrecover with the recovery id gives the key.
pub fn verify_with_libsecp(public_key: &k256::PublicKey, prehash: &Prehash, out: &SignatureOutput) {
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(&public_key.to_sec1_bytes()).unwrap();
    let msg = secp256k1::Message::from_digest(*prehash.as_bytes());
    let compact = out.signature.to_bytes();
    let sig = secp256k1::ecdsa::Signature::from_compact(&compact).unwrap();
    secp.verify_ecdsa(&msg, &sig, &pk)
        .expect("libsecp256k1 rejects the signature");
    let recid =
        secp256k1::ecdsa::RecoveryId::from_i32(i32::from(out.recovery_id.to_byte())).unwrap();
    let recoverable =
        secp256k1::ecdsa::RecoverableSignature::from_compact(&compact, recid).unwrap();
    assert_eq!(secp.recover_ecdsa(&msg, &recoverable).unwrap(), pk);
}

/// A key both of whose shares are in this process; the server's goes into
/// `store`.
pub fn local_key(store: &Store) -> KeyShare {
    let (a, b, _) = mpc_core::local::run_pair(
        &mut OsRng,
        &mut Dkg::new(Role::A, b"local"),
        &mut Dkg::new(Role::B, b"local"),
    )
    .unwrap();
    store
        .shares
        .lock()
        .unwrap()
        .insert(*b.key_id(), Arc::new(b));
    a
}

/// The first message of a DKG of another session: a well-formed envelope
/// that no session of the server expects.
pub fn foreign_message() -> Vec<u8> {
    let mut other = Dkg::new(Role::A, b"another session");
    let envelope = mpc_core::Protocol::start(&mut other, &mut OsRng).unwrap();
    encode_frame(FrameKind::Message, &envelope)
}
