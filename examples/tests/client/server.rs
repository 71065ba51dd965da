//! The in-process server party of the client test: the server API of
//! `mpc-transport-ws` with keygen, sign and refresh (with injectable
//! faults), and a minimal REST export endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mpc_core::export::export_share;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyId, KeyShare, Refresh, Sign};
use mpc_transport_ws::frames::Frames;
use mpc_transport_ws::server::{accept, bearer_token, HttpRejection};
use mpc_transport_ws::{
    serve, Operation, Rejection, ServerSession, TransportConfig, TransportError,
};
use rand_core::OsRng;
use serde_json::{json, Value};

pub(crate) const TOKEN: &str = "client-test-token-5f0c2a9e71d4";
/// A token with a second-factor claim: the only one the REST export
/// endpoint accepts.
pub(crate) const STEP_UP_TOKEN: &str = "client-test-step-up-token-9b61e3f0";

// ---------------------------------------------------------------------------
// The in-process server party

/// What the server does wrong in a refresh.
pub(crate) const FAULT_NONE: u8 = 0;
/// Fails (1011) when its new share is ready, before its round-4 message.
pub(crate) const FAULT_AT_READY: u8 = 1;
/// Fails (1011) when it is confirmed, before its round-5 message.
pub(crate) const FAULT_AT_CONFIRMED: u8 = 2;

/// What the REST export endpoint does wrong.
pub(crate) const EXPORT_FAULT_NONE: u8 = 0;
/// Answers 500 with a plain-text body.
pub(crate) const EXPORT_FAULT_PLAIN_500: u8 = 1;
/// Flips a bit of the ciphertext.
pub(crate) const EXPORT_FAULT_TAMPER: u8 = 2;

/// The server's shares by key and epoch: it signs with any epoch it holds
/// (PROTOCOL.md §18.1).
#[derive(Default)]
pub(crate) struct Store {
    pub(crate) shares: Mutex<HashMap<(KeyId, u64), Arc<KeyShare>>>,
    refresh_fault: AtomicU8,
    export_fault: AtomicU8,
    /// The one-time keys and epochs of the export requests, in order.
    pub(crate) export_requests: Mutex<Vec<(String, u64)>>,
}

impl Store {
    fn get(&self, key_id: &KeyId, epoch: u64) -> Option<Arc<KeyShare>> {
        self.shares.lock().unwrap().get(&(*key_id, epoch)).cloned()
    }

    fn put(&self, share: KeyShare) {
        self.shares
            .lock()
            .unwrap()
            .insert((*share.key_id(), share.epoch()), Arc::new(share));
    }

    pub(crate) fn epochs(&self, key_id: &KeyId) -> Vec<u64> {
        let mut epochs: Vec<u64> = self
            .shares
            .lock()
            .unwrap()
            .keys()
            .filter(|(k, _)| k == key_id)
            .map(|(_, e)| *e)
            .collect();
        epochs.sort_unstable();
        epochs
    }
}

async fn handle<F: Frames>(
    mut session: ServerSession<F>,
    store: Arc<Store>,
) -> Result<(), TransportError> {
    let opening = session.opening().clone();
    let mut rng = OsRng;
    match opening.operation {
        Operation::Keygen => {
            let mut dkg = Dkg::new(Role::B, opening.context());
            let share = session.run(&mut dkg, &mut rng).await?;
            store.put(share);
        }
        Operation::Sign {
            key_id,
            epoch,
            prehash,
            path,
        } => {
            let Some(share) = store.get(&key_id, epoch) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let Ok(mut sign) = Sign::with_path(&share, prehash, &path) else {
                return Err(session.reject(Rejection::INTERNAL).await);
            };
            session.run(&mut sign, &mut rng).await?;
        }
        Operation::SignSchnorr {
            key_id,
            epoch,
            message,
            path,
            taproot,
        } => {
            let Some(share) = store.get(&key_id, epoch) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let Ok(mut sign) = mpc_core::SignSchnorr::new(&share, &message, &path, taproot) else {
                return Err(session.reject(Rejection::INTERNAL).await);
            };
            session.run(&mut sign, &mut rng).await?;
        }
        Operation::Refresh { key_id, epoch } => {
            let Some(old) = store.get(&key_id, epoch) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let fault = store.refresh_fault.load(Ordering::SeqCst);
            let mut refresh = Refresh::new(&old, opening.context());
            let hook_store = store.clone();
            let mut saved = false;
            let mut hook = move |refresh: &Refresh<'_>| {
                let mut result = Ok(());
                if !saved {
                    if let Some(new) = refresh.ready_share() {
                        // "Ready": keep old and new.
                        hook_store.put(KeyShare::from_bytes(&new.to_bytes()).unwrap());
                        saved = true;
                        if fault == FAULT_AT_READY {
                            result = Err(Rejection::INTERNAL);
                        }
                    }
                }
                if refresh.is_confirmed() && fault == FAULT_AT_CONFIRMED {
                    result = Err(Rejection::INTERNAL);
                }
                std::future::ready(result)
            };
            session.run_with(&mut refresh, &mut rng, &mut hook).await?;
            // "Finalized": the client is confirmed, the old epoch can go.
            store.shares.lock().unwrap().remove(&(key_id, epoch));
        }
        _ => return Err(session.reject(Rejection::UNSUPPORTED_OPERATION).await),
    }
    session.finish().await
}

