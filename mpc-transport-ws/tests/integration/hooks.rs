//! [`SessionHooks`]: the guard around each step, the work after a failed
//! step before its outcome leaves, and cancellation of a parked session,
//! over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::future::Future;
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::StreamExt;
use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{AbortClass, DerivationPath, Dkg, KeyShare, Prehash, Sign};
use mpc_transport_ws::frames::{FrameError, Frames, Incoming};
use mpc_transport_ws::opening::{decode_frame, FrameKind};
use mpc_transport_ws::server::accept;
use mpc_transport_ws::{
    run_client, serve, CloseCode, Opening, Operation, Rejection, ServerSession, SessionHooks,
    TransportConfig, TransportError,
};
use rand_core::OsRng;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: impl Into<String>) {
    log.lock().unwrap().push(entry.into());
}

fn key_pair() -> (KeyShare, KeyShare) {
    let (a, b, _) = run_pair(
        &mut OsRng,
        &mut Dkg::new(Role::A, b"hooks"),
        &mut Dkg::new(Role::B, b"hooks"),
    )
    .unwrap();
    (a, b)
}

const BANNED: Rejection = Rejection::application(4102, "key banned");

/// Hooks that log what they see; the guard logs its release.
struct Recording {
    log: Log,
    steps: usize,
    /// The `before_step` call (1-based) that refuses.
    refuse_at: Option<usize>,
    cancel: Arc<Notify>,
}

impl Recording {
    fn new(log: &Log) -> Self {
        Self {
            log: Arc::clone(log),
            steps: 0,
            refuse_at: None,
            cancel: Arc::new(Notify::new()),
        }
    }
}

struct Released(Log);

impl Drop for Released {
    fn drop(&mut self) {
        push(&self.0, "release");
    }
}

impl<P> SessionHooks<P> for Recording {
    type Guard = Released;

    fn before_step(&mut self) -> impl Future<Output = Result<Released, Rejection>> + Send {
        self.steps += 1;
        let refused = self.refuse_at == Some(self.steps);
        push(&self.log, if refused { "refuse" } else { "step" });
        let log = Arc::clone(&self.log);
        std::future::ready(if refused {
            Err(BANNED)
        } else {
            Ok(Released(log))
        })
    }

    fn before_send(&mut self, _: &P) -> impl Future<Output = Result<(), Rejection>> + Send {
        push(&self.log, "send");
        std::future::ready(Ok(()))
    }

    async fn on_protocol_error(&mut self, _guard: Released, error: &mpc_core::Error) {
        // The guard is held to the end of this call (it logs its release).
        // Slow on purpose: an outcome sent before this finished would be
        // seen by the client first.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        push(&self.log, format!("failed {:?}", error.class()));
    }

    async fn cancelled(&mut self) -> Rejection {
        self.cancel.notified().await;
        BANNED
    }
}

/// A server for one session, running the server side of signing with
/// `hooks`.
async fn serve_one(
    share: KeyShare,
    mut hooks: Recording,
    config: TransportConfig,
) -> (String, tokio::task::JoinHandle<Result<(), TransportError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (socket, ()) = accept(stream, &config, |_| Ok(())).await.unwrap();
        serve(socket, config, |mut session: ServerSession<_>| async move {
            let Operation::Sign { prehash, .. } = session.opening().operation.clone() else {
                panic!("expected a signing opening");
            };
            let mut sign = Sign::new(&share, prehash);
            session
                .run_hooked(&mut sign, &mut OsRng, &mut hooks)
                .await?;
            session.finish().await
        })
        .await
    });
    (url, task)
}

fn opening(share: &KeyShare) -> Opening {
    Opening::new(
        Operation::Sign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            prehash: Prehash::sha256(b"hooks"),
            path: DerivationPath::root(),
        },
        &mut OsRng,
    )
}

/// The client's socket: flips the last byte of its `flip`-th protocol
/// message (0: none) and logs when it receives the server's outcome.
struct ClientSide<F> {
    inner: F,
    flip: usize,
    sent: usize,
    log: Log,
}

impl<F: Frames> Frames for ClientSide<F> {
    async fn send_binary(&mut self, mut data: Vec<u8>) -> Result<(), FrameError> {
        if data.first() == Some(&FrameKind::Message.as_u8()) {
            self.sent += 1;
            if self.sent == self.flip {
                *data.last_mut().unwrap() ^= 1;
            }
        }
        self.inner.send_binary(data).await
    }

    async fn send_ping(&mut self) -> Result<(), FrameError> {
        self.inner.send_ping().await
    }

    async fn recv(&mut self) -> Option<Result<Incoming, FrameError>> {
        let incoming = self.inner.recv().await;
        if let Some(Ok(Incoming::Binary(data))) = &incoming {
            if data.first() == Some(&FrameKind::Outcome.as_u8()) {
                push(&self.log, "client got the outcome");
            }
        }
        incoming
    }

    async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner.flush().await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), FrameError> {
        self.inner.close(code, reason).await
    }
}

async fn client_side(url: &str, flip: usize, log: &Log) -> ClientSide<impl Frames> {
    let client = mpc_transport_ws::Client::new(url).with_config(test_config());
    ClientSide {
        inner: client.connect().await.unwrap(),
        flip,
        sent: 0,
        log: Arc::clone(log),
    }
}

