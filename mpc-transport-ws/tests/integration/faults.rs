//! Disconnects, silent and slow peers: both sides end with a clear error,
//! within the configured timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mpc_core::derive::DerivationPath;
use mpc_core::sign::ClaimSet;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, OnlineSign, Prehash, Presign, Protocol, Sign};
use mpc_transport_ws::{
    run_client, CloseCode, Opening, Operation, Phase, TimeoutKind, TransportConfig, TransportError,
};
use rand_core::OsRng;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Op {
    Keygen,
    Sign,
    Presign,
    OnlineSign,
}

const OPS: [Op; 4] = [Op::Keygen, Op::Sign, Op::Presign, Op::OnlineSign];

/// Runs one client session of `op` over `frames`.
async fn run_op(
    op: Op,
    frames: Faulty<RawSocket>,
    share: &KeyShare,
    store: &Store,
    config: &TransportConfig,
) -> Result<(), TransportError> {
    let prehash = Prehash::sha256(b"fault");
    let key_id = *share.key_id();
    match op {
        Op::Keygen => {
            let opening = Opening::new(Operation::Keygen, &mut OsRng);
            let mut p = Dkg::new(Role::A, opening.context());
            run(frames, &opening, &mut p, config).await
        }
        Op::Sign => {
            let path = DerivationPath::root();
            let opening = Opening::new(
                Operation::Sign {
                    key_id,
                    epoch: share.epoch(),
                    prehash,
                    path,
                },
                &mut OsRng,
            );
            run(frames, &opening, &mut Sign::new(share, prehash), config).await
        }
        Op::Presign => {
            let path = DerivationPath::root();
            let opening = Opening::new(
                Operation::Presign {
                    key_id,
                    epoch: share.epoch(),
                    path,
                },
                &mut OsRng,
            );
            run(frames, &opening, &mut Presign::new(share), config).await
        }
        Op::OnlineSign => {
            // A presignature pair made in-process; the server's half goes
            // into its store.
            let (a, b, _) = mpc_core::local::run_pair(
                &mut OsRng,
                &mut Presign::new(share),
                &mut Presign::new(&store.share(&key_id).unwrap()),
            )
            .unwrap();
            let sid = a.session_id();
            store.presignatures.lock().unwrap().insert(sid.0, b);
            let opening = Opening::new(
                Operation::OnlineSign {
                    key_id,
                    presignature: sid,
                    prehash,
                },
                &mut OsRng,
            );
            let mut online = OnlineSign::new(share, a, prehash, &mut ClaimSet::new()).unwrap();
            run(frames, &opening, &mut online, config).await
        }
    }
}

async fn run<P: Protocol>(
    frames: Faulty<RawSocket>,
    opening: &Opening,
    protocol: &mut P,
    config: &TransportConfig,
) -> Result<(), TransportError> {
    run_client(frames, opening, protocol, &mut OsRng, config)
        .await
        .map(|_| ())
}

/// Client frames sent before the cut, per operation: the opening, then
/// part of the rounds (the online step has one message: cut right after the
/// opening).
fn client_cut(op: Op) -> usize {
    match op {
        Op::Keygen | Op::Sign => 3,
        Op::Presign => 2,
        Op::OnlineSign => 1,
    }
}

/// Server frames sent before the cut.
fn server_cut(op: Op) -> usize {
    match op {
        Op::Keygen | Op::Sign => 2,
        Op::Presign => 1,
        Op::OnlineSign => 0,
    }
}

