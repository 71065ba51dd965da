//! Webhooks from the real server binary: every event type reaches a local
//! receiver with a valid HMAC, also when the receiver fails at first, and
//! an event pending when the server is killed arrives after the restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_server::auth::TokenBuilder;
use mpc_server::webhook;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "webhook-secret-for-the-binary-tests";

#[derive(Clone, Default)]
struct Receiver {
    events: Arc<Mutex<Vec<Value>>>,
    fail_next: Arc<AtomicUsize>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = receiver
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let timestamp: i64 = header(webhook::TIMESTAMP_HEADER).parse().unwrap();
    let now = mpc_server::server::now_ms() / 1000;
    assert!(
        webhook::verify(
            WEBHOOK_SECRET.as_bytes(),
            &header(webhook::SIGNATURE_HEADER),
            timestamp,
            &body,
            now,
            Duration::from_secs(300),
        ),
        "bad webhook signature"
    );
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["id"], header(webhook::ID_HEADER));
    receiver.events.lock().unwrap().push(event);
    StatusCode::NO_CONTENT
}

async fn start_receiver(receiver: Receiver) -> String {
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

impl Receiver {
    /// Waits (bounded) until events of all `types` for `key_id` arrived.
    async fn wait_for(&self, key_id: &str, types: &[&str]) {
        for _ in 0..600 {
            let seen: BTreeSet<String> = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["key_id"] == key_id)
                .map(|e| e["type"].as_str().unwrap().to_owned())
                .collect();
            if types.iter().all(|t| seen.contains(*t)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "events {types:?} for {key_id} did not all arrive: {:?}",
            self.events.lock().unwrap()
        );
    }
}

fn launch<'a>(db: &'a Db, url: &str) -> Launch<'a> {
    let recovery = k256::SecretKey::from_slice(&[9u8; 32]).unwrap();
    Launch::new(db)
        .env("MPC_WEBHOOK_URL", url)
        .env("MPC_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("MPC_WEBHOOK_RETRY_BASE_MS", "50")
        .env(
            "MPC_BACKUP_RECOVERY_KEY",
            &hex::encode(recovery.public_key().to_encoded_point(true).as_bytes()),
        )
}

fn step_up(subject: &str) -> String {
    let now = mpc_server::server::now_ms() / 1000;
    TokenBuilder::new(subject, AUDIENCE)
        .expires_in(600)
        .amr(&["otp"])
        .auth_time(now)
        .token_id(hex::encode({
            use rand_core::RngCore;
            let mut jti = [0u8; 16];
            rand_core::OsRng.fill_bytes(&mut jti);
            jti
        }))
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_despite_failures_and_restarts() {
    bounded(async {
        let receiver = Receiver::default();
        receiver.fail_next.store(3, Ordering::SeqCst);
        let url = start_receiver(receiver.clone()).await;
        let db = Db::sqlite();
        let server = launch(&db, &url).start();
        let client = server.client("wes");
        let http = reqwest::Client::new();

        let key = client.keygen().await.unwrap();
        let id = key.key_id().to_string();
        let rest = |path: &str| format!("{}/v1/keys/{id}{path}", server.rest_url);
        let status = http
            .post(rest("/backup"))
            .bearer_auth(step_up("wes"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        let onetime = k256::SecretKey::from_slice(&[3u8; 32]).unwrap();
        let status = http
            .post(rest("/export"))
            .bearer_auth(step_up("wes"))
            .json(&json!({ "onetime_public_key":
                hex::encode(onetime.public_key().to_encoded_point(true).as_bytes()) }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        let shares = Arc::new(Mutex::new(ClientShares::new(&key)));
        let refreshed = ClientShares::refresh(&shares, &client).await.unwrap();
        assert!(sign_maliciously(&client, &refreshed).await.is_ban());
        let status = http
            .delete(rest(""))
            .bearer_auth(step_up("wes"))
            .json(&json!({ "confirm": id }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        receiver
            .wait_for(
                &id,
                &[
                    "key.created",
                    "key.backed_up",
                    "key.exported",
                    "key.refreshed",
                    "key.banned",
                    "key.revoked",
                ],
            )
            .await;
        let created = receiver
            .events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "key.created")
            .cloned()
            .unwrap();
        assert_eq!(created["data"]["owner"], "wes");
        assert_eq!(
            created["data"]["public_key"],
            hex::encode(key.public_key().to_encoded_point(true).as_bytes())
        );

        // The receiver is down; an event is queued; the server is killed.
        receiver.fail_next.store(usize::MAX, Ordering::SeqCst);
        let second = client.keygen().await.unwrap();
        server.kill();
        receiver.fail_next.store(0, Ordering::SeqCst);
        let _server = launch(&db, &url).start();
        receiver
            .wait_for(&second.key_id().to_string(), &["key.created"])
            .await;
    })
    .await;
}