/// An RFC 9457 problem response.
fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("https://example.invalid/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /v1/keys/{key_id}/export`, as the server's REST API defines it.
async fn export_endpoint(
    State(store): State<Arc<Store>>,
    UrlPath(key_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match bearer_token(&headers) {
        Some(STEP_UP_TOKEN) => {}
        Some(TOKEN) => {
            return problem(
                StatusCode::FORBIDDEN,
                "step_up_required",
                "export needs a token with a second-factor claim",
            )
        }
        _ => return problem(StatusCode::UNAUTHORIZED, "unauthorized", "bad token"),
    }
    let fault = store.export_fault.load(Ordering::SeqCst);
    if fault == EXPORT_FAULT_PLAIN_500 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "something broke").into_response();
    }
    let bad_request = |detail: &str| problem(StatusCode::BAD_REQUEST, "bad_request", detail);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("not JSON");
    };
    let Some(key) = hex::decode(&key_id)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(KeyId)
    else {
        return bad_request("bad key id");
    };
    let (Some(onetime_hex), Some(epoch)) = (
        request["onetime_public_key"].as_str(),
        request["epoch"].as_u64(),
    ) else {
        return bad_request("missing fields");
    };
    let onetime_bytes = hex::decode(onetime_hex).unwrap_or_default();
    let Ok(onetime) = k256::PublicKey::from_sec1_bytes(&onetime_bytes) else {
        return bad_request("bad one-time key");
    };
    // SEC1 compressed, as the contract says.
    assert_eq!(onetime_bytes.len(), 33);
    store
        .export_requests
        .lock()
        .unwrap()
        .push((onetime_hex.to_owned(), epoch));
    let Some(share) = store.get(&key, epoch) else {
        return problem(
            StatusCode::NOT_FOUND,
            "key_not_found",
            "no such key or epoch",
        );
    };
    let mut ciphertext = export_share(&mut OsRng, &share, &onetime)
        .unwrap()
        .to_bytes();
    if fault == EXPORT_FAULT_TAMPER {
        *ciphertext.last_mut().unwrap() ^= 1;
    }
    axum::Json(json!({
        "key_id": key_id,
        "epoch": epoch,
        "ciphertext": hex::encode(ciphertext),
    }))
    .into_response()
}

/// A server party on 127.0.0.1; dropping it stops it.
pub(crate) struct Server {
    pub(crate) url: String,
    /// Base URL of its REST API.
    pub(crate) rest: String,
    pub(crate) store: Arc<Store>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(Store::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = TransportConfig::default();
        config.message_timeout = Duration::from_secs(10);
        config.session_timeout = Duration::from_secs(20);
        let server_store = store.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let config = config.clone();
                let store = server_store.clone();
                tokio::spawn(async move {
                    let accepted = accept(stream, &config, |request| {
                        if bearer_token(request.headers()) == Some(TOKEN) {
                            Ok(())
                        } else {
                            Err(HttpRejection::UNAUTHORIZED)
                        }
                    })
                    .await;
                    if let Ok((socket, ())) = accepted {
                        let _ = serve(socket, config, |session| handle(session, store)).await;
                    }
                });
            }
        });
        let rest_listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let rest_addr = rest_listener.local_addr().unwrap();
        let router = axum::Router::new()
            .route(
                "/v1/keys/{key_id}/export",
                axum::routing::post(export_endpoint),
            )
            .with_state(store.clone());
        runtime.spawn(async move {
            let _ = axum::serve(rest_listener, router).await;
        });
        Self {
            url: format!("ws://{addr}"),
            rest: format!("http://{rest_addr}"),
            store,
            _runtime: runtime,
        }
    }

    pub(crate) fn set_refresh_fault(&self, fault: u8) {
        self.store.refresh_fault.store(fault, Ordering::SeqCst);
    }

    pub(crate) fn set_export_fault(&self, fault: u8) {
        self.store.export_fault.store(fault, Ordering::SeqCst);
    }

    /// The server's share of `key_id` at `epoch`.
    pub(crate) fn share(&self, key_id: &str, epoch: u64) -> Arc<KeyShare> {
        self.store.get(&key_of(key_id), epoch).unwrap()
    }
}

fn key_of(key_id: &str) -> KeyId {
    KeyId(hex::decode(key_id).unwrap().try_into().unwrap())
}