fn assert_disconnected(err: &TransportError, who: &str, op: Op) {
    assert!(
        matches!(err, TransportError::Closed),
        "{who} in {op:?}: expected Closed, got {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_protocol() {
    bounded(async {
        let config = test_config();
        let store = Arc::new(Store::default());
        let mut server =
            TestServer::start_with_store(config.clone(), Fault::None, store.clone()).await;
        let share = local_key(&store);
        let client = server.client(config.clone());
        for op in OPS {
            let started = Instant::now();
            let socket = client.connect().await.unwrap();
            let frames = Faulty::new(socket, Fault::CutAfterSends(client_cut(op)));
            let err = run_op(op, frames, &share, &store, &config)
                .await
                .unwrap_err();
            assert_disconnected(&err, "client", op);
            let err = server.next_result().await.unwrap_err();
            assert_disconnected(&err, "server", op);
            // Noticed at once, not by a timeout.
            assert!(started.elapsed() < config.message_timeout, "{op:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_vanishes_mid_protocol() {
    bounded(async {
        let config = test_config();
        for op in OPS {
            let store = Arc::new(Store::default());
            let fault = Fault::CutAfterSends(server_cut(op));
            let mut server =
                TestServer::start_with_store(config.clone(), fault, store.clone()).await;
            let share = local_key(&store);
            let client = server.client(config.clone());
            let started = Instant::now();
            let socket = client.connect().await.unwrap();
            let frames = Faulty::new(socket, Fault::None);
            let err = run_op(op, frames, &share, &store, &config)
                .await
                .unwrap_err();
            assert_disconnected(&err, "client", op);
            let err = server.next_result().await.unwrap_err();
            assert_disconnected(&err, "server", op);
            assert!(started.elapsed() < config.message_timeout, "{op:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closes_politely_mid_protocol() {
    bounded(async {
        let config = test_config();
        let store = Arc::new(Store::default());
        let mut server =
            TestServer::start_with_store(config.clone(), Fault::None, store.clone()).await;
        let share = local_key(&store);
        let client = server.client(config.clone());
        for op in OPS {
            let socket = client.connect().await.unwrap();
            let frames = Faulty::new(socket, Fault::CloseAfterSends(client_cut(op)));
            let err = run_op(op, frames, &share, &store, &config)
                .await
                .unwrap_err();
            // The client's own close is answered; its session then ends.
            assert!(
                matches!(
                    err,
                    TransportError::RejectedByPeer { .. } | TransportError::Closed
                ),
                "client in {op:?}: {err:?}"
            );
            match server.next_result().await.unwrap_err() {
                TransportError::RejectedByPeer { code, reason, .. } => {
                    assert_eq!(code, CloseCode::GOING_AWAY);
                    assert_eq!(reason, "going away");
                }
                other => panic!("server in {op:?}: {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_is_timed_out() {
    bounded(async {
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(400);
        let mut server = TestServer::start(config.clone(), Fault::Silent).await;
        let client = server.client(config.clone());
        let started = Instant::now();
        let err = client.keygen().await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            err,
            TransportError::Timeout {
                phase: Phase::Protocol,
                limit: TimeoutKind::Message
            }
        );
        assert!(elapsed >= config.message_timeout, "{elapsed:?}");
        assert!(
            elapsed < config.message_timeout + config.close_timeout + Duration::from_millis(500),
            "{elapsed:?}"
        );
        // The server hears the client's 4004 close (or times out itself).
        let err = server.next_result().await.unwrap_err();
        assert_eq!(err.close_code(), Some(CloseCode::TIMEOUT), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_timed_out_mid_protocol() {
    bounded(async {
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(400);
        let mut server = TestServer::start(config.clone(), Fault::None).await;
        // The client waits longer than the server, which times out first.
        let mut client_config = config.clone();
        client_config.message_timeout = Duration::from_secs(3);
        let client = server.client(client_config.clone());
        let socket = client.connect().await.unwrap();
        let frames = Faulty::new(socket, Fault::None);
        let started = Instant::now();
        // Sends the opening and its first round, then nothing.
        let opening = Opening::new(Operation::Keygen, &mut OsRng);
        let mut silent_after_round_one = SilentAfterStart(Dkg::new(Role::A, opening.context()));
        let err = run_client(
            frames,
            &opening,
            &mut silent_after_round_one,
            &mut OsRng,
            &client_config,
        )
        .await
        .unwrap_err();
        assert_eq!(
            server.next_result().await,
            Err(TransportError::Timeout {
                phase: Phase::Protocol,
                limit: TimeoutKind::Message
            })
        );
        match err {
            TransportError::RejectedByPeer { code, reason, .. } => {
                assert_eq!(code, CloseCode::TIMEOUT);
                assert_eq!(reason, "message timeout");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < config.message_timeout * 3);
    })
    .await;
}

/// A protocol that sends its first message and then never answers (its
/// `handle` drops everything as addressed to another round).
struct SilentAfterStart(Dkg);

impl Protocol for SilentAfterStart {
    type Output = ();

    fn start<R: rand_core::CryptoRngCore>(
        &mut self,
        rng: &mut R,
    ) -> mpc_core::error::Result<Vec<u8>> {
        self.0.start(rng)
    }

    fn handle<R: rand_core::CryptoRngCore>(
        &mut self,
        _rng: &mut R,
        _incoming: &[u8],
    ) -> mpc_core::error::Result<mpc_core::Step<()>> {
        Err(mpc_core::Error::WrongRound)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_timed_out_before_its_opening_and_pinged() {
    bounded(async {
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(600);
        config.ping_interval = Some(Duration::from_millis(100));
        let mut server = TestServer::start(config.clone(), Fault::None).await;
        let mut socket = raw_connect(&server.url).await;
        let ending = read_to_end(&mut socket).await;
        assert_closed_with(&ending, 4004);
        assert!(ending.pings >= 3, "keepalive pings: {}", ending.pings);
        assert_eq!(
            server.next_result().await,
            Err(TransportError::Timeout {
                phase: Phase::Opening,
                limit: TimeoutKind::Message
            })
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_hits_the_session_timeout() {
    bounded(async {
        // Every server message comes just within the message timeout, but
        // the session takes too long.
        let mut server_config = test_config();
        server_config.message_timeout = Duration::from_millis(500);
        let mut client_config = server_config.clone();
        client_config.session_timeout = Duration::from_millis(800);
        let mut server =
            TestServer::start(server_config, Fault::DelaySends(Duration::from_millis(300))).await;
        let client = server.client(client_config.clone());
        let started = Instant::now();
        let err = client.keygen().await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            err,
            TransportError::Timeout {
                phase: Phase::Protocol,
                limit: TimeoutKind::Session
            }
        );
        assert!(elapsed >= client_config.session_timeout, "{elapsed:?}");
        assert!(
            elapsed < client_config.session_timeout + client_config.close_timeout * 2,
            "{elapsed:?}"
        );
        let err = server.next_result().await.unwrap_err();
        assert_eq!(err.close_code(), Some(CloseCode::TIMEOUT), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_listener_times_out_the_connect() {
    bounded(async {
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(300);
        // Accepts TCP connections and never answers the upgrade.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = mpc_transport_ws::Client::new(url)
            .with_bearer_token(TOKEN)
            .with_config(config);
        assert_eq!(
            client.keygen().await.unwrap_err(),
            TransportError::Timeout {
                phase: Phase::Connect,
                limit: TimeoutKind::Message
            }
        );
        holder.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_transport_error() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = mpc_transport_ws::Client::new(url).with_config(test_config());
        let err = client.keygen().await.unwrap_err();
        assert!(matches!(err, TransportError::Transport { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered() {
    bounded(async {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(400);
        config.ping_interval = None;
        let mut server = TestServer::start(config.clone(), Fault::None).await;
        let mut socket = raw_connect(&server.url).await;
        send_binary(&mut socket, opening_frame(Operation::Keygen)).await;
        socket.send(Message::Ping(b"hi"[..].into())).await.unwrap();
        let ending = read_to_end(&mut socket).await;
        assert_eq!(ending.pongs, 1);
        assert_eq!(ending.pings, 0);
        // The server's first DKG message, then a timeout (the raw client
        // never answers it).
        assert_eq!(ending.messages, 1);
        assert_closed_with(&ending, 4004);
        assert!(server.next_result().await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_does_not_hold_off_the_timeout() {
    bounded(async {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(400);
        config.close_timeout = Duration::from_millis(300);
        let mut server = TestServer::start(config.clone(), Fault::None).await;
        let mut socket = raw_connect(&server.url).await;
        send_binary(&mut socket, opening_frame(Operation::Keygen)).await;
        let started = Instant::now();
        let flood = tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if socket
                    .send(Message::Ping(Default::default()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let result = server.next_result().await;
        let elapsed = started.elapsed();
        assert_eq!(
            result,
            Err(TransportError::Timeout {
                phase: Phase::Protocol,
                limit: TimeoutKind::Message
            })
        );
        assert!(
            elapsed < config.message_timeout + config.close_timeout + Duration::from_millis(500),
            "{elapsed:?}"
        );
        flood.abort();
    })
    .await;
}
