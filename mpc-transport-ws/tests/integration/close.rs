//! The closing handshake after both outcomes decides the client's result
//! (PROTOCOL.md §18.3): the client's operation succeeds only on the
//! server's normal close (1000), which the server sends only once the work
//! the client's outcome confirmed (e.g. activating a new key) is done. Each
//! test breaks the end of a keygen in one way and checks that the client
//! reports failure, never a key the server may not keep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare};
use mpc_transport_ws::frames::{FrameError, Frames, Incoming};
use mpc_transport_ws::server::{accept, bearer_token, HttpRejection};
use mpc_transport_ws::{
    serve, CloseCode, Phase, Rejection, TimeoutKind, TransportConfig, TransportError,
};
use rand_core::OsRng;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the server's socket does with its closing frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AtClose {
    /// Sends it.
    Honest,
    /// Drops the connection instead (the close frame is lost).
    Vanish,
    /// Sends 1001 instead of its code.
    GoingAway,
    /// Sends a protocol message frame first.
    FrameFirst,
}

/// A server socket that misbehaves only when it closes.
struct Closing<F> {
    inner: Option<F>,
    at_close: AtClose,
}

impl<F: Frames> Closing<F> {
    fn inner(&mut self) -> Result<&mut F, FrameError> {
        self.inner.as_mut().ok_or(FrameError::Closed)
    }
}

impl<F: Frames> Frames for Closing<F> {
    async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), FrameError> {
        self.inner()?.send_binary(data).await
    }

    async fn send_ping(&mut self) -> Result<(), FrameError> {
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
        match self.at_close {
            AtClose::Honest => self.inner()?.close(code, reason).await,
            AtClose::Vanish => {
                // Dropping the socket ends TCP without a close frame.
                self.inner = None;
                Ok(())
            }
            AtClose::GoingAway => self.inner()?.close(1001, "going away").await,
            AtClose::FrameFirst => {
                self.inner()?.send_binary(foreign_message()).await?;
                self.inner()?.close(code, reason).await
            }
        }
    }
}

/// A server for one keygen whose socket closes as `at_close` says and whose
/// handler runs `confirmed` between the outcomes and the close. Returns the
/// URL and the server's result.
async fn keygen_server<C, Fut>(
    at_close: AtClose,
    confirmed: C,
) -> (String, JoinHandle<Result<(), TransportError>>)
where
    C: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Rejection>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/session", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let config = test_config();
        let (stream, _) = listener.accept().await.unwrap();
        let (socket, ()) = accept(stream, &config, |request| {
            (bearer_token(request.headers()) == Some(TOKEN))
                .then_some(())
                .ok_or(HttpRejection::UNAUTHORIZED)
        })
        .await?;
        let frames = Closing {
            inner: Some(socket),
            at_close,
        };
        serve(frames, config, |mut session| async move {
            let mut dkg = Dkg::new(Role::B, session.opening().context());
            session.run(&mut dkg, &mut OsRng).await?;
            session.finish_with(confirmed()).await
        })
        .await
    });
    (url, task)
}

async fn keygen(url: &str, config: TransportConfig) -> Result<KeyShare, TransportError> {
    mpc_transport_ws::Client::new(url)
        .with_bearer_token(TOKEN)
        .with_config(config)
        .keygen()
        .await
}

/// The honest end: the client returns only after the server's work is
/// done, so it observes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_succeeds_only_after_the_confirmed_work() {
    bounded(async {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let (url, server) = keygen_server(AtClose::Honest, move || async move {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await;
        keygen(&url, test_config()).await.unwrap();
        assert!(done.load(Ordering::SeqCst));
        server.await.unwrap().unwrap();
    })
    .await;
}

/// The server could not complete what the client's outcome confirmed (e.g.
/// activating the key failed): it closes with the failure's code instead
/// of 1000, without a second outcome, and the client's keygen fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_confirmation_fails_the_client() {
    bounded(async {
        let (url, server) =
            keygen_server(AtClose::Honest, || async { Err(Rejection::INTERNAL) }).await;
        let error = keygen(&url, test_config()).await.unwrap_err();
        assert!(
            matches!(
                &error,
                TransportError::RejectedByPeer { code, class: None, .. }
                    if *code == CloseCode::INTERNAL_ERROR
            ),
            "{error:?}"
        );
        assert_eq!(
            server.await.unwrap(),
            Err(TransportError::Rejected {
                code: CloseCode::INTERNAL_ERROR,
                reason: "internal error",
            })
        );
    })
    .await;
}

/// Both outcomes were Ok but the close frame is lost (the connection ends
/// without one): the client cannot know that the server finished, so it
/// fails (the safe direction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_close_fails_the_client() {
    bounded(async {
        let (url, server) = keygen_server(AtClose::Vanish, || async { Ok(()) }).await;
        let error = keygen(&url, test_config()).await.unwrap_err();
        assert_eq!(error, TransportError::Closed);
        server.await.unwrap().unwrap();
    })
    .await;
}

/// Any close code but 1000 after the outcomes fails the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abnormal_close_fails_the_client() {
    bounded(async {
        let (url, server) = keygen_server(AtClose::GoingAway, || async { Ok(()) }).await;
        let error = keygen(&url, test_config()).await.unwrap_err();
        assert_eq!(error.close_code(), Some(CloseCode::GOING_AWAY), "{error:?}");
        server.await.unwrap().unwrap();
    })
    .await;
}

/// The server's confirmation is still running when the client's close
/// timeout expires: the client fails with a close timeout (and tells the
/// server with 4004). The confirmation is held until the client has
/// returned, so the order is certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_close_within_the_close_timeout_fails_the_client() {
    bounded(async {
        let (release, released) = oneshot::channel::<()>();
        let (url, server) = keygen_server(AtClose::Honest, move || async move {
            let _ = released.await;
            Ok(())
        })
        .await;
        let error = keygen(&url, test_config()).await.unwrap_err();
        assert_eq!(
            error,
            TransportError::Timeout {
                phase: Phase::Close,
                limit: TimeoutKind::Close,
            }
        );
        assert_eq!(error.close_code(), Some(CloseCode::TIMEOUT));
        release.send(()).unwrap();
        // The server finishes its side whatever the client did.
        let _ = server.await.unwrap();
    })
    .await;
}

/// A frame between the server's outcome and its close breaks the transport
/// rules: the client fails with 1008 rather than skipping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_after_the_outcomes_fails_the_client() {
    bounded(async {
        let (url, server) = keygen_server(AtClose::FrameFirst, || async { Ok(()) }).await;
        let error = keygen(&url, test_config()).await.unwrap_err();
        assert_eq!(
            error,
            TransportError::Violation {
                code: CloseCode::POLICY_VIOLATION,
                reason: "frame after the outcomes",
            }
        );
        let _ = server.await.unwrap();
    })
    .await;
}