/// The guard is taken before `start` and before each `handle`, is held
/// through the hook before the message leaves, and is released before the
/// next wait: a step never runs outside it.
#[tokio::test]
async fn each_step_runs_under_its_guard() {
    bounded(async {
        let (a, b) = key_pair();
        let log = Log::default();
        let (url, server) = serve_one(b, Recording::new(&log), test_config()).await;
        let frames = client_side(&url, 0, &log).await;
        let opening = opening(&a);
        let mut sign = Sign::new(&a, Prehash::sha256(b"hooks"));
        let out = run_client(frames, &opening, &mut sign, &mut OsRng, &test_config())
            .await
            .unwrap();
        verify_with_libsecp(&a.public_key(), &Prehash::sha256(b"hooks"), &out.0);
        server.await.unwrap().unwrap();
        let log = log.lock().unwrap().clone();
        // start and rounds 1-3 each send; round 4 finishes.
        let mut want = Vec::new();
        for _ in 0..4 {
            want.extend(["step", "send", "release"]);
        }
        want.extend(["step", "release", "client got the outcome"]);
        assert_eq!(log, want);
    })
    .await;
}

/// A refusal from `before_step` ends the session with its code before the
/// step runs: nothing is sent for that message.
#[tokio::test]
async fn a_refused_step_ends_the_session_with_its_code() {
    bounded(async {
        let (a, b) = key_pair();
        let log = Log::default();
        let mut hooks = Recording::new(&log);
        hooks.refuse_at = Some(3);
        let (url, server) = serve_one(b, hooks, test_config()).await;
        let frames = client_side(&url, 0, &log).await;
        let mut sign = Sign::new(&a, Prehash::sha256(b"hooks"));
        let error = run_client(frames, &opening(&a), &mut sign, &mut OsRng, &test_config())
            .await
            .unwrap_err();
        assert_eq!(error.close_code(), Some(CloseCode(4102)), "{error:?}");
        assert_eq!(
            server.await.unwrap(),
            Err(TransportError::Rejected {
                code: CloseCode(4102),
                reason: "key banned"
            })
        );
        let log = log.lock().unwrap().clone();
        let mut want = Vec::new();
        for _ in 0..2 {
            want.extend(["step", "send", "release"]);
        }
        want.extend(["refuse", "client got the outcome"]);
        assert_eq!(log, want);
    })
    .await;
}

/// After a ban-class failure the handler's work runs under the step's
/// guard and finishes before the failed outcome reaches the client.
#[tokio::test]
async fn failure_work_is_done_before_the_outcome_leaves() {
    bounded(async {
        let (a, b) = key_pair();
        let log = Log::default();
        let (url, server) = serve_one(b, Recording::new(&log), test_config()).await;
        // Message 2 is the OT extension message: a flipped byte fails the
        // server's consistency check, a ban-class error.
        let frames = client_side(&url, 2, &log).await;
        let mut sign = Sign::new(&a, Prehash::sha256(b"hooks"));
        let error = run_client(frames, &opening(&a), &mut sign, &mut OsRng, &test_config())
            .await
            .unwrap_err();
        assert_eq!(
            error.close_code(),
            Some(CloseCode::PROTOCOL_BAN),
            "{error:?}"
        );
        let server = server.await.unwrap().unwrap_err();
        assert!(server.is_ban(), "{server:?}");
        let log = log.lock().unwrap().clone();
        let failed = format!("failed {:?}", AbortClass::Ban);
        let want = [
            "step",
            "send",
            "release",
            "step",
            "send",
            "release",
            "step",
            failed.as_str(),
            "release",
            "client got the outcome",
        ];
        assert_eq!(log, want);
    })
    .await;
}

/// A session parked while waiting for the peer ends with the rejection of
/// `cancelled` as soon as it completes, and sends no further message.
#[tokio::test]
async fn a_parked_session_is_cancelled() {
    bounded(async {
        let (a, b) = key_pair();
        let log = Log::default();
        let hooks = Recording::new(&log);
        let cancel = Arc::clone(&hooks.cancel);
        // Long timeouts: only the cancellation can end the session early.
        let mut config = test_config();
        config.message_timeout = std::time::Duration::from_secs(20);
        config.session_timeout = std::time::Duration::from_secs(25);
        config.ping_interval = None;
        let (url, server) = serve_one(b, hooks, config).await;
        let mut socket = raw_connect(&url).await;
        send_binary(
            &mut socket,
            mpc_transport_ws::opening::encode_frame(FrameKind::Opening, &opening(&a).encode()),
        )
        .await;
        // The server's first message: it now waits for ours, parked.
        match socket.next().await {
            Some(Ok(Message::Binary(frame))) => {
                assert!(matches!(
                    decode_frame(&frame),
                    Some((FrameKind::Message, _))
                ));
            }
            other => panic!("{other:?}"),
        }
        cancel.notify_one();
        let ending = read_to_end(&mut socket).await;
        assert_closed_with(&ending, 4102);
        assert_eq!(ending.messages, 0, "a message after the cancellation");
        assert_eq!(
            server.await.unwrap(),
            Err(TransportError::Rejected {
                code: CloseCode(4102),
                reason: "key banned"
            })
        );
    })
    .await;
}
