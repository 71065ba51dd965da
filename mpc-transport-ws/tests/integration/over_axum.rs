//! The same server handler behind an axum route (`--features axum`).
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::SinkExt;
use mpc_core::sign::ClaimSet;
use mpc_core::Prehash;
use mpc_transport_ws::opening::{encode_frame, FrameKind};
use mpc_transport_ws::server::bearer_token;
use mpc_transport_ws::{serve, CloseCode, Operation, TransportConfig, TransportError};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone)]
struct App {
    config: TransportConfig,
    store: Arc<Store>,
    results: mpsc::UnboundedSender<ServerResult>,
}

async fn session(ws: WebSocketUpgrade, headers: HeaderMap, State(app): State<App>) -> Response {
    if bearer_token(&headers) != Some(TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let App {
        config,
        store,
        results,
    } = app;
    ws.max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            let result = serve(socket, config, |session| handle(session, store)).await;
            let _ = results.send(result);
        })
}

async fn start(
    config: TransportConfig,
) -> (String, Arc<Store>, mpsc::UnboundedReceiver<ServerResult>) {
    let store = Arc::new(Store::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/v1/session", get(session))
        .with_state(App {
            config,
            store: store.clone(),
            results: tx,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/session", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, store, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_through_an_axum_route() {
    bounded(async {
        let (url, store, mut results) = start(test_config()).await;
        let client = mpc_transport_ws::Client::new(url.clone())
            .with_bearer_token(TOKEN)
            .with_config(test_config());
        let share = client.keygen().await.unwrap();
        assert_eq!(results.recv().await.unwrap(), Ok("keygen"));
        assert!(store.share(share.key_id()).is_some());

        let prehash = Prehash::sha256(b"axum");
        let signed = client.sign(&share, prehash).await.unwrap();
        assert_eq!(results.recv().await.unwrap(), Ok("sign"));
        verify_with_libsecp(&share.public_key(), &prehash, &signed);

        let presignature = client.presign(&share).await.unwrap();
        assert_eq!(results.recv().await.unwrap(), Ok("presign"));
        let signed = client
            .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        assert_eq!(results.recv().await.unwrap(), Ok("online-sign"));
        verify_with_libsecp(&share.public_key(), &prehash, &signed);

        let wrong = mpc_transport_ws::Client::new(url).with_config(test_config());
        assert_eq!(
            wrong.keygen().await.unwrap_err(),
            TransportError::UpgradeRefused { status: 401 }
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_sockets_close_with_the_documented_codes() {
    bounded(async {
        let mut config = test_config();
        config.max_frame_bytes = 8 * 1024;
        let (url, _store, mut results) = start(config).await;

        let mut socket = raw_connect(&url).await;
        send_binary(&mut socket, opening_frame(Operation::Keygen)).await;
        socket.send(Message::Text("hello".into())).await.unwrap();
        assert_closed_with(&read_to_end(&mut socket).await, 1008);
        assert_eq!(
            results.recv().await.unwrap(),
            Err(TransportError::Violation {
                code: CloseCode::POLICY_VIOLATION,
                reason: "text frame"
            })
        );

        let mut socket = raw_connect(&url).await;
        send_binary(&mut socket, opening_frame(Operation::Keygen)).await;
        let big = encode_frame(FrameKind::Message, &[0; 10 * 1024]);
        send_binary(&mut socket, big).await;
        assert_closed_with(&read_to_end(&mut socket).await, 1009);
        assert_eq!(
            results.recv().await.unwrap(),
            Err(TransportError::Violation {
                code: CloseCode::MESSAGE_TOO_BIG,
                reason: "message too big"
            })
        );

        // A client that vanishes.
        let socket = raw_connect(&url).await;
        drop(socket);
        assert_eq!(results.recv().await.unwrap(), Err(TransportError::Closed));
    })
    .await;
}
