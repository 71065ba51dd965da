//! Whole sessions between the crate's client and a server built on its
//! server API, over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::*;
use mpc_core::derive::DerivationPath;
use mpc_core::sign::ClaimSet;
use mpc_core::wire::Role;
use mpc_core::{Dkg, Prehash, Sign};
use mpc_transport_ws::{run_client, run_protocol, CloseCode, Opening, Operation, TransportError};
use rand_core::OsRng;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_sign_presign_online_sign() {
    bounded(async {
        let mut server = TestServer::start(test_config(), Fault::None).await;
        let client = server.client(test_config());

        let share = client.keygen().await.unwrap();
        assert_eq!(server.next_result().await, Ok("keygen"));
        let server_share = server
            .store
            .share(share.key_id())
            .expect("server stored its share");
        assert_eq!(server_share.public_key(), share.public_key());
        assert_eq!(share.role(), Role::A);
        assert_eq!(server_share.role(), Role::B);

        let prehash = Prehash::sha256(b"over a websocket");
        let signed = client.sign(&share, prehash).await.unwrap();
        assert_eq!(server.next_result().await, Ok("sign"));
        verify_with_libsecp(&share.public_key(), &prehash, &signed);

        let presignature = client.presign(&share).await.unwrap();
        assert_eq!(server.next_result().await, Ok("presign"));
        let sid = presignature.session_id();
        assert!(server
            .store
            .presignatures
            .lock()
            .unwrap()
            .contains_key(&sid.0));

        let prehash = Prehash::sha256(b"presigned");
        let signed = client
            .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        assert_eq!(server.next_result().await, Ok("online-sign"));
        verify_with_libsecp(&share.public_key(), &prehash, &signed);
        // The server's half was used once and is gone.
        assert!(server.store.presignatures.lock().unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_driver_over_raw_sockets() {
    // The bare loop on both sides, no opening or outcome: any protocol, any
    // `Frames`.
    bounded(async {
        let config = test_config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server_config = config.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            let mut dkg = Dkg::new(Role::B, b"raw");
            run_protocol(&mut socket, &mut dkg, &mut OsRng, &server_config).await
        });
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut dkg = Dkg::new(Role::A, b"raw");
        let a = run_protocol(&mut socket, &mut dkg, &mut OsRng, &config)
            .await
            .unwrap();
        let b = server.await.unwrap().unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.key_id(), b.key_id());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_counted() {
    bounded(async {
        let mut server = TestServer::start(test_config(), Fault::None).await;
        let client = server.client(test_config());
        let (share, traffic) = client
            .run(Operation::Keygen, |opening| {
                Dkg::new(Role::A, opening.context())
            })
            .await
            .unwrap();
        server.next_result().await.unwrap();
        // Opening, four rounds, outcome; four rounds and the outcome back.
        assert_eq!(traffic.frames_sent, 6);
        assert_eq!(traffic.frames_received, 5);
        assert!(traffic.bytes_sent > 22_000, "{traffic:?}");
        drop(share);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_token_is_refused_at_upgrade() {
    bounded(async {
        let server = TestServer::start(test_config(), Fault::None).await;
        let wrong = mpc_transport_ws::Client::new(server.url.clone())
            .with_bearer_token("not-the-token")
            .with_config(test_config());
        assert_eq!(
            wrong.keygen().await.unwrap_err(),
            TransportError::UpgradeRefused { status: 401 }
        );
        let none = mpc_transport_ws::Client::new(server.url.clone()).with_config(test_config());
        assert_eq!(
            none.keygen().await.unwrap_err(),
            TransportError::UpgradeRefused { status: 401 }
        );
        // The token never shows in Debug output.
        assert!(!format!("{wrong:?}").contains("not-the-token"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_rejected_as_unsupported() {
    bounded(async {
        let mut server = TestServer::start(test_config(), Fault::None).await;
        let client = server.client(test_config());
        let share = local_key(&server.store);
        let operation = Operation::Refresh {
            key_id: *share.key_id(),
            epoch: share.epoch(),
        };
        // No refresh protocol yet: any protocol stands in for the client's
        // side; the server rejects the opening before it matters.
        let err = client
            .run(operation, |opening| Dkg::new(Role::A, opening.context()))
            .await
            .unwrap_err();
        match err {
            TransportError::RejectedByPeer { code, reason, .. } => {
                assert_eq!(code, CloseCode::UNSUPPORTED_OPERATION);
                assert_eq!(reason, "unsupported operation");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            server.next_result().await,
            Err(TransportError::Rejected {
                code: CloseCode::UNSUPPORTED_OPERATION,
                reason: "unsupported operation"
            })
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_not_found() {
    bounded(async {
        let mut server = TestServer::start(test_config(), Fault::None).await;
        let client = server.client(test_config());
        // A key of which the server holds no share.
        let share = local_key(&Default::default());
        let err = client
            .sign(&share, Prehash::sha256(b"x"))
            .await
            .unwrap_err();
        assert_eq!(err.close_code(), Some(CloseCode::NOT_FOUND));
        assert!(matches!(
            server.next_result().await,
            Err(TransportError::Rejected { .. })
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_frame_is_ignored_and_the_session_goes_on() {
    bounded(async {
        let mut config = test_config();
        config.max_ignored_frames = 1;
        let mut server = TestServer::start(config.clone(), Fault::None).await;
        let client = server.client(config.clone());
        // After the opening and the first round, a message of another
        // session reaches the server, which drops it.
        let socket = client.connect().await.unwrap();
        let frames = Faulty::new(socket, Fault::None).inject_after(2, foreign_message());
        let opening = Opening::new(Operation::Keygen, &mut OsRng);
        let mut dkg = Dkg::new(Role::A, opening.context());
        let (share, _) = run_client(frames, &opening, &mut dkg, &mut OsRng, &config)
            .await
            .unwrap();
        assert_eq!(server.next_result().await, Ok("keygen"));
        assert!(server.store.share(share.key_id()).is_some());

        // And it also works when the stray frame arrives in the outcome
        // phase of a signing session.
        let prehash = Prehash::sha256(b"stray");
        let socket = client.connect().await.unwrap();
        let frames = Faulty::new(socket, Fault::None).inject_after(5, foreign_message());
        let opening = Opening::new(
            Operation::Sign {
                key_id: *share.key_id(),
                epoch: share.epoch(),
                prehash,
                path: DerivationPath::root(),
            },
            &mut OsRng,
        );
        let (signed, _) = run_client(
            frames,
            &opening,
            &mut Sign::new(&share, prehash),
            &mut OsRng,
            &config,
        )
        .await
        .unwrap();
        verify_with_libsecp(&share.public_key(), &prehash, &signed);
        assert_eq!(server.next_result().await, Ok("sign"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_under_a_derivation_path() {
    bounded(async {
        let mut server = TestServer::start(test_config(), Fault::None).await;
        let client = server.client(test_config());
        let share = client.keygen().await.unwrap();
        server.next_result().await.unwrap();
        let path: DerivationPath = "m/44/60/0/0/7".parse().unwrap();
        let (child, _) = share.derive(&path).unwrap();
        assert_ne!(child, share.public_key());

        let prehash = Prehash::sha256(b"child key");
        let signed = client.sign_with_path(&share, prehash, &path).await.unwrap();
        assert_eq!(server.next_result().await, Ok("sign"));
        verify_with_libsecp(&child, &prehash, &signed);

        let presignature = client.presign_with_path(&share, &path).await.unwrap();
        assert_eq!(server.next_result().await, Ok("presign"));
        let signed = client
            .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        assert_eq!(server.next_result().await, Ok("online-sign"));
        verify_with_libsecp(&child, &prehash, &signed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_before_each_message_and_can_stop_the_session() {
    use mpc_transport_ws::server::accept;
    use mpc_transport_ws::{run_client_with, serve, Rejection};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    bounded(async {
        let config = test_config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        // A server whose hook fails before its third message (as if storage
        // failed).
        let server_calls = Arc::new(AtomicUsize::new(0));
        let calls = server_calls.clone();
        let server_config = config.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (socket, ()) = accept(stream, &server_config, |_| Ok(())).await.unwrap();
            serve(socket, server_config, |mut session| async move {
                let mut dkg = Dkg::new(Role::B, session.opening().context());
                let mut hook = |_: &Dkg| {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        if n == 3 {
                            Err(Rejection::INTERNAL)
                        } else {
                            Ok(())
                        }
                    }
                };
                session.run_with(&mut dkg, &mut OsRng, &mut hook).await?;
                session.finish().await
            })
            .await
        });

        let client = mpc_transport_ws::Client::new(url).with_config(config.clone());
        let socket = client.connect().await.unwrap();
        let opening = Opening::new(Operation::Keygen, &mut OsRng);
        let mut dkg = Dkg::new(Role::A, opening.context());
        let mut client_calls = 0;
        let mut hook = |_: &Dkg| {
            client_calls += 1;
            std::future::ready(Ok(()))
        };
        let err = run_client_with(socket, &opening, &mut dkg, &mut OsRng, &config, &mut hook)
            .await
            .unwrap_err();
        match err {
            TransportError::RejectedByPeer { code, reason, .. } => {
                assert_eq!(code, CloseCode::INTERNAL_ERROR);
                assert_eq!(reason, "internal error");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            server.await.unwrap(),
            Err(TransportError::Rejected {
                code: CloseCode::INTERNAL_ERROR,
                reason: "internal error"
            })
        );
        assert_eq!(server_calls.load(Ordering::SeqCst), 3);
        // The client's hook ran before each of its messages so far (at
        // least rounds 1 and 2, at most all four).
        assert!((2..=4).contains(&client_calls), "{client_calls}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_runs_over_the_driver_with_a_persisting_hook() {
    // The test server refuses refresh, but the driver runs it: both sides
    // persist the new share when it is ready and note confirmation before
    // the next message leaves (PROTOCOL.md §18).
    use mpc_core::{KeyShare, Refresh};
    use mpc_transport_ws::server::accept;
    use mpc_transport_ws::{run_client_with, serve, Rejection};

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Saved {
        ready: Option<usize>,
        confirmed: Option<usize>,
        calls: usize,
    }

    fn hook<'a>(
        saved: &'a mut Saved,
    ) -> impl FnMut(&Refresh<'_>) -> std::future::Ready<Result<(), Rejection>> + 'a {
        move |refresh: &Refresh<'_>| {
            saved.calls += 1;
            if saved.ready.is_none() && refresh.ready_share().is_some() {
                // Storage would write `refresh.ready_share()` here.
                saved.ready = Some(saved.calls);
            }
            if saved.confirmed.is_none() && refresh.is_confirmed() {
                saved.confirmed = Some(saved.calls);
            }
            std::future::ready(Ok(()))
        }
    }

    bounded(async {
        let config = test_config();
        let (a, b, _) = mpc_core::local::run_pair(
            &mut OsRng,
            &mut Dkg::new(Role::A, b"refresh"),
            &mut Dkg::new(Role::B, b"refresh"),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server_config = config.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (socket, ()) = accept(stream, &server_config, |_| Ok(())).await.unwrap();
            serve(socket, server_config, |mut session| async move {
                let context = session.opening().context().to_vec();
                let mut refresh = Refresh::new(&b, &context);
                let mut saved = Saved::default();
                let new = session
                    .run_with(&mut refresh, &mut OsRng, &mut hook(&mut saved))
                    .await?;
                session.finish().await?;
                Ok((new, saved))
            })
            .await
        });

        let client = mpc_transport_ws::Client::new(url).with_config(config.clone());
        let socket = client.connect().await.unwrap();
        let opening = Opening::new(
            Operation::Refresh {
                key_id: *a.key_id(),
                epoch: a.epoch(),
            },
            &mut OsRng,
        );
        let mut refresh = Refresh::new(&a, opening.context());
        let mut saved = Saved::default();
        let (new_a, _) = run_client_with(
            socket,
            &opening,
            &mut refresh,
            &mut OsRng,
            &config,
            &mut hook(&mut saved),
        )
        .await
        .unwrap();
        let (new_b, server_saved): (KeyShare, Saved) = server.await.unwrap().unwrap();

        for saved in [&saved, &server_saved] {
            // Five messages; ready before the fourth leaves, confirmed before
            // the fifth.
            assert_eq!(saved.calls, 5, "{saved:?}");
            assert_eq!(saved.ready, Some(4), "{saved:?}");
            assert_eq!(saved.confirmed, Some(5), "{saved:?}");
        }
        assert_eq!(new_a.epoch(), a.epoch() + 1);
        assert_eq!(new_a.public_key(), a.public_key());
        assert_eq!(new_b.public_key(), a.public_key());
        assert_eq!(new_b.epoch(), new_a.epoch());
        let prehash = Prehash::sha256(b"after refresh");
        let (signed, _, _) = mpc_core::local::run_pair(
            &mut OsRng,
            &mut Sign::new(&new_a, prehash),
            &mut Sign::new(&new_b, prehash),
        )
        .unwrap();
        verify_with_libsecp(&a.public_key(), &prehash, &signed);
    })
    .await;
}

/// Counts the protocol steps running at once, and the most seen.
#[derive(Default)]
struct StepGauge {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    steps: std::sync::atomic::AtomicUsize,
}

impl StepGauge {
    /// Runs `step`, counted. Before it, waits (at most 100 ms) for another
    /// step to start alongside, so that an executor that lets steps
    /// overlap is seen doing it.
    fn during<T>(&self, step: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        self.steps.fetch_add(1, SeqCst);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(100);
        while self.running.load(SeqCst) < 2 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let output = step();
        self.running.fetch_sub(1, SeqCst);
        output
    }
}

/// A protocol whose steps are counted by a [`StepGauge`].
struct Counted<P> {
    inner: P,
    gauge: std::sync::Arc<StepGauge>,
}

impl<P: mpc_core::Protocol> mpc_core::Protocol for Counted<P> {
    type Output = P::Output;

    fn start<R: rand_core::CryptoRngCore>(
        &mut self,
        rng: &mut R,
    ) -> Result<Vec<u8>, mpc_core::Error> {
        let inner = &mut self.inner;
        self.gauge.during(|| inner.start(rng))
    }

    fn handle<R: rand_core::CryptoRngCore>(
        &mut self,
        rng: &mut R,
        incoming: &[u8],
    ) -> Result<mpc_core::Step<P::Output>, mpc_core::Error> {
        let inner = &mut self.inner;
        self.gauge.during(|| inner.handle(rng, incoming))
    }
}

/// `sessions` concurrent signing sessions against a server whose steps run
/// in a compute pool of `threads`: each signature verifies; returns the
/// gauge of the server's steps.
async fn sign_concurrently_in_pool(threads: usize, sessions: usize) -> std::sync::Arc<StepGauge> {
    use mpc_transport_ws::{serve, server::accept, ComputePool, StepExecutor};
    let (client_share, server_share, _) = mpc_core::local::run_pair(
        &mut OsRng,
        &mut Dkg::new(Role::A, b"pool"),
        &mut Dkg::new(Role::B, b"pool"),
    )
    .unwrap();
    let server_share = std::sync::Arc::new(server_share);
    let mut config = test_config();
    // Steps wait their turn: generous limits, not the subject here.
    config.message_timeout = std::time::Duration::from_secs(15);
    config.session_timeout = std::time::Duration::from_secs(25);
    let mut server_config = config.clone();
    server_config.step_executor = StepExecutor::Pool(ComputePool::new(threads));
    let gauge = std::sync::Arc::new(StepGauge::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = {
        let gauge = std::sync::Arc::clone(&gauge);
        tokio::spawn(async move {
            let mut sessions_done = Vec::new();
            for _ in 0..sessions {
                let (stream, _) = listener.accept().await.unwrap();
                let (config, share, gauge) = (
                    server_config.clone(),
                    std::sync::Arc::clone(&server_share),
                    std::sync::Arc::clone(&gauge),
                );
                sessions_done.push(tokio::spawn(async move {
                    let (socket, ()) = accept(stream, &config, |_| Ok(())).await?;
                    serve(socket, config, |mut session| async move {
                        let Operation::Sign { prehash, .. } = session.opening().operation.clone()
                        else {
                            panic!("expected a signing opening");
                        };
                        let mut sign = Counted {
                            inner: Sign::new(&share, prehash),
                            gauge,
                        };
                        session.run(&mut sign, &mut OsRng).await?;
                        session.finish().await
                    })
                    .await
                }));
            }
            for done in sessions_done {
                done.await.unwrap().unwrap();
            }
        })
    };
    let signs = (0..sessions).map(|i| {
        let client = mpc_transport_ws::Client::new(url.clone()).with_config(config.clone());
        let share = &client_share;
        async move {
            let prehash = Prehash::sha256(format!("pool {i}").as_bytes());
            let signed = client.sign(share, prehash).await.unwrap();
            verify_with_libsecp(&share.public_key(), &prehash, &signed);
        }
    });
    futures_util::future::join_all(signs).await;
    server.await.unwrap();
    gauge
}

/// With a compute pool of one, concurrent sessions all complete and their
/// steps never overlap (each step gives another the chance to start
/// alongside; the control below shows that a pool of two does overlap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_one_runs_one_step_at_a_time() {
    bounded(async {
        let sessions = 4;
        let gauge = sign_concurrently_in_pool(1, sessions).await;
        let steps = gauge.steps.load(std::sync::atomic::Ordering::SeqCst);
        assert!(steps > sessions, "{steps} steps");
        assert_eq!(gauge.most.load(std::sync::atomic::Ordering::SeqCst), 1);
    })
    .await;
}

/// The control: a pool of two lets two steps run at once, and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_two_runs_two_steps_at_once() {
    bounded(async {
        let gauge = sign_concurrently_in_pool(2, 6).await;
        assert_eq!(gauge.most.load(std::sync::atomic::Ordering::SeqCst), 2);
    })
    .await;
}
